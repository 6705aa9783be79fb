"""``Trainer``: the training loop every task shares. It knows nothing about any one task.

A task hands it a model, datasets and a step function

    step_fn(model, batch, carried_state) -> StepOutput(loss, weight, metrics, state)

and the trainer does the rest: device and precision, gradient accumulation, clipping (with the
pre-clipping norm logged every step), NaN guards, schedules, validation, early stopping with
best-weight restore, truncated BPTT (``state`` is detached and carried to the next batch),
atomic checkpoints that resume exactly, metrics to CSV/TensorBoard, a progress bar, and
data-parallel training under ``torchrun``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from lstmkit.training import distributed as dist_util
from lstmkit.training.averaging import WeightAverage
from lstmkit.training.checkpoint import load_checkpoint, save_checkpoint
from lstmkit.training.config import TrainConfig
from lstmkit.training.device import autocast, check_precision, grad_scaler, resolve_device
from lstmkit.training.early_stopping import EarlyStopping
from lstmkit.training.loader import ResumableBatchSampler, make_loader
from lstmkit.training.logbook import MetricsLog
from lstmkit.training.optim import Schedule, build_optimizer
from lstmkit.training.progress import Progress
from lstmkit.training.rng import capture_rng_state, restore_rng_state, seed_everything
from lstmkit.training.run_dir import write_run_metadata

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lstmkit.trainer/1"


class StepOutput(NamedTuple):
    """What a task's step function returns for one batch."""

    loss: Tensor  # scalar: the mean loss over the batch's items
    weight: float = 1.0  # how many items that mean is over (for exact validation averages)
    metrics: Mapping[str, float] | None = None  # extra per-batch means, e.g. {"mae": ...}
    state: Any = None  # recurrent state to carry into the next batch (truncated BPTT)


StepFn = Callable[[nn.Module, Any, Any], StepOutput]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class FitResult:
    steps: int  # optimiser steps taken in total
    epochs: int  # epochs started
    stopped_early: bool
    reason: str  # why training ended
    best_metric: float | None  # best monitored validation value, if validated
    best_step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per validation
    clip_events: int = 0  # optimiser steps whose gradients were clipped
    seconds: float = 0.0
    run_dir: Path | None = None


@dataclass
class Position:
    step: int = 0  # optimiser steps done
    epoch: int = 0  # current epoch
    batch: int = 0  # global batches consumed in the current epoch
    clip_events: int = 0


class Trainer:
    """Train ``model`` with ``step_fn`` under ``config``; see the module docstring.

    ``run_dir`` receives ``config.json``, ``environment.json``, ``metrics.csv`` and
    ``checkpoints/{last,best}.safetensors``. ``saved_config`` (e.g. the model's and the task's
    settings) is stored next to the training config in every checkpoint and in config.json;
    ``checkpoint_extras`` (e.g. a tokenizer) goes into the checkpoints only, under "extras".
    A training set with a ``set_epoch(epoch)`` method is told each epoch before it is read.
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        config: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        saved_config: Mapping[str, Any] | None = None,
        checkpoint_extras: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model = model
        self.step_fn = step_fn
        self.config = config
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.collate_fn = collate_fn
        self.saved_config = {"train": config.to_dict(), **dict(saved_config or {})}
        self.checkpoint_extras = dict(checkpoint_extras or {})
        self.ctx = dist_util.context_from_env()
        self.device = resolve_device(config.device, self.ctx.local_rank)
        check_precision(config.precision, self.device)

    # ------------------------------------------------------------------ paths
    @property
    def last_checkpoint(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / "last.safetensors"

    @property
    def best_checkpoint(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / "best.safetensors"

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_data: Dataset,
        val_data: Dataset | None = None,
        *,
        resume: bool | str | Path = False,
    ) -> FitResult:
        """Train; ``resume=True`` continues from ``run_dir``'s last checkpoint if there is one."""
        cfg, ctx = self.config, self.ctx
        start = time.perf_counter()
        dist_util.init_process_group(ctx, self.device)
        seed_everything(cfg.seed + ctx.rank)
        self.model.to(self.device)
        net = dist_util.wrap(self.model, ctx, self.device)
        sampler = ResumableBatchSampler(
            len(train_data),
            cfg.batch_size,
            shuffle=cfg.shuffle,
            seed=cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        batches = len(train_data) // cfg.batch_size
        steps_per_epoch = batches // cfg.grad_accum
        if steps_per_epoch < 1:
            raise ValueError(
                f"one epoch has {batches} batch(es), fewer than grad_accum "
                f"({cfg.grad_accum}); lower batch_size or grad_accum"
            )
        total_steps = steps_per_epoch * cfg.max_epochs
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        optimizer = build_optimizer(self.model, cfg.optim)
        run = _Run(
            started=start,
            optimizer=optimizer,
            schedule=Schedule(optimizer, cfg.schedule, total_steps, cfg.early_stopping.mode),
            scaler=grad_scaler(cfg.precision, self.device),
            stopper=EarlyStopping(cfg.early_stopping),
            metrics_log=MetricsLog(self.run_dir if ctx.is_main else None, cfg.tensorboard),
            reason=f"reached max_epochs={cfg.max_epochs}",
            average=WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None,
        )
        if self.run_dir is not None and ctx.is_main:
            write_run_metadata(self.run_dir, self.saved_config)
        if resume:
            self._resume(resume, run)
        progress = Progress(cfg.progress and ctx.is_main, total_steps)
        try:
            spent = bool(cfg.max_steps) and run.pos.step >= cfg.max_steps  # a resumed, done run
            while run.pos.epoch < cfg.max_epochs and not run.stop and not spent:
                sampler.set_position(run.pos.epoch, run.pos.batch)
                if hasattr(train_data, "set_epoch"):
                    train_data.set_epoch(run.pos.epoch)
                if run.pos.batch == 0:
                    run.carry = None  # a new pass over the data starts from a fresh state
                loader = make_loader(
                    train_data,
                    sampler,
                    self.collate_fn,
                    cfg.num_workers,
                    self.device.type == "cuda",
                    cfg.seed + run.pos.epoch,
                )
                out_of_steps = self._train_epoch(
                    net, loader, steps_per_epoch * cfg.grad_accum, val_data, run, progress
                )
                if out_of_steps or run.stop:
                    break
                run.pos.epoch, run.pos.batch = run.pos.epoch + 1, 0
                if not cfg.eval_every:
                    self._validate(net, val_data, run)
                if not cfg.checkpoint_every:
                    self._save(run)
            validated_last = run.history and run.history[-1]["step"] == run.pos.step
            if not run.stop and not validated_last:
                self._validate(net, val_data, run)  # every run ends with a validation
            self._save(run)
        finally:
            progress.close()
            run.metrics_log.close()
        if self._restore_best(run):
            run.reason += f"; restored the best weights (step {run.stopper.best_step})"
        elif run.average is not None:
            self.model.load_state_dict(run.average.module.state_dict())
            run.reason += "; the model holds the averaged weights"
        dist_util.barrier(ctx)
        log.info("training ended after %d steps: %s", run.pos.step, run.reason)
        return FitResult(
            steps=run.pos.step,
            epochs=run.pos.epoch + (1 if run.pos.batch else 0),
            stopped_early=run.stop,
            reason=run.reason,
            best_metric=run.stopper.best if run.stopper.best_step >= 0 else None,
            best_step=run.stopper.best_step,
            history=run.history,
            clip_events=run.pos.clip_events,
            seconds=time.perf_counter() - start,
            run_dir=self.run_dir,
        )

    def _train_epoch(
        self,
        net: nn.Module,
        loader: Any,
        usable_batches: int,
        val_data: Dataset | None,
        run: _Run,
        progress: Progress,
    ) -> bool:
        """One pass over ``loader``; returns True when the step budget (max_steps) is spent."""
        cfg, pos = self.config, run.pos
        losses, seen, tick = [], 0, time.perf_counter()
        for batch in loader:
            if pos.batch >= usable_batches:
                break  # an incomplete accumulation window at the end of the epoch
            with autocast(cfg.precision, self.device):
                out = self.step_fn(net, _to_device(batch, self.device), run.carry)
            self._check_finite(out.loss, "loss", pos)
            run.scaler.scale(out.loss / cfg.grad_accum).backward()
            run.carry = _detach(out.state)
            losses.append(out.loss.detach())
            seen += int(out.weight)
            pos.batch += 1
            if pos.batch % cfg.grad_accum:
                continue
            lr = run.optimizer.param_groups[0]["lr"]  # the rate this step uses
            grad_norm, clipped = self._optimizer_step(run, pos)
            if pos.step % cfg.log_every == 0 and self.ctx.is_main:
                loss = torch.stack(losses).float().mean().item()
                run.metrics_log.write(
                    pos.step,
                    pos.epoch,
                    {
                        "loss": loss,
                        "grad_norm": grad_norm,
                        "clipped": float(clipped),
                        "lr": lr,
                        "items_per_s": seen
                        * self.ctx.world_size
                        / max(time.perf_counter() - tick, 1e-9),
                    },
                )
                progress.update(pos.step, f"loss {loss:.4f}")
            if pos.step % cfg.log_every == 0:  # a row covers every step since the last one
                losses, seen, tick = [], 0, time.perf_counter()
            if cfg.eval_every and pos.step % cfg.eval_every == 0:
                self._validate(net, val_data, run)
                if not cfg.checkpoint_every:
                    self._save(run)  # checkpoint_every=0: a checkpoint at each validation
            if cfg.checkpoint_every and pos.step % cfg.checkpoint_every == 0:
                self._save(run)
            if run.stop:
                return False
            if cfg.max_steps and pos.step >= cfg.max_steps:
                run.reason = f"reached max_steps={cfg.max_steps}"
                return True
            if cfg.max_seconds and time.perf_counter() - run.started >= cfg.max_seconds:
                run.reason = f"reached max_seconds={cfg.max_seconds:g} after {pos.step} steps"
                return True
        return False

    # ------------------------------------------------------------------ steps
    def _optimizer_step(self, run: _Run, pos: Position) -> tuple[float, bool]:
        """Unscale, measure and clip the gradients, step, zero; returns (pre-clip norm, clipped)."""
        cfg, optimizer, scaler = self.config, run.optimizer, run.scaler
        scaler.unscale_(optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = float(nn.utils.clip_grad_norm_(params, math.inf)) if params else 0.0  # pre-clip
        if not scaler.is_enabled():  # with fp16, inf gradients just make the scaler skip
            self._check_finite(torch.tensor(norm), "gradient norm", pos)
        clipped = False
        if cfg.clip_value and params:
            biggest = torch.stack([p.grad.detach().abs().amax() for p in params]).max()
            clipped = bool(biggest > cfg.clip_value)
            nn.utils.clip_grad_value_(params, cfg.clip_value)
        if cfg.clip_norm and params:
            clipped = (
                bool(nn.utils.clip_grad_norm_(params, cfg.clip_norm) > cfg.clip_norm) or clipped
            )
        watch = run.average is not None and scaler.is_enabled()  # fp16 skips inf/NaN steps
        scale = scaler.get_scale() if watch else 0.0
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if run.average is not None and not (watch and scaler.get_scale() < scale):
            run.average.update(self.model)  # not after a step the scaler skipped
        run.schedule.after_step()
        pos.step += 1
        pos.clip_events += clipped
        return norm, clipped

    def _check_finite(self, value: Tensor, what: str, pos: Position) -> None:
        if bool(torch.isfinite(value.detach()).all()):
            return
        last = self.last_checkpoint
        kept = (
            f"the last good checkpoint is {last}"
            if last is not None and last.exists()
            else "no checkpoint was written yet"
        )
        raise TrainingDiverged(
            f"{what} became {value.detach().float().item()} at step {pos.step + 1} (epoch "
            f"{pos.epoch}, batch {pos.batch}); training stopped and {kept}. Try a lower "
            "learning rate, gradient clipping (clip_norm) or fp32 precision."
        )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Dataset) -> dict[str, float]:
        """Mean loss and metrics over ``data`` (weighted by each batch's item count)."""
        cfg, ctx = self.config, self.ctx
        was_training = model.training
        model.eval()
        totals: dict[str, float] = {}
        carry = None
        size = len(data)
        for first in range(0, size, cfg.batch_size):
            idx = list(range(first, min(first + cfg.batch_size, size)))[ctx.rank :: ctx.world_size]
            if not idx:
                continue
            items = [data[i] for i in idx]
            batch = (
                self.collate_fn(items)
                if self.collate_fn
                else torch.utils.data.default_collate(items)
            )
            with autocast(cfg.precision, self.device):
                out = self.step_fn(model, _to_device(batch, self.device), carry)
            carry = out.state
            weight = float(out.weight)
            totals["loss"] = totals.get("loss", 0.0) + out.loss.float().item() * weight
            for key, value in (out.metrics or {}).items():
                totals[key] = totals.get(key, 0.0) + float(value) * weight
            totals["_weight"] = totals.get("_weight", 0.0) + weight
        model.train(was_training)
        totals = dist_util.sum_across(totals, ctx, self.device)
        weight = totals.pop("_weight", 0.0)
        if weight == 0:
            raise ValueError("the validation set is empty")
        return {f"val_{k}": v / weight for k, v in totals.items()}

    def _validate(self, net: nn.Module, val_data: Dataset | None, run: _Run) -> None:
        """Evaluate, log, step the plateau schedule, keep the best weights, ask early stopping."""
        if val_data is None:
            return
        pos = run.pos
        metrics = self.evaluate(net if run.average is None else run.average.module, val_data)
        monitor = self.config.early_stopping.monitor
        if monitor not in metrics:
            raise ValueError(
                f"early_stopping.monitor is {monitor!r}, but validation reports {sorted(metrics)}"
            )
        value = metrics[monitor]
        metrics["elapsed_s"] = time.perf_counter() - run.started  # since this fit() began
        run.history.append({"step": pos.step, **metrics})
        if self.ctx.is_main:
            run.metrics_log.write(pos.step, pos.epoch, metrics)
        run.schedule.after_eval(value)
        decision = run.stopper.update(value, pos.step)
        log.info("step %d: %s", pos.step, decision.reason)
        if decision.improved:
            validated = self.model if run.average is None else run.average.module
            run.best_weights = {
                k: v.detach().clone().cpu() for k, v in validated.state_dict().items()
            }
            if self.best_checkpoint is not None and self.ctx.is_main:
                save_checkpoint(
                    self.best_checkpoint,
                    {
                        "config": self.saved_config,
                        "extras": self.checkpoint_extras,
                        "model": run.best_weights,
                        "step": pos.step,
                    },
                )
        if decision.stop:
            run.stop, run.reason = True, decision.reason

    def _restore_best(self, run: _Run) -> bool:
        if run.best_weights is None or not self.config.early_stopping.restore_best:
            return False
        self.model.load_state_dict(run.best_weights)
        log.info("restored the best weights from step %d", run.stopper.best_step)
        return True

    # ------------------------------------------------------------------ checkpoints
    def _save(self, run: _Run) -> None:
        if self.last_checkpoint is None or not self.ctx.is_main:
            return
        save_checkpoint(
            self.last_checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.saved_config,
                "extras": self.checkpoint_extras,
                "model": self.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "schedule": run.schedule.state_dict(),
                "scaler": run.scaler.state_dict(),
                "early_stopping": run.stopper.state_dict(),
                "position": vars(run.pos).copy(),
                "stopped": {"stop": run.stop, "reason": run.reason},
                "best_model": run.best_weights,  # so a resume restores the same best weights
                "average": None if run.average is None else run.average.state_dict(),
                "history": run.history,
                "rng": capture_rng_state(),
                "carry": run.carry,
            },
        )

    def _resume(self, resume: bool | str | Path, run: _Run) -> None:
        path = self.last_checkpoint if resume is True else Path(resume)
        if path is None:
            raise ValueError("resume=True needs a run_dir to find the last checkpoint in")
        if not path.exists():
            if resume is True:
                log.info("no checkpoint at %s: starting from scratch", path)
                return
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path} is not a trainer checkpoint (format "
                f"{state.get('format')!r}, expected {CHECKPOINT_FORMAT!r})"
            )
        load_weights(self.model, state["model"], path)
        decay = (state.get("config") or {}).get("train", {}).get("ema_decay", 0.0)
        if decay != self.config.ema_decay:
            raise ValueError(
                f"{path} was trained with ema_decay={decay}, but this run has ema_decay="
                f"{self.config.ema_decay}: resume with the setting the run was started with"
            )
        if run.average is not None:
            run.average.load_state_dict(state["average"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.schedule.load_state_dict(state["schedule"])
        run.scaler.load_state_dict(state["scaler"])
        run.stopper.load_state_dict(state["early_stopping"])
        restore_rng_state(state["rng"])
        run.pos = Position(**state["position"])
        run.history = list(state["history"])
        run.carry = state["carry"]
        run.stop, run.reason = state["stopped"]["stop"], state["stopped"]["reason"]
        run.best_weights = state["best_model"]
        run.metrics_log.load_existing()
        run.metrics_log.trim_after(run.pos.step)
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path,
            run.pos.step,
            run.pos.epoch,
            run.pos.batch,
        )


@dataclass
class _Run:
    """The mutable state of one ``fit`` call."""

    started: float  # time.perf_counter() at the start of fit
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: Any
    stopper: EarlyStopping
    metrics_log: MetricsLog
    reason: str
    pos: Position = field(default_factory=Position)
    carry: Any = None
    stop: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    best_weights: dict[str, Tensor] | None = None
    average: WeightAverage | None = None  # the moving average of the weights (ema_decay)


def load_weights(
    model: nn.Module, weights: Mapping[str, Tensor], source: Any = "checkpoint"
) -> None:
    """Load ``weights`` into ``model``, explaining any mismatch of names or shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit this model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in own.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source} does not fit this model: {name} has shape "
                f"{tuple(weights[name].shape)} in the checkpoint but {tuple(tensor.shape)} "
                "in the model (was it trained with another configuration?)"
            )
    model.load_state_dict(dict(weights))


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(_to_device(b, device) for b in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _detach(state: Any) -> Any:
    """Cut the graph behind a carried recurrent state (truncated BPTT), keeping its structure."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detach(s) for s in state))
    if isinstance(state, list | tuple):
        return type(state)(_detach(s) for s in state)
    if isinstance(state, dict):
        return {k: _detach(v) for k, v in state.items()}
    return state
