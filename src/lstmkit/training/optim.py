"""Optimisers and learning-rate schedules built from their configs, by name.

``Schedule`` hides the two kinds of torch scheduler behind one interface: per-step schedules
(warm-up, cosine, step, one-cycle) advance after every optimiser step; reduce-on-plateau
advances after every validation with the monitored metric.

    lr
    │     ╭──╮ peak (optim.lr)
    │    ╱    ╲___ cosine ──╮
    │   ╱           ╲___    ╰ min_lr_ratio · peak
    │  ╱ warm-up         ╲__
    └──────────────────────────► optimiser steps
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from lstmkit.training.config import OptimConfig, ScheduleConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "adamw":
        return torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay,
        )
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def lr_multiplier(config: ScheduleConfig, step: int, total_steps: int) -> float:
    """The per-step multiplier of the peak lr for warm-up, constant, cosine and step decay."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.name == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine
    if config.name == "step":
        since = max(0, step - config.warmup_steps - config.step_delay)
        return config.gamma ** (since // config.step_size)
    return 1.0  # constant, and plateau (which decays on its own after the warm-up)


class Schedule:
    """A learning-rate schedule: ``after_step()`` each optimiser step, ``after_eval(metric)``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: ScheduleConfig,
        total_steps: int,
        plateau_mode: str = "min",
    ) -> None:
        self.config = config
        self.steps = 0
        self.plateau: ReduceLROnPlateau | None = None
        if config.name == "onecycle":
            peak = [group["lr"] for group in optimizer.param_groups]
            self.per_step: Any = OneCycleLR(
                optimizer, max_lr=peak, total_steps=max(2, total_steps), pct_start=config.pct_start
            )
        else:
            self.per_step = LambdaLR(
                optimizer, lambda step: lr_multiplier(config, step, total_steps)
            )
        if config.name == "plateau":
            self.plateau = ReduceLROnPlateau(
                optimizer,
                mode=plateau_mode,
                factor=config.plateau_factor,
                patience=config.plateau_patience,
            )

    def after_step(self) -> None:
        self.steps += 1
        warming_up = self.steps <= self.config.warmup_steps
        if self.plateau is None or warming_up:
            self.per_step.step()

    def after_eval(self, metric: float) -> None:
        if self.plateau is not None and self.steps >= self.config.warmup_steps:
            self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "per_step": self.per_step.state_dict(),
            "plateau": None if self.plateau is None else self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])
