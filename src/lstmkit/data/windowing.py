"""Sliding windows over series, and a torch ``Dataset`` of (input window, horizon) pairs.

A window starting at ``s`` reads its input from ``[s, s + input_len)`` and predicts the
``horizon`` steps right after it. With length 10, input_len=3, horizon=2 and stride=2::

    step      0  1  2  3  4  5  6  7  8  9
    s=0       i  i  i  t  t
    s=2             i  i  i  t  t
    s=4                   i  i  i  t  t
    s=6                         i  i  i  t  t  .     needs step 10: not a window

``first_target`` keeps only windows whose target starts at or after it, so a validation or
test window may look back into earlier data for its input (the ETT protocol: the first test
window starts input_len steps before the first test target). With first_target=7, stride=1::

    step      0  1  2  3  4  5  6 |7  8  9
                                  |test part
    s=4                   i  i  i |t  t              first window: input looks back
    s=5                      i  i |i  t  t

Strides count from the first valid start, ``max(0, first_target - input_len)``. Windows never
run past ``length`` (or ``last``, the exclusive end of usable data): nothing is padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lstmkit.data.padding import _check_int
from lstmkit.data.timeseries import Series, SeriesSet

__all__ = ["SeriesArrays", "Window", "WindowDataset", "window_starts"]

logger = logging.getLogger(__name__)


def window_starts(
    length: int, input_len: int, horizon: int, stride: int = 1, first_target: int = 0
) -> np.ndarray:
    """Start index of every window that fits in ``length`` steps, as int64 (n_windows,).

    Window ``s`` has input ``[s, s + input_len)`` and target ``[s + input_len, s + input_len +
    horizon)``; only windows whose target begins at or after ``first_target`` are kept. See the
    module docstring for a sketch. An empty array means no window fits.
    """
    length = _check_int("length", length, 0)
    input_len = _check_int("input_len", input_len, 1)
    horizon = _check_int("horizon", horizon, 1)
    stride = _check_int("stride", stride, 1)
    first_target = _check_int("first_target", first_target, 0)
    if first_target > length:
        raise ValueError(
            f"first_target must be <= length {length} (the series end), got {first_target}"
        )
    first = max(0, first_target - input_len)
    last = length - input_len - horizon  # the last start whose target still fits
    return np.arange(first, last + 1, stride, dtype=np.int64)


@dataclass(frozen=True)
class Window:
    """One window: which series, and the step its input starts at."""

    series_index: int
    start: int


@dataclass(frozen=True)
class SeriesArrays:
    """The arrays of one series a ``WindowDataset`` reads (a ``Series`` without time or id)."""

    target: np.ndarray  # (T, n_targets)
    past: np.ndarray  # (T, n_past)
    future: np.ndarray  # (T, n_future)
    static: np.ndarray  # (n_static,)

    def __len__(self) -> int:
        return int(self.target.shape[0])


@dataclass(frozen=True)
class _Tensors:
    """One series as float32 tensors, ready to slice."""

    target: Tensor  # (T, n_targets)
    past: Tensor  # (T, n_past)
    future: Tensor  # (T, n_future)
    static: Tensor  # (n_static,)


def _tensor(name: str, values: object, ndim: int) -> Tensor:
    """``values`` as a float32 tensor of ``ndim`` dims, or ``ValueError``."""
    tensor = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    if tensor.dim() != ndim:
        layout = "(T, C)" if ndim == 2 else "(C,)"
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(tensor.shape)}")
    return tensor


def _to_tensors(index: int, item: SeriesArrays | Series) -> _Tensors:
    """Convert one series, checking its time-indexed arrays share a length."""
    where = f"series {index}"
    tensors = _Tensors(
        target=_tensor(f"{where} target", item.target, 2),
        past=_tensor(f"{where} past", item.past, 2),
        future=_tensor(f"{where} future", item.future, 2),
        static=_tensor(f"{where} static", item.static, 1),
    )
    steps = tensors.target.shape[0]
    for name in ("past", "future"):
        other = getattr(tensors, name).shape[0]
        if other != steps:
            raise ValueError(f"{where} {name} has {other} steps but its target has {steps}")
    return tensors


def _check_widths(series: list[_Tensors]) -> None:
    """Raise unless every series has the channel counts of series 0."""
    first = series[0]
    for index, item in enumerate(series[1:], start=1):
        for name in ("target", "past", "future", "static"):
            want, got = getattr(first, name).shape[-1], getattr(item, name).shape[-1]
            if want != got:
                raise ValueError(
                    f"every series needs the channel counts of series 0; series {index} has "
                    f"{got} {name} channel(s), series 0 has {want}"
                )


def _per_series(name: str, value: object, count: int) -> list[object]:
    """One value per series from a scalar (shared by all) or a list (one each)."""
    if not isinstance(value, (list, tuple)):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} values but there are {count} series")
    return list(value)


class WindowDataset(Dataset[dict[str, Tensor]]):
    """(input window, horizon) samples from every series, as dicts of float32 tensors.

    Item ``i`` (L = input_len, H = horizon)::

        "past_target"        (L, n_targets)          targets over the input window
        "past_covariates"    (L, n_past + n_future)  past then future covariates over the input
        "future_covariates"  (H, n_future)           future covariates over the horizon
        "static"             (n_static,)
        "target"             (H, n_targets)          what to predict
        "series", "start"    int64 scalars           where the window comes from

    ``first_target`` and ``last`` (exclusive end of usable data; None = the series' end) take
    one int for every series or a list with one per series; see ``window_starts``.

    ``channel_independent=True`` makes every target channel of every window its own univariate
    sample (PatchTST, SegRNN): ``n_targets`` is 1 in the item, an int64 ``"channel"`` says
    which, and the covariates are those of the channel's series. Items are ordered window-major::

        windows w0 w1 ..., channels c0 c1 c2  ->  items (w0,c0) (w0,c1) (w0,c2) (w1,c0) ...

    Pass the already scaled series (``SeriesScaler.transform``): nothing is scaled here.
    """

    def __init__(
        self,
        data: SeriesSet | Sequence[SeriesArrays | Series],
        input_len: int,
        horizon: int,
        stride: int = 1,
        first_target: int | Sequence[int] = 0,
        last: int | Sequence[int] | None = None,
        channel_independent: bool = False,
    ) -> None:
        items = list(data.series if isinstance(data, SeriesSet) else data)
        if not items:
            raise ValueError("data must hold at least one series, got none")
        self._series = [_to_tensors(index, item) for index, item in enumerate(items)]
        _check_widths(self._series)
        self.input_len = _check_int("input_len", input_len, 1)
        self.horizon = _check_int("horizon", horizon, 1)
        self.stride = _check_int("stride", stride, 1)
        self.channel_independent = bool(channel_independent)
        firsts = _per_series("first_target", first_target, len(items))
        ends = _per_series("last", last, len(items))
        self.windows: list[Window] = []
        for index, (first, end) in enumerate(zip(firsts, ends, strict=True)):
            self.windows.extend(self._series_windows(index, first, end))
        self._check_not_empty()

    def _series_windows(self, index: int, first: object, end: object) -> list[Window]:
        """The windows of one series inside ``[0, end)`` with targets from ``first`` on."""
        length = int(self._series[index].target.shape[0])
        first = _check_int(f"first_target for series {index}", first, 0)
        stop = length if end is None else _check_int(f"last for series {index}", end, 0)
        if stop > length:
            raise ValueError(
                f"last for series {index} is {stop}, beyond the series length {length}"
            )
        starts = window_starts(stop, self.input_len, self.horizon, self.stride, first)
        if len(starts) == 0:
            logger.warning(
                "series %d gives no window: %d usable steps, first_target %d, "
                "input_len %d + horizon %d",
                index, stop, first, self.input_len, self.horizon,
            )  # fmt: skip
        return [Window(index, int(start)) for start in starts]

    def _check_not_empty(self) -> None:
        if not self.windows:
            lengths = [int(s.target.shape[0]) for s in self._series]
            raise ValueError(
                f"no window fits: input_len {self.input_len} + horizon {self.horizon} = "
                f"{self.input_len + self.horizon} steps needed after first_target's look-back; "
                f"series lengths {lengths}"
            )

    @property
    def n_channels(self) -> int:
        """Target channels per series (each is its own sample when channel_independent)."""
        return int(self._series[0].target.shape[1])

    def __len__(self) -> int:
        per_window = self.n_channels if self.channel_independent else 1
        return len(self.windows) * per_window

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        per_window = self.n_channels if self.channel_independent else 1
        window = self.windows[index // per_window]
        series = self._series[window.series_index]
        inputs = slice(window.start, window.start + self.input_len)
        outputs = slice(inputs.stop, inputs.stop + self.horizon)
        targets = series.target  # (T, n_targets)
        if self.channel_independent:
            channel = index % per_window
            targets = targets[:, channel : channel + 1]  # (T, 1)
        item = {
            "past_target": targets[inputs].clone(),  # (L, n_targets)
            "past_covariates": torch.cat([series.past[inputs], series.future[inputs]], dim=1),
            "future_covariates": series.future[outputs].clone(),  # (H, n_future)
            "static": series.static.clone(),  # (n_static,)
            "target": targets[outputs].clone(),  # (H, n_targets)
            "series": torch.tensor(window.series_index, dtype=torch.int64),
            "start": torch.tensor(window.start, dtype=torch.int64),
        }
        if self.channel_independent:
            item["channel"] = torch.tensor(channel, dtype=torch.int64)
        return item
