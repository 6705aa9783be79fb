"""Helpers shared by the backend tests that compare a backend with the reference one."""

import copy

import pytest
import torch

from lstmkit.nn import LSTM


@pytest.fixture
def exact_float32(monkeypatch):
    """No TF32 on GPUs: cuDNN would use it by default, and it rounds to 10 mantissa bits."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    yield
    torch.set_float32_matmul_precision(precision)


def perturbed_twins(backend: str, device, dtype: torch.dtype, **options) -> tuple[LSTM, LSTM]:
    """The same perturbed two-layer bidirectional LSTM twice: on the reference backend and on
    ``backend``."""
    lstm = LSTM(5, 6, num_layers=2, bidirectional=True, backend="reference", **options)
    lstm = lstm.to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in lstm.parameters():
            p.add_(0.1 * torch.randn_like(p))  # peepholes and norm gains off their init values
    twin = copy.deepcopy(lstm)
    twin.config = twin.config.replace(backend=backend)
    return lstm, twin


def outputs_and_grads(lstm: LSTM, x: torch.Tensor, lengths, seed: int | None = None) -> dict:
    """Outputs, final state and every gradient of a fixed weighted loss (gradients start at
    None). ``seed``, when given, is set just before the call: the same dropout masks for twins."""
    lstm.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    if seed is not None:
        torch.manual_seed(seed)
    out, (h, c) = lstm(x, lengths=lengths)
    weights = [
        torch.linspace(-1, 1, t.numel(), dtype=t.dtype, device=t.device) for t in (out, h, c)
    ]
    loss = sum((t.flatten() * w).sum() for t, w in zip((out, h, c), weights, strict=True))
    loss.backward()
    named = {"output": out, "h_n": h, "c_n": c, "x.grad": x.grad}
    return named | {f"{n}.grad": p.grad for n, p in lstm.named_parameters()}
