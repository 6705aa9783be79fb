"""The training engine shared by every task: ``Trainer`` and its configuration."""

from lstmkit.training.config import (
    EarlyStoppingConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)
from lstmkit.training.early_stopping import Decision, EarlyStopping
from lstmkit.training.memory import keep_freed_memory
from lstmkit.training.trainer import (
    FitResult,
    StepOutput,
    Trainer,
    TrainingDiverged,
    load_weights,
)

__all__ = [
    "Decision",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "FitResult",
    "OptimConfig",
    "ScheduleConfig",
    "StepOutput",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "keep_freed_memory",
    "load_weights",
]
