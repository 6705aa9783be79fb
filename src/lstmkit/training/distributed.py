"""Data-parallel training with PyTorch's own engine (``torchrun`` + DistributedDataParallel).

Launch a script with ``torchrun --nproc_per_node N``; the trainer reads the environment that
torchrun sets, joins the process group (gloo on CPU, NCCL on GPU) and wraps the model. Each
process takes its slice of every global batch, so N processes with a global batch B step
exactly like one process with batch B (up to float summation order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a plain run is rank 0 of 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(
        int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))
    )


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    if ctx.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sum_across(
    values: dict[str, float], ctx: DistContext, device: torch.device
) -> dict[str, float]:
    """Add up metric totals over processes (each computed on its own shard)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def barrier(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
