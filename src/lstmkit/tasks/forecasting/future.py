"""Forecasting past the end of the data: the horizon's timestamps appended to each series,
with the known-future covariates a user gives for them.

    series      |=========== history ===========|  horizon (NaN targets)  |
    future=     time, [id], future covariates    |  one row per step here  |
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lstmkit.data.series_loading import parse_time
from lstmkit.data.timeseries import SeriesSet
from lstmkit.tasks.forecasting.config import DataConfig


def future_tables(future: pd.DataFrame | None, data: DataConfig) -> dict[str, pd.DataFrame] | None:
    """Per series id, the future covariates over the horizon, indexed by time."""
    if future is None:
        return None
    if not isinstance(future, pd.DataFrame):
        raise ValueError(f"future must be a pandas DataFrame, got {type(future).__name__}")
    needed = [data.time_col, *([data.id_col] if data.id_col else []), *data.future_covariates]
    missing = [c for c in needed if c not in future.columns]
    if missing:
        raise ValueError(
            f"future is missing column(s) {missing}; it needs {needed}, got {list(future.columns)}"
        )
    table = future[needed].copy()
    try:  # the same parsing, and messages, as the data's own time column
        times = parse_time(table[data.time_col].reset_index(drop=True), data.time_col)
    except ValueError as err:
        raise ValueError(f"future covariates table: {err}") from None
    table[data.time_col] = times
    covariates = list(data.future_covariates)
    values = table[covariates]
    bad = values.apply(pd.to_numeric, errors="coerce").isna() & values.notna()
    if bad.to_numpy().any():
        row = int(np.flatnonzero(bad.any(axis=1).to_numpy())[0])
        raise ValueError(
            f"future covariates must be numbers, got {values.iloc[row].to_dict()} in row {row}"
        )
    table[covariates] = values.apply(pd.to_numeric)  # NaN is refused where it is read
    if data.id_col is None:
        return {"": table.set_index(data.time_col)[covariates]}
    return {
        str(sid): part.set_index(data.time_col)[covariates]
        for sid, part in table.groupby(data.id_col, sort=False)
    }


def extend_for_origin(
    series_set: SeriesSet, horizon: int, future: dict[str, pd.DataFrame] | None = None
) -> SeriesSet:
    """Append ``horizon`` future steps (NaN targets) so the last window's origin is the end;
    their future covariates come from ``future`` (per series id, indexed by time) when given."""
    extended = []
    for s in series_set.series:
        time = pd.date_range(s.time[-1], periods=horizon + 1, freq=series_set.freq)[1:]
        pad = lambda a: np.concatenate([a, np.full((horizon, a.shape[1]), np.nan, a.dtype)])  # noqa: E731
        ahead = pad(s.future)
        if future is not None:
            ahead[-horizon:] = _future_rows(future, s.id, time)
        extended.append(
            type(s)(
                id=s.id,
                time=s.time.append(time),
                target=pad(s.target),
                past=pad(s.past),
                future=ahead,
                static=s.static,
            )
        )
    return SeriesSet(spec=series_set.spec, freq=series_set.freq, series=extended, report=[])


def _future_rows(
    future: dict[str, pd.DataFrame], series_id: str, time: pd.DatetimeIndex
) -> np.ndarray:
    """The future covariates of one series at ``time`` (the horizon after its end)."""
    table = future.get(series_id) if series_id in future else future.get("")
    if table is None:
        raise ValueError(f"future has no rows for series {series_id!r}")
    if table.index.tz is None and time.tz is not None:
        table = table.tz_localize(time.tz)
    elif table.index.tz is not None and time.tz is None:
        raise ValueError(
            f"future's timestamps are timezone-aware ({table.index.tz}) but the data's are not; "
            "give both in the same form"
        )
    missing = time.difference(table.index)
    if len(missing):
        raise ValueError(
            f"future covariates of series {series_id!r} must cover the {len(time)} steps after "
            f"its end ({time[0]} to {time[-1]}); missing {[str(t) for t in missing[:5]]}"
        )
    used = table[table.index.isin(time)]
    if used.index.duplicated().any():
        first = used.index[used.index.duplicated()][0]
        raise ValueError(f"future has two rows for series {series_id!r} at {first}")
    rows = used.loc[time]
    if rows.isna().to_numpy().any():
        when = rows.index[rows.isna().any(axis=1).to_numpy()][0]
        raise ValueError(f"future covariates of series {series_id!r} are NaN at {when}")
    return rows.to_numpy(dtype=np.float64)
