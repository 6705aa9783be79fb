"""Initialisation, backend choice, gate tracing and torch conversion."""

import logging
import math

import pytest
import torch

from lstmkit.nn import LSTM, to_torch


# ---------------------------------------------------------------- initialisation
def test_forget_bias_and_orthogonal_recurrent_weights():
    torch.manual_seed(0)
    cell = LSTM(3, 8).cell(0)
    forget = cell.gate_slice("forget")
    assert torch.all(cell.bias_ih[forget] == 1.0)
    assert torch.all(cell.bias_hh == 0.0)
    others = torch.ones(32, dtype=torch.bool)
    others[forget] = False
    assert torch.all(cell.bias_ih[others] == 0.0)
    for k in range(4):
        block = cell.weight_hh[k * 8 : (k + 1) * 8]  # (H, H)
        torch.testing.assert_close(block.t() @ block, torch.eye(8), atol=1e-5, rtol=0)


def test_custom_forget_bias():
    cell = LSTM(3, 8, forget_bias=2.5).cell(0)
    assert torch.all(cell.bias_ih[cell.gate_slice("forget")] == 2.5)


@pytest.mark.parametrize("cell_name", ["lstm", "peephole", "cifg"])
def test_chrono_initialisation(cell_name):
    torch.manual_seed(0)
    cell = LSTM(3, 64, cell=cell_name, chrono_init=100).cell(0)
    b_f = cell.bias_ih[cell.gate_slice("forget")]
    assert b_f.min() >= 0.0 and b_f.max() <= math.log(99.0)
    assert b_f.std() > 0.5  # spread over time scales, not a constant
    if "input" in cell.gate_order:
        torch.testing.assert_close(cell.bias_ih[cell.gate_slice("input")], -b_f)


def test_gate_slice_of_unknown_gate():
    with pytest.raises(
        ValueError, match="CIFGLSTMCell has gates forget, candidate, output; got 'input'"
    ):
        LSTM(3, 4, cell="cifg").cell(0).gate_slice("input")


# ---------------------------------------------------------------- backend choice
# Without the C++ kernel (LSTMKIT_DISABLE_KERNEL=1), as the auto choice was before it existed;
# the kernel's own choices are tested in test_kernel.py.
@pytest.fixture
def no_kernel(monkeypatch):
    monkeypatch.setenv("LSTMKIT_DISABLE_KERNEL", "1")


def test_backend_choice_explains_itself(no_kernel):
    assert LSTM(3, 4).backend_choice.name == "fused"
    peephole = LSTM(3, 4, cell="peephole")
    assert peephole.backend_choice.name == "reference"
    assert peephole.explain_backend() == (
        "reference backend: the C++ kernel is disabled (LSTMKIT_DISABLE_KERNEL=1); "
        "peephole connections are not supported by the fused kernel; "
        "the compiled step is picked automatically on CUDA devices only (got cpu)"
    )
    assert "zoneout" in LSTM(3, 4, zoneout_cell=0.1).backend_choice.reason
    assert LSTM(3, 4, backend="reference").backend_choice.reason == (
        "backend='reference' was requested"
    )


def test_recurrent_dropout_needs_reference_only_while_training(no_kernel):
    lstm = LSTM(3, 4, recurrent_dropout=0.2)
    assert lstm.train().backend_choice.name == "reference"
    assert lstm.eval().backend_choice.name == "fused"


# ---------------------------------------------------------------- gate tracing
def test_trace_names_every_gate_and_matches_forward():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, 2, bidirectional=True).eval()
    x = torch.randn(2, 5, 3)
    lengths = torch.tensor([5, 3])
    trace = lstm.trace(x, lengths=lengths)
    out, (_, c_n) = lstm(x, lengths=lengths)
    torch.testing.assert_close(trace.output, out)
    names = trace.named()
    assert len(names) == 2 * 2 * 6
    top_fwd, top_bwd = trace.layers[1]
    torch.testing.assert_close(top_fwd.hidden, out[..., :4])
    torch.testing.assert_close(top_bwd.hidden, out[..., 4:])
    # the final cell state is each sequence's cell at its last valid step
    torch.testing.assert_close(top_fwd.cell[1, 2], c_n[2, 1])
    torch.testing.assert_close(top_bwd.cell[1, 0], c_n[3, 1])
    for gate in ("input_gate", "forget_gate", "output_gate"):
        values = names[f"layer0.forward.{gate}"]
        assert values.shape == (2, 5, 4)
        assert torch.all((values[0] > 0) & (values[0] < 1))
        assert torch.all(values[1, 3:] == 0)  # padded steps


# ---------------------------------------------------------------- torch conversion
def test_round_trip_through_torch():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 6, 2, bidirectional=True, proj_size=2, batch_first=False)
    back = LSTM.from_torch(ref).to_torch()
    assert back.batch_first is False and back.proj_size == 2
    for (name, a), (_, b) in zip(ref.named_parameters(), back.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_to_torch_refuses_variants_and_warns_on_lost_regularisers(caplog):
    with pytest.raises(ValueError, match="torch.nn.LSTM has no 'layernorm' cell"):
        to_torch(LSTM(3, 4, cell="layernorm"))
    with caplog.at_level(logging.WARNING):
        LSTM(3, 4, weight_dropout=0.2).to_torch()
    assert "weight_dropout" in caplog.text


def test_from_torch_needs_a_torch_lstm():
    with pytest.raises(TypeError, match="from_torch expects a torch.nn.LSTM, got GRU"):
        LSTM.from_torch(torch.nn.GRU(3, 4))


def test_auto_passes_over_the_kernel_where_it_measured_slower():
    from lstmkit.nn.backends import select_backend
    from lstmkit.nn.backends.kernel import kernel_unavailable

    if kernel_unavailable() is not None:
        pytest.skip(f"the C++ kernel is unavailable here: {kernel_unavailable()}")
    wide = LSTM(3, 1024).train()
    assert wide.backend_choice.name == "fused"
    assert "slower than PyTorch's fused kernel above hidden_size 768 (got 1024)" in (
        wide.backend_choice.reason
    )
    assert select_backend(LSTM(3, 512).config, training=True).name == "kernel"
    # where fused cannot run the cell, the kernel stays the fast path at any size
    assert LSTM(3, 1024, cell="peephole").train().backend_choice.name == "kernel"


def test_the_layers_backend_choice_never_builds_the_kernel(monkeypatch):
    """``backend_choice`` in eval mode names the fused kernel without building the C++ one;
    what a padded call would run on is added only once the kernel's fate is known."""
    import lstmkit.nn.backends.kernel as kernel

    def build(*_):
        raise AssertionError("backend_choice consulted the C++ kernel")

    monkeypatch.setattr(kernel, "kernel_unavailable", build)
    monkeypatch.setattr(kernel, "_state", {})  # as in a fresh process
    monkeypatch.delenv(kernel.DISABLE_ENV, raising=False)
    assert LSTM(3, 128).eval().explain_backend() == (
        "fused backend: fastest backend for this configuration"
    )


def test_large_batch_inference_never_builds_the_kernel(monkeypatch):
    """Choosing the fused kernel for a large eval batch must not build the C++ kernel (a
    first build takes from half a minute to minutes): the row-split case is decided in Python."""
    import lstmkit.nn.backends as backends
    import lstmkit.nn.backends.kernel as kernel

    def build(*_):
        raise AssertionError("the C++ kernel was consulted for a large inference batch")

    monkeypatch.setattr(kernel, "kernel_unavailable", build)
    rows = 64 * torch.get_num_threads()  # 64 rows per thread: far past the kernel's regime
    placement = backends.Placement(torch.device("cpu"), torch.float32, rows)
    config = LSTM(3, 128).config
    assert backends.select_backend(config, training=False, placement=placement).name == "fused"
