"""The task registry: every application registers its name, a description and a smoke run.

The smoke run trains the task for a tiny budget into a run directory; CI runs every one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    smoke: Callable[[Path], Any]  # tiny-budget training run into the given run directory


def _adding_smoke(run_dir: Path) -> Any:
    from lstmkit.tasks.adding import AddingConfig, default_train_config, train_adding

    config = AddingConfig(
        seq_len=10, hidden_size=8, train_samples=256, val_samples=64, test_samples=64
    )
    return train_adding(config, default_train_config(max_epochs=1, batch_size=32), run_dir)


def _language_model_smoke(run_dir: Path) -> Any:
    from lstmkit.data.text import builtin_corpus, split_text
    from lstmkit.tasks.language_model import LanguageModelConfig, train_language_model
    from lstmkit.training import TrainConfig

    train_text, val_text = split_text(builtin_corpus("shakespeare"), 0.1)
    config = LanguageModelConfig(embedding_size=16, hidden_size=32, num_layers=1, bptt=32)
    return train_language_model(
        config, train_text, val_text, TrainConfig(max_epochs=1, max_steps=4), run_dir=run_dir
    )


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("adding", "the adding problem: long-term memory on synthetic data", _adding_smoke),
        TaskSpec(
            "language_model",
            "language modelling and text generation on any UTF-8 text",
            _language_model_smoke,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
