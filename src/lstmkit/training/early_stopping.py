"""Early stopping as a pure decision: feed it each validation value, it says what to do and why.

It keeps no reference to the model; the trainer keeps the best weights when told the value
improved. ``state_dict()`` makes a resumed run decide exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from lstmkit.training.config import EarlyStoppingConfig


class Decision(NamedTuple):
    improved: bool  # the value is the best so far (by more than min_delta)
    stop: bool  # patience is used up
    reason: str  # a sentence for the log


class EarlyStopping:
    def __init__(self, config: EarlyStoppingConfig) -> None:
        self.config = config
        self.best = math.inf if config.mode == "min" else -math.inf
        self.best_step = -1
        self.bad_evals = 0

    def update(self, value: float, step: int) -> Decision:
        cfg = self.config
        if not math.isfinite(value):
            raise ValueError(
                f"early stopping got a non-finite {cfg.monitor} = {value} at step {step}"
            )
        gain = (self.best - value) if cfg.mode == "min" else (value - self.best)
        if gain > cfg.min_delta or self.best_step < 0:
            self.best, self.best_step, self.bad_evals = value, step, 0
            return Decision(True, False, f"{cfg.monitor} improved to {value:.6g}")
        self.bad_evals += 1
        stop = cfg.enabled and self.bad_evals >= max(1, cfg.patience)
        reason = (
            f"{cfg.monitor} = {value:.6g} did not improve on {self.best:.6g} "
            f"(step {self.best_step}) for {self.bad_evals} evaluation(s)"
        )
        if stop:
            reason += f"; stopping (patience {cfg.patience})"
        return Decision(False, stop, reason)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_step = int(state["best_step"])
        self.bad_evals = int(state["bad_evals"])
