"""Training configuration: one small validated dataclass per concern, composed in ``TrainConfig``.

Every error names the field (with its section, e.g. ``optim.lr``) and the value received. The
whole configuration round-trips through ``to_dict()`` / ``from_dict()`` and is saved with every
checkpoint and in each run directory.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from lstmkit.nn.validation import check_bool

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "plateau", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _number(
    section: str,
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonneg: bool = False,
    below_one: bool = False,
) -> None:
    where = f"{section}.{name}" if section else name
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive:
        ok = value > 0
    if ok and nonneg:
        ok = value >= 0
    if ok and below_one:
        ok = value < 1
    if not ok:
        what = (
            "a positive number"
            if positive
            else "a non-negative number"
            if nonneg
            else "a finite number"
        )
        if below_one:
            what += " below 1"
        raise ValueError(f"{where} must be {what}, got {value!r}")


def _integer(section: str, name: str, value: Any, *, minimum: int) -> None:
    where = f"{section}.{name}" if section else name
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")


def _choice(section: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        where = f"{section}.{name}" if section else name
        raise ValueError(f"{where} must be one of {', '.join(map(repr, choices))}; got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser: AdamW or SGD with momentum."""

    name: str = "adamw"  # "adamw" or "sgd"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled (AdamW) or L2 (SGD) weight decay
    momentum: float = 0.9  # SGD only
    beta1: float = 0.9  # AdamW only
    beta2: float = 0.999  # AdamW only

    def __post_init__(self) -> None:
        _choice("optim", "name", self.name, OPTIMIZERS)
        _number("optim", "lr", self.lr, positive=True)
        _number("optim", "weight_decay", self.weight_decay, nonneg=True)
        _number("optim", "momentum", self.momentum, nonneg=True, below_one=True)
        _number("optim", "beta1", self.beta1, nonneg=True, below_one=True)
        _number("optim", "beta2", self.beta2, nonneg=True, below_one=True)


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, with an optional linear warm-up."""

    name: str = "constant"  # "constant", "cosine", "step", "plateau" or "onecycle"
    warmup_steps: int = 0  # linear warm-up from 0 (not with onecycle, which has its own)
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of the peak
    step_size: int = 1000  # step: optimiser steps between decays
    step_delay: int = 0  # step: steps before the decay clock starts (1st decay: +step_size)
    gamma: float = 0.1  # step: decay factor
    plateau_factor: float = 0.5  # plateau: lr multiplier when the monitored metric stalls
    plateau_patience: int = 2  # plateau: epochs without improvement before decaying
    pct_start: float = 0.3  # onecycle: share of steps spent increasing the lr

    def __post_init__(self) -> None:
        _choice("schedule", "name", self.name, SCHEDULES)
        _integer("schedule", "warmup_steps", self.warmup_steps, minimum=0)
        _number("schedule", "min_lr_ratio", self.min_lr_ratio, nonneg=True)
        _integer("schedule", "step_size", self.step_size, minimum=1)
        _integer("schedule", "step_delay", self.step_delay, minimum=0)
        _number("schedule", "gamma", self.gamma, positive=True)
        _number("schedule", "plateau_factor", self.plateau_factor, positive=True, below_one=True)
        _integer("schedule", "plateau_patience", self.plateau_patience, minimum=0)
        _number("schedule", "pct_start", self.pct_start, positive=True, below_one=True)
        if self.name == "onecycle" and self.warmup_steps:
            raise ValueError(
                "schedule.warmup_steps must be 0 with the onecycle schedule, which warms up "
                f"by itself (see pct_start); got {self.warmup_steps}"
            )


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when the monitored validation metric stops improving."""

    enabled: bool = True
    monitor: str = "val_loss"  # a validation metric name
    mode: str = "min"  # "min" or "max": which direction is better
    patience: int = 5  # evaluations without improvement before stopping
    min_delta: float = 0.0  # smallest change that counts as an improvement
    restore_best: bool = True  # load the best weights back at the end

    def __post_init__(self) -> None:
        for name in ("enabled", "restore_best"):
            value = check_bool(f"early_stopping.{name}", getattr(self, name))
            object.__setattr__(self, name, value)
        _choice("early_stopping", "mode", self.mode, ("min", "max"))
        _integer("early_stopping", "patience", self.patience, minimum=0)
        _number("early_stopping", "min_delta", self.min_delta, nonneg=True)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"early_stopping.monitor must be a metric name, got {self.monitor!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: budget, batching, gradients, precision, device, logging, checkpoints."""

    max_epochs: int = 10
    max_steps: int = 0  # optimiser steps at most; 0 = no limit besides max_epochs
    max_seconds: float = 0.0  # wall-time budget for fit(); 0 = none (stops after a step)
    batch_size: int = 32  # global batch: split across processes in distributed runs
    grad_accum: int = 1  # micro-batches per optimiser step
    clip_norm: float | None = 1.0  # clip the global gradient norm to this; None = off
    clip_value: float | None = None  # clip each gradient element to ±this; None = off
    ema_decay: float = 0.0  # validate and keep a moving average of the weights; 0 = off
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + grad scaler)
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    seed: int = 0  # seeds python, numpy and torch
    shuffle: bool = True  # reshuffle every epoch (off for continuous streams with TBPTT)
    num_workers: int = 0  # DataLoader worker processes
    eval_every: int = 0  # optimiser steps between validations; 0 = at the end of each epoch
    checkpoint_every: int = 0  # optimiser steps between checkpoints; 0 = each validation
    log_every: int = 1  # optimiser steps between metric rows (1: the grad norm of every step)
    progress: bool = False  # show a progress bar (only on a terminal)
    tensorboard: bool = False  # also write TensorBoard event files
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        for name, minimum in (
            ("max_epochs", 1),
            ("max_steps", 0),
            ("batch_size", 1),
            ("grad_accum", 1),
            ("seed", 0),
            ("num_workers", 0),
            ("eval_every", 0),
            ("checkpoint_every", 0),
            ("log_every", 1),
        ):
            _integer("", name, getattr(self, name), minimum=minimum)
        _number("", "max_seconds", self.max_seconds, nonneg=True)
        _number("", "ema_decay", self.ema_decay, nonneg=True, below_one=True)
        for name in ("clip_norm", "clip_value"):
            value = getattr(self, name)
            if value is False or (type(value) in (int, float) and value == 0):
                object.__setattr__(self, name, None)  # TOML has no null: 0 or false turn it off
                continue
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0
            if value is not None and not (ok and math.isfinite(value)):
                raise ValueError(
                    f"{name} must be a positive number, or None (also 0 or false) to turn it "
                    f"off; got {value!r}"
                )
        _choice("", "precision", self.precision, PRECISIONS)
        _choice("", "device", self.device, DEVICES)
        for name in ("shuffle", "progress", "tensorboard"):
            object.__setattr__(self, name, check_bool(name, getattr(self, name)))
        for name, kind in (
            ("optim", OptimConfig),
            ("schedule", ScheduleConfig),
            ("early_stopping", EarlyStoppingConfig),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts (as read from JSON/TOML/YAML); unknown keys are errors."""
        sections = {
            "optim": OptimConfig,
            "schedule": ScheduleConfig,
            "early_stopping": EarlyStoppingConfig,
        }
        values = dict(data)
        _reject_unknown("", cls, values)
        for name, kind in sections.items():
            if name in values and isinstance(values[name], dict):
                _reject_unknown(name, kind, values[name])
                values[name] = kind(**values[name])
        return cls(**values)


def _reject_unknown(section: str, kind: type, values: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in [{section}]" if section else ""
        raise ValueError(f"unknown training option(s){where}: {unknown}; known: {sorted(known)}")
