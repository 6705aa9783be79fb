"""Small synthetic series for the forecasting tests: seasonal, trended, several ids."""

import numpy as np
import pandas as pd
import pytest


def make_long_frame(n_series: int = 3, length: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_series):
        t = np.arange(length)
        promo = (t % 7 == 0).astype(float)
        sales = 10 + i * 5 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + 2 * promo
        sales = sales + rng.normal(0, 0.2, length)
        frames.append(
            pd.DataFrame(
                {
                    "store": f"s{i}",
                    "date": pd.date_range("2020-01-01", periods=length, freq="D"),
                    "sales": sales,
                    "temp": rng.normal(20, 2, length),
                    "promo": promo,
                    "size": float(i + 1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def long_frame() -> pd.DataFrame:
    return make_long_frame()


@pytest.fixture
def wide_frame() -> pd.DataFrame:
    t = np.arange(96)
    return pd.DataFrame(
        {
            "time": pd.date_range("2021-01-01", periods=96, freq="h"),
            "a": np.sin(2 * np.pi * t / 24) + 0.01 * t,
            "b": np.cos(2 * np.pi * t / 24) * 2 + 5,
        }
    )
