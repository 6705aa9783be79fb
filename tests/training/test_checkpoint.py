"""Checkpoints are data: exact round trips, clear errors, atomic writes, and no pickle anywhere."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import struct
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lstmkit.training import checkpoint
from lstmkit.training.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from lstmkit.training.rng import capture_rng_state, restore_rng_state


@pytest.fixture(autouse=True)
def _keep_global_rng_state() -> Iterator[None]:
    """These tests reseed the global generators; put them back for whoever runs next."""
    state = capture_rng_state()
    yield
    restore_rng_state(state)


# ----------------------------------------------------------------------------- helpers


class TinyLM(nn.Module):
    """Embedding -> LSTM -> Linear, with the decoder tied to the embedding (shared storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.lstm = nn.LSTM(6, 6, num_layers=2, batch_first=True)
        self.decoder = nn.Linear(6, 11)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.decoder(out)


def make_training(seed: int) -> tuple[TinyLM, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def train(model: TinyLM, optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> None:
    generator = torch.Generator().manual_seed(123)
    for _ in range(steps):
        tokens = torch.randint(0, 11, (3, 5), generator=generator)
        loss = nn.functional.cross_entropy(model(tokens).reshape(-1, 11), tokens.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def example_state() -> dict[str, Any]:
    model, optimizer, scheduler = make_training(0)
    train(model, optimizer, scheduler, steps=2)
    return {
        "config": {
            "hidden": 6,
            "dropout": 0.0,
            "betas": (0.9, 0.999),
            "clip": None,
            "name": "tiny-lm",
            "tags": ["a", "b"],
            "amp": False,
        },
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": 12,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }


def assert_same(expected: Any, actual: Any, where: str = "state") -> None:
    """Equal structure, exact types (keys included) and bitwise-equal values."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert [(type(k), k) for k in actual] == [(type(k), k) for k in expected], where
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}[{key!r}]")
        if hasattr(expected, "_metadata"):
            assert_same(expected._metadata, actual._metadata, f"{where}._metadata")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        assert actual.device.type == "cpu", where
        assert torch.equal(_bits(actual), _bits(expected)), where
    elif isinstance(expected, np.ndarray):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        assert actual.tobytes() == expected.tobytes(), where
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype and actual.tobytes() == expected.tobytes(), where
    elif isinstance(expected, float):
        assert actual.hex() == expected.hex(), where  # NaN, inf and -0.0 included
    else:
        assert actual == expected, where


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


# ----------------------------------------------------------------------------- round trips


def test_full_training_state_round_trips_exactly(tmp_path: Path) -> None:
    state = example_state()
    path = save_checkpoint(tmp_path / "ckpt.safetensors", state)
    assert path == tmp_path / "ckpt.safetensors"

    loaded = load_checkpoint(path)

    assert_same(state, loaded)
    assert isinstance(loaded["model"], OrderedDict)
    assert list(loaded["optimizer"]["state"]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert type(loaded["optimizer"]["param_groups"][0]["betas"]) is tuple
    # Tied weights are stored once and come back as one tensor, as they were saved.
    assert loaded["model"]["embed.weight"] is loaded["model"]["decoder.weight"]
    # Loaded tensors are ordinary, writable tensors.
    loaded["model"]["lstm.bias_hh_l0"].add_(1.0)


def test_resumed_optimizer_continues_bitwise_identically(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_training(0)
    train(model, optimizer, scheduler, steps=2)
    save_checkpoint(
        tmp_path / "ckpt.safetensors",
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
    )
    state = load_checkpoint(tmp_path / "ckpt.safetensors")
    fresh_model, fresh_optimizer, fresh_scheduler = make_training(1)
    fresh_model.load_state_dict(state["model"])
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh_scheduler.load_state_dict(state["scheduler"])

    train(model, optimizer, scheduler, steps=3)
    train(fresh_model, fresh_optimizer, fresh_scheduler, steps=3)

    for (name, expected), actual in zip(
        model.state_dict().items(), fresh_model.state_dict().values(), strict=True
    ):
        assert torch.equal(_bits(expected), _bits(actual)), name
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_edge_case_values_round_trip_exactly(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    swapped = np.arange(5, dtype=">u4")
    state = {
        "scalars": {"zero_dim": torch.tensor(3.5), "int0": torch.tensor(7)},
        "dtypes": {
            "bool": torch.tensor([True, False, True]),
            "int64": torch.tensor([-(2**62), 2**62]),
            "uint8": torch.tensor([0, 255], dtype=torch.uint8),
            "float16": torch.tensor([1.5, float("nan"), -float("inf")], dtype=torch.float16),
            "bfloat16": torch.tensor([1.25, float("inf"), -0.0], dtype=torch.bfloat16),
            "float64": torch.tensor([math.pi, -0.0, float("nan")], dtype=torch.float64),
            "empty": torch.empty(0, 3),
            "empty_too": torch.empty(0, 3),
        },
        "views": {
            # Non-contiguous views, and different views of one storage (overlapping or not).
            "base": base,
            "transposed": base.T,
            "strided": base[:, ::2],
            "rows": base[1:3],
            "same_view_twice": [base[0], base[0]],
            "dtype_view": base.view(torch.int32),
        },
        "arrays": {
            "uint32": np.arange(624, dtype=np.uint32),
            "float": np.array([[np.nan, np.inf], [-0.0, 1e-300]]),
            "bool": np.array([True, False]),
            "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
            "zero_dim": np.array(5, dtype=np.int8),
        },
        "numpy_scalars": [
            np.float32(0.1),
            np.float64(-0.0),
            np.float16(np.nan),
            np.int64(-3),
            np.uint64(2**64 - 1),
            np.bool_(True),
            np.float64(np.inf),
        ],
        "floats": [float("inf"), -float("inf"), float("nan"), -0.0, 1e308, 5e-324, 0.1],
        "ints": [0, -1, 2**100, True, False],
        "keys": {1: "int", 2.5: "float", None: "none", False: "bool", "s": "str"},
        "float_keys": {float("inf"): 1},
        "tag_lookalike": {"__tensor__": "not a tensor", "__tuple__": [1, 2]},
        "nesting": ((), [], {}, ([(1,)],), {"a": ({"b": [None]},)}),
        "unicode": 'ünïcödé ✓ \n\t"quotes"',
    }
    path = save_checkpoint(tmp_path / "edge.safetensors", state)
    loaded = load_checkpoint(path)

    swapped_state = {"swapped": swapped}
    save_checkpoint(tmp_path / "swapped.safetensors", swapped_state)
    swapped_loaded = load_checkpoint(tmp_path / "swapped.safetensors")["swapped"]

    assert_same(state, loaded)
    assert loaded["views"]["same_view_twice"][0] is loaded["views"]["same_view_twice"][1]
    assert loaded["dtypes"]["empty"] is not loaded["dtypes"]["empty_too"]
    # Byte order becomes native; the values stay the same.
    assert swapped_loaded.dtype == np.dtype("=u4")
    np.testing.assert_array_equal(swapped_loaded, swapped)


def test_parameters_and_ordered_dicts_are_kept(tmp_path: Path) -> None:
    linear = nn.Linear(2, 3)
    state = {"params": [linear.weight, linear.bias], "sd": OrderedDict(a=1)}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "p.safetensors", state))

    assert type(loaded["params"][0]) is torch.Tensor  # saved as data, loaded as plain tensors
    assert torch.equal(loaded["params"][0], linear.weight.detach())
    assert_same(state["sd"], loaded["sd"])


def test_map_location_accepts_devices_and_rejects_nonsense(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(2)})
    assert load_checkpoint(path, map_location=torch.device("cpu"))["w"].device.type == "cpu"
    with pytest.raises(
        ValueError,
        match="map_location must name a device such as 'cpu' or 'cuda:0', got 'gpu-please'",
    ):
        load_checkpoint(path, map_location="gpu-please")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_saved_from_cpu_copies_and_mapped_back(tmp_path: Path) -> None:
    weight = torch.randn(3, 4, device="cuda")
    state = {"w": weight, "tied": weight, "t": weight.T}
    path = save_checkpoint(tmp_path / "cuda.safetensors", state)

    on_cpu = load_checkpoint(path)
    on_gpu = load_checkpoint(path, map_location="cuda")

    assert on_cpu["w"].device.type == "cpu" and on_gpu["w"].device.type == "cuda"
    assert torch.equal(on_cpu["w"], weight.cpu()) and torch.equal(on_gpu["t"], weight.T)
    assert on_gpu["w"] is on_gpu["tied"]


def test_save_creates_parent_directories(tmp_path: Path) -> None:
    path = save_checkpoint(str(tmp_path / "a" / "b" / "c.safetensors"), {"step": 1})
    assert path.is_file()
    assert load_checkpoint(path) == {"step": 1}


# ----------------------------------------------------------------------------- bad input


class Point(NamedTuple):
    x: int
    y: int


@pytest.mark.parametrize(
    "state,message",
    [
        (
            {"optimizer": {"foo": lambda x: x}},
            r"cannot save state\['optimizer'\]\['foo'\]: unsupported type function",
        ),
        ({"a": [1, {2, 3}]}, r"cannot save state\['a'\]\[1\]: unsupported type set"),
        ({"p": Point(1, 2)}, r"cannot save state\['p'\]: unsupported type Point"),
        ({"c": 1 + 2j}, r"cannot save state\['c'\]: unsupported type complex"),
        ({"o": object()}, r"cannot save state\['o'\]: unsupported type object; expected dict"),
        (
            {"m": {(1, 2): "tuple key"}},
            r"cannot save state\['m'\]: dict key \(1, 2\) has unsupported type tuple; "
            r"expected str, int, float, bool or None",
        ),
        (
            {"t": torch.zeros(2, dtype=torch.complex128)},
            r"cannot save state\['t'\]: unsupported tensor dtype complex128; expected one of",
        ),
        (
            {"t": torch.zeros(2, device="meta")},
            r"cannot save state\['t'\]: unsupported tensor \(layout torch.strided, device meta",
        ),
        (
            {"s": torch.eye(2).to_sparse()},
            r"cannot save state\['s'\]: unsupported tensor \(layout torch.sparse_coo",
        ),
        (
            {"a": np.array(["x", "y"])},
            r"cannot save state\['a'\]: unsupported numpy array dtype <U1; expected a bool, "
            "int, uint or float of at most 64 bits",
        ),
        (
            {"n": np.complex128(1)},
            r"cannot save state\['n'\]: unsupported numpy scalar dtype complex128",
        ),
    ],
)
def test_unsupported_values_name_their_key_path(
    tmp_path: Path, state: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match=message):
        save_checkpoint(path, state)
    assert list(tmp_path.iterdir()) == []  # rejected before any file was touched


def test_cycles_and_non_mapping_states_are_rejected(tmp_path: Path) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match=r"cannot save state\['loop'\]\[1\]: it contains itself"):
        save_checkpoint(tmp_path / "c.safetensors", {"loop": loop})
    with pytest.raises(ValueError, match="state must be a mapping \\(e.g. a dict\\), got list"):
        save_checkpoint(tmp_path / "c.safetensors", [1, 2])  # type: ignore[arg-type]


def test_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="checkpoint file not found") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        read_checkpoint_state(path)


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"checkpoint path {tmp_path} is not a file"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=f"cannot write to {tmp_path}: it is a directory"):
        save_checkpoint(tmp_path, {"a": 1})


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint at all", b"\x80\x04K\x01."])
def test_garbage_file_is_not_a_safetensors_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(
        ValueError,
        match=f"{path} is not a safetensors file .*; expected a "
        "checkpoint written by lstmkit.training.checkpoint.save_checkpoint",
    ):
        load_checkpoint(path)


def test_truncated_checkpoint_is_not_a_safetensors_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"{path} is not a safetensors file"):
        load_checkpoint(path)


def test_plain_safetensors_file_is_not_an_lstmkit_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"format": "pt"})
    message = (
        f"{path} is a safetensors file but not an lstmkit checkpoint: its metadata has keys "
        r"\['format'\], expected 'lstmkit.format' and 'lstmkit.state'"
    )
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=message):
        read_checkpoint_state(path)


def test_unknown_format_version_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    save_file({}, path, metadata={"lstmkit.format": "99", "lstmkit.state": "{}"})
    with pytest.raises(ValueError, match=f"{path} has checkpoint format '99', expected '1'"):
        load_checkpoint(path)


def test_inconsistent_state_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    state = {"w": {"__tensor__": "missing", "dtype": "float32", "shape": [2]}}
    save_file({}, path, metadata={"lstmkit.format": "1", "lstmkit.state": json.dumps(state)})
    with pytest.raises(
        ValueError,
        match=r"state\['w'\] refers to tensor 'missing', which the "
        "file lacks",
    ):
        load_checkpoint(path)

    state = {"w": {"__tensor__": "w", "dtype": "float32", "shape": [3]}}
    save_file(
        {"w": torch.ones(2)},
        path,
        metadata={"lstmkit.format": "1", "lstmkit.state": json.dumps(state)},
    )
    with pytest.raises(
        ValueError,
        match=r"tensor 'w' for state\['w'\] is float32 \[2\], "
        r"expected float32 \[3\]",
    ):
        load_checkpoint(path)

    save_file({}, path, metadata={"lstmkit.format": "1", "lstmkit.state": "{not json"})
    with pytest.raises(ValueError, match="the 'lstmkit.state' metadata is not valid JSON"):
        load_checkpoint(path)

    state = {"x": {"__float__": "huge"}}
    save_file({}, path, metadata={"lstmkit.format": "1", "lstmkit.state": json.dumps(state)})
    with pytest.raises(
        ValueError,
        match=r"malformed checkpoint at state\['x'\]: found float "
        "'huge', expected 'nan', 'inf' or '-inf'",
    ):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- atomicity


def test_failed_replace_keeps_previous_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "ckpt.safetensors", {"step": 1, "w": torch.ones(3)})

    def crash(src: Any, dst: Any) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()

    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_serialization_failing_midway_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "ckpt.safetensors", {"step": 1})

    def half_write(tensors: Any, filename: Any, metadata: Any = None) -> None:
        Path(filename).write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"trunc')
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(checkpoint, "save_file", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.ones(2)})
    monkeypatch.undo()

    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]
    assert load_checkpoint(path) == {"step": 1}


def test_overwrite_replaces_the_whole_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.ones(1000)})
    save_checkpoint(path, {"w": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]
    assert torch.equal(load_checkpoint(path)["w"], torch.zeros(2))


def test_atomic_write_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = atomic_write_text(tmp_path / "run" / "config.json", '{"a": 1, "é": 2}\n')
    assert path.read_text(encoding="utf-8") == '{"a": 1, "é": 2}\n'
    atomic_write_text(path, "second")
    assert path.read_text(encoding="utf-8") == "second"

    monkeypatch.setattr(checkpoint.os, "replace", lambda src, dst: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        atomic_write_text(path, "third")
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "second"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]

    with pytest.raises(ValueError, match="text must be a str, got bytes"):
        atomic_write_text(path, b"bytes")  # type: ignore[arg-type]


def test_new_files_get_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ckpt.safetensors", {"a": 1})
    finally:
        os.umask(umask)
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- peeking, no pickle


class _NoTensorReads:
    """Wraps a safe_open handle and fails the test if any tensor data is requested."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __enter__(self) -> _NoTensorReads:
        self._handle.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.__exit__(*exc)

    def metadata(self) -> Any:
        return self._handle.metadata()

    def keys(self) -> Any:
        return self._handle.keys()

    def get_tensor(self, name: str) -> Any:
        raise AssertionError(f"read_checkpoint_state loaded tensor {name!r}")

    get_slice = get_tensor


def test_read_checkpoint_state_peeks_without_loading_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = example_state()
    path = save_checkpoint(tmp_path / "ckpt.safetensors", state)
    real_open = checkpoint.safe_open
    monkeypatch.setattr(checkpoint, "safe_open", lambda *a, **k: _NoTensorReads(real_open(*a, **k)))

    peek = read_checkpoint_state(path)

    assert peek["step"] == 12
    assert peek["config"] == state["config"]
    assert peek["model"]["embed.weight"] == "tensor(float32, [11, 6])"
    assert peek["model"]["lstm.weight_ih_l0"] == "tensor(float32, [24, 6])"
    assert peek["optimizer"]["state"][0]["step"] == "tensor(float32, [])"
    assert peek["rng"]["numpy"][1] == "ndarray(uint32, [624])"
    assert peek["optimizer"]["param_groups"] == [
        {**group, "params": group["params"]} for group in state["optimizer"]["param_groups"]
    ]
    with pytest.raises(AssertionError, match="loaded tensor"):
        load_checkpoint(path)  # the wrapper does catch real loads


def test_file_is_safetensors_with_json_and_no_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "ckpt.safetensors", example_state())
    raw = path.read_bytes()

    assert not raw.startswith((b"\x80", b"PK\x03\x04"))  # neither pickle nor torch.save's zip
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["lstmkit.format"] == "1"
    json.loads(header["__metadata__"]["lstmkit.state"])  # the state is strict JSON
    assert "embed.weight" not in header and "model/embed.weight" in header  # readable names

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("loading a checkpoint must never unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 12
