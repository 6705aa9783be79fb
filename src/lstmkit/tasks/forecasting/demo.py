"""The README demo: forecast the last year of the airline passengers series (shipped inside
the package) and compare with the naive and seasonal-naive baselines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lstmkit.datasets import airline_passengers
from lstmkit.tasks.forecasting.config import DataConfig, ForecastConfig
from lstmkit.tasks.forecasting.forecaster import Forecaster
from lstmkit.tasks.forecasting.models import ModelConfig
from lstmkit.tasks.forecasting.report import RunReport, write_run_report
from lstmkit.training import EarlyStoppingConfig, FitResult, OptimConfig, TrainConfig


def demo_config(**train_changes) -> ForecastConfig:
    """1949-1958 train, 1959 validation, 1960 test; 24 months in, 12 out; 80% intervals."""
    train = TrainConfig(
        max_epochs=300,
        batch_size=16,
        seed=0,
        optim=OptimConfig(lr=3e-3),
        early_stopping=EarlyStoppingConfig(patience=40),
    )
    return ForecastConfig(
        data=DataConfig(
            time_col="month",
            targets=("passengers",),
            freq="MS",
            input_len=24,
            horizon=12,
            val_size=12,
            test_size=12,
        ),
        model=ModelConfig(kind="direct", hidden_size=32, normalization="revin"),
        train=replace(train, **train_changes),
        quantiles=(0.1, 0.5, 0.9),
        loss="mae",
    )


def run_demo(run_dir: str | Path, **train_changes) -> tuple[FitResult, RunReport]:
    forecaster = Forecaster(demo_config(**train_changes))
    series = forecaster.load(airline_passengers())
    fit = forecaster.fit(series, run_dir=run_dir)
    return fit, write_run_report(forecaster, series, run_dir)
