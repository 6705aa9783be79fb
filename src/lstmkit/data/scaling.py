"""Per-series, per-channel affine scaling fitted on the training part only, exactly invertible.

Every channel c of every series i gets its own ``loc`` and ``scale``, fitted on the training
positions ``[0, stop)`` and applied to the whole series::

    series i, channel c    [x0 x1 ... x(stop-1) | x(stop) ... x(T-1)]
                            \\____ fit here ____/   never seen by fit
    scaled = (x - loc[i, c]) / scale[i, c]          original = scaled * scale[i, c] + loc[i, c]

    kind="standard"   loc = mean, scale = std (population)     -> train part has mean 0, std 1
    kind="minmax"     loc = min,  scale = max - min            -> train part spans [0, 1]
    kind="none"       loc = 0,    scale = 1

A scale at or below ``eps`` (a constant channel) becomes 1, with a log note, so the channel is
shifted but never blown up. Targets, past and future covariates each get their own statistics.
Static covariates, one value per series, are scaled by the same ``kind`` with statistics shared
by every series, fitted across the series (a store's size of 100 to 200 becomes -1.2 to 1.2,
where fed raw it swamped the scaled inputs). A state saved before static covariates were scaled
has no "static" entry, and its scaler passes them through unchanged, as it did. Statistics are
computed in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from lstmkit.data.padding import _check_int
from lstmkit.data.timeseries import SeriesSet

__all__ = ["SCALERS", "SeriesScaler"]

logger = logging.getLogger(__name__)

SCALERS: tuple[str, ...] = ("standard", "minmax", "none")
_GROUPS: tuple[str, ...] = ("target", "past", "future")  # the scaled arrays of a Series

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)


@dataclass(frozen=True)
class _Affine:
    """Per-series, per-channel statistics of one array group."""

    loc: np.ndarray  # (n_series, C) float64
    scale: np.ndarray  # (n_series, C) float64, every value > 0

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {"loc": self.loc.tolist(), "scale": self.scale.tolist()}


def _check_kind(kind: object) -> str:
    if kind not in SCALERS:
        raise ValueError(f"kind must be one of {SCALERS}, got {kind!r}")
    return str(kind)


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    return float(eps)


def _stops(series_set: SeriesSet, stop: int | list[int] | None) -> list[int]:
    """One training end per series, each in [1, len(series)]."""
    lengths = series_set.lengths
    if stop is None:
        return lengths
    stops = list(stop) if isinstance(stop, (list, tuple)) else [stop] * len(lengths)
    if len(stops) != len(lengths):
        raise ValueError(f"stop has {len(stops)} values but there are {len(lengths)} series")
    for index, (value, length) in enumerate(zip(stops, lengths, strict=True)):
        _check_int(f"stop for series {series_set[index].id!r}", value, 1)
        if value > length:
            raise ValueError(
                f"stop for series {series_set[index].id!r} is {value}, beyond its length {length}"
            )
    return [int(value) for value in stops]


class SeriesScaler:
    """Per-series, per-channel affine scaling fitted on the training part only; exactly invertible.

    Typical use::

        scaler = SeriesScaler("standard").fit(series_set, stop=train_end)
        scaled = scaler.transform(series_set)            # feed to WindowDataset
        prediction = scaler.inverse_target(output, batch["series"])   # back to data units
    """

    def __init__(self, kind: str = "standard", eps: float = 1e-8) -> None:
        self.kind = _check_kind(kind)
        self.eps = _check_eps(eps)
        self._stats: dict[str, _Affine] = {}
        self._static: _Affine | None = None  # (1, S); None: static covariates pass unchanged
        self._ids: list[str] = []
        self._stops: list[int] = []

    @property
    def fitted(self) -> bool:
        return bool(self._stats)

    # ----------------------------------------------------------------------- fit

    def fit(self, series_set: SeriesSet, stop: int | list[int] | None = None) -> SeriesScaler:
        """Fit on positions ``[0, stop)`` of every series (one int for all, a list, or None)."""
        if len(series_set) == 0:
            raise ValueError("cannot fit a SeriesScaler on a SeriesSet with no series")
        stops = _stops(series_set, stop)
        self._stats = {group: self._fit_group(series_set, group, stops) for group in _GROUPS}
        self._static = self._fit_static(series_set)
        self._ids = series_set.ids
        self._stops = stops
        return self

    def _fit_static(self, series_set: SeriesSet) -> _Affine:
        """Statistics of the static covariates across the series, shared by all: (1, S)."""
        values = np.stack([series.static for series in series_set]).astype(np.float64)  # (N, S)
        if not np.isfinite(values).all():
            row, column = np.argwhere(~np.isfinite(values))[0]
            raise ValueError(
                f"series {series_set[int(row)].id!r} has a NaN or infinite static covariate "
                f"(column {int(column)}); static covariates need a value for every series"
            )
        loc, spread = self._loc_spread(values)
        scale = np.where(spread <= self.eps, 1.0, spread)
        return _Affine(loc=loc[None, :], scale=scale[None, :])

    def _fit_group(self, series_set: SeriesSet, group: str, stops: list[int]) -> _Affine:
        """Statistics of one array group over every series' training part."""
        locs, scales = [], []
        for series, stop in zip(series_set, stops, strict=True):
            train = getattr(series, group)[:stop].astype(np.float64)  # (stop, C)
            loc, spread = self._loc_spread(train)  # (C,) each
            if not (np.isfinite(loc).all() and np.isfinite(spread).all()):
                channel = int(np.argmax(~np.isfinite(loc) | ~np.isfinite(spread)))
                raise ValueError(
                    f"series {series.id!r} {group} channel {channel} has NaN or infinite values "
                    f"in its training part [0, {stop}); fill them first (SeriesSpec.fill)"
                )
            constant = spread <= self.eps
            for channel in np.flatnonzero(constant):
                logger.info(
                    "series %r %s channel %d is constant on its training part (spread %g "
                    "<= eps %g); using scale 1",
                    series.id, group, channel, spread[channel], self.eps,
                )  # fmt: skip
            locs.append(loc)
            scales.append(np.where(constant, 1.0, spread))
        width = getattr(series_set[0], group).shape[1]
        return _Affine(
            loc=np.asarray(locs, dtype=np.float64).reshape(len(stops), width),
            scale=np.asarray(scales, dtype=np.float64).reshape(len(stops), width),
        )

    def _loc_spread(self, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(loc, spread) per channel of a (n, C) training block."""
        if self.kind == "standard":
            return train.mean(axis=0), train.std(axis=0)
        if self.kind == "minmax":
            low = train.min(axis=0)
            return low, train.max(axis=0) - low
        width = train.shape[1]
        return np.zeros(width), np.ones(width)

    # ----------------------------------------------------------------------- transform

    def select(self, ids: list[str]) -> SeriesScaler:
        """A scaler for the series ``ids``, in that order: each keeps the statistics it was
        fitted with, so a subset or a reordering of the fitted series can be transformed."""
        self._check_fitted()
        position = {sid: index for index, sid in enumerate(self._ids)}
        unknown = [sid for sid in ids if sid not in position]
        if unknown:
            raise ValueError(
                f"series {unknown[:8]} {'was' if len(unknown) == 1 else 'were'} not among the "
                f"{len(self._ids)} series the scaler was fitted on ({self._ids[:8]}"
                f"{' ...' if len(self._ids) > 8 else ''}); each series is scaled with statistics "
                "of its own training part, so only those series can be transformed"
            )
        rows = [position[sid] for sid in ids]
        chosen = SeriesScaler(self.kind, self.eps)
        chosen._stats = {
            group: _Affine(stats.loc[rows], stats.scale[rows])
            for group, stats in self._stats.items()
        }
        chosen._static = self._static  # shared by every series
        chosen._ids = list(ids)
        chosen._stops = [self._stops[row] for row in rows]
        return chosen

    @property
    def ids(self) -> list[str]:
        """The series ids the scaler was fitted on, in order."""
        return list(self._ids)

    def _check_matches(self, series_set: SeriesSet) -> None:
        """Raise unless fitted, and on the same series (ids, order, channels) as ``series_set``."""
        self._check_fitted()
        if len(series_set) != len(self._ids):
            raise ValueError(
                f"the scaler was fitted on {len(self._ids)} series, got a SeriesSet with "
                f"{len(series_set)}"
            )
        for index, (fitted, given) in enumerate(zip(self._ids, series_set.ids, strict=True)):
            if fitted != given:
                raise ValueError(
                    f"series {index} is {given!r} but the scaler was fitted with {fitted!r} "
                    "there; series must come in the order they were fitted"
                )
        for group in _GROUPS:
            want = self._stats[group].loc.shape[1]
            got = getattr(series_set[0], group).shape[1]
            if want != got:
                raise ValueError(f"the scaler was fitted on {want} {group} channel(s), got {got}")
        if self._static is not None and self._static.loc.shape[1] != series_set[0].static.shape[0]:
            raise ValueError(
                f"the scaler was fitted on {self._static.loc.shape[1]} static covariate(s), "
                f"got {series_set[0].static.shape[0]}"
            )

    def transform(self, series_set: SeriesSet) -> SeriesSet:
        """A new SeriesSet with targets, past/future and static covariates scaled (float32)."""
        self._check_matches(series_set)
        scaled = []
        for index, series in enumerate(series_set):
            arrays = {}
            for group in _GROUPS:
                stats = self._stats[group]
                values = getattr(series, group).astype(np.float64)  # (T, C)
                arrays[group] = ((values - stats.loc[index]) / stats.scale[index]).astype(
                    np.float32
                )
            if self._static is not None:
                static = (series.static.astype(np.float64) - self._static.loc[0]) / (
                    self._static.scale[0]
                )
                arrays["static"] = static.astype(np.float32)
            scaled.append(replace(series, **arrays))
        return replace(series_set, series=scaled, report=list(series_set.report))

    # ----------------------------------------------------------------------- inverse

    def inverse_target(
        self,
        values: ArrayOrTensor,
        series_index: np.ndarray | Tensor | int,
        channel: np.ndarray | Tensor | int | None = None,
    ) -> ArrayOrTensor:
        """Undo the target scaling: ``values * scale + loc`` of the given series (and channel).

        Shapes (``...`` are batch dims, which ``series_index`` must broadcast against)::

            channel None:   values (..., H, n_targets), series_index (...) or an int
            channel given:  values (..., H) univariate (channel-independent samples),
                            series_index and channel (...) or ints

        Returns the type it gets: a numpy array (computed in float64, returned in the input's
        float dtype) or a tensor (on its device and dtype, differentiable).
        """
        self._check_fitted()
        stats = self._stats["target"]
        series = self._check_indices("series_index", series_index, stats.loc.shape[0])
        if channel is None:
            if values.shape[-1] != stats.loc.shape[1] or values.ndim < 2:
                raise ValueError(
                    f"values must be (..., H, n_targets={stats.loc.shape[1]}) when channel is "
                    f"None, got shape {tuple(values.shape)}"
                )
            loc = stats.loc[series][..., None, :]  # (..., 1, n_targets)
            scale = stats.scale[series][..., None, :]
        else:
            if values.ndim < 1:
                raise ValueError("values must be (..., H) when channel is given, got a scalar")
            channels = self._check_indices("channel", channel, stats.loc.shape[1])
            loc = stats.loc[series, channels][..., None]  # (..., 1)
            scale = stats.scale[series, channels][..., None]
        if isinstance(values, Tensor):
            if not values.is_floating_point():
                raise ValueError(f"values must be a floating tensor, got dtype {values.dtype}")
            loc_t = torch.as_tensor(loc, dtype=values.dtype, device=values.device)
            scale_t = torch.as_tensor(scale, dtype=values.dtype, device=values.device)
            return values * scale_t + loc_t
        out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        return (values.astype(np.float64) * scale + loc).astype(out_dtype)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("SeriesScaler is not fitted; call fit(series_set, stop=...) first")

    @staticmethod
    def _check_indices(name: str, index: object, count: int) -> np.ndarray:
        """``index`` as an int64 numpy array of values in [0, count)."""
        if isinstance(index, Tensor):
            index = index.detach().cpu().numpy()
        array = np.asarray(index)
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= count):
            bad = array.min() if array.min() < 0 else array.max()
            raise ValueError(f"{name} must lie in [0, {count - 1}], got {int(bad)}")
        return array.astype(np.int64)

    # ----------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, object]:
        """JSON-able state: kind, eps, series ids, training ends and per-group loc/scale."""
        self._check_fitted()
        return {
            "kind": self.kind,
            "eps": self.eps,
            "ids": list(self._ids),
            "stops": list(self._stops),
            **{group: self._stats[group].to_dict() for group in _GROUPS},
            **({} if self._static is None else {"static": self._static.to_dict()}),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore a state written by ``state_dict``."""
        expected = ["kind", "eps", "ids", "stops", *_GROUPS]
        missing = [key for key in expected if key not in state]
        if missing:
            raise ValueError(f"scaler state is missing key(s) {missing}; expected keys {expected}")
        self.kind = _check_kind(state["kind"])
        self.eps = _check_eps(state["eps"])
        ids = [str(sid) for sid in state["ids"]]  # type: ignore[attr-defined]
        self._stats = {group: _affine_from(group, state[group], len(ids)) for group in _GROUPS}
        self._static = _affine_from("static", state["static"], 1) if "static" in state else None
        self._ids = ids
        self._stops = [int(stop) for stop in state["stops"]]  # type: ignore[attr-defined]

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object]) -> SeriesScaler:
        """A fitted scaler from a state written by ``state_dict``."""
        scaler = cls()
        scaler.load_state_dict(state)
        return scaler


def _affine_from(group: str, data: object, n_series: int) -> _Affine:
    """Rebuild one group's statistics, checking shapes and that every scale is positive."""
    if not isinstance(data, Mapping) or "loc" not in data or "scale" not in data:
        raise ValueError(f"scaler state {group!r} must be a mapping with 'loc' and 'scale'")
    loc = np.asarray(data["loc"], dtype=np.float64)
    scale = np.asarray(data["scale"], dtype=np.float64)
    if loc.shape != scale.shape or loc.ndim != 2 or loc.shape[0] != n_series:
        raise ValueError(
            f"scaler state {group!r}: loc {loc.shape} and scale {scale.shape} must both be "
            f"(n_series={n_series}, C)"
        )
    if (scale <= 0).any() or not np.isfinite(scale).all() or not np.isfinite(loc).all():
        raise ValueError(f"scaler state {group!r}: scales must be finite and > 0, locs finite")
    return _Affine(loc=loc, scale=scale)
