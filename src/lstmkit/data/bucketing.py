"""Length-bucketed batching: put sequences of similar length together to waste less padding.

Random batches of skewed lengths pad every short sequence up to the batch's longest one::

    random batch                     bucketed batch
    [a . . . . . . .]                [a b .]
    [b c d e f g h i]      ->        [c d e]       far fewer padding steps (.)
    [j k . . . . . .]                [f g h]

``BucketBatchSampler`` yields lists of dataset indices for ``DataLoader(batch_sampler=...)``
and ``pad_collate`` turns the items of such a batch into a ``PaddedBatch``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from lstmkit.data.padding import PaddedBatch, _as_int_vector, _check_int, pad_sequences

__all__ = ["BucketBatchSampler", "pad_collate"]


def _cut(indices: Tensor, batch_size: int) -> list[list[int]]:
    """Split a 1-D index tensor into consecutive batches (the last one may be short)."""
    return [chunk.tolist() for chunk in torch.split(indices, batch_size)]


class BucketBatchSampler(Sampler[list[int]]):
    """Yield batches of indices whose sequences have similar lengths.

    With ``shuffle=True`` each epoch (N indices, batch_size=2, bucket = 2 * multiplier)::

        1. random permutation          [7 2 9 0 4 1 ...]
        2. cut into buckets            [7 2 9 0] [4 1 ...]        bucket = batch * multiplier
        3. sort each bucket by length  [9 2 0 7] [1 4 ...]        similar lengths side by side
        4. cut buckets into batches    [9 2] [0 7] [1 4] ...
        5. shuffle the batch order     [0 7] [1 4] [9 2] ...

    With ``shuffle=False`` all indices are sorted by length (stable) and cut in order, the same
    every epoch. Shuffling is seeded by ``seed + epoch``: call ``set_epoch`` before each epoch
    (as with ``DistributedSampler``) to get a different, reproducible order per epoch.

    Every index appears exactly once per epoch, except that ``drop_last=True`` drops the one
    incomplete batch (``len(lengths) % batch_size`` indices) when there is one.

    Args:
        lengths: length of every dataset item, 1-D integers (list, numpy array or tensor).
        batch_size: indices per batch, >= 1.
        shuffle: randomise buckets and batch order (else sort everything by length).
        drop_last: drop the final incomplete batch instead of yielding it.
        bucket_size_multiplier: a bucket holds ``batch_size * bucket_size_multiplier`` indices;
            larger buckets pad less but randomise less.
        seed: base seed of the per-epoch random generator.
    """

    def __init__(
        self,
        lengths: Tensor | np.ndarray | Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        bucket_size_multiplier: int = 50,
        seed: int = 0,
    ) -> None:
        tensor = _as_int_vector("lengths", lengths).to(device="cpu", dtype=torch.int64)  # (N,)
        if tensor.numel() == 0:
            raise ValueError("lengths must be non-empty (one length per dataset item), got 0")
        if int(tensor.min()) < 0:
            index = int(torch.argmin(tensor))
            raise ValueError(f"lengths must be >= 0, got {int(tensor[index])} (at index {index})")
        self.lengths = tensor
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.bucket_size_multiplier = _check_int(
            "bucket_size_multiplier", bucket_size_multiplier, 1
        )
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (reproducible) shuffle the next iteration uses."""
        self.epoch = _check_int("epoch", epoch, 0)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        full, rest = divmod(self.lengths.numel(), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _sorted_batches(self) -> list[list[int]]:
        """All indices sorted by length (stable), cut into batches in that order."""
        order = torch.argsort(self.lengths, stable=True)  # (N,)
        return _cut(order, self.batch_size)

    def _bucketed_batches(self, generator: torch.Generator) -> list[list[int]]:
        """Permute, sort within buckets, cut; the short batch (if any) comes last."""
        perm = torch.randperm(self.lengths.numel(), generator=generator)  # (N,)
        bucket = self.batch_size * self.bucket_size_multiplier
        batches: list[list[int]] = []
        for chunk in torch.split(perm, bucket):
            order = torch.argsort(self.lengths[chunk], stable=True)
            batches.extend(_cut(chunk[order], self.batch_size))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this epoch's batches of indices."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            batches = self._bucketed_batches(generator)
        else:
            generator = None
            batches = self._sorted_batches()
        # Only the final batch can be short: buckets are whole multiples of batch_size.
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if generator is not None:
            batch_order = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in batch_order]
        yield from batches


def _split_items(batch: Sequence[object]) -> tuple[list[object], list[object] | None]:
    """Separate ``(sequence, target)`` pairs, or return bare sequences with no targets."""
    paired = isinstance(batch[0], tuple)
    sequences: list[object] = []
    targets: list[object] = []
    for index, item in enumerate(batch):
        if isinstance(item, tuple) != paired:
            first = "(sequence, target) tuple" if paired else "bare sequence"
            raise ValueError(
                f"all batch items must be of one kind; batch[0] is a {first} but "
                f"batch[{index}] is a {type(item).__name__}"
            )
        if paired:
            if len(item) != 2:
                raise ValueError(
                    f"batch[{index}] must be a (sequence, target) pair, got a tuple of "
                    f"length {len(item)}"
                )
            sequences.append(item[0])
            targets.append(item[1])
        else:
            sequences.append(item)
    return sequences, (targets if paired else None)


def _stack_targets(targets: list[object]) -> Tensor:
    """Stack tensor/array targets with ``torch.stack``; turn numbers into one tensor (B,)."""
    if all(isinstance(t, Tensor) for t in targets):
        return torch.stack(targets)  # type: ignore[arg-type]
    if all(isinstance(t, np.ndarray) for t in targets):
        return torch.stack([torch.from_numpy(np.ascontiguousarray(t)) for t in targets])
    if all(isinstance(t, (numbers.Number, np.generic)) for t in targets):
        return torch.tensor(targets)
    kinds = sorted({type(t).__name__ for t in targets})
    raise TypeError(
        f"targets must be all tensors, all numpy arrays or all numbers, got a mix of {kinds}"
    )


def pad_collate(
    batch: Sequence[object], *, padding: str = "post", value: float = 0.0
) -> PaddedBatch | tuple[PaddedBatch, Tensor]:
    """``collate_fn`` for a ``DataLoader`` over variable-length sequences.

    Items are bare sequences (T_i, *F) or ``(sequence, target)`` tuples::

        items                      padding="post"          returns
        ([a b c], 1)               [a b c]
        ([d],     0)        ->     [d . .]          ->     (PaddedBatch, tensor([1, 0]))
        ([e f],   1)               [e f .]

    Sequences are padded with ``pad_sequences`` (never truncated: T is the batch's longest).
    Tensor targets are joined with ``torch.stack`` (B, *target_shape); number targets become
    ``torch.tensor(targets)`` (B,).
    """
    if not isinstance(batch, (list, tuple)):
        raise TypeError(f"batch must be a list or tuple of items, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("batch must contain at least one item, got an empty batch")
    sequences, targets = _split_items(batch)
    padded = pad_sequences(sequences, padding=padding, value=value)
    if targets is None:
        return padded
    return padded, _stack_targets(targets)
