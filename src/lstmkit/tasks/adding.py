"""The adding problem: a long-term memory task, and the package's built-in demo.

An LSTM reads T (value, marker) pairs and must output the sum of the two marked values, so it
has to hold information across up to T steps. The baseline that ignores the input (always 1.0)
scores MSE ≈ 0.167; "solved" means test MSE < 0.01. See ``lstmkit.data.synthetic``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lstmkit.data.synthetic import adding_problem
from lstmkit.nn import LSTM
from lstmkit.nn.config import CELL_NAMES
from lstmkit.nn.validation import check_choice, check_positive_int

log = logging.getLogger(__name__)

SOLVED_MSE = 0.01


@dataclass(frozen=True)
class AddingConfig:
    """One adding-problem run."""

    seq_len: int = 50  # T, steps per sequence
    hidden_size: int = 32  # LSTM units
    cell: str = "lstm"  # any registered cell
    batch_size: int = 64
    max_steps: int = 3000  # optimiser steps at most
    lr: float = 1e-2  # Adam learning rate
    clip_norm: float = 1.0  # global gradient-norm clipping
    eval_every: int = 100  # steps between test evaluations
    test_samples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "seq_len",
            "hidden_size",
            "batch_size",
            "max_steps",
            "eval_every",
            "test_samples",
        ):
            check_positive_int(name, getattr(self, name))
        check_choice("cell", self.cell, CELL_NAMES)
        for name in ("lr", "clip_norm"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class AddingResult:
    test_mse: float  # the model's mean squared error on held-out sequences
    baseline_mse: float  # always predicting 1.0, the mean target
    steps: int  # optimiser steps taken
    seconds: float  # wall time of training
    solved: bool  # test_mse < 0.01
    config: dict

    @property
    def skill(self) -> float:
        """1 - model MSE / baseline MSE: 0 is no better than the baseline, 1 is perfect."""
        return 1.0 - self.test_mse / self.baseline_mse


class AddingModel(nn.Module):
    """LSTM over the sequence, then a linear read-out of the last hidden state."""

    def __init__(self, hidden_size: int, cell: str = "lstm") -> None:
        super().__init__()
        self.lstm = LSTM(2, hidden_size, cell=cell)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 2) -> (B, 1)
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


def train_adding(
    config: AddingConfig, on_eval: Callable[[int, float], None] | None = None
) -> AddingResult:
    """Train on fresh batches until the test MSE is below 0.01 or ``max_steps`` is reached.

    ``on_eval(step, test_mse)`` is called at every evaluation (the CLI shows progress with it).
    """
    torch.manual_seed(config.seed)
    data_rng = torch.Generator().manual_seed(config.seed)
    x_test, y_test = adding_problem(config.test_samples, config.seq_len, data_rng)
    model = AddingModel(config.hidden_size, config.cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = time.perf_counter()
    test_mse, step = float("inf"), 0
    for step in range(1, config.max_steps + 1):
        x, y = adding_problem(config.batch_size, config.seq_len, data_rng)
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        if step % config.eval_every == 0 or step == config.max_steps:
            test_mse = evaluate(model, x_test, y_test)
            log.info("step %d: train loss %.4f, test MSE %.4f", step, loss.item(), test_mse)
            if on_eval is not None:
                on_eval(step, test_mse)
            if test_mse < SOLVED_MSE / 2:  # comfortably solved: stop early
                break
    baseline = F.mse_loss(torch.ones_like(y_test), y_test).item()
    return AddingResult(
        test_mse=test_mse,
        baseline_mse=baseline,
        steps=step,
        seconds=time.perf_counter() - start,
        solved=test_mse < SOLVED_MSE,
        config=asdict(config),
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> float:
    was_training = model.training
    model.eval()
    mse = F.mse_loss(model(x), y).item()
    model.train(was_training)
    return mse
