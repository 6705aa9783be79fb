"""Forecast plots as PNG files: forecast against actuals with intervals, and error by horizon."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_forecast(
    path: str | Path,
    history_time: Sequence,
    history: np.ndarray,
    future_time: Sequence,
    forecast: np.ndarray,
    *,
    actual: np.ndarray | None = None,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    interval_label: str = "interval",
    baseline: np.ndarray | None = None,
    baseline_label: str = "seasonal naive",
    title: str = "",
) -> Path:
    """History, forecast (with an optional interval band), actuals and a baseline, 1-D each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(history_time, history, color="0.35", lw=1.2, label="history")
    if actual is not None:
        ax.plot(future_time, actual, color="black", lw=1.5, label="actual")
    if lower is not None and upper is not None:
        ax.fill_between(
            future_time, lower, upper, color="tab:blue", alpha=0.2, label=interval_label
        )
    if baseline is not None:
        ax.plot(future_time, baseline, color="tab:orange", lw=1.2, ls="--", label=baseline_label)
    ax.plot(future_time, forecast, color="tab:blue", lw=1.8, label="LSTM forecast")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return _save(plt, fig, path)


def plot_error_by_horizon(
    path: str | Path, errors: dict[str, np.ndarray], metric: str = "MAE", title: str = ""
) -> Path:
    """One line per model: ``errors[name]`` is the metric at horizon steps 1..H."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in errors.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=name)
    ax.set_xlabel("steps ahead")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (creating folders) and release it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
