"""Honest evaluation: the model beside the naive and seasonal-naive baselines, and backtests.

Every window of the test part is forecast by the model and by both baselines from the same
origin; metrics pool all windows, steps and channels. Backtesting refits at several origins:

    expanding   |==train==|test|                 sliding   |==train==|test|
                |====train====|test|                           |==train==|test|
                |======train======|test|                           |==train==|test|
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd

from lstmkit.data.timeseries import SeriesSet, check_min_length
from lstmkit.tasks.forecasting import metrics as M
from lstmkit.tasks.forecasting.config import ForecastConfig
from lstmkit.tasks.forecasting.forecaster import (
    Forecaster,
    check_seasonal_history,
    item_windows,
)

log = logging.getLogger(__name__)

BASELINES = ("naive", "seasonal_naive")


def evaluate(
    forecaster: Forecaster, frame: pd.DataFrame | SeriesSet, *, scaled: bool = False
) -> dict[str, Any]:
    """Score the test part (``data.test_size`` last steps of each series).

    ``scaled=True`` scores in the scaler's units (as the ETT protocol's normalised MSE/MAE).
    Returns JSON-able metrics for the model and both baselines, skill scores, whether the model
    beats each baseline, interval coverage and MAE by horizon step.
    """
    data = forecaster.config.data
    if not data.test_size:
        raise ValueError(
            "evaluation scores the held-out test part, but this forecaster was trained with "
            "data.test_size 0 (no test part); train it again with a test size of at least the "
            "horizon (--test-size N, or data.test_size in the config)"
        )
    series_set = frame if isinstance(frame, SeriesSet) else forecaster.load(frame)
    data.check_parts()
    check_min_length(
        series_set,
        data.input_len + data.test_size,
        f"input_len {data.input_len} + test {data.test_size}",
    )
    test_start = [len(s) - data.test_size for s in series_set.series]
    check_seasonal_history(series_set, data, min(test_start))
    scaler = forecaster.scaler_for(series_set)
    forecaster.check_held_out(series_set, test_start)
    scaled_set = scaler.transform(series_set)
    source = scaled_set if scaled else series_set
    windows = forecaster.windows(
        scaled_set,
        test_start,
        [len(s) for s in series_set.series],
        stride=1,
    )
    predicted = forecaster.forecast_windows(windows, scaled=scaled, scaler=scaler)  # (N,H,C,Q)
    period = data.period(series_set.freq)
    actual, naive, snaive, scales = [], [], [], []
    for window, channel in item_windows(windows):
        series = source.series[window.series_index]
        target = series.target
        if channel is not None:
            target = target[:, channel : channel + 1]
        origin = window.start + data.input_len
        history = target[:origin]
        actual.append(target[origin : origin + data.horizon])
        naive.append(M.naive_forecast(history, data.horizon))
        snaive.append(M.seasonal_naive_forecast(history, data.horizon, period))
        scales.append(M.mase_scale(history, period))  # M4: the in-sample history
    y = np.stack(actual).astype(np.float64)  # (N, H, C)
    scale = np.stack(scales)[:, None, :]  # (N, 1, C)
    point = predicted[..., forecaster._point_index()]
    forecasts = {"model": point, "naive": np.stack(naive), "seasonal_naive": np.stack(snaive)}
    report: dict[str, Any] = {
        "windows": len(y),
        "horizon": data.horizon,
        "seasonal_period": period,
        "units": "scaled" if scaled else "data",
        "fill_notes": len(series_set.report),  # fills made in loading (scored as observed)
    }
    for name, values in forecasts.items():
        report[name] = _scores(y, values, scale)
    report["skill"] = {
        f"vs_{b}": {
            k: M.skill(report["model"][k], report[b][k]) for k in ("mae", "mse", "smape", "mase")
        }
        for b in BASELINES
    }
    report["beats"] = {b: bool(report["skill"][f"vs_{b}"]["mae"] > 0) for b in BASELINES}
    report["mae_by_horizon"] = {
        name: np.mean(np.abs(y - v), axis=(0, 2)).tolist() for name, v in forecasts.items()
    }
    qs = forecaster.config.quantiles
    if len(qs) >= 3:
        lower, upper = predicted[..., 0], predicted[..., -1]
        report["interval"] = {
            "level": round(qs[-1] - qs[0], 6),
            "coverage": M.coverage(y, lower, upper),
            "crossings": int(np.sum(np.diff(predicted, axis=-1) < 0)),
        }
    return report


def _scores(y: np.ndarray, y_hat: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """Point metrics, and MASE over the windows and channels whose history varies: a history
    with no seasonal change (scale 0) has no MASE, and one such series must not turn the
    panel's into NaN; NaN only when no history varies."""
    scores = M.point_metrics(y, y_hat, 1.0)
    scaled = np.abs(y - y_hat) / np.where(scale > 0, scale, np.nan)
    usable = np.broadcast_to(scale > 0, scaled.shape)  # (a NaN forecast still shows as NaN)
    scores["mase"] = float(scaled[usable].mean()) if usable.any() else float("nan")
    return scores


def backtest(
    config: ForecastConfig,
    frame: pd.DataFrame | SeriesSet,
    *,
    folds: int = 3,
    mode: str = "expanding",
    step: int = 0,
) -> dict[str, Any]:
    """Refit and evaluate at ``folds`` origins, ``step`` steps apart (default: the test size,
    itself one horizon when ``test_size`` is 0)."""
    if mode not in ("expanding", "sliding"):
        raise ValueError(f"mode must be 'expanding' or 'sliding'; got {mode!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be a positive integer, got {folds!r}")
    data = config.data
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer (0: one test part), got {step!r}")
    test = data.test_size or data.horizon
    step = step or test
    if step < test:
        raise ValueError(
            f"step {step} is shorter than the test part ({test} steps): the folds' test parts "
            "would overlap and count the same steps twice; use a step of at least the test size"
        )
    fold_config = dataclasses.replace(config, data=dataclasses.replace(data, test_size=test))
    series_set = frame if isinstance(frame, SeriesSet) else Forecaster(fold_config).load(frame)
    # origins count back from each series' own end, so a panel aligned on its last date is cut
    # at the same dates; a sliding window keeps the first fold's length
    shortest = min(len(s) for s in series_set.series)
    window = shortest - (folds - 1) * step
    need = data.input_len + data.horizon + data.validation_steps + test
    if window < need:
        raise ValueError(
            f"{folds} folds {step} steps apart leave the shortest series ({shortest} steps) "
            f"{window} steps for the first fold, fewer than the {need} it needs (input_len "
            f"{data.input_len} + horizon {data.horizon} + validation {data.validation_steps} + "
            f"test {test}); use fewer folds or a smaller step"
        )
    results = []
    for k in range(folds):
        back = (folds - 1 - k) * step  # steps after this fold's end
        stop = -back if back else None
        start = 0 if mode == "expanding" else -(back + window)
        fold_set = series_set
        if data.fill == "interpolate" and back and isinstance(frame, SeriesSet):
            log.warning(
                "fold %d: a SeriesSet arrives filled; interpolation may have read this fold's "
                "held-out steps (pass the DataFrame to fill each fold on its own)",
                k + 1,
            )
        elif data.fill == "interpolate" and back:
            # interpolation must not read this fold's validation and test parts, nor the steps
            # after them: filled again with them in the causal tail
            fold_set = Forecaster(fold_config).load(frame, before_end=back)
        subset = fold_set.slice_time(start, stop)
        forecaster = Forecaster(fold_config)
        forecaster.fit(subset)
        report = evaluate(forecaster, subset)
        results.append({"fold": k, "steps_before_end": back, "test_size": test, **report})
        log.info(
            "fold %d/%d: model MAE %.4g, seasonal naive MAE %.4g",
            k + 1,
            folds,
            report["model"]["mae"],
            report["seasonal_naive"]["mae"],
        )
    return {
        "mode": mode,
        "step": step,
        "folds": results,
        "mean": {**_mean_over_folds(results), "fill_notes": len(series_set.report)},
    }


def _mean_over_folds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's mean over the folds, the skill scores of those means, whether the model
    beats each baseline on them, and the mean interval coverage where there is one."""
    summary: dict[str, Any] = {
        name: {m: float(np.mean([r[name][m] for r in results])) for m in M.POINT_METRICS}
        for name in ("model", *BASELINES)
    }
    summary["seasonal_period"] = results[0]["seasonal_period"]
    summary["skill"] = {
        f"vs_{b}": {
            k: M.skill(summary["model"][k], summary[b][k]) for k in ("mae", "mse", "smape", "mase")
        }
        for b in BASELINES
    }
    summary["beats"] = {b: bool(summary["skill"][f"vs_{b}"]["mae"] > 0) for b in BASELINES}
    if all("interval" in r for r in results):
        summary["interval"] = {
            "level": results[0]["interval"]["level"],
            "coverage": float(np.mean([r["interval"]["coverage"] for r in results])),
        }
    return summary
