"""Forecast accuracy, the naive baselines every report shows, and skill scores.

Definitions follow the M4 competition (Makridakis et al. 2020). For a forecast ŷ of the h steps
y after a history x_1..x_n:

    MAE   = mean |y - ŷ|                   MSE = mean (y - ŷ)²        RMSE = √MSE
    MAPE  = 100 · mean |y - ŷ| / |y|       (undefined where y = 0: those points are skipped)
    sMAPE = 200 · mean |y - ŷ| / (|y| + |ŷ|)
    MASE  = mean |y - ŷ| / scale,  scale = mean_{t>m} |x_t - x_{t-m}|   (in-sample seasonal naive)
    coverage = share of y inside [lower, upper]

Baselines: naive repeats the last value; seasonal naive repeats the last season (period m).
Skill = 1 - metric(model) / metric(baseline): > 0 means the model beats the baseline.
"""

from __future__ import annotations

import numpy as np

POINT_METRICS = ("mae", "mse", "rmse", "mape", "smape", "mase")


def _pair(y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    if y.shape != y_hat.shape:
        raise ValueError(
            f"actuals and forecasts must have the same shape, got {y.shape} and {y_hat.shape}"
        )
    if y.size == 0:
        raise ValueError("cannot score an empty forecast")
    return y, y_hat


def mae(y: np.ndarray, y_hat: np.ndarray) -> float:
    y, y_hat = _pair(y, y_hat)
    return float(np.mean(np.abs(y - y_hat)))


def mse(y: np.ndarray, y_hat: np.ndarray) -> float:
    y, y_hat = _pair(y, y_hat)
    return float(np.mean((y - y_hat) ** 2))


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    return float(np.sqrt(mse(y, y_hat)))


def mape(y: np.ndarray, y_hat: np.ndarray) -> float:
    y, y_hat = _pair(y, y_hat)
    nonzero = y != 0
    if not nonzero.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs(y - y_hat)[nonzero] / np.abs(y[nonzero])))


def smape(y: np.ndarray, y_hat: np.ndarray) -> float:
    y, y_hat = _pair(y, y_hat)
    denom = np.abs(y) + np.abs(y_hat)
    terms = np.where(denom == 0, 0.0, np.abs(y - y_hat) / np.where(denom == 0, 1.0, denom))
    return float(200.0 * np.mean(terms))


def mase_scale(history: np.ndarray, period: int = 1) -> np.ndarray:
    """In-sample mean absolute error of the seasonal naive forecast, per channel.

    ``history`` is (n,) or (n, C); returns a scalar array or (C,). ``period`` 1 is the naive.
    """
    x = np.asarray(history, dtype=np.float64)
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    if x.shape[0] <= period:
        raise ValueError(
            f"MASE needs a history longer than the period {period}, got {x.shape[0]} steps"
        )
    return np.mean(np.abs(x[period:] - x[:-period]), axis=0)


def mase(y: np.ndarray, y_hat: np.ndarray, scale: float | np.ndarray) -> float:
    """MAE divided by ``scale`` (from ``mase_scale``); scale broadcasts over the last axis."""
    y, y_hat = _pair(y, y_hat)
    scale = np.asarray(scale, dtype=np.float64)
    if np.any(scale <= 0):
        return float("nan")  # a constant history has no scale
    return float(np.mean(np.abs(y - y_hat) / scale))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    y, lower = _pair(y, lower)
    _, upper = _pair(y, upper)
    return float(np.mean((y >= lower) & (y <= upper)))


def pinball(y: np.ndarray, q_hat: np.ndarray, quantile: float) -> float:
    """Mean quantile (pinball) loss of the ``quantile`` forecast ``q_hat``."""
    y, q_hat = _pair(y, q_hat)
    diff = y - q_hat
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def point_metrics(y: np.ndarray, y_hat: np.ndarray, scale: float | np.ndarray) -> dict[str, float]:
    return {
        "mae": mae(y, y_hat),
        "mse": mse(y, y_hat),
        "rmse": rmse(y, y_hat),
        "mape": mape(y, y_hat),
        "smape": smape(y, y_hat),
        "mase": mase(y, y_hat, scale),
    }


def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last value: history (n, C) -> (horizon, C)."""
    x = np.asarray(history)
    return np.repeat(x[-1:], horizon, axis=0)


def seasonal_naive_forecast(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Repeat the last full season: ŷ_{n+k} = x_{n+k-m·ceil(k/m)}. history (n, C) -> (H, C)."""
    x = np.asarray(history)
    if x.shape[0] < period:
        raise ValueError(
            f"seasonal naive needs at least one season ({period} steps) of "
            f"history, got {x.shape[0]}"
        )
    last_season = x[-period:]
    reps = -(-horizon // period)
    return np.concatenate([last_season] * reps, axis=0)[:horizon]


def skill(model_value: float, baseline_value: float) -> float:
    """1 - model / baseline (> 0: the model is better); nan when the baseline scores 0."""
    if baseline_value == 0 or not np.isfinite(baseline_value):
        return float("nan")
    return 1.0 - model_value / baseline_value
