"""Batches that can be resumed mid-epoch and shared out between processes.

Every epoch's order is a pure function of (seed, epoch), so a resumed run can rebuild it and
skip what was already consumed. Each global batch is cut into one slice per process:

    epoch order   7 2 9 0 | 4 1 8 3 | 6 5          global batch 4, 2 processes
    rank 0        7 2     | 4 1     | 6
    rank 1            9 0 |     8 3 |   5
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """This process's slice of each global batch, from batch ``start_batch`` of ``epoch`` on."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} must be divisible by the number of processes "
                f"({world_size}) so each takes an equal slice"
            )
        if size < batch_size:
            raise ValueError(
                f"the training set has {size} examples, fewer than one batch "
                f"({batch_size}); lower batch_size"
            )
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.size // self.batch_size - self.start_batch  # incomplete last batch dropped

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        local = self.batch_size // self.world_size
        for b in range(self.start_batch, self.size // self.batch_size):
            first = b * self.batch_size + self.rank * local
            yield order[first : first + local]


def make_loader(
    dataset: Dataset,
    sampler: ResumableBatchSampler,
    collate_fn: Callable[[list[Any]], Any] | None,
    num_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader over ``sampler`` that never draws from the global torch RNG."""
    if not isinstance(dataset, Sized):
        raise ValueError(f"the dataset must have a length, got {type(dataset).__name__}")
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps global RNG intact
    )
