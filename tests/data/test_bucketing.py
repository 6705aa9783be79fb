"""Tests for lstmkit.data.bucketing: the length-bucketed sampler and the padding collate_fn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lstmkit.data import BucketBatchSampler, PaddedBatch, pad_collate


def _skewed_lengths(n: int, seed: int = 0) -> torch.Tensor:
    """Mostly short sequences with a long tail (lognormal-like), as in real text corpora."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=gen) * 0.9 + 2.5).exp().long().clamp(min=1)  # (N,)


def _padding_waste(batches: list[list[int]], lengths: torch.Tensor) -> int:
    """Padding steps a batch list costs: sum over batches of (max length * size - sum)."""
    waste = 0
    for batch in batches:
        lens = lengths[batch]
        waste += int(lens.max()) * len(batch) - int(lens.sum())
    return waste


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


# --------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(("n", "batch_size", "multiplier"), [(103, 8, 3), (64, 8, 50), (5, 7, 1)])
def test_every_index_exactly_once(shuffle: bool, n: int, batch_size: int, multiplier: int) -> None:
    sampler = BucketBatchSampler(
        _skewed_lengths(n), batch_size, shuffle=shuffle, bucket_size_multiplier=multiplier
    )
    batches = list(sampler)
    assert sorted(_flat(batches)) == list(range(n))
    assert len(batches) == len(sampler)
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= 1


@pytest.mark.parametrize("shuffle", [True, False])
def test_drop_last_drops_only_the_short_batch(shuffle: bool) -> None:
    sampler = BucketBatchSampler(
        _skewed_lengths(103), 8, shuffle=shuffle, drop_last=True, bucket_size_multiplier=3
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12
    assert all(len(b) == 8 for b in batches)
    assert len(set(_flat(batches))) == 96


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "expected"),
    [(10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (9, 3, True, 3), (2, 5, True, 0)],
)
def test_len(n: int, batch_size: int, drop_last: bool, expected: int) -> None:
    sampler = BucketBatchSampler([4] * n, batch_size, drop_last=drop_last)
    assert len(sampler) == expected
    assert len(list(sampler)) == expected


def test_no_shuffle_sorts_by_length_stably() -> None:
    sampler = BucketBatchSampler([5, 1, 3, 1, 5, 2], 4, shuffle=False)
    assert list(sampler) == [[1, 3, 5, 2], [0, 4]]
    sampler.set_epoch(3)
    assert list(sampler) == [[1, 3, 5, 2], [0, 4]]


def test_buckets_waste_less_padding_than_random_batches() -> None:
    lengths = _skewed_lengths(2000, seed=1)
    sampler = BucketBatchSampler(lengths, 32, bucket_size_multiplier=10, seed=0)
    bucketed = _padding_waste(list(sampler), lengths)
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    random_batches = [chunk.tolist() for chunk in torch.split(perm, 32)]
    assert bucketed < _padding_waste(random_batches, lengths) / 3


def test_within_batch_spread_is_small() -> None:
    lengths = _skewed_lengths(1000, seed=2)
    bucketed = list(BucketBatchSampler(lengths, 16, bucket_size_multiplier=20))
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(2))
    random_batches = [chunk.tolist() for chunk in torch.split(perm, 16)]

    def mean_spread(batches: list[list[int]]) -> float:
        return sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)

    assert mean_spread(bucketed) < mean_spread(random_batches) / 3


def test_no_shuffle_batches_are_in_length_order() -> None:
    lengths = _skewed_lengths(300, seed=4)
    batches = list(BucketBatchSampler(lengths, 16, shuffle=False))
    assert all(lengths[a].max() <= lengths[b].min() for a, b in itertools.pairwise(batches))


def test_reproducible_per_seed_and_epoch() -> None:
    lengths = _skewed_lengths(200)
    first = BucketBatchSampler(lengths, 8, bucket_size_multiplier=4, seed=7)
    second = BucketBatchSampler(lengths, 8, bucket_size_multiplier=4, seed=7)
    epoch0 = list(first)
    assert list(first) == epoch0  # iterating again without set_epoch repeats the epoch
    assert list(second) == epoch0
    first.set_epoch(1)
    second.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 == list(second)
    assert epoch1 != epoch0
    other_seed = BucketBatchSampler(lengths, 8, bucket_size_multiplier=4, seed=8)
    assert list(other_seed) != epoch0


def test_accepts_numpy_and_list_lengths() -> None:
    from_np = BucketBatchSampler(np.array([3, 1, 2]), 2, shuffle=False)
    from_list = BucketBatchSampler([3, 1, 2], 2, shuffle=False)
    assert list(from_np) == list(from_list) == [[1, 2], [0]]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1, 2], 0), {}, r"batch_size must be an integer >= 1, got 0"),
        (([1, 2], 2.0), {}, r"batch_size must be an integer >= 1, got 2.0 of type float"),
        (([1, 2], True), {}, r"batch_size must be an integer >= 1, got True"),
        (([], 2), {}, r"lengths must be non-empty"),
        (([[1, 2]], 2), {}, r"lengths must be 1-D, got shape \(1, 2\)"),
        (([1.5, 2.0], 2), {}, r"lengths must have an integer dtype, got torch.float32"),
        (([1, -3], 2), {}, r"lengths must be >= 0, got -3 \(at index 1\)"),
        (([1, 2], 2), {"bucket_size_multiplier": 0}, r"bucket_size_multiplier must be .* got 0"),
        (([1, 2], 2), {"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ],
)
def test_sampler_validation(args: tuple, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BucketBatchSampler(*args, **kwargs)


def test_set_epoch_validation() -> None:
    sampler = BucketBatchSampler([1, 2], 1)
    with pytest.raises(ValueError, match=r"epoch must be an integer >= 0, got '1'"):
        sampler.set_epoch("1")  # type: ignore[arg-type]


def test_sampler_type_error() -> None:
    with pytest.raises(TypeError, match=r"lengths must be a 1-D list, tuple.* got int"):
        BucketBatchSampler(5, 2)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pad_collate


def test_pad_collate_bare_sequences() -> None:
    out = pad_collate([torch.tensor([1, 2, 3]), torch.tensor([4])])
    assert isinstance(out, PaddedBatch)
    assert out.data.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert out.lengths.tolist() == [3, 1]


def test_pad_collate_pairs_with_number_targets() -> None:
    out = pad_collate(
        [(torch.tensor([1.0, 2.0]), 1), (torch.tensor([3.0]), 0)], padding="pre", value=-1.0
    )
    assert isinstance(out, tuple)
    batch, targets = out
    assert batch.data.tolist() == [[1.0, 2.0], [-1.0, 3.0]]
    assert batch.padding == "pre"
    assert torch.equal(targets, torch.tensor([1, 0]))


def test_pad_collate_tensor_and_array_targets() -> None:
    _, targets = pad_collate([([1], torch.tensor([0.5, 1.0])), ([2, 3], torch.tensor([0.0, 2.0]))])
    assert targets.shape == (2, 2)
    _, arrays = pad_collate([([1], np.array([1, 2])), ([2], np.array([3, 4]))])
    assert arrays.tolist() == [[1, 2], [3, 4]]


def test_pad_collate_errors() -> None:
    with pytest.raises(ValueError, match=r"batch must contain at least one item"):
        pad_collate([])
    message = r"batch\[0\] is a \(sequence, target\) tuple but batch\[1\] is a Tensor"
    with pytest.raises(ValueError, match=message):
        pad_collate([(torch.ones(2), 1), torch.ones(3)])
    with pytest.raises(ValueError, match=r"batch\[0\] must be a \(sequence, target\) pair, got a"):
        pad_collate([(torch.ones(2), 1, 2)])
    with pytest.raises(
        TypeError, match=r"targets must be all tensors.* mix of \['Tensor', 'int'\]"
    ):
        pad_collate([(torch.ones(2), 1), (torch.ones(1), torch.tensor(0))])
    with pytest.raises(ValueError, match=r"padding must be 'post' or 'pre', got 'mid'"):
        pad_collate([torch.ones(2)], padding="mid")


# --------------------------------------------------------------------------- end to end


class _RaggedDataset(Dataset[tuple[torch.Tensor, int]]):
    """Sequences (T_i, 2) whose every value is the item index, with target index % 3."""

    def __init__(self, lengths: torch.Tensor) -> None:
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((int(self.lengths[index]), 2), float(index)), index % 3


def test_dataloader_end_to_end() -> None:
    lengths = _skewed_lengths(101)
    dataset = _RaggedDataset(lengths)
    sampler = BucketBatchSampler(lengths, 8, bucket_size_multiplier=4, seed=3)
    sampler.set_epoch(2)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate)
    seen: list[int] = []
    for batch, targets in loader:
        assert batch.data.shape == (len(targets), int(batch.lengths.max()), 2)
        ids = batch.data[:, 0, 0].long()  # (B,) every valid value is the item index
        assert torch.equal(batch.lengths, lengths[ids])
        assert torch.equal(targets, ids % 3)
        assert torch.equal(batch.data[~batch.mask], torch.zeros(int((~batch.mask).sum()), 2))
        seen.extend(ids.tolist())
    assert len(loader) == 13
    assert sorted(seen) == list(range(101))
