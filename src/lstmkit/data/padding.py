"""Padding, truncation and masks: turning ragged sequences into one rectangular batch.

A batch of B sequences of lengths T_i becomes one tensor (B, T, *F) plus the bookkeeping that
says which steps are real::

    sequences        post padding        pre padding         mask (post)
    [a b c]          [a b c]             [a b c]             [1 1 1]
    [d e]       ->   [d e 0]             [0 d e]             [1 1 0]
    [f]              [f 0 0]             [0 0 f]             [1 0 0]

Truncation is never silent: ``pad_sequences`` returns a ``PaddedBatch`` whose ``truncated``
flags say which sequences lost steps, and whose ``lengths`` count the steps that were kept.

Nothing here runs at import time; every check raises ``ValueError`` (or ``TypeError`` for an
argument of the wrong kind) with a message naming what was received and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PaddedBatch",
    "check_lengths",
    "lengths_to_mask",
    "mask_to_lengths",
    "pad_sequences",
    "reverse_padded",
    "truncate_sequence",
]

_SIDES: tuple[str, ...] = ("post", "pre")
_PREVIEW_ITEMS = 8


class PaddedBatch(NamedTuple):
    """A padded batch and the bookkeeping needed to read it correctly.

    Fields:
        data: (B, T, *F) the padded values.
        lengths: (B,) int64 on the CPU, the number of valid (kept) steps per sequence.
        mask: (B, T) bool on ``data``'s device, True at valid steps.
        padding: ``"post"`` (valid steps first) or ``"pre"`` (valid steps last).
        truncated: (B,) bool on the CPU, True where a sequence was cut to fit ``T``.
    """

    data: Tensor
    lengths: Tensor
    mask: Tensor
    padding: str
    truncated: Tensor


# --------------------------------------------------------------------------- private checks


def _preview(values: Tensor) -> str:
    """Short printable form of a 1-D tensor's values, elided after a few items."""
    items = values.flatten().tolist()
    if len(items) <= _PREVIEW_ITEMS:
        return str(items)
    head = ", ".join(str(v) for v in items[:_PREVIEW_ITEMS])
    return f"[{head}, ...] ({len(items)} values)"


def _check_side(name: str, value: object) -> str:
    """Return ``value`` if it is ``"post"`` or ``"pre"``, else raise ``ValueError``."""
    if not isinstance(value, str) or value not in _SIDES:
        raise ValueError(f"{name} must be 'post' or 'pre', got {value!r}")
    return value


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int if it is a whole number (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} of type {type(value).__name__}"
        )
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    """True for the integer dtypes (bool, float and complex excluded)."""
    return dtype != torch.bool and not dtype.is_floating_point and not dtype.is_complex


def _as_int_vector(name: str, values: object) -> Tensor:
    """Convert a list/tuple/numpy array/tensor of ints into a 1-D integer tensor.

    Floats are refused even when they hold whole numbers: a length is a count, and a float
    length is almost always a bug upstream (a mean, a division) rather than a count.
    """
    if isinstance(values, Tensor):
        tensor = values.detach()
    elif isinstance(values, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(values))
    elif isinstance(values, (list, tuple)):
        # An empty list would otherwise become float32 and be reported as a dtype problem.
        tensor = torch.as_tensor(values) if values else torch.zeros(0, dtype=torch.int64)
    else:
        raise TypeError(
            f"{name} must be a 1-D list, tuple, numpy array or torch tensor of integers, "
            f"got {type(values).__name__}"
        )
    if not _is_integer_dtype(tensor.dtype):
        raise ValueError(
            f"{name} must have an integer dtype, got {tensor.dtype} with values "
            f"{_preview(tensor)}; pass whole-number counts (e.g. lengths.long())"
        )
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor


def _check_lengths_range(lengths: Tensor, minimum: int, seq_len: int) -> None:
    """Raise ``ValueError`` naming the first value outside ``[minimum, seq_len]``."""
    if lengths.numel() == 0:
        return
    low, high = int(lengths.min()), int(lengths.max())
    expected = f"lengths must be between {minimum} and the sequence length {seq_len}"
    if low < minimum:
        index = int(torch.argmin(lengths))
        raise ValueError(f"{expected}, got min {low} (at index {index})")
    if high > seq_len:
        index = int(torch.argmax(lengths))
        raise ValueError(f"{expected}, got max {high} (at index {index})")


def _as_sequence(seq: object, index: int | None) -> Tensor:
    """Convert one sequence (tensor, numpy array or list of numbers) into a tensor (T, *F)."""
    where = "sequence" if index is None else f"sequences[{index}]"
    if isinstance(seq, Tensor):
        tensor = seq
    elif isinstance(seq, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(seq))
    elif isinstance(seq, (list, tuple)):
        try:
            tensor = torch.as_tensor(seq)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{where} must be a tensor, numpy array or (nested) list of numbers; "
                f"could not convert it: {err}"
            ) from err
    else:
        raise TypeError(
            f"{where} must be a tensor, numpy array or list of numbers, got {type(seq).__name__}"
        )
    if tensor.dim() == 0:
        raise ValueError(f"{where} must have a time dimension (shape (T, *F)), got a scalar")
    return tensor


# --------------------------------------------------------------------------- truncation


def truncate_sequence(seq: Tensor | np.ndarray | list, maxlen: int, side: str = "post") -> Tensor:
    """Cut one sequence (T, *F) to at most ``maxlen`` steps along its first dimension.

    ``side`` says where steps are dropped, as Keras' ``truncating``::

        seq = [a b c d e], maxlen = 3
        side="post" -> [a b c]      keep the first maxlen steps
        side="pre"  -> [c d e]      keep the last maxlen steps

    A sequence already within ``maxlen`` is returned unchanged. The result is a view of a tensor
    input (slicing), so gradients flow through it.
    """
    maxlen = _check_int("maxlen", maxlen, 1)
    side = _check_side("side", side)
    tensor = _as_sequence(seq, None)
    if tensor.shape[0] <= maxlen:
        return tensor
    return tensor[:maxlen] if side == "post" else tensor[-maxlen:]


# --------------------------------------------------------------------------- padding


def _convert_all(sequences: Sequence[object]) -> list[Tensor]:
    """Convert every sequence, checking it is non-empty and shares the first one's features."""
    tensors: list[Tensor] = []
    for index, seq in enumerate(sequences):
        tensor = _as_sequence(seq, index)
        if tensor.shape[0] == 0:
            raise ValueError(
                f"sequences[{index}] is empty (length 0, shape {tuple(tensor.shape)}); "
                "every sequence needs at least one step"
            )
        if tensors and tensor.shape[1:] != tensors[0].shape[1:]:
            raise ValueError(
                f"all sequences must share the feature shape of sequences[0], "
                f"{tuple(tensors[0].shape[1:])}; sequences[{index}] has feature shape "
                f"{tuple(tensor.shape[1:])} (full shape {tuple(tensor.shape)})"
            )
        tensors.append(tensor)
    return tensors


def _common_dtype(tensors: list[Tensor]) -> torch.dtype:
    """The dtype all sequences promote to (ints stay ints, any float makes the batch float)."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def pad_sequences(
    sequences: Sequence[Tensor | np.ndarray | list],
    *,
    maxlen: int | None = None,
    padding: str = "post",
    truncating: str = "post",
    value: float = 0.0,
    dtype: torch.dtype | None = None,
) -> PaddedBatch:
    """Pad (and if needed truncate) ragged sequences into one batch (B, T, *F).

    Each sequence is (T_i, *F) or (T_i,): a tensor, numpy array or list of numbers. ``T`` is
    ``maxlen``, or the longest T_i when ``maxlen`` is None. With sequences [a b c d], [e f],
    [g] and maxlen=3 (``.`` is ``value``)::

        padding="post", truncating="post"     padding="pre", truncating="pre"
        [a b c]   truncated=True              [b c d]   truncated=True
        [e f .]                               [. e f]
        [g . .]                               [. . g]
        mask [1 1 1] [1 1 0] [1 0 0]          mask [1 1 1] [0 1 1] [0 0 1]

    ``truncating="post"`` keeps the first ``maxlen`` steps, ``"pre"`` keeps the last. The
    result's ``lengths`` count kept steps; ``truncated`` flags every sequence that was cut.

    ``dtype`` defaults to the promoted dtype of the inputs (lists of ints give int64, lists of
    floats give torch's default float). The batch lives on the first sequence's device.
    Gradients flow from ``data`` back to tensor inputs.
    """
    if not isinstance(sequences, (list, tuple)):
        raise TypeError(
            f"sequences must be a list or tuple of sequences, got {type(sequences).__name__}"
        )
    if len(sequences) == 0:
        raise ValueError("sequences must be a non-empty list or tuple, got an empty one")
    padding = _check_side("padding", padding)
    truncating = _check_side("truncating", truncating)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a real number, got {value!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}")
    tensors = _convert_all(sequences)
    original = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)  # (B,)
    steps = int(original.max()) if maxlen is None else _check_int("maxlen", maxlen, 1)
    out_dtype = _common_dtype(tensors) if dtype is None else dtype
    if _is_integer_dtype(out_dtype) and float(value) != int(value):
        raise ValueError(
            f"value {value!r} cannot be stored in an integer batch of dtype {out_dtype}; "
            "pass a whole number or a floating dtype (e.g. dtype=torch.float32)"
        )
    device = tensors[0].device
    data = torch.full(
        (len(tensors), steps, *tensors[0].shape[1:]), value, dtype=out_dtype, device=device
    )  # (B, T, *F)
    for row, tensor in enumerate(tensors):
        kept = truncate_sequence(tensor, steps, truncating)  # (L_i, *F)
        start = 0 if padding == "post" else steps - kept.shape[0]
        data[row, start : start + kept.shape[0]] = kept.to(device=device, dtype=out_dtype)
    lengths = original.clamp(max=steps)  # (B,)
    mask = lengths_to_mask(lengths, steps, padding).to(device)  # (B, T)
    return PaddedBatch(data, lengths, mask, padding, original > steps)


# --------------------------------------------------------------------------- masks


def lengths_to_mask(
    lengths: Tensor | np.ndarray | Sequence[int],
    max_len: int | None = None,
    padding: str = "post",
) -> Tensor:
    """Boolean mask (B, T) that is True at the valid steps of each sequence.

    ``T`` is ``max_len`` or, if None, ``max(lengths)``. With lengths [3, 1, 0] and T=4::

        padding="post" (left-aligned)     padding="pre" (right-aligned)
        [1 1 1 0]                         [0 1 1 1]
        [1 0 0 0]                         [0 0 0 1]
        [0 0 0 0]                         [0 0 0 0]

    Lengths of 0 are allowed here (an all-False row). The mask is on ``lengths``' device.
    """
    lengths = _as_int_vector("lengths", lengths)  # (B,)
    padding = _check_side("padding", padding)
    if lengths.numel() and int(lengths.min()) < 0:
        index = int(torch.argmin(lengths))
        raise ValueError(
            f"lengths must be >= 0, got {int(lengths[index])} (at index {index}); "
            f"lengths = {_preview(lengths)}"
        )
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        steps = longest
    else:
        steps = _check_int("max_len", max_len, 0)
        if steps < longest:
            index = int(torch.argmax(lengths))
            raise ValueError(
                f"max_len must be >= the longest length, got max_len={steps} but "
                f"lengths[{index}] = {longest}"
            )
    positions = torch.arange(steps, device=lengths.device)  # (T,)
    if padding == "post":
        return positions[None, :] < lengths[:, None]  # (B, T)
    return positions[None, :] >= (steps - lengths)[:, None]  # (B, T)


def _first_gap(row: list[bool]) -> tuple[int, int]:
    """Positions (first False, next True after it) of a row that is not left-aligned."""
    first_false = row.index(False)
    return first_false, row.index(True, first_false)


def mask_to_lengths(mask: Tensor) -> Tensor:
    """Count the valid steps of a left-aligned (post-padded) mask (B, T) -> lengths (B,) int64.

    Every row must be a run of True followed only by False::

        [1 1 1 0]  -> 3          accepted (post padding)
        [1 0 0 0]  -> 1
        [0 1 1 1]  -> error      valid steps after padding (pre padding or holes)

    Raises ``ValueError`` naming the first row that is not left-aligned. The lengths are on the
    mask's device.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor of dtype bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must have dtype torch.bool, got {mask.dtype}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D (B, T), got shape {tuple(mask.shape)}")
    lengths = mask.sum(dim=1, dtype=torch.int64)  # (B,)
    expected = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    bad_rows = (mask != expected).any(dim=1)  # (B,)
    if bool(bad_rows.any()):
        row = int(torch.nonzero(bad_rows)[0])
        first_false, late_true = _first_gap(mask[row].tolist())
        raise ValueError(
            "mask must be left-aligned: valid (True) steps must come first, then only padding "
            f"(False), as with padding='post'; row {row} has a True at step {late_true} after "
            f"a False at step {first_false}"
        )
    return lengths


# --------------------------------------------------------------------------- lengths


def check_lengths(
    lengths: Tensor | np.ndarray | Sequence[int], batch_size: int, seq_len: int
) -> Tensor:
    """Validate the ``lengths`` of a post-padded batch and return them as int64 on the CPU.

    ``lengths[b]`` is the number of valid steps of row ``b`` of a batch (B, T, ...)::

        batch (B=3, T=4)    lengths
        [a b c 0]           3          each value must lie in [1, T]
        [d 0 0 0]           1          and there must be exactly B values
        [e f g h]           4

    Accepts a list, tuple, numpy array or tensor of integers. Float values are refused even if
    whole (``torch.tensor([3.0])``): cast explicitly. Raises ``ValueError`` naming the shape or
    value received and the range expected (``TypeError`` for a non-sequence argument).
    """
    batch_size = _check_int("batch_size", batch_size, 0)
    seq_len = _check_int("seq_len", seq_len, 0)
    tensor = _as_int_vector("lengths", lengths)  # (B,)
    if tensor.shape[0] != batch_size:
        raise ValueError(
            f"lengths must have one entry per sequence in the batch: expected shape "
            f"({batch_size},), got shape {tuple(tensor.shape)}"
        )
    _check_lengths_range(tensor, 1, seq_len)
    return tensor.to(device="cpu", dtype=torch.int64)


# --------------------------------------------------------------------------- reversal


def reverse_padded(
    x: Tensor, lengths: Tensor | np.ndarray | Sequence[int], batch_first: bool = True
) -> Tensor:
    """Reverse each post-padded sequence within its valid length, leaving padding in place.

    This is the input of the backward direction of a bidirectional LSTM::

        x                 lengths     result
        [a b c 0 0]       3           [c b a 0 0]
        [d e 0 0 0]       2           [e d 0 0 0]
        [f g h i j]       5           [j i h g f]

    ``x`` is (B, T, *F) when ``batch_first`` else (T, B, *F); the result has the same layout.
    Implemented as one gather, so it is differentiable and applying it twice is the identity.
    Lengths of 0 are allowed (the row is left as is).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        layout = "(B, T, *F)" if batch_first else "(T, B, *F)"
        raise ValueError(f"x must have at least 2 dims {layout}, got shape {tuple(x.shape)}")
    batch = x.transpose(0, 1) if not batch_first else x  # (B, T, *F)
    n_batch, steps = batch.shape[0], batch.shape[1]
    lens = _as_int_vector("lengths", lengths)  # (B,)
    if lens.shape[0] != n_batch:
        raise ValueError(
            f"lengths must have one entry per sequence: expected shape ({n_batch},), "
            f"got shape {tuple(lens.shape)}"
        )
    _check_lengths_range(lens, 0, steps)
    source = reversal_source(lens.to(device=x.device, dtype=torch.int64), steps).t()  # (B, T)
    rows = torch.arange(n_batch, device=x.device)[:, None]  # (B, 1)
    reversed_batch = batch[rows, source]  # (B, T, *F)
    return reversed_batch if batch_first else reversed_batch.transpose(0, 1)


def reversal_source(lengths: Tensor, steps: int) -> Tensor:
    """(T, B) int64: the step that step t of each reversed sequence reads, ``len - 1 - t``
    within its length and ``t`` in the padding. ``lengths`` (B,) int64, already checked; the
    index is built on its device."""
    positions = torch.arange(steps, device=lengths.device)[:, None]  # (T, 1)
    lens = lengths[None, :]  # (1, B)
    return torch.where(positions < lens, lens - 1 - positions, positions)
