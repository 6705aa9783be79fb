"""Checkpoints are data: one safetensors file, written atomically, and loading never runs code.

A checkpoint is a single ``.safetensors`` file. Every tensor (and numpy array) of the state goes
into the tensor section; everything else (the nesting, numbers, strings, configs, optimizer
hyper-parameters) is JSON kept in the safetensors header metadata::

    [8 bytes: header length][header JSON][tensor bytes ...]
                                 |
                                 +-- "__metadata__": {
                                        "lstmkit.format": "1",
                                        "lstmkit.state": "<the state as JSON, see below>"
                                     }

Loading reads that JSON and the raw tensor bytes, nothing else: there is no pickle and no
``torch.load`` anywhere, so a checkpoint cannot run code when it is opened.

The state JSON mirrors the saved structure. Values JSON has no word for are small tagged objects:

    {"__tensor__": "model/lstm.weight_ih_l0", "dtype": "float32", "shape": [24, 6]}
    {"__ndarray__": "rng/numpy/1", "dtype": "uint32", "shape": [624]}
    {"__npscalar__": 0.5, "dtype": "float32"}      a numpy scalar (np.float32(0.5))
    {"__float__": "nan"}                           also "inf" and "-inf"
    {"__tuple__": [...]}                           tuples stay tuples, lists stay lists
    {"__dict__": [[key, value], ...]}              a dict with a non-str key (optimizer "state")
    {"__odict__": [[key, value], ...], "metadata": ...}
                                                   an OrderedDict, e.g. ``module.state_dict()``,
                                                   with its ``_metadata`` (module versions)

``__tensor__``/``__ndarray__`` values name an entry of the tensor section; an array's entry holds
its raw native-endian bytes (uint8), so any numpy bool/int/float dtype fits whatever torch
version reads it, and the tag says how to view them. Tensors that are the
same view of the same memory (tied weights) are stored once and come back as one tensor object
shared by both places, just as they were saved. A plain dict whose keys collide with a tag is
written in the ``__dict__`` form, so a tag can never be confused with user data.

The file appears whole or not at all: it is written to a temporary file in the same directory,
flushed and fsynced, then moved over the target with ``os.replace`` (the directory is fsynced too
where the platform allows). A crash mid-write leaves any previous checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "STATE_KEY",
    "atomic_write_text",
    "load_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT_KEY = "lstmkit.format"
STATE_KEY = "lstmkit.state"
FORMAT_VERSION = "1"

_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_NPSCALAR = "__npscalar__"
_FLOAT = "__float__"
_TUPLE = "__tuple__"
_DICT = "__dict__"
_ODICT = "__odict__"
_TAGS = frozenset({_TENSOR, _NDARRAY, _NPSCALAR, _FLOAT, _TUPLE, _DICT, _ODICT})

# Tensor dtypes the safetensors format can hold (the optional ones depend on the torch version).
_TENSOR_DTYPES = frozenset(
    dtype
    for dtype in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        getattr(torch, "uint16", None),
        getattr(torch, "uint32", None),
        getattr(torch, "uint64", None),
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        getattr(torch, "float8_e4m3fn", None),
        getattr(torch, "float8_e5m2", None),
    )
    if dtype is not None
)
# numpy dtypes kept exactly: their kind (b)ool, (i)nt, (u)int, (f)loat, at most 8 bytes wide.
_NUMPY_KINDS = frozenset("biuf")
_SUPPORTED = (
    "dict, OrderedDict, list, tuple, str, int, float, bool, None, torch.Tensor, "
    "numpy.ndarray or a numpy bool/int/float scalar"
)
_RESERVED_NAMES = frozenset({"__metadata__"})


# ----------------------------------------------------------------------------- public API


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` as one safetensors file, atomically; return the path.

    ``state`` may nest dict / OrderedDict / list / tuple / str / int / float / bool / None /
    torch.Tensor / numpy.ndarray / numpy scalars, e.g. a model's and an optimizer's
    ``state_dict()`` next to the config, the step and the RNG states. Tensors on other devices
    are saved from CPU copies. Anything else raises ``ValueError`` naming its key path, before any
    file is touched. Parent directories are created.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be a mapping (e.g. a dict), got {type(state).__name__}")
    top = state if type(state) in (dict, OrderedDict) else dict(state)
    encoder = _Encoder()
    encoded = encoder.encode(top, ())
    metadata = {
        FORMAT_KEY: FORMAT_VERSION,
        STATE_KEY: json.dumps(encoded, allow_nan=False, separators=(",", ":")),
    }
    target = _atomic_write(path, lambda tmp: save_file(encoder.tensors, tmp, metadata=metadata))
    logger.debug("saved checkpoint %s (%d tensors)", target, len(encoder.tensors))
    return target


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; tensors go to ``map_location``.

    The result has the saved structure and types (tuples, non-str keys, OrderedDicts, numpy
    arrays and scalars included). numpy arrays always stay on the CPU.
    """
    device = _as_device(map_location)
    file = _checked_file(path)
    with _open(file) as handle:
        names = set(handle.keys())
        cache: dict[str, torch.Tensor] = {}

        def tensor(name: str, dtype: str, shape: list[int], where: str) -> torch.Tensor:
            # One entry may be referenced from several places (tied weights): load it once.
            if name not in cache:
                loaded = _read_entry(handle, names, file, name, dtype, shape, where)
                cache[name] = loaded.to(device)
            return cache[name]

        def array(name: str, dtype: str, shape: list[int], where: str) -> np.ndarray:
            view = _array_dtype(dtype, file, where)
            size = math.prod(shape) * view.itemsize
            raw = _read_entry(handle, names, file, name, "uint8", [size], where)
            return raw.numpy().view(view).reshape(shape)

        state = _Decoder(file, tensor, array).decode_top(_state_json(handle, file))
    logger.debug("loaded checkpoint %s (%d tensors)", file, len(cache))
    return state


def read_checkpoint_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Peek at a checkpoint without reading any tensor data.

    Returns the saved structure with each tensor replaced by a description string such as
    ``"tensor(float32, [3, 4])"`` and each numpy array by ``"ndarray(uint32, [624])"``.
    """
    file = _checked_file(path)
    with _open(file) as handle:
        encoded = _state_json(handle, file)
    return _Decoder(
        file,
        lambda _name, dtype, shape, _where: f"tensor({dtype}, {shape})",
        lambda _name, dtype, shape, _where: f"ndarray({dtype}, {shape})",
    ).decode_top(encoded)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temp file, fsync, ``os.replace``); return the path.

    Readers see either the old file or the complete new one, never a partial write. Parent
    directories are created.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    data = text.encode(encoding)
    return _atomic_write(path, lambda tmp: tmp.write_bytes(data))


# ----------------------------------------------------------------------------- atomic writes


def _atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Fill a temporary sibling of ``path`` with ``write``, fsync it, then move it into place."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"cannot write to {target}: it is a directory, expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename within one filesystem (atomic). O_EXCL makes the
    # name ours alone; mode 0o666 lets the umask decide permissions like a normal open() would.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = tmp.stat().st_mode & 0o777
        write(tmp)
        # A writer may replace the file instead of filling it (safetensors writes its own
        # temporary file, mode 0o600, and renames it over ours): keep the umask-given mode.
        if tmp.stat().st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some platforms (Windows) cannot open directories, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("could not fsync directory %s", directory)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- encoding


class _Attr:
    """A step into an attribute in a key path (``state['model']._metadata``)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _describe(path: tuple[Any, ...]) -> str:
    """Render a key path the way it would be written in Python: ``state['optimizer'][0]``."""
    parts = ["state"]
    for step in path:
        parts.append(f".{step.name}" if isinstance(step, _Attr) else f"[{step!r}]")
    return "".join(parts)


def _encode_float(value: float) -> float | dict[str, str]:
    if math.isfinite(value):
        return value
    return {_FLOAT: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _Encoder:
    """Turns a state into JSON-ready data, collecting tensors in ``self.tensors``."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._aliases: dict[tuple[Any, ...], str] = {}  # identical views -> stored entry
        self._storages: set[int] = set()  # storages already used by a stored entry
        self._active: set[int] = set()  # containers being encoded (cycle detection)

    def encode(self, value: Any, path: tuple[Any, ...]) -> Any:
        kind = type(value)
        # Exact type checks: bool is an int, np.float64 is a float, a namedtuple is a tuple;
        # none of them would come back as themselves, so only the plain types pass here.
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return _encode_float(value)
        if isinstance(value, np.generic):
            return self._encode_np_scalar(value, path)
        if isinstance(value, torch.Tensor):
            return self._encode_tensor(value, path)
        if kind is np.ndarray:
            return self._encode_ndarray(value, path)
        if kind in (dict, OrderedDict, list, tuple):
            return self._encode_container(value, path)
        raise ValueError(
            f"cannot save {_describe(path)}: unsupported type {kind.__qualname__}; "
            f"expected {_SUPPORTED}"
        )

    def _encode_container(self, value: Any, path: tuple[Any, ...]) -> Any:
        if id(value) in self._active:
            raise ValueError(f"cannot save {_describe(path)}: it contains itself (a cycle)")
        self._active.add(id(value))
        try:
            if isinstance(value, dict):
                return self._encode_dict(value, path)
            items = [self.encode(item, (*path, i)) for i, item in enumerate(value)]
            return {_TUPLE: items} if type(value) is tuple else items
        finally:
            self._active.discard(id(value))

    def _encode_dict(self, value: dict[Any, Any], path: tuple[Any, ...]) -> Any:
        plain = type(value) is dict and all(type(k) is str and k not in _TAGS for k in value)
        if plain:
            return {k: self.encode(v, (*path, k)) for k, v in value.items()}
        pairs = [[self._encode_key(k, path), self.encode(v, (*path, k))] for k, v in value.items()]
        if type(value) is dict:
            return {_DICT: pairs}
        encoded: dict[str, Any] = {_ODICT: pairs}
        metadata = getattr(value, "_metadata", None)  # torch's state_dict() carries versions
        if metadata is not None:
            encoded["metadata"] = self.encode(metadata, (*path, _Attr("_metadata")))
        return encoded

    def _encode_key(self, key: Any, path: tuple[Any, ...]) -> Any:
        if key is None or type(key) in (str, int, bool):
            return key
        if type(key) is float:
            return _encode_float(key)
        raise ValueError(
            f"cannot save {_describe(path)}: dict key {key!r} has unsupported type "
            f"{type(key).__qualname__}; expected str, int, float, bool or None"
        )

    def _encode_np_scalar(self, value: np.generic, path: tuple[Any, ...]) -> dict[str, Any]:
        dtype = value.dtype
        if dtype.kind not in _NUMPY_KINDS or dtype.itemsize > 8:
            raise ValueError(
                f"cannot save {_describe(path)}: unsupported numpy scalar dtype {dtype}; "
                "expected a bool, int, uint or float of at most 64 bits"
            )
        item = value.item()  # exact: every such numpy value is a Python bool/int/float
        encoded = _encode_float(item) if isinstance(item, float) else item
        return {_NPSCALAR: encoded, "dtype": dtype.name}

    def _encode_tensor(self, tensor: torch.Tensor, path: tuple[Any, ...]) -> dict[str, Any]:
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_meta:
            raise ValueError(
                f"cannot save {_describe(path)}: unsupported tensor (layout {tensor.layout}, "
                f"device {tensor.device}, quantized {tensor.is_quantized}); expected a dense "
                "tensor with data"
            )
        if tensor.dtype not in _TENSOR_DTYPES:
            raise ValueError(
                f"cannot save {_describe(path)}: unsupported tensor dtype "
                f"{_dtype_name(tensor.dtype)}; expected one of "
                f"{', '.join(sorted(_dtype_name(d) for d in _TENSOR_DTYPES))}"
            )
        key = _alias_key(tensor)
        name = self._aliases.get(key) if key is not None else None
        if name is None:
            name = self._store(self._standalone(tensor), path)
            if key is not None:
                self._aliases[key] = name
        return {_TENSOR: name, "dtype": _dtype_name(tensor.dtype), "shape": list(tensor.shape)}

    def _encode_ndarray(self, array: np.ndarray, path: tuple[Any, ...]) -> dict[str, Any]:
        dtype = array.dtype
        if dtype.kind not in _NUMPY_KINDS or dtype.itemsize > 8:
            raise ValueError(
                f"cannot save {_describe(path)}: unsupported numpy array dtype {dtype}; "
                "expected a bool, int, uint or float of at most 64 bits"
            )
        # A fresh, C-ordered, native-endian copy (never shares memory with another entry),
        # stored as its bytes: torch need not know the dtype (uint32 needs torch >= 2.3).
        native = np.array(array, dtype=dtype.newbyteorder("="), order="C", copy=True)
        name = self._store(torch.from_numpy(native.reshape(-1).view(np.uint8)), path)
        return {_NDARRAY: name, "dtype": native.dtype.name, "shape": list(native.shape)}

    def _standalone(self, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU, contiguous tensor that shares memory with no other stored entry."""
        data = tensor.detach()
        if data.device.type != "cpu":
            data = data.to("cpu")
        data = data.resolve_conj().resolve_neg().contiguous()
        if data.numel() == 0:
            return data
        # safetensors refuses entries whose memory overlaps; different views of one storage
        # (slices of a tied matrix, say) are therefore stored as separate copies.
        storage = data.untyped_storage().data_ptr()
        if storage in self._storages:
            data = data.clone()
            storage = data.untyped_storage().data_ptr()
        self._storages.add(storage)
        return data

    def _store(self, tensor: torch.Tensor, path: tuple[Any, ...]) -> str:
        """Add ``tensor`` under a readable, unique name built from its key path."""
        base = "/".join(s.name if isinstance(s, _Attr) else str(s) for s in path) or "tensor"
        name, n = base, 1
        while name in self.tensors or name in _RESERVED_NAMES:
            n += 1
            name = f"{base}#{n}"
        self.tensors[name] = tensor
        return name


def _alias_key(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """Identity of a view: equal keys mean the very same elements seen the very same way."""
    if tensor.numel() == 0:
        return None
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
        tensor.is_conj(),
        tensor.is_neg(),
    )


# ----------------------------------------------------------------------------- decoding

# (name, dtype, shape, where) -> the value to put in place of a tensor / array tag
_Source = Callable[[str, str, list[int], str], Any]


class _Decoder:
    """Rebuilds a state from its JSON form; tensors and arrays come from the two sources."""

    def __init__(self, file: Path, tensor: _Source, array: _Source) -> None:
        self._file = file
        self._tensor = tensor
        self._array = array

    def decode_top(self, encoded: Any) -> dict[str, Any]:
        state = self.decode(encoded, ())
        if not isinstance(state, dict):
            raise ValueError(
                f"{self._file}: the saved state is a {type(state).__name__}, expected a dict"
            )
        return state

    def decode(self, node: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(node, list):
            return [self.decode(item, (*path, i)) for i, item in enumerate(node)]
        if not isinstance(node, dict):
            return node  # str, int, float, bool or None
        tags = [key for key in node if key in _TAGS]
        if not tags:
            return {k: self.decode(v, (*path, k)) for k, v in node.items()}
        if len(tags) > 1:
            self._fail(path, f"an entry with several tags {sorted(tags)}")
        return self._decode_tagged(tags[0], node, path)

    def _decode_tagged(self, tag: str, node: dict[str, Any], path: tuple[Any, ...]) -> Any:
        body = node[tag]
        if tag == _FLOAT:
            if body not in ("nan", "inf", "-inf"):
                self._fail(path, f"float {body!r}, expected 'nan', 'inf' or '-inf'")
            return float(body)
        if tag == _TUPLE:
            return tuple(self.decode(self._list(body, path), path))
        if tag in (_DICT, _ODICT):
            pairs = self._pairs(body, path)
            result: dict[Any, Any] = {} if tag == _DICT else OrderedDict()
            for key, value in pairs:
                result[key] = self.decode(value, (*path, key))
            if tag == _ODICT and "metadata" in node:
                metadata = self.decode(node["metadata"], (*path, _Attr("_metadata")))
                result._metadata = metadata  # type: ignore[attr-defined]
            return result
        if tag == _NPSCALAR:
            dtype = self._numpy_dtype(node.get("dtype"), path)
            value = self.decode(body, path)
            if type(value) not in (bool, int, float):
                self._fail(path, f"numpy scalar {value!r}, expected a bool, int or float")
            return dtype.type(value)
        # _TENSOR or _NDARRAY
        dtype, shape = node.get("dtype"), node.get("shape")
        if not (isinstance(body, str) and isinstance(dtype, str) and isinstance(shape, list)):
            self._fail(path, f"tensor entry {node!r}, expected name, dtype and shape")
        source = self._tensor if tag == _TENSOR else self._array
        return source(body, dtype, shape, _describe(path))

    def _pairs(self, body: Any, path: tuple[Any, ...]) -> list[tuple[Any, Any]]:
        pairs = []
        for pair in self._list(body, path):
            if not (isinstance(pair, list) and len(pair) == 2):
                self._fail(path, f"dict item {pair!r}, expected a [key, value] pair")
            key = self.decode(pair[0], path)
            if key is not None and type(key) not in (str, int, float, bool):
                self._fail(path, f"dict key {key!r}, expected str, int, float, bool or None")
            pairs.append((key, pair[1]))
        return pairs

    def _list(self, body: Any, path: tuple[Any, ...]) -> list[Any]:
        if not isinstance(body, list):
            self._fail(path, f"{type(body).__name__} {body!r}, expected a list")
        return body

    def _numpy_dtype(self, name: Any, path: tuple[Any, ...]) -> np.dtype[Any]:
        dtype = None
        if isinstance(name, str):
            with contextlib.suppress(TypeError):
                dtype = np.dtype(name)
        if dtype is None or dtype.kind not in _NUMPY_KINDS or dtype.itemsize > 8:
            self._fail(path, f"numpy dtype {name!r}, expected a bool, int, uint or float dtype")
        return dtype

    def _fail(self, path: tuple[Any, ...], found: str) -> NoReturn:
        raise ValueError(f"{self._file}: malformed checkpoint at {_describe(path)}: found {found}")


# ----------------------------------------------------------------------------- reading files


def _checked_file(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "checkpoint file not found", str(file))
    if not file.is_file():
        raise ValueError(f"checkpoint path {file} is not a file, expected a .safetensors file")
    return file


def _as_device(map_location: str | torch.device) -> torch.device:
    try:
        return torch.device(map_location)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"map_location must name a device such as 'cpu' or 'cuda:0', got {map_location!r}"
        ) from err


def _open(file: Path) -> Any:
    """Open the safetensors file lazily (header only; tensor data is read on request)."""
    try:
        return safe_open(file, framework="pt", device="cpu")
    except SafetensorError as err:
        raise ValueError(
            f"{file} is not a safetensors file ({err}); expected a checkpoint written by "
            "lstmkit.training.checkpoint.save_checkpoint"
        ) from err


def _state_json(handle: Any, file: Path) -> Any:
    """The decoded JSON of the state, after checking this is an lstmkit checkpoint we know."""
    metadata = handle.metadata() or {}
    if STATE_KEY not in metadata:
        raise ValueError(
            f"{file} is a safetensors file but not an lstmkit checkpoint: its metadata has keys "
            f"{sorted(metadata)}, expected {FORMAT_KEY!r} and {STATE_KEY!r}"
        )
    version = metadata.get(FORMAT_KEY)
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{file} has checkpoint format {version!r}, expected {FORMAT_VERSION!r} "
            "(written by a different lstmkit version?)"
        )
    try:
        return json.loads(metadata[STATE_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: the {STATE_KEY!r} metadata is not valid JSON ({err})") from err


def _array_dtype(name: str, file: Path, where: str) -> np.dtype[Any]:
    dtype = None
    with contextlib.suppress(TypeError):
        dtype = np.dtype(name)
    if dtype is None or dtype.kind not in _NUMPY_KINDS or dtype.itemsize > 8:
        raise ValueError(
            f"{file}: malformed checkpoint at {where}: found array dtype {name!r}, expected a "
            "numpy bool, int, uint or float dtype"
        )
    return dtype


def _read_entry(
    handle: Any, names: set[str], file: Path, name: str, dtype: str, shape: list[int], where: str
) -> torch.Tensor:
    """Read one entry of the tensor section and check it matches what the state says."""
    if name not in names:
        raise ValueError(f"{file}: {where} refers to tensor {name!r}, which the file lacks")
    tensor = handle.get_tensor(name)
    if _dtype_name(tensor.dtype) != dtype or list(tensor.shape) != shape:
        raise ValueError(
            f"{file}: tensor {name!r} for {where} is {_dtype_name(tensor.dtype)} "
            f"{list(tensor.shape)}, expected {dtype} {shape}"
        )
    return tensor
