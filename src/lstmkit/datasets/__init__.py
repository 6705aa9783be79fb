"""Small datasets shipped inside the package, for the demo, the docs and the tests.

- ``airline_passengers``: monthly totals of international airline passengers (thousands),
  January 1949 to December 1960, 144 values (Box & Jenkins, *Time Series Analysis*, 1976,
  series G; public domain). A classic: trend plus a multiplicative yearly season.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd


def airline_passengers_path() -> str:
    return str(resources.files("lstmkit.datasets") / "airline_passengers.csv")


def airline_passengers() -> pd.DataFrame:
    """Columns ``month`` (datetime, month start) and ``passengers`` (int)."""
    frame = pd.read_csv(airline_passengers_path())
    frame["month"] = pd.to_datetime(frame["month"], format="%Y-%m")
    return frame
