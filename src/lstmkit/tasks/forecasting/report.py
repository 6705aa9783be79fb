"""A forecasting run directory: the fitted forecaster, ``metrics.json`` and the plots.

RUN_DIR/
  config.json, environment.json, metrics.csv, checkpoints/   (written by the Trainer)
  forecaster.safetensors     the fitted model, scaler and config (Forecaster.load_from)
  data_report.json           every fill (gap or NaN) data.fill made, when it made any
  metrics.json               model and baselines on the held-out test part, skill scores
  forecast.png               the last test window of the first series, with its interval
  error_by_horizon.png       MAE at each step ahead, model against both baselines
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstmkit.data.timeseries import SeriesSet
from lstmkit.tasks.forecasting import metrics as M
from lstmkit.tasks.forecasting.evaluation import evaluate
from lstmkit.tasks.forecasting.forecaster import Forecaster, item_windows
from lstmkit.tasks.forecasting.plots import plot_error_by_horizon, plot_forecast
from lstmkit.training.checkpoint import atomic_write_text

# What a run writes into its directory (the Trainer's files, then this module's).
RUN_FILES = (
    "config.json",
    "environment.json",
    "metrics.csv",
    "forecaster.safetensors",
    "data_report.json",
    "metrics.json",
    "forecast.png",
    "error_by_horizon.png",
)
RUN_FOLDERS = ("checkpoints", "tensorboard")
SCORED = ("metrics.json", "forecast.png", "error_by_horizon.png")  # only with a test part


def previous_run(run_dir: str | Path) -> list[str]:
    """The names of an earlier run's files and folders in ``run_dir`` (none if it is new)."""
    run_dir = Path(run_dir)
    return [name for name in (*RUN_FILES, *RUN_FOLDERS) if (run_dir / name).exists()]


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove an earlier run's files and folders (``checkpoints/`` and ``tensorboard/`` with
    all they hold) from ``run_dir``, and nothing else there; returns their names. A folder that
    is a symbolic link loses the link, not what it points to."""
    found = previous_run(run_dir)
    for name in found:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:  # a file, or a link (to checkpoints kept on another disk, say): the link only
            path.unlink()
    return found


@dataclass(frozen=True)
class RunReport:
    metrics: dict[str, Any] | None  # evaluate()'s report, or None without a test part
    forecaster_path: Path
    metrics_path: Path | None
    plots: list[Path]
    data_report_path: Path | None = None  # the fills made, when any


def write_run_report(
    forecaster: Forecaster, series_set: SeriesSet, run_dir: str | Path
) -> RunReport:
    """Save the forecaster and the fills made; with a test part, also score it and draw the
    plots (``metrics.json`` counts the fills: filled values in the test part are scored as if
    they had been observed)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = forecaster.save(run_dir / "forecaster.safetensors")
    fills = None
    if series_set.report:
        fills = run_dir / "data_report.json"
        notes = {"fill": forecaster.config.data.fill, "fills": series_set.report}
        atomic_write_text(fills, json.dumps(notes, indent=2))
    else:  # an earlier run's fills are not this run's
        (run_dir / "data_report.json").unlink(missing_ok=True)
    if not forecaster.config.data.test_size:
        for name in SCORED:  # nor are an earlier run's scores and plots
            (run_dir / name).unlink(missing_ok=True)
        return RunReport(None, saved, None, [], fills)
    report = evaluate(forecaster, series_set)  # its fill_notes count the fills made
    metrics_path = run_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(report, indent=2, allow_nan=True))
    plots = [
        plot_last_window(forecaster, series_set, run_dir / "forecast.png"),
        plot_error_by_horizon(
            run_dir / "error_by_horizon.png",
            report["mae_by_horizon"],
            title="Test MAE by steps ahead",
        ),
    ]
    return RunReport(report, saved, metrics_path, plots, fills)


def plot_last_window(forecaster: Forecaster, series_set: SeriesSet, path: Path) -> Path:
    """The last test window of the first series and its first target."""
    data = forecaster.config.data
    series = series_set.series[0]
    n = len(series)
    origin = n - data.horizon
    first_series = SeriesSet(series_set.spec, series_set.freq, [series], [])
    scaler = forecaster.scaler_for(first_series)
    windows = forecaster.windows(scaler.transform(first_series), [origin], [n], stride=1)
    first = next(i for i, (w, c) in enumerate(item_windows(windows)) if not c)
    values = forecaster.forecast_windows(_Subset(windows, first), scaler=scaler)[0]  # (H, C, Q)
    qs = forecaster.config.quantiles
    history_start = max(0, origin - 4 * max(data.input_len, data.horizon))
    target = series.target[:, 0]
    period = data.period(series_set.freq)
    baseline = (
        M.seasonal_naive_forecast(target[:origin, None], data.horizon, period)[:, 0]
        if origin >= period
        else None
    )
    return plot_forecast(
        path,
        series.time[history_start:origin],
        target[history_start:origin],
        series.time[origin:],
        values[:, 0, forecaster._point_index()],
        actual=target[origin:],
        lower=values[:, 0, 0] if len(qs) >= 3 else None,
        upper=values[:, 0, -1] if len(qs) >= 3 else None,
        interval_label=f"{round(100 * (qs[-1] - qs[0]))}% interval" if qs else "",
        baseline=baseline,
        baseline_label=f"seasonal naive (m={period})",
        title=f"{series.id}: {data.targets[0]}, last {data.horizon} steps",
    )


class _Subset:
    """One window of a WindowDataset, as a dataset of length 1."""

    def __init__(self, dataset: Any, index: int) -> None:
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.index]


def format_table(report: dict[str, Any]) -> list[str]:
    """Rows of a model-vs-baselines table for the CLI to print."""
    rows = [f"{'':24}{'MAE':>10}{'RMSE':>10}{'sMAPE %':>10}{'MASE':>8}"]
    for name, label in (
        ("model", "LSTM"),
        ("naive", "naive"),
        ("seasonal_naive", f"seasonal naive (m={report['seasonal_period']})"),
    ):
        s = report[name]
        rows.append(
            f"{label:24.24}{s['mae']:>10.4g}{s['rmse']:>10.4g}{s['smape']:>10.3g}{s['mase']:>8.3f}"
        )
    for base in ("naive", "seasonal_naive"):
        skill = report["skill"][f"vs_{base}"]["mae"]
        verdict = "beats" if report["beats"][base] else "does NOT beat"
        rows.append(f"LSTM {verdict} {base.replace('_', ' ')}: MAE skill {skill:+.3f}")
    if "interval" in report:
        iv = report["interval"]
        rows.append(f"{round(100 * iv['level'])}% interval coverage: {iv['coverage']:.3f}")
    if report.get("fill_notes"):
        rows.append(
            f"note: data.fill filled gaps or NaNs ({report['fill_notes']} series/column(s)); "
            "filled values in the test part are scored as if observed"
        )
    if not np.isfinite(report["model"]["mae"]):
        rows.append("warning: the model's MAE is not finite")
    return rows
