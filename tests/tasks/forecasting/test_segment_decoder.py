"""The segment model's decoder step against the same step run row by row, and which path ran.

The reference builds every (state, query) pair out as a row and runs the LSTM on the rows.
``decode_step`` factors the pre-activations and runs the gate arithmetic per pair, fused in C++
(the kernel's pair step) or in PyTorch ops; each case checks the path it took as well as the
numbers, so a fast path that quietly stopped being taken would fail here.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import lstmkit.tasks.forecasting.decoding as decoding
from lstmkit.nn import LSTM
from lstmkit.nn.backends.kernel import kernel_unavailable
from lstmkit.tasks.forecasting.decoding import decode_step
from lstmkit.tasks.forecasting.models import ModelConfig, SegmentForecaster, Shapes

B, C, M, D = 3, 2, 4, 6


def rowwise(lstm: LSTM, queries, state):
    """The reference: every (state, query) pair as one row of an ordinary LSTM call."""
    h, c = state
    rows = queries.repeat(B, 1, 1).reshape(B * C * M, 1, -1)
    pairs = (h.flatten(1, 2).repeat_interleave(M, dim=1), c.flatten(1, 2).repeat_interleave(M, 1))
    out, _ = lstm(rows, pairs)
    return out.view(B, C, M, -1)


def inputs(lstm: LSTM, dtype: torch.dtype):
    g = torch.Generator().manual_seed(1)
    p, hidden = lstm.config.output_size, lstm.config.hidden_size
    queries = torch.randn(C, M, D, generator=g, dtype=dtype, requires_grad=True)
    h = torch.randn(lstm.config.num_layers, B, C, p, generator=g, dtype=dtype)
    c = torch.randn(lstm.config.num_layers, B, C, hidden, generator=g, dtype=dtype)
    return queries, (h.requires_grad_(), c.requires_grad_())


def outputs_and_gradients(lstm: LSTM, decode, dtype: torch.dtype):
    queries, state = inputs(lstm, dtype)
    torch.manual_seed(0)  # the same random masks for both, where masks are drawn
    out = decode(lstm, queries, state)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    (out * weights).sum().backward()
    grads = [queries.grad, *(s.grad for s in state)]
    grads += [p.grad.clone() for p in lstm.parameters()]
    lstm.zero_grad()
    return out, grads


def watch_paths(monkeypatch, lstm: LSTM) -> Counter:
    """Count the calls of each path: the LSTM on built-out rows, and the C++ pair step."""
    calls: Counter = Counter()
    forward, pair_step = lstm.forward, decoding.pair_step

    def rows(*args, **kwargs):
        calls["rows"] += 1
        return forward(*args, **kwargs)

    def fused(*args):
        calls["fused"] += 1
        return pair_step(*args)

    monkeypatch.setattr(lstm, "forward", rows)
    monkeypatch.setattr(decoding, "pair_step", fused)
    return calls


def expected_path(options: dict, layers: int, training: bool, backend: str) -> str:
    if layers > 1 or (training and ("input_dropout" in options or "recurrent_dropout" in options)):
        return "rows"
    zoneout = "zoneout_cell" in options
    pairable = options.get("cell", "lstm") != "layernorm" and not options.get("proj_size")
    fused = backend == "auto" and pairable and not zoneout and kernel_unavailable() is None
    return "fused" if fused else "broadcast"


OPTIONS = [
    {},
    {"cell": "peephole"},
    {"cell": "layernorm"},
    {"cell": "cifg"},
    {"proj_size": 3},
    {"bias": False},
    {"zoneout_cell": 0.3, "zoneout_hidden": 0.2},
    {"weight_dropout": 0.4, "output_dropout": 0.3},
    {"cell": "cifg", "weight_dropout": 0.4, "output_dropout": 0.3},
    {"num_layers": 2},
    {"input_dropout": 0.3},  # while training: built out row by row
    {"recurrent_dropout": 0.3},
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain"
)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_decoder_step_equals_the_rowwise_step(monkeypatch, options, training, backend):
    options = dict(options)
    layers = options.pop("num_layers", 1)
    lstm = LSTM(D, 5, layers, backend=backend, **options).double().train(training)
    expected, expected_grads = outputs_and_gradients(lstm, rowwise, torch.float64)
    calls = watch_paths(monkeypatch, lstm)
    got, grads = outputs_and_gradients(lstm, decode_step, torch.float64)
    path = expected_path(options, layers, training, backend)
    assert calls == Counter({path: 1} if path != "broadcast" else {}), path
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_the_fused_pair_step_in_float32(monkeypatch, cell):
    if kernel_unavailable() is not None:
        pytest.skip(kernel_unavailable())
    lstm = LSTM(D, 5, cell=cell).train()
    expected, expected_grads = outputs_and_gradients(lstm, rowwise, torch.float32)
    calls = watch_paths(monkeypatch, lstm)
    got, grads = outputs_and_gradients(lstm, decode_step, torch.float32)
    assert calls == Counter({"fused": 1})
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_time_major_layers_are_built_out_the_right_way_round():
    lstm = LSTM(D, 5, 2, batch_first=False, backend="reference").double()
    queries, (h, c) = inputs(lstm, torch.float64)
    rows = queries.repeat(B, 1, 1).reshape(1, B * C * M, -1)  # (T=1, N, I)
    state = (h.flatten(1, 2).repeat_interleave(M, dim=1), c.flatten(1, 2).repeat_interleave(M, 1))
    expected = lstm(rows, state)[0][0].view(B, C, M, -1)
    torch.testing.assert_close(decode_step(lstm, queries, (h, c)), expected)


def test_mismatched_shapes_are_refused():
    lstm = LSTM(D, 5).double()
    queries, (h, c) = inputs(lstm, torch.float64)
    with pytest.raises(ValueError, match=r"same C; got queries \(2, 4, 6\), h \(1, 3, 1, 5\)"):
        decode_step(lstm, queries, (h[:, :, :1], c[:, :, :1]))
    with pytest.raises(ValueError, match="c has 4 units, the cell 5"):
        decode_step(lstm, queries, (h, c[..., :4]))


def test_segment_model_gives_what_it_gave_row_by_row(monkeypatch):
    """The whole model: its forecast and gradients are those of the built-out decoder."""
    config = ModelConfig(kind="segment", hidden_size=8, segment_len=4, normalization="none")
    model = SegmentForecaster(config, Shapes(8, 12, 3, 0, 0, 0)).double()
    batch = {"past_target": torch.randn(5, 8, 3, dtype=torch.float64)}

    def run():
        out = model(batch)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return out, grads

    calls = watch_paths(monkeypatch, model.encoder)
    got, grads = run()
    assert calls["fused"] == (1 if kernel_unavailable() is None else 0)
    monkeypatch.setattr(decoding, "_LSTMLayer", type(None))  # nothing factors: rows built out
    expected, expected_grads = run()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
