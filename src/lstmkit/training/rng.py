"""One seed sets every random number generator; their states are captured and restored exactly.

Three generators drive a training run: Python's ``random`` (shuffling helpers), numpy's global
generator (data augmentation, sampling) and torch's (initialisation, dropout), one per CUDA device
on a GPU machine. :func:`capture_rng_state` snapshots all of them into plain data::

    {
        "python": random.getstate(),        # (version, tuple of 625 ints, gauss_next)
        "numpy":  np.random.get_state(),    # ("MT19937", uint32[624], pos, has_gauss, gauss)
        "torch":  torch.get_rng_state(),    # uint8 tensor
        "cuda":   [uint8 tensor per CUDA device],   # [] without CUDA
    }

which ``lstmkit.training.checkpoint.save_checkpoint`` can store; :func:`restore_rng_state` puts
it back so that the next draws are exactly the ones that followed the capture. Note that
``PYTHONHASHSEED`` (set ordering of str) can only be fixed before Python starts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["RNG_KEYS", "capture_rng_state", "restore_rng_state", "seed_everything"]

logger = logging.getLogger(__name__)

RNG_KEYS = ("python", "numpy", "torch", "cuda")
_SEED_LIMIT = 2**32  # numpy's legacy seed range is [0, 2**32)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int in [0, 2**32), got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < _SEED_LIMIT:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, if CUDA is initialised later)
    logger.debug("seeded python, numpy and torch with %d", seed)


def capture_rng_state() -> dict[str, Any]:
    """Snapshot every generator's state; the result can be saved with ``save_checkpoint``."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back a snapshot from :func:`capture_rng_state`, all generators or none.

    The state is checked first (keys, tensor types, one CUDA state per visible device); if a
    generator still rejects its part, the generators already set are rolled back.
    """
    if not isinstance(state, Mapping):
        raise ValueError(
            f"RNG state must be a mapping with keys {list(RNG_KEYS)}, got {type(state).__name__}"
        )
    _check_keys(state)
    torch_state = _byte_tensor(state["torch"], "state['torch']")
    cuda_states = _cuda_states(state["cuda"])
    previous = capture_rng_state()
    try:
        _apply(state["python"], state["numpy"], torch_state, cuda_states)
    except ValueError as err:
        _apply(previous["python"], previous["numpy"], previous["torch"], previous["cuda"])
        raise ValueError(f"could not restore the RNG state: {err}") from err


def _check_keys(state: Mapping[str, Any]) -> None:
    missing = [key for key in RNG_KEYS if key not in state]
    unexpected = sorted(str(key) for key in state if key not in RNG_KEYS)
    if missing or unexpected:
        raise ValueError(
            f"RNG state must have exactly the keys {list(RNG_KEYS)} (as from capture_rng_state); "
            f"missing {missing}, unexpected {unexpected}"
        )


def _byte_tensor(value: Any, where: str) -> torch.Tensor:
    """A generator state as torch wants it: a 1-D uint8 tensor on the CPU."""
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        found = (
            f"a {value.dtype} tensor of shape {list(value.shape)}"
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        raise ValueError(f"RNG {where} must be a 1-D uint8 tensor, got {found}")
    return value.detach().to("cpu")


def _cuda_states(value: Any) -> list[torch.Tensor]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(
            f"RNG state['cuda'] must be a list of uint8 tensors (one per CUDA device), "
            f"got {type(value).__name__}"
        )
    states = [_byte_tensor(item, f"state['cuda'][{i}]") for i, item in enumerate(value)]
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(states) != devices:
        raise ValueError(
            f"RNG state holds {len(states)} CUDA generator state(s) but this process sees "
            f"{devices} CUDA device(s); restore it where the same number of devices is visible"
        )
    return states


def _apply(
    python: Any, numpy_state: Any, torch_state: torch.Tensor, cuda: list[torch.Tensor]
) -> None:
    setters: list[tuple[str, Callable[[], None]]] = [
        ("python", lambda: random.setstate(python)),
        ("numpy", lambda: np.random.set_state(numpy_state)),
        ("torch", lambda: torch.set_rng_state(torch_state)),
    ]
    if cuda:
        setters.append(("cuda", lambda: torch.cuda.set_rng_state_all(cuda)))
    for key, setter in setters:
        try:
            setter()
        except Exception as err:  # each library raises its own kinds for a bad state
            raise ValueError(f"state[{key!r}] was rejected ({err})") from err
