"""The segment model's parallel decoder step against the same step run row by row."""

from __future__ import annotations

import pytest
import torch

from lstmkit.nn import LSTM
from lstmkit.tasks.forecasting.models import ModelConfig, SegmentForecaster, Shapes, decode_step

B, C, M, D = 3, 2, 4, 6


def rowwise(lstm: LSTM, queries, state):
    """The reference: every (state, query) pair as one row of an ordinary LSTM call."""
    h, c = state
    rows = queries.repeat(B, 1, 1).reshape(B * C * M, 1, -1)
    pairs = (h.flatten(1, 2).repeat_interleave(M, dim=1), c.flatten(1, 2).repeat_interleave(M, 1))
    out, _ = lstm(rows, pairs)
    return out.view(B, C, M, -1)


def inputs(lstm: LSTM):
    g = torch.Generator().manual_seed(1)
    p, hidden = lstm.config.output_size, lstm.config.hidden_size
    queries = torch.randn(C, M, D, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(lstm.config.num_layers, B, C, p, generator=g, dtype=torch.float64)
    c = torch.randn(lstm.config.num_layers, B, C, hidden, generator=g, dtype=torch.float64)
    return queries, (h.requires_grad_(), c.requires_grad_())


def outputs_and_gradients(lstm: LSTM, decode, seed: int = 0):
    queries, state = inputs(lstm)
    torch.manual_seed(seed)  # the same random masks for both, where masks are drawn
    out = decode(lstm, queries, state)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    (out * weights).sum().backward()
    grads = [queries.grad, *(s.grad for s in state)]
    grads += [p.grad.clone() for p in lstm.parameters()]
    lstm.zero_grad()
    return out, grads


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"cell": "peephole"},
        {"cell": "layernorm"},
        {"cell": "cifg"},
        {"proj_size": 3},
        {"bias": False},
        {"zoneout_cell": 0.3, "zoneout_hidden": 0.2},
        {"weight_dropout": 0.4, "output_dropout": 0.3},
        {"num_layers": 2},  # built out row by row
        {"input_dropout": 0.3},  # while training: built out row by row
        {"recurrent_dropout": 0.3},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain",
)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_parallel_step_equals_the_rowwise_step(options, training):
    options = dict(options)
    layers = options.pop("num_layers", 1)
    lstm = LSTM(D, 5, layers, backend="reference", **options).double().train(training)
    expected, expected_grads = outputs_and_gradients(lstm, rowwise)
    got, grads = outputs_and_gradients(lstm, decode_step)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


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

    got, grads = run()
    import lstmkit.tasks.forecasting.models as models

    monkeypatch.setattr(models, "_LSTMLayer", type(None))  # nothing factors: rows built out
    expected, expected_grads = run()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
