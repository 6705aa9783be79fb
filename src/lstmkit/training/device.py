"""Where and in which precision to train: device choice, autocast and the fp16 gradient scaler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" picks CUDA, then Apple MPS, then the CPU; a named device must be present."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise ValueError(
                "device='cuda' was requested but no CUDA device is available; "
                "use device='auto' or 'cpu'"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not mps:
        raise ValueError(
            "device='mps' was requested but Apple MPS is not available; use device='auto' or 'cpu'"
        )
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device (got {device.type}); use precision='bf16' on CPU"
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Mixed-precision region for the forward pass and loss; fp32 runs as is."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
