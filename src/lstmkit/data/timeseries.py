"""Time series as arrays: ``SeriesSpec`` (which column plays which role), ``Series`` and
``SeriesSet``. ``lstmkit.data.series_loading`` reads and validates tables into them::

    time    (T,)             DatetimeIndex, strictly increasing on the grid of ``freq``
    target  (T, n_targets)   float64
    past    (T, n_past)      covariates observed only up to the forecast origin
    future  (T, n_future)    covariates known ahead (calendar, planned promotions)
    static  (n_static,)      constant within the series
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from lstmkit.data.padding import _check_int

__all__ = ["FILL_STRATEGIES", "Series", "SeriesSet", "SeriesSpec", "check_min_length"]


FILL_STRATEGIES: tuple[str, ...] = ("none", "ffill", "interpolate", "zero")
WIDE_SERIES_ID = "series"

# (spec field, how messages name a column of that role)
_VALUE_ROLES: tuple[tuple[str, str], ...] = (
    ("targets", "target"),
    ("past_covariates", "past covariate"),
    ("future_covariates", "future covariate"),
    ("static_covariates", "static covariate"),
)
_PREVIEW_ITEMS = 8


def _show(value: object) -> str:
    """``repr`` of a cell value; numpy scalars print as Python ones (inf, not np.float64(inf))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _preview(items: list[object]) -> str:
    """Printable list, elided after a few items."""
    if len(items) <= _PREVIEW_ITEMS:
        return repr(items)
    head = ", ".join(repr(v) for v in items[:_PREVIEW_ITEMS])
    return f"[{head}, ...] ({len(items)} items)"


# --------------------------------------------------------------------------- spec


def _as_names(name: str, value: object) -> tuple[str, ...]:
    """Normalise a column name or list of names to a tuple of non-empty strings."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise ValueError(
            f"{name} must be a column name or a list of column names, got {value!r} "
            f"of type {type(value).__name__}"
        )
    for item in names:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{name} must hold non-empty column names (str), got {item!r}")
    return tuple(names)


def _check_name(name: str, value: object) -> None:
    """Raise unless ``value`` is a non-empty column name."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty column name (str), got {value!r}")


def _check_freq(freq: object) -> None:
    """Raise unless ``freq`` is None or a pandas offset alias."""
    if freq is None:
        return
    if not isinstance(freq, str):
        raise ValueError(f"freq must be a pandas offset alias (str) or None, got {freq!r}")
    try:
        to_offset(freq)
    except ValueError as err:
        raise ValueError(
            f"freq {freq!r} is not a pandas offset alias (e.g. 'h', 'D', 'MS', '15min'): {err}"
        ) from err


@dataclass(frozen=True)
class SeriesSpec:
    """Which columns of a table play which role, and how to treat gaps.

    Column lists accept one name or a list of names and are stored as tuples, so
    ``SeriesSpec(time_col="date", targets="OT")`` works. Every column has exactly one role.
    """

    time_col: str  # timestamps; parsed with pandas.to_datetime
    targets: tuple[str, ...]  # one or more target columns
    id_col: str | None = None  # long format: one series per id value; None = wide (one series)
    past_covariates: tuple[str, ...] = ()  # observed only up to the forecast origin
    future_covariates: tuple[str, ...] = ()  # known in advance for the horizon too
    static_covariates: tuple[str, ...] = ()  # constant within a series
    freq: str | None = None  # pandas offset alias ("h", "D", "MS", "15min"); inferred when None
    fill: str = "none"  # how NaNs and missing timestamps are handled; "none" = error
    # steps at the end of each series that fill="interpolate" never reads, and fills forward
    # (the validation and test parts: interpolating there reads values after a forecast origin)
    causal_tail: int = 0

    def __post_init__(self) -> None:
        for name in ("targets", "past_covariates", "future_covariates", "static_covariates"):
            object.__setattr__(self, name, _as_names(name, getattr(self, name)))
        _check_name("time_col", self.time_col)
        if self.id_col is not None:
            _check_name("id_col", self.id_col)
        if not self.targets:
            raise ValueError("targets must name at least one column, got none")
        if self.fill not in FILL_STRATEGIES:
            raise ValueError(f"fill must be one of {FILL_STRATEGIES}, got {self.fill!r}")
        _check_freq(self.freq)
        if (
            isinstance(self.causal_tail, bool)
            or not isinstance(self.causal_tail, int)
            or (self.causal_tail < 0)
        ):
            raise ValueError(
                f"causal_tail must be a non-negative integer, got {self.causal_tail!r}"
            )
        self._check_roles()

    def _check_roles(self) -> None:
        """Raise if a column is named twice, in one role or in two."""
        seen: dict[str, str] = {}
        for role, columns in self.roles():
            for column in columns:
                if column in seen:
                    where = (
                        f"twice in {role}"
                        if seen[column] == role
                        else f"in two roles: {seen[column]} and {role}"
                    )
                    raise ValueError(
                        f"column {column!r} is used {where}; each column may have one role"
                    )
                seen[column] = role

    def roles(self) -> list[tuple[str, tuple[str, ...]]]:
        """(role, columns) for every role, time and id first."""
        ids = () if self.id_col is None else (self.id_col,)
        return [
            ("time_col", (self.time_col,)),
            ("id_col", ids),
            *((role, getattr(self, role)) for role, _ in _VALUE_ROLES),
        ]

    @property
    def columns(self) -> list[str]:
        """Every column the spec names, in role order."""
        return [column for _, columns in self.roles() for column in columns]

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (tuples become lists), read back by ``from_dict``."""
        out: dict[str, object] = {}
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            out[spec_field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SeriesSpec:
        """Rebuild a spec written by ``to_dict``; unknown keys are an error."""
        known = [spec_field.name for spec_field in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown SeriesSpec key(s) {unknown}; known keys: {known}")
        return cls(**data)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- series


def _float_dtype(values: object) -> type:
    return np.float32 if getattr(values, "dtype", None) == np.float32 else np.float64


def _float_matrix(name: str, values: np.ndarray, steps: int) -> np.ndarray:
    """``values`` as a C-contiguous float array (steps, C), or ``ValueError``: float32 stays
    float32 (scaled values, as SeriesScaler writes them), anything else becomes float64 (the
    data's own values, which float32 would round above 2^24, 1.7e7)."""
    array = np.ascontiguousarray(values, dtype=_float_dtype(values))
    if array.ndim != 2 or array.shape[0] != steps:
        raise ValueError(f"{name} must have shape ({steps}, C), got {array.shape}")
    return array


@dataclass
class Series:
    """One regular series: timestamps and float arrays sharing the time axis (float64 as loaded,
    float32 once scaled)."""

    id: str
    time: pd.DatetimeIndex  # (T,) regular, strictly increasing, no duplicates
    target: np.ndarray  # (T, n_targets) float64
    past: np.ndarray  # (T, n_past) float64, n_past may be 0
    future: np.ndarray  # (T, n_future) float64
    static: np.ndarray  # (n_static,) float64

    def __post_init__(self) -> None:
        steps = len(self.time)
        self.target = _float_matrix(f"series {self.id!r} target", self.target, steps)
        self.past = _float_matrix(f"series {self.id!r} past", self.past, steps)
        self.future = _float_matrix(f"series {self.id!r} future", self.future, steps)
        self.static = np.ascontiguousarray(self.static, dtype=_float_dtype(self.static))
        if self.static.ndim != 1:
            raise ValueError(
                f"series {self.id!r} static must have shape (n_static,), got {self.static.shape}"
            )

    def __len__(self) -> int:
        return len(self.time)

    def slice(self, start: int | None, stop: int | None) -> Series:
        """Positional slice of every time-indexed array (copies, not views)."""
        part = slice(start, stop)
        return Series(
            self.id,
            self.time[part],
            self.target[part].copy(),
            self.past[part].copy(),
            self.future[part].copy(),
            self.static.copy(),
        )


@dataclass
class SeriesSet:
    """The validated series of one table, with the resolved frequency and the fill notes."""

    spec: SeriesSpec
    freq: str  # resolved pandas offset alias
    series: list[Series]
    report: list[str] = field(default_factory=list)  # one note per fill that changed data

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)

    def __getitem__(self, index: int) -> Series:
        return self.series[index]

    @property
    def ids(self) -> list[str]:
        """Series ids in order."""
        return [s.id for s in self.series]

    @property
    def lengths(self) -> list[int]:
        """Number of time steps of each series."""
        return [len(s) for s in self.series]

    def slice_time(self, start: int | None, stop: int | None) -> SeriesSet:
        """Positional slice ``[start:stop]`` of every series, for chronological splits::

            series a  [0 1 2 3 4 5 6 7 8 9]     slice_time(0, 7)  -> [0 .. 6]   train
            series b  [0 1 2 3 4 5]             slice_time(7, None) -> a [7 8 9], b error

        Indices follow Python slicing (negatives count from each series' end). A series left
        with no steps is an error, not a silent drop.
        """
        parts: list[Series] = []
        for series in self.series:
            part = series.slice(start, stop)
            if len(part) == 0:
                raise ValueError(
                    f"slice_time({start}, {stop}) leaves series {series.id!r} "
                    f"(length {len(series)}) with no steps"
                )
            parts.append(part)
        return SeriesSet(self.spec, self.freq, parts, list(self.report))


def check_min_length(series_set: SeriesSet, minimum: int, what: str = "the minimum") -> None:
    """Raise ``ValueError`` naming the first series shorter than ``minimum`` steps.

    ``what`` says what the minimum is for, e.g. ``"one window (input 96 + horizon 24 = 120)"``
    gives "series 'b' has 20 steps, fewer than one window (input 96 + horizon 24 = 120)".
    """
    minimum = _check_int("minimum", minimum, 0)
    short = [s for s in series_set.series if len(s) < minimum]
    if not short:
        return
    first = short[0]
    need = "" if str(minimum) in what else f" ({minimum} steps)"
    others = f" (and {len(short) - 1} other short series)" if len(short) > 1 else ""
    raise ValueError(f"series {first.id!r} has {len(first)} steps, fewer than {what}{need}{others}")
