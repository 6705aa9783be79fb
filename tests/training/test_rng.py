"""One seed sets every RNG; captured states restore the exact same next draws."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lstmkit.training.checkpoint import load_checkpoint, save_checkpoint
from lstmkit.training.rng import capture_rng_state, restore_rng_state, seed_everything


@pytest.fixture(autouse=True)
def _keep_global_rng_state() -> Iterator[None]:
    """These tests reseed the global generators; put them back for whoever runs next."""
    state = capture_rng_state()
    yield
    restore_rng_state(state)


def draws() -> list[Any]:
    """A few draws from each generator, including the cached-Gaussian paths."""
    return [
        random.random(),
        random.gauss(0.0, 1.0),
        random.getrandbits(70),
        np.random.rand(3).tolist(),
        np.random.randn(3).tolist(),
        np.random.randint(0, 2**31, size=2).tolist(),
        torch.rand(3).tolist(),
        torch.randn(3).tolist(),
        torch.randint(0, 100, (2,)).tolist(),
    ]


def test_restore_replays_the_draws_after_capture() -> None:
    seed_everything(7)
    draws()
    np.random.randn(1)  # leaves a cached Gaussian in numpy's state
    random.gauss(0.0, 1.0)  # and one in Python's
    state = capture_rng_state()
    expected = draws()
    draws()
    restore_rng_state(state)
    assert draws() == expected


def test_capture_is_a_snapshot_not_a_view() -> None:
    state = capture_rng_state()
    before = state["torch"].clone(), state["numpy"][1].copy()
    draws()
    assert torch.equal(state["torch"], before[0])
    assert np.array_equal(state["numpy"][1], before[1])
    assert set(state) == {"python", "numpy", "torch", "cuda"}
    assert state["cuda"] == ([] if not torch.cuda.is_available() else state["cuda"])


def test_seed_everything_is_reproducible() -> None:
    seed_everything(1234)
    first = draws()
    seed_everything(1234)
    assert draws() == first
    seed_everything(np.int64(1234))
    assert draws() == first
    seed_everything(1235)
    assert draws() != first
    seed_everything(0)
    seed_everything(2**32 - 1)


@pytest.mark.parametrize(
    "seed,message",
    [
        (-1, r"seed must be an int in \[0, 2\*\*32\), got -1"),
        (2**32, r"seed must be an int in \[0, 2\*\*32\), got 4294967296"),
        (1.5, r"seed must be an int in \[0, 2\*\*32\), got float 1.5"),
        ("42", r"seed must be an int in \[0, 2\*\*32\), got str '42'"),
        (True, r"seed must be an int in \[0, 2\*\*32\), got bool True"),
        (None, r"seed must be an int in \[0, 2\*\*32\), got NoneType None"),
    ],
)
def test_bad_seeds_are_rejected(seed: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed_everything(seed)


def test_state_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    seed_everything(99)
    np.random.randn(1)
    state = capture_rng_state()
    expected = draws()
    path = save_checkpoint(tmp_path / "rng.safetensors", {"rng": state})

    seed_everything(5)  # move every generator elsewhere
    restore_rng_state(load_checkpoint(path)["rng"])
    assert draws() == expected


def test_missing_and_unexpected_keys_are_listed() -> None:
    state = capture_rng_state()
    del state["numpy"]
    with pytest.raises(
        ValueError,
        match=r"RNG state must have exactly the keys \['python', 'numpy', 'torch', 'cuda'\] "
        r"\(as from capture_rng_state\); missing \['numpy'\], unexpected \[\]",
    ):
        restore_rng_state(state)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['mps'\]"):
        restore_rng_state({**capture_rng_state(), "mps": None})
    with pytest.raises(ValueError, match="RNG state must be a mapping with keys .*, got list"):
        restore_rng_state([1, 2])  # type: ignore[arg-type]


def test_bad_torch_state_is_rejected_before_anything_changes() -> None:
    state = {**capture_rng_state(), "torch": torch.zeros(4)}
    with pytest.raises(
        ValueError,
        match=r"RNG state\['torch'\] must be a 1-D uint8 tensor, got a torch.float32 tensor "
        r"of shape \[4\]",
    ):
        restore_rng_state(state)
    with pytest.raises(ValueError, match=r"RNG state\['cuda'\] must be a list of uint8 tensors"):
        restore_rng_state({**capture_rng_state(), "cuda": "nope"})


def test_rejected_part_rolls_back_the_others() -> None:
    seed_everything(3)
    good = capture_rng_state()
    expected = draws()
    seed_everything(3)
    bad = {**capture_rng_state(), "numpy": ("MT19937", np.zeros(3, dtype=np.uint32), 0, 0, 0.0)}
    seed_everything(11)  # python gets set from `bad` before numpy fails: it must roll back
    current = capture_rng_state()
    with pytest.raises(
        ValueError,
        match=r"could not restore the RNG state: state\['numpy'\] "
        "was rejected",
    ):
        restore_rng_state(bad)
    after_failure = draws()
    restore_rng_state(current)
    assert draws() == after_failure
    restore_rng_state(good)
    assert draws() == expected


def test_cuda_state_count_must_match_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = {**capture_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    with pytest.raises(
        ValueError,
        match=r"RNG state holds 1 CUDA generator state\(s\) but this "
        r"process sees 0 CUDA device\(s\)",
    ):
        restore_rng_state(state)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ValueError,
        match=r"holds 1 CUDA generator state\(s\) but this process "
        r"sees 2 CUDA device\(s\)",
    ):
        restore_rng_state(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generators_are_captured_and_restored(tmp_path: Path) -> None:
    seed_everything(21)
    state = capture_rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    expected = torch.rand(4, device="cuda").tolist()
    torch.rand(4, device="cuda")
    path = save_checkpoint(tmp_path / "rng.safetensors", {"rng": state})
    restore_rng_state(load_checkpoint(path, map_location="cuda")["rng"])
    assert torch.rand(4, device="cuda").tolist() == expected
