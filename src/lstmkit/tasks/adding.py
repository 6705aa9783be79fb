"""The adding problem: a long-term memory task, and the package's built-in demo.

An LSTM reads T (value, marker) pairs and must output the sum of the two marked values, so it
has to hold information across up to T steps. The baseline that ignores the input (always 1.0)
scores MSE ≈ 0.167; "solved" means test MSE < 0.01. See ``lstmkit.data.synthetic``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from lstmkit.data.synthetic import adding_problem
from lstmkit.nn import LSTM, LSTMConfig
from lstmkit.nn.validation import check_positive_int
from lstmkit.training import (
    EarlyStoppingConfig,
    OptimConfig,
    StepOutput,
    TrainConfig,
    Trainer,
)

log = logging.getLogger(__name__)

SOLVED_MSE = 0.01


@dataclass(frozen=True)
class AddingConfig:
    """The adding-problem task: data sizes and the model."""

    seq_len: int = 50  # T, steps per sequence
    hidden_size: int = 32  # LSTM units
    train_samples: int = 16384  # fixed training set, reshuffled every epoch
    val_samples: int = 1000  # for early stopping
    test_samples: int = 1000  # held out, reported
    lstm: Mapping[str, Any] = field(default_factory=dict)  # more LSTM options (cell, dropouts)
    seed: int = 0  # data and initialisation

    def __post_init__(self) -> None:
        for name in ("seq_len", "hidden_size", "train_samples", "val_samples", "test_samples"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.lstm, Mapping):
            raise ValueError(f"lstm must be a mapping of LSTM options, got {self.lstm!r}")
        LSTMConfig(2, self.hidden_size, **self.lstm)  # validates every option by name


def default_train_config(**changes: Any) -> TrainConfig:
    """What the demo uses: Adam at 1e-2, norm clipping at 1, early stopping on val_loss."""
    base = TrainConfig(
        max_epochs=8,
        batch_size=64,
        clip_norm=1.0,
        optim=OptimConfig(lr=1e-2),
        early_stopping=EarlyStoppingConfig(patience=3),
    )
    return replace(base, **changes)


@dataclass(frozen=True)
class AddingResult:
    test_mse: float  # the model's mean squared error on held-out sequences
    baseline_mse: float  # always predicting 1.0, the mean target
    steps: int  # optimiser steps taken
    seconds: float  # wall time of training
    solved: bool  # test_mse < 0.01
    reason: str  # why training ended

    @property
    def skill(self) -> float:
        """1 - model MSE / baseline MSE: 0 is no better than the baseline, 1 is perfect."""
        return 1.0 - self.test_mse / self.baseline_mse


class AddingModel(nn.Module):
    """LSTM over the sequence, then a linear read-out of the last hidden state."""

    def __init__(self, config: AddingConfig) -> None:
        super().__init__()
        self.lstm = LSTM(2, config.hidden_size, **config.lstm)
        self.head = nn.Linear(config.hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 2) -> (B, 1)
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


def mse_step(model: nn.Module, batch: tuple[Tensor, Tensor], state: Any) -> StepOutput:
    x, y = batch
    return StepOutput(F.mse_loss(model(x), y), weight=len(x))


def train_adding(
    config: AddingConfig, train: TrainConfig | None = None, run_dir: str | Path | None = None
) -> AddingResult:
    """Train with the shared ``Trainer`` and report the test MSE beside the baseline's."""
    train = train or default_train_config()
    rng = torch.Generator().manual_seed(config.seed)
    train_set = TensorDataset(*adding_problem(config.train_samples, config.seq_len, rng))
    val_set = TensorDataset(*adding_problem(config.val_samples, config.seq_len, rng))
    x_test, y_test = adding_problem(config.test_samples, config.seq_len, rng)
    torch.manual_seed(config.seed)
    model = AddingModel(config)
    trainer = Trainer(
        model,
        mse_step,
        train,
        run_dir=run_dir,
        saved_config={"task": "adding", "adding": asdict(config)},
    )
    fit = trainer.fit(train_set, val_set)
    test_mse = evaluate(model.cpu(), x_test, y_test)
    baseline = F.mse_loss(torch.ones_like(y_test), y_test).item()
    log.info("adding T=%d: test MSE %.4f (baseline %.4f)", config.seq_len, test_mse, baseline)
    return AddingResult(
        test_mse=test_mse,
        baseline_mse=baseline,
        steps=fit.steps,
        seconds=fit.seconds,
        solved=test_mse < SOLVED_MSE,
        reason=fit.reason,
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> float:
    was_training = model.training
    model.eval()
    mse = F.mse_loss(model(x), y).item()
    model.train(was_training)
    return mse
