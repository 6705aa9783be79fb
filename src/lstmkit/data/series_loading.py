"""Reading and validating time series: a table in, regular float64 arrays out.

A ``SeriesSpec`` says which columns play which role; ``load_series`` checks the table against it
and returns a ``SeriesSet`` of regular, sorted, NaN-free series. Two table layouts are read::

    wide (id_col=None): one series,            long (id_col="store"): one series per id
    all target columns together (multivariate)
    date        OT    HUFL  hour               store  date        sales  promo
    2020-01-01  30.5  5.8   0                  a      2020-01-01  12     0
    2020-01-02  27.8  5.7   1                  a      2020-01-02  15     1
    ...                                        b      2020-01-01  7      0
                                               ...

Each series becomes arrays over its T regular timestamps (columns in the spec's order)::

    time    (T,)             DatetimeIndex, strictly increasing on the grid of ``freq``
    target  (T, n_targets)   float64
    past    (T, n_past)      covariates observed only up to the forecast origin
    future  (T, n_future)    covariates known ahead (calendar, planned promotions)
    static  (n_static,)      constant within the series

Nothing is dropped or truncated silently. Unsorted rows are sorted by time (no data is lost);
missing timestamps and NaNs are an error unless ``fill`` says how to fill them, and every fill
is written to ``SeriesSet.report``. Every check raises ``ValueError`` naming the column, the
row or timestamp, the value received and what was expected. Rows are 0-based positions in the
frame (for a CSV file with a header line, file line = row + 2).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from lstmkit.data.timeseries import (
    _VALUE_ROLES,
    FILL_STRATEGIES,
    WIDE_SERIES_ID,
    Series,
    SeriesSet,
    SeriesSpec,
    _preview,
    _show,
)

__all__ = ["load_series", "read_table"]

logger = logging.getLogger(__name__)

_READERS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


# --------------------------------------------------------------------------- reading


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV (.csv, .txt: separator sniffed; .tsv: tab) or Parquet (.parquet, .pq) file."""
    file = Path(path)
    kind = _READERS.get(file.suffix.lower())
    if kind is None:
        raise ValueError(
            f"cannot read {str(file)!r}: unsupported suffix {file.suffix!r}; "
            f"supported suffixes: {list(_READERS)}"
        )
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {str(file)!r}")
    if kind == "parquet":
        return pd.read_parquet(file)
    separator = {".tsv": "\t", ".txt": None}.get(file.suffix.lower(), ",")
    try:
        return pd.read_csv(file, sep=separator, engine="python" if separator is None else "c")
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"cannot read {str(file)!r}: the file has no columns ({error})") from None


# --------------------------------------------------------------------------- column checks


def _check_frame(frame: object, spec: SeriesSpec) -> None:
    """Raise unless ``frame`` is a non-empty DataFrame holding every column of ``spec`` once."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    available = list(frame.columns)
    missing = [column for column in spec.columns if column not in available]
    if missing:
        raise ValueError(f"column(s) {missing} not found; available columns: {available}")
    for column in spec.columns:
        count = available.count(column)
        if count > 1:
            raise ValueError(f"column {column!r} appears {count} times in the frame; need once")
    if len(frame) == 0:
        raise ValueError(f"frame is empty (0 rows); expected rows with columns {spec.columns}")


def parse_time(column: pd.Series, name: str) -> np.ndarray:
    """Timestamps of every row as datetime64 values, or ``ValueError`` naming the first bad row."""
    if pd.api.types.is_numeric_dtype(column):
        raise ValueError(
            f"time column {name!r} has numeric dtype {column.dtype}; expected dates or "
            "timestamps (strings like '2020-01-01 00:00' or datetime64 values)"
        )
    try:
        with warnings.catch_warnings():  # (unparseable values are reported below, by row)
            warnings.filterwarnings("ignore", message="Could not infer format")
            parsed = pd.to_datetime(column, errors="coerce")
    except ValueError as err:
        if "Mixed timezones" not in str(err):
            raise ValueError(f"time column {name!r} could not be parsed: {err}") from err
        parsed = _mixed_offsets(column, name)
    except TypeError as err:
        raise ValueError(f"time column {name!r} could not be parsed: {err}") from err
    bad = parsed.isna().to_numpy()  # (N,)
    if bad.any():
        row = int(np.argmax(bad))
        value = column.iloc[row]
        if pd.isna(value):
            raise ValueError(f"time column {name!r} has a missing value at row {row}")
        hint = _format_hint(value, column.iloc[0]) if row > 0 else ""
        raise ValueError(
            f"time column {name!r} has unparseable value {_show(value)} at row {row}; expected a "
            f"date or timestamp{hint}"
        )
    return parsed.to_numpy()


def _mixed_offsets(column: pd.Series, name: str) -> pd.Series:
    """Local times whose UTC offset changes (daylight saving): one instant each, in UTC; but
    dates stamped at local midnight (daily or coarser data) as those dates, since in UTC one of
    their days would last 23 hours and the next 25."""
    local = []  # the clock time each value shows, offset dropped, while all are midnights
    for value in column:
        wall = _wall_time(value)
        if wall is None or wall != wall.normalize():  # (hourly data stops at its 2nd value)
            break
        local.append(wall)
    else:
        logger.info("time column %r: dates at local midnight, UTC offsets dropped", name)
        return pd.Series(pd.DatetimeIndex(local), index=column.index)
    logger.info("time column %r mixes UTC offsets (daylight saving?): read as UTC", name)
    return pd.to_datetime(column, errors="coerce", utc=True)


def _wall_time(value: object) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return None if pd.isna(stamp) else stamp.tz_localize(None)


def _format_hint(value: object, first: object) -> str:
    """A hint when ``value`` is a date on its own but not in the format of the first value."""
    try:
        pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return ""
    return f" in the format of the first value {first!r} (pandas infers one format from it)"


def _parse_numeric(column: pd.Series, name: str, role: str) -> np.ndarray:
    """Float64 values of a value column; NaN stays NaN, anything else non-numeric raises."""
    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
        raise ValueError(f"{role} column {name!r} has dtype {column.dtype}; expected numbers")
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    missing = column.isna().to_numpy()
    bad = np.isnan(numbers) & ~missing  # (N,)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{role} column {name!r} has non-numeric value {_show(column.iloc[row])} at row {row}"
        )
    as_float32 = numbers.astype(np.float32)
    infinite = ~np.isfinite(as_float32) & ~np.isnan(numbers)  # inf, or too large for float32
    if infinite.any():
        row = int(np.argmax(infinite))
        raise ValueError(
            f"{role} column {name!r} has non-finite value {_show(column.iloc[row])} at row {row}; "
            "expected finite numbers within float32 range"
        )
    return numbers


def _value_matrix(frame: pd.DataFrame, spec: SeriesSpec) -> np.ndarray:
    """(N, n_targets + n_past + n_future + n_static) float64, columns in spec order."""
    columns = [
        _parse_numeric(frame[name], name, role)
        for spec_field, role in _VALUE_ROLES
        for name in getattr(spec, spec_field)
    ]
    return np.stack(columns, axis=1)


def _series_rows(frame: pd.DataFrame, spec: SeriesSpec) -> list[tuple[str, np.ndarray]]:
    """(id, row positions) of each series, in order of first appearance."""
    if spec.id_col is None:
        return [(WIDE_SERIES_ID, np.arange(len(frame)))]
    raw = frame[spec.id_col]
    missing = raw.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise ValueError(f"id column {spec.id_col!r} has a missing value at row {row}")
    ids = raw.astype(str).to_numpy()
    unique_ids = pd.unique(ids)
    if len(unique_ids) != raw.nunique():
        raise ValueError(
            f"id column {spec.id_col!r} has distinct values with the same text (e.g. 1 and '1'); "
            "ids are compared as strings"
        )
    codes = pd.Index(unique_ids).get_indexer(ids)  # (N,) series number of each row
    order = np.argsort(codes, kind="stable")  # rows grouped by series, frame order within
    bounds = np.cumsum(np.bincount(codes, minlength=len(unique_ids)))[:-1]
    return [(str(sid), rows) for sid, rows in zip(unique_ids, np.split(order, bounds), strict=True)]


# --------------------------------------------------------------------------- regular grid


@dataclass
class _RawSeries:
    """One series' rows sorted by time, before the grid check and fills."""

    id: str
    time: pd.DatetimeIndex  # (n,) sorted, unique
    values: np.ndarray  # (n, C) float64


def _sorted_series(sid: str, times: np.ndarray, values: np.ndarray) -> _RawSeries:
    """Sort one series by time (stable) and raise on duplicate timestamps."""
    order = np.argsort(times, kind="stable")
    index = pd.DatetimeIndex(times[order])
    duplicated = index.duplicated()
    if duplicated.any():
        first = index[int(np.argmax(duplicated))]
        hint = "" if sid != WIDE_SERIES_ID else " (for long-format data, set id_col)"
        raise ValueError(
            f"series {sid!r} has {int(duplicated.sum())} duplicate timestamp(s); first: {first} "
            f"appears {int((index == first).sum())} times{hint}"
        )
    return _RawSeries(sid, index, values[order])


def _infer_alias(index: pd.DatetimeIndex) -> str | None:
    """pandas' inferred frequency alias of ``index``, or None (fewer than 3 stamps, irregular)."""
    if len(index) < 3:
        return None
    with warnings.catch_warnings():
        # pandas 3 warns that infer_freq will return an offset; to_offset reads both forms.
        warnings.filterwarnings("ignore", message=".*infer_freq.*")
        inferred = pd.infer_freq(index)
    return None if inferred is None else to_offset(inferred).freqstr


def _alias_for_step(step: pd.Timedelta) -> str:
    """A frequency alias for a fixed step: whole days as 'D', else pandas' tick alias."""
    day = pd.Timedelta(days=1)
    if step % day == pd.Timedelta(0):
        days = step // day
        return "D" if days == 1 else f"{days}D"
    return to_offset(step).freqstr


def _most_common_step(raw: list[_RawSeries]) -> tuple[pd.Timedelta, int] | None:
    """The most common step between consecutive timestamps over all series, and its count."""
    steps = [step for series in raw for step in np.diff(series.time.asi8)]
    if not steps:
        return None
    values, counts = np.unique(np.asarray(steps), return_counts=True)
    best = int(np.argmax(counts))
    unit = raw[0].time.unit
    return pd.Timedelta(int(values[best]), unit=unit), int(counts[best])


class FrequencyError(ValueError):
    """The frequency could not be inferred from the timestamps."""


def _resolve_freq(raw: list[_RawSeries], freq: str | None) -> str:
    """``freq`` if given, else the one alias every inferable series agrees on."""
    if freq is not None:
        return to_offset(freq).freqstr
    inferred = {series.id: _infer_alias(series.time) for series in raw}
    aliases = {alias for alias in inferred.values() if alias is not None}
    if len(aliases) == 1:
        return aliases.pop()
    if len(aliases) > 1:
        found = {sid: alias for sid, alias in inferred.items() if alias is not None}
        raise FrequencyError(
            f"series disagree on the inferred frequency: {found}; pass freq explicitly"
        )
    common = _most_common_step(raw)
    if common is None:
        raise FrequencyError(
            "cannot infer the frequency: every series has a single timestamp; pass freq "
            "(e.g. freq='h')"
        )
    step, count = common
    raise FrequencyError(
        f"cannot infer the frequency: the timestamps are irregular (or have gaps) in every "
        f"series; the most common step is {step} ({count} times); {_freq_hint(step, raw)}"
    )


def _freq_hint(step: pd.Timedelta, raw: list[_RawSeries]) -> str:
    """What to try. Calendar months and years have no fixed length, so data dated mid-month
    (or mid-year) fits no alias until its dates are moved to the period's start; data already
    on period starts only needs the alias (and a fill for its gaps)."""
    spans = ((28, 31, "M", "MS"), (89, 92, "Q", "QS"), (365, 366, "Y", "YS"))
    for low, high, period, alias in spans:
        if not pd.Timedelta(days=low) <= step <= pd.Timedelta(days=high):
            continue
        local = [series.time.tz_localize(None) for series in raw]  # wall-clock dates
        if all((t == t.to_period(period).to_timestamp()).all() for t in local):
            return f"pass freq explicitly, e.g. freq={alias!r} (with a fill for the gaps)"
        return (
            "dates of calendar periods that are not on the period's first day match no "
            "frequency: move them there, e.g. frame[time_col] = "
            f"frame[time_col].dt.to_period({period!r}).dt.to_timestamp(), the {alias!r} grid "
            "(and pass freq if the data has gaps)"
        )
    return f"pass freq explicitly, e.g. freq={_alias_for_step(step)!r}"


def _grid(series: _RawSeries, freq: str) -> pd.DatetimeIndex:
    """The regular range of ``freq`` from the series' first to last timestamp::

        freq="h", stamps 00:00 01:00 03:00     grid 00:00 01:00 02:00 03:00   (02:00 missing)
        freq="h", stamps 00:00 01:00 10:30     10:30 is off the grid: always an error

    Tick frequencies ("h", "15min") are anchored at the first timestamp; calendar ones ("MS",
    "W-SUN", "B") need the first timestamp on the offset (e.g. a month start for "MS").
    """
    offset = to_offset(freq)
    first = series.time[0]
    if not offset.is_on_offset(first):
        raise ValueError(
            f"series {series.id!r} starts at {first}, which is not on the {freq!r} grid; "
            "check freq or the time column"
        )
    grid = pd.date_range(first, series.time[-1], freq=offset)
    off_grid = ~series.time.isin(grid)  # (n,)
    if off_grid.any():
        raise ValueError(
            f"series {series.id!r} has {int(off_grid.sum())} timestamp(s) off the regular "
            f"{freq!r} grid starting at {first}; first: {series.time[int(np.argmax(off_grid))]}; "
            "check freq or the time column"
        )
    return grid


# --------------------------------------------------------------------------- fills


def _fill_frame(frame: pd.DataFrame, how: str, causal_tail: int = 0) -> pd.DataFrame:
    """Fill NaNs: ffill (then bfill at the start), linear-in-time interpolation, or zeros.

    Interpolation reads the value after a gap. Over the first ``len - causal_tail`` steps only
    (a gap reaching past them ends with that part's last value), and the last ``causal_tail``
    steps are filled forward: a validation or test value never fills a training one, nor a
    value after a forecast origin one before it.
    """
    if how == "ffill":
        return frame.ffill().bfill()
    if how == "interpolate":
        head = len(frame) - min(causal_tail, len(frame))
        filled = frame.iloc[:head].interpolate(method="time").ffill().bfill()
        return pd.concat([filled, frame.iloc[head:]]).ffill().bfill()
    return frame.fillna(0.0)


def _fill_choices() -> str:
    return str(tuple(name for name in FILL_STRATEGIES if name != "none"))


def _column_roles(spec: SeriesSpec) -> list[tuple[str, str]]:
    """(column, role) of every value column in spec order."""
    return [(name, role) for spec_field, role in _VALUE_ROLES for name in getattr(spec, spec_field)]


def _check_missing_stamps(
    series: _RawSeries, grid: pd.DatetimeIndex, spec_freq: str, spec: SeriesSpec
) -> list[str]:
    """Raise (fill='none') or describe the grid timestamps absent from the series."""
    absent = ~grid.isin(series.time)  # (T,)
    count = int(absent.sum())
    if count == 0:
        return []
    position = int(np.argmax(absent))
    first = grid[position]
    if spec.fill == "none":
        raise ValueError(
            f"series {series.id!r} has {count} missing timestamp(s) for freq {spec_freq!r}; "
            f"first gap at {first} (after {grid[position - 1]}); set fill to one of "
            f"{_fill_choices()} to fill them, or check freq"
        )
    return [
        f"series {series.id!r}: {count} missing timestamp(s) filled by {spec.fill} (first {first})"
    ]


def _check_nans(series: _RawSeries, spec: SeriesSpec, n_dynamic: int) -> list[str]:
    """Raise (fill='none') or describe the NaNs in the series' own (dynamic) rows."""
    notes: list[str] = []
    for col, (name, role) in enumerate(_column_roles(spec)[:n_dynamic]):
        nan = np.isnan(series.values[:, col])
        if not nan.any():
            continue
        count, first = int(nan.sum()), series.time[int(np.argmax(nan))]
        if spec.fill == "none":
            raise ValueError(
                f"{role} column {name!r} of series {series.id!r} has {count} NaN value(s), "
                f"first at {first}; set fill to one of {_fill_choices()} to fill them"
            )
        notes.append(
            f"series {series.id!r}: column {name!r} had {count} NaN value(s) filled by "
            f"{spec.fill} (first {first})"
        )
    return notes


def _static_values(
    series: _RawSeries, spec: SeriesSpec, n_dynamic: int
) -> tuple[np.ndarray, list[str]]:
    """(n_static,) the one value each static column takes within the series, and fill notes."""
    out: list[float] = []
    notes: list[str] = []
    columns = _column_roles(spec)[n_dynamic:]
    for offset, (name, _) in enumerate(columns):
        values = series.values[:, n_dynamic + offset]  # (n,)
        present = ~np.isnan(values)
        if not present.any():
            raise ValueError(
                f"static covariate column {name!r} of series {series.id!r} has no value (all NaN)"
            )
        if spec.fill == "none" and not present.all():
            first = series.time[int(np.argmin(present))]
            raise ValueError(
                f"static covariate column {name!r} of series {series.id!r} has "
                f"{int((~present).sum())} NaN value(s), first at {first}; set fill to one of "
                f"{_fill_choices()} to use the series' one value there"
            )
        distinct = pd.unique(values[present])
        if len(distinct) > 1:
            change = series.time[int(np.argmax(present & (values != values[present][0])))]
            raise ValueError(
                f"static covariate column {name!r} is not constant within series "
                f"{series.id!r}: it takes values {_preview(distinct.tolist())} "
                f"(first change at {change})"
            )
        if not present.all():
            notes.append(
                f"series {series.id!r}: static column {name!r} had {int((~present).sum())} NaN "
                f"value(s) filled with its one value {float(distinct[0])!r}"
            )
        out.append(float(distinct[0]))
    return np.asarray(out, dtype=np.float64), notes


def _regularise(series: _RawSeries, freq: str, spec: SeriesSpec) -> tuple[Series, list[str]]:
    """Put one series on its regular grid, filling per ``spec.fill``; return it and the notes."""
    grid = _grid(series, freq)
    n_dynamic = len(spec.targets) + len(spec.past_covariates) + len(spec.future_covariates)
    notes = _check_missing_stamps(series, grid, freq, spec)
    notes += _check_nans(series, spec, n_dynamic)
    static, static_notes = _static_values(series, spec, n_dynamic)
    notes += static_notes
    dynamic = pd.DataFrame(series.values[:, :n_dynamic], index=series.time).reindex(grid)
    if dynamic.isna().to_numpy().any():
        dynamic = _fill_frame(dynamic, spec.fill, spec.causal_tail)
        empty = dynamic.isna().all().to_numpy()
        if empty.any():
            name, role = _column_roles(spec)[int(np.argmax(empty))]
            raise ValueError(
                f"{role} column {name!r} of series {series.id!r} has no values at all "
                f"(all NaN); fill={spec.fill!r} cannot fill it"
            )
    values = dynamic.to_numpy(dtype=np.float64)  # (T, n_dynamic)
    n_target, n_past = len(spec.targets), len(spec.past_covariates)
    result = Series(
        id=series.id,
        time=grid,
        target=values[:, :n_target],
        past=values[:, n_target : n_target + n_past],
        future=values[:, n_target + n_past :],
        static=static,
    )
    return result, notes


def load_series(frame: pd.DataFrame, spec: SeriesSpec) -> SeriesSet:
    """Validate ``frame`` against ``spec`` and return its regular, NaN-free series.

    Steps: check the columns; parse the time column and every value column (first bad row
    named); split into series (long format, first-appearance order) and sort each by time;
    refuse duplicate timestamps; resolve ``freq`` (given, or inferred and agreed on by every
    series it can be inferred for); refuse timestamps off the grid; then fill missing timestamps
    and NaNs as ``spec.fill`` says (or refuse them when it is "none"), noting each fill in the
    report and the log.
    """
    _check_frame(frame, spec)
    times = parse_time(frame[spec.time_col], spec.time_col)  # (N,)
    values = _value_matrix(frame, spec)  # (N, C) float64
    raw = [
        _sorted_series(sid, times[rows], values[rows]) for sid, rows in _series_rows(frame, spec)
    ]
    freq = _resolve_freq(raw, spec.freq)
    series: list[Series] = []
    report: list[str] = []
    for item in raw:
        regular, notes = _regularise(item, freq, spec)
        series.append(regular)
        report.extend(notes)
    for note in report:
        logger.info(note)
    return SeriesSet(spec=spec, freq=freq, series=series, report=report)
