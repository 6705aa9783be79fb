"""Tests for lstmkit.data.padding: golden layouts, masks, length checks and reversal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmkit.data import (
    PaddedBatch,
    check_lengths,
    lengths_to_mask,
    mask_to_lengths,
    pad_sequences,
    reverse_padded,
    truncate_sequence,
)

RAGGED = [[1, 2, 3, 4], [5, 6], [7]]


def _t(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


# --------------------------------------------------------------------------- pad_sequences


def test_pad_post_golden() -> None:
    batch = pad_sequences(RAGGED)
    assert isinstance(batch, PaddedBatch)
    assert torch.equal(batch.data, _t([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]]))
    assert torch.equal(batch.lengths, _t([[4, 2, 1]])[0])
    assert batch.lengths.dtype == torch.int64
    assert torch.equal(batch.mask, _t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).bool())
    assert batch.padding == "post"
    assert not batch.truncated.any()


def test_pad_pre_golden() -> None:
    batch = pad_sequences(RAGGED, padding="pre")
    assert torch.equal(batch.data, _t([[1, 2, 3, 4], [0, 0, 5, 6], [0, 0, 0, 7]]))
    assert torch.equal(batch.mask, _t([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]).bool())
    assert batch.padding == "pre"


def test_truncate_post_keeps_first_steps() -> None:
    batch = pad_sequences(RAGGED, maxlen=3, truncating="post")
    assert torch.equal(batch.data, _t([[1, 2, 3], [5, 6, 0], [7, 0, 0]]))
    assert batch.truncated.tolist() == [True, False, False]
    assert batch.lengths.tolist() == [3, 2, 1]


def test_truncate_pre_keeps_last_steps() -> None:
    batch = pad_sequences(RAGGED, maxlen=3, truncating="pre", padding="pre")
    assert torch.equal(batch.data, _t([[2, 3, 4], [0, 5, 6], [0, 0, 7]]))
    assert batch.truncated.tolist() == [True, False, False]
    assert torch.equal(batch.mask, _t([[1, 1, 1], [0, 1, 1], [0, 0, 1]]).bool())


def test_truncated_flags_several() -> None:
    batch = pad_sequences(RAGGED, maxlen=1)
    assert batch.data.tolist() == [[1], [5], [7]]
    assert batch.truncated.tolist() == [True, True, False]
    assert batch.lengths.tolist() == [1, 1, 1]


def test_maxlen_longer_than_all_pads_extra() -> None:
    batch = pad_sequences([[1.0, 2.0]], maxlen=4, value=-1.0)
    assert batch.data.tolist() == [[1.0, 2.0, -1.0, -1.0]]
    assert batch.lengths.tolist() == [2]


def test_feature_dims_and_mixed_inputs() -> None:
    a = torch.arange(6, dtype=torch.float32).reshape(3, 2)  # (3, 2)
    b = np.array([[10.0, 11.0]], dtype=np.float32)  # (1, 2)
    batch = pad_sequences([a, b], padding="pre", value=-1.0)
    assert batch.data.shape == (2, 3, 2)
    assert batch.data[1].tolist() == [[-1.0, -1.0], [-1.0, -1.0], [10.0, 11.0]]
    assert torch.equal(batch.data[0], a)


def test_dtype_inference_and_override() -> None:
    assert pad_sequences([[1, 2], [3]]).data.dtype == torch.int64
    assert pad_sequences([[1, 2], [3.5]]).data.dtype == torch.get_default_dtype()
    assert pad_sequences([[1, 2], [3]], dtype=torch.float64).data.dtype == torch.float64


def test_fractional_value_in_integer_batch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"value 0.5 cannot be stored in an integer batch"):
        pad_sequences([[1, 2], [3]], value=0.5)
    assert pad_sequences([[1, 2], [3]], value=-1.0).data.tolist() == [[1, 2], [3, -1]]


def test_gradient_flows_through_padding() -> None:
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(1, 2, requires_grad=True)
    batch = pad_sequences([a, b], padding="pre")
    batch.data.sum().backward()
    assert a.grad is not None and torch.equal(a.grad, torch.ones(3, 2))
    assert b.grad is not None and torch.equal(b.grad, torch.ones(1, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding": "middle"}, r"padding must be 'post' or 'pre', got 'middle'"),
        ({"truncating": "both"}, r"truncating must be 'post' or 'pre', got 'both'"),
        ({"maxlen": 0}, r"maxlen must be an integer >= 1, got 0"),
        ({"maxlen": 2.5}, r"maxlen must be an integer >= 1, got 2.5 of type float"),
        ({"maxlen": True}, r"maxlen must be an integer >= 1, got True"),
    ],
)
def test_pad_sequences_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pad_sequences(RAGGED, **kwargs)  # type: ignore[arg-type]


def test_pad_sequences_empty_list() -> None:
    with pytest.raises(ValueError, match=r"non-empty list or tuple, got an empty one"):
        pad_sequences([])


def test_pad_sequences_empty_sequence_names_index() -> None:
    with pytest.raises(ValueError, match=r"sequences\[2\] is empty \(length 0"):
        pad_sequences([[1], [2, 3], []])


def test_pad_sequences_mixed_feature_shapes() -> None:
    seqs = [torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(1, 5)]
    message = r"feature shape of sequences\[0\], \(3,\); sequences\[2\] has feature shape \(5,\)"
    with pytest.raises(ValueError, match=message):
        pad_sequences(seqs)


def test_pad_sequences_scalar_sequence() -> None:
    with pytest.raises(ValueError, match=r"sequences\[1\] must have a time dimension"):
        pad_sequences([torch.ones(2), torch.tensor(1.0)])


def test_pad_sequences_wrong_types() -> None:
    with pytest.raises(TypeError, match=r"sequences must be a list or tuple .* got Tensor"):
        pad_sequences(torch.ones(2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"sequences\[0\] must be a tensor.* got str"):
        pad_sequences(["abc"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"dtype must be a torch.dtype or None, got 'float'"):
        pad_sequences(RAGGED, dtype="float")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- truncate_sequence


def test_truncate_sequence_golden() -> None:
    seq = torch.tensor([1, 2, 3, 4, 5])
    assert truncate_sequence(seq, 3).tolist() == [1, 2, 3]
    assert truncate_sequence(seq, 3, side="pre").tolist() == [3, 4, 5]
    assert truncate_sequence(seq, 9, side="pre").tolist() == [1, 2, 3, 4, 5]
    assert truncate_sequence([[1, 2], [3, 4]], 1, side="pre").tolist() == [[3, 4]]


def test_truncate_sequence_errors() -> None:
    with pytest.raises(ValueError, match=r"side must be 'post' or 'pre', got 'left'"):
        truncate_sequence(torch.ones(3), 2, side="left")
    with pytest.raises(ValueError, match=r"maxlen must be an integer >= 1, got -1"):
        truncate_sequence(torch.ones(3), -1)


# --------------------------------------------------------------------------- masks


def test_lengths_to_mask_golden() -> None:
    post = lengths_to_mask(torch.tensor([3, 1, 0]), max_len=4)
    pre = lengths_to_mask([3, 1, 0], max_len=4, padding="pre")
    assert post.dtype == torch.bool
    assert torch.equal(post, _t([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]).bool())
    assert torch.equal(pre, _t([[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]).bool())
    assert lengths_to_mask(np.array([2, 1])).shape == (2, 2)


def test_lengths_to_mask_errors() -> None:
    with pytest.raises(ValueError, match=r"lengths must be 1-D, got shape \(2, 1\)"):
        lengths_to_mask(torch.tensor([[1], [2]]))
    with pytest.raises(ValueError, match=r"integer dtype, got torch.float32 with values \[1.0"):
        lengths_to_mask(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"lengths must be >= 0, got -2 \(at index 1\)"):
        lengths_to_mask(torch.tensor([1, -2]))
    with pytest.raises(ValueError, match=r"got max_len=2 but lengths\[1\] = 5"):
        lengths_to_mask(torch.tensor([1, 5]), max_len=2)
    with pytest.raises(ValueError, match=r"padding must be 'post' or 'pre', got 'x'"):
        lengths_to_mask(torch.tensor([1]), padding="x")
    with pytest.raises(TypeError, match=r"lengths must be a 1-D list.* got int"):
        lengths_to_mask(3)  # type: ignore[arg-type]


def test_mask_to_lengths_golden() -> None:
    mask = _t([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]).bool()
    lengths = mask_to_lengths(mask)
    assert lengths.dtype == torch.int64
    assert lengths.tolist() == [3, 1, 0]


def test_mask_to_lengths_rejects_pre_padding() -> None:
    mask = _t([[1, 1, 0], [1, 1, 1], [0, 1, 1]]).bool()
    message = r"valid \(True\) steps must come first.* row 2 has a True at step 1 after a False"
    with pytest.raises(ValueError, match=message):
        mask_to_lengths(mask)


def test_mask_to_lengths_rejects_holes() -> None:
    with pytest.raises(ValueError, match=r"row 0 has a True at step 2 after a False at step 1"):
        mask_to_lengths(_t([[1, 0, 1]]).bool())


def test_mask_to_lengths_type_errors() -> None:
    with pytest.raises(ValueError, match=r"mask must have dtype torch.bool, got torch.int64"):
        mask_to_lengths(_t([[1, 0]]))
    with pytest.raises(ValueError, match=r"mask must be 2-D \(B, T\), got shape \(3,\)"):
        mask_to_lengths(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask must be a torch.Tensor .* got list"):
        mask_to_lengths([[True]])  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=8),
    extra=st.integers(min_value=0, max_value=3),
)
def test_mask_lengths_round_trip(lengths: list[int], extra: int) -> None:
    max_len = max(lengths) + extra
    mask = lengths_to_mask(lengths, max_len=max_len)  # (B, T)
    assert mask.shape == (len(lengths), max_len)
    assert mask_to_lengths(mask).tolist() == lengths
    pre = lengths_to_mask(lengths, max_len=max_len, padding="pre")
    assert torch.equal(pre, mask.flip(1))


# --------------------------------------------------------------------------- check_lengths


@pytest.mark.parametrize(
    "lengths",
    [[3, 1, 12], (3, 1, 12), np.array([3, 1, 12], dtype=np.int32), torch.tensor([3, 1, 12])],
)
def test_check_lengths_accepts(lengths: object) -> None:
    out = check_lengths(lengths, batch_size=3, seq_len=12)  # type: ignore[arg-type]
    assert out.dtype == torch.int64
    assert out.device.type == "cpu"
    assert out.tolist() == [3, 1, 12]


def test_check_lengths_too_long_message() -> None:
    message = r"^lengths must be between 1 and the sequence length 12, got max 15 \(at index 3\)$"
    with pytest.raises(ValueError, match=message):
        check_lengths(torch.tensor([3, 4, 5, 15]), batch_size=4, seq_len=12)


def test_check_lengths_zero() -> None:
    message = r"between 1 and the sequence length 12, got min 0 \(at index 1\)"
    with pytest.raises(ValueError, match=message):
        check_lengths([4, 0, 2], batch_size=3, seq_len=12)


def test_check_lengths_rejects_whole_floats() -> None:
    message = r"lengths must have an integer dtype, got torch.float32 with values \[3.0, 2.0\]"
    with pytest.raises(ValueError, match=message):
        check_lengths(torch.tensor([3.0, 2.0]), batch_size=2, seq_len=5)
    with pytest.raises(ValueError, match=r"integer dtype, got torch.float64"):
        check_lengths(np.array([3.0, 2.0]), batch_size=2, seq_len=5)
    with pytest.raises(ValueError, match=r"integer dtype, got torch.bool"):
        check_lengths([True, True], batch_size=2, seq_len=5)


def test_check_lengths_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(4,\), got shape \(3,\)"):
        check_lengths([1, 2, 3], batch_size=4, seq_len=5)
    with pytest.raises(ValueError, match=r"lengths must be 1-D, got shape \(2, 1\)"):
        check_lengths([[1], [2]], batch_size=2, seq_len=5)
    with pytest.raises(TypeError, match=r"lengths must be a 1-D list, tuple, numpy array"):
        check_lengths(3, batch_size=1, seq_len=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 0, got -1"):
        check_lengths([1], batch_size=-1, seq_len=5)
    with pytest.raises(ValueError, match=r"seq_len must be an integer >= 0, got 2.0"):
        check_lengths([1], batch_size=1, seq_len=2.0)  # type: ignore[arg-type]


def test_check_lengths_long_values_are_elided() -> None:
    with pytest.raises(ValueError, match=r"\[0.0, 1.0, .*, \.\.\.\] \(20 values\)"):
        check_lengths(torch.arange(20.0), batch_size=20, seq_len=30)


# --------------------------------------------------------------------------- reverse_padded


def test_reverse_padded_golden() -> None:
    x = _t([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [6, 7, 8, 9, 10]])
    out = reverse_padded(x, [3, 2, 5])
    assert torch.equal(out, _t([[3, 2, 1, 0, 0], [5, 4, 0, 0, 0], [10, 9, 8, 7, 6]]))


def test_reverse_padded_time_major_with_features() -> None:
    x = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)  # (B, T, F)
    lengths = torch.tensor([4, 2])
    expected = reverse_padded(x, lengths)  # (B, T, F)
    out = reverse_padded(x.transpose(0, 1), lengths, batch_first=False)  # (T, B, F)
    assert torch.equal(out.transpose(0, 1), expected)
    assert torch.equal(expected[1, :2], x[1, :2].flip(0))
    assert torch.equal(expected[1, 2:], x[1, 2:])


def test_reverse_padded_twice_is_identity() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, 2, generator=gen)
    lengths = torch.tensor([7, 1, 3, 0, 5])
    once = reverse_padded(x, lengths)
    assert torch.equal(reverse_padded(once, lengths), x)
    mask = lengths_to_mask(lengths, 7)  # (B, T)
    assert torch.equal(once[~mask], x[~mask])


def test_reverse_padded_gradcheck() -> None:
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reverse_padded(t, [2, 3]), (x,))


def test_reverse_padded_errors() -> None:
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"between 0 and the sequence length 4, got max 5"):
        reverse_padded(x, [5, 1])
    with pytest.raises(ValueError, match=r"expected shape \(2,\), got shape \(3,\)"):
        reverse_padded(x, [1, 1, 1])
    with pytest.raises(ValueError, match=r"x must have at least 2 dims \(B, T, \*F\)"):
        reverse_padded(torch.zeros(4), [1])
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        reverse_padded([[1, 2]], [1])  # type: ignore[arg-type]
