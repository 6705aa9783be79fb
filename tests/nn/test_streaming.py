"""Streaming inference: stepping one observation at a time equals running the whole sequence."""

import copy

import pytest
import torch

from lstmkit.nn import LSTM, StreamingLSTM
from lstmkit.nn.backends.kernel import DISABLE_ENV, kernel_unavailable


def _perturbed(lstm: LSTM) -> LSTM:
    with torch.no_grad():
        for p in lstm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return lstm.eval()


def _stream_all(stream: StreamingLSTM, x: torch.Tensor) -> torch.Tensor:
    """Step through x (B, T, I) and stack the outputs to (B, T, P)."""
    return torch.stack([stream.step(x[:, t]) for t in range(x.shape[1])], dim=1)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "layernorm", "cifg"])
@pytest.mark.parametrize("layers,proj,batch", [(1, 0, 1), (2, 3, 3)])
def test_streaming_equals_the_layer(cell, layers, proj, batch):
    torch.manual_seed(0)
    lstm = _perturbed(LSTM(5, 8, layers, proj_size=proj, cell=cell))
    x = torch.randn(batch, 9, 5)
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x)
    stream = lstm.stream(batch_size=batch)
    torch.testing.assert_close(_stream_all(stream, x), out, atol=1e-5, rtol=1e-5)
    h, c = stream.state
    torch.testing.assert_close(h, h_n, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, c_n, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_streaming_a_wide_projected_layer_equals_the_reference(cell):
    """Wider than one block of 256 columns in every product the C++ stepper packs: W_ih^T and
    W_hh^T (4H = 1280, CIFG 960) and the projection W_hr^T (P = 288)."""
    if kernel_unavailable() is not None:
        pytest.skip(kernel_unavailable())
    torch.manual_seed(1)
    reference = _perturbed(LSTM(5, 320, proj_size=288, cell=cell, backend="reference"))
    lstm = copy.deepcopy(reference)
    lstm.config = lstm.config.replace(backend="kernel")
    x = torch.randn(1, 4, 5)
    with torch.no_grad():
        out, (_, c_n) = reference(x)
    stream = lstm.stream(batch_size=1)
    assert stream._stepper is not None  # the C++ stepper, not the PyTorch path
    torch.testing.assert_close(_stream_all(stream, x), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stream.state[1], c_n, atol=1e-5, rtol=1e-5)


def test_unbatched_steps_and_reset():
    torch.manual_seed(0)
    lstm = _perturbed(LSTM(4, 6, 2))
    x = torch.randn(7, 4)
    with torch.no_grad():
        out, _ = lstm(x)
    stream = lstm.stream()
    first = torch.stack([stream.step(x_t) for x_t in x])  # each step (P,)
    torch.testing.assert_close(first, out, atol=1e-5, rtol=1e-5)
    stream.reset()
    assert torch.all(stream.state[0] == 0) and torch.all(stream.state[1] == 0)
    again = torch.stack([stream.step(x_t) for x_t in x])
    torch.testing.assert_close(again, first)


def test_reset_to_a_given_state_continues_a_sequence():
    torch.manual_seed(0)
    lstm = _perturbed(LSTM(4, 6, 2, proj_size=2))
    x = torch.randn(1, 10, 4)
    with torch.no_grad():
        out, _ = lstm(x)
        _, state = lstm(x[:, :6])  # the state after 6 steps
    stream = lstm.stream()
    stream.reset(state)
    torch.testing.assert_close(_stream_all(stream, x[:, 6:]), out[:, 6:], atol=1e-5, rtol=1e-5)


def test_returned_outputs_are_not_overwritten_by_later_steps():
    lstm = _perturbed(LSTM(3, 4))
    stream = lstm.stream()
    h1 = stream.step(torch.randn(3))
    kept = h1.clone()
    stream.step(torch.randn(3))
    assert torch.equal(h1, kept)


def test_zoneout_in_eval_streams_through_the_pytorch_path():
    torch.manual_seed(0)
    lstm = _perturbed(LSTM(3, 5, zoneout_cell=0.3, zoneout_hidden=0.2))
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        out, _ = lstm(x)
    stream = lstm.stream(batch_size=2)
    assert not stream.uses_kernel
    torch.testing.assert_close(_stream_all(stream, x), out, atol=1e-6, rtol=1e-5)


def test_streaming_without_the_kernel(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    torch.manual_seed(0)
    lstm = _perturbed(LSTM(3, 5, cell="peephole"))
    x = torch.randn(1, 6, 3)
    with torch.no_grad():
        out, _ = lstm(x)
    stream = lstm.stream()
    assert not stream.uses_kernel
    torch.testing.assert_close(_stream_all(stream, x), out, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- bad input
def test_bad_step_input_names_what_was_expected():
    stream = LSTM(5, 4).eval().stream(batch_size=2)
    with pytest.raises(
        ValueError, match=r"step expects x of shape \(2, 5\) for batch_size=2, got \(3, 5\)"
    ):
        stream.step(torch.randn(3, 5))
    with pytest.raises(
        ValueError, match=r"step expects x of shape \(2, 5\) for batch_size=2, got \(2, 4\)"
    ):
        stream.step(torch.randn(2, 4))
    # one unbatched row cannot feed two streams (the C++ stepper would read past it)
    with pytest.raises(
        ValueError, match=r"step expects x of shape \(2, 5\) for batch_size=2, got \(5,\)"
    ):
        stream.step(torch.randn(5))
    single = LSTM(5, 4).eval().stream()
    with pytest.raises(ValueError, match=r"\(5,\) or \(1, 5\), got \(2, 5\)"):
        single.step(torch.randn(2, 5))
    with pytest.raises(
        ValueError, match="step expects x as torch.float32 on cpu, got torch.float64 on cpu"
    ):
        stream.step(torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"step expects a tensor of shape .*, got list"):
        stream.step([0.0] * 5)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_stepper_refuses_a_layer_whose_weights_changed_dtype(kernel, monkeypatch):
    if not kernel:
        monkeypatch.setenv(DISABLE_ENV, "1")
    lstm = LSTM(3, 4).eval()
    stream = lstm.stream()
    lstm.double()
    with pytest.raises(
        ValueError, match="weights moved from torch.float32 on cpu to torch.float64 on cpu"
    ):
        stream.step(torch.randn(3, dtype=torch.float64))
    lstm.float()  # back as it was: the stepper runs again
    assert stream.step(torch.randn(3)).shape == (4,)


def test_bad_streams_and_states():
    with pytest.raises(ValueError, match="streaming needs a unidirectional LSTM"):
        LSTM(3, 4, bidirectional=True).stream()
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        LSTM(3, 4).stream(batch_size=0)
    stream = LSTM(3, 4, 2).stream()
    with pytest.raises(ValueError, match=r"state h must have shape \(2, 1, 4\), got \(1, 1, 4\)"):
        stream.reset((torch.zeros(1, 1, 4), torch.zeros(2, 1, 4)))
    with pytest.raises(ValueError, match="state must be a tuple"):
        stream.reset(torch.zeros(2, 1, 4))


def test_the_cpp_stepper_checks_its_input_itself():
    stream = LSTM(5, 4).eval().stream(batch_size=2)
    if not stream.uses_kernel:
        pytest.skip("the C++ kernel cannot be built here")
    with pytest.raises(RuntimeError, match=r"Stepper.step: x must be \(2, 5\), got \[1, 5\]"):
        stream._stepper.step(torch.randn(1, 5))
    with pytest.raises(RuntimeError, match="Stepper.step: x must be Float on cpu, got Double"):
        stream._stepper.step(torch.randn(2, 5, dtype=torch.float64))
