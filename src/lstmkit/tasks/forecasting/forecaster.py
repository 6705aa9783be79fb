"""``Forecaster``: fit and predict on DataFrames, evaluate against baselines, save and load.

Each series is split chronologically; windows for each part may read history from before it:

    series   |========== train ==========|=== val ===|=== test ===|
    scaler   fitted here only
    windows  targets inside train          inside val   inside test (evaluate)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.tseries.frequencies import to_offset
from torch import Tensor
from torch.utils.data import DataLoader

from lstmkit.data.scaling import SeriesScaler
from lstmkit.data.series_loading import FrequencyError, load_series
from lstmkit.data.timeseries import SeriesSet, SeriesSpec, check_min_length
from lstmkit.data.windowing import Window, WindowDataset
from lstmkit.tasks.forecasting.config import DataConfig, ForecastConfig
from lstmkit.tasks.forecasting.future import extend_for_origin, future_tables
from lstmkit.tasks.forecasting.losses import forecast_loss
from lstmkit.tasks.forecasting.models import Shapes, build_model
from lstmkit.training import FitResult, StepOutput, Trainer, load_weights
from lstmkit.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

# /2: static covariates are scaled (SeriesScaler's "static" entry). An lstmkit that reads only
# /1 refuses a /2 file by name, where it would feed a model trained on scaled static covariates
# their raw values; /1 files load here and pass their static covariates through, as before.
FORMAT = "lstmkit.forecaster/2"
READABLE = ("lstmkit.forecaster/1", FORMAT)


@dataclass(frozen=True)
class Split:
    """Positions of each series' parts: train [0, train_end), val, test [test_start, n)."""

    train_end: list[int]
    test_start: list[int]


def series_spec(data: DataConfig, before_end: int = 0, held_out: bool = True) -> SeriesSpec:
    """The loader's spec. ``held_out``: the data has validation and test parts at its end, which
    interpolation keeps clear of (not for new data to forecast from); ``before_end`` more steps
    lie beyond them (after a backtest fold), and interpolation keeps clear of those too."""
    return SeriesSpec(
        time_col=data.time_col,
        targets=data.targets,
        id_col=data.id_col,
        past_covariates=data.past_covariates,
        future_covariates=data.future_covariates,
        static_covariates=data.static_covariates,
        freq=data.freq,
        fill=data.fill,
        causal_tail=data.test_size + data.validation_steps + before_end if held_out else 0,
    )


class Forecaster:
    """An LSTM forecaster: ``fit(frame)``, ``predict(frame)``, ``evaluate(frame)``, ``save``."""

    def __init__(self, config: ForecastConfig) -> None:
        if not isinstance(config, ForecastConfig):
            raise ValueError(f"config must be a ForecastConfig, got {type(config).__name__}")
        self.config = config
        self.model: torch.nn.Module | None = None
        self.scaler: SeriesScaler | None = None
        self.freq: str | None = None
        self.fit_result: FitResult | None = None
        # per series id, the last timestamp fit trained or validated on (ISO text); None for a
        # forecaster saved before it was kept
        self.seen_until: dict[str, str] | None = None

    # ------------------------------------------------------------------ data
    def load(self, frame: pd.DataFrame, before_end: int = 0, held_out: bool = True) -> SeriesSet:
        """Validate ``frame`` into series (errors name the column, row or timestamp).
        ``before_end``, ``held_out``: see ``series_spec``."""
        spec = series_spec(self.config.data, before_end, held_out)
        try:
            return load_series(frame, spec)  # which logs every fill
        except FrequencyError:
            if spec.freq is not None or self.freq is None:
                raise
            # gappy new data whose frequency cannot be inferred: the one fitted on
            return load_series(frame, dataclasses.replace(spec, freq=self.freq))

    def scaler_for(self, series_set: SeriesSet) -> SeriesScaler:
        """The fitted scaler, for ``series_set``'s series in its order (any subset of the
        series the forecaster was fitted on); checks that the data's frequency is the one it was
        fitted on."""
        _, scaler = self._require_fitted()
        if self.freq is not None and not _same_freq(series_set.freq, self.freq):
            raise ValueError(
                f"the data's frequency is {series_set.freq!r} but the forecaster was fitted on "
                f"{self.freq!r} data; resample it, or set data.freq"
            )
        if series_set.ids == scaler.ids:
            return scaler
        return scaler.select(series_set.ids)

    def split(self, series_set: SeriesSet) -> Split:
        data = self.config.data
        data.check_parts()
        held = data.test_size + data.validation_steps
        check_min_length(
            series_set,
            data.input_len + data.horizon + held,
            f"input_len {data.input_len} + horizon {data.horizon} + validation "
            f"{data.validation_steps} + test {data.test_size}",
        )
        train_end = [len(s) - held for s in series_set.series]
        test_start = [len(s) - data.test_size for s in series_set.series]
        if data.test_size:
            check_seasonal_history(series_set, data, min(test_start))
        return Split(train_end, test_start)

    def windows(
        self, scaled: SeriesSet, first: list[int], last: list[int], stride: int | None = None
    ) -> WindowDataset:
        data = self.config.data
        return WindowDataset(
            scaled,
            data.input_len,
            data.horizon,
            stride=stride or data.stride,
            first_target=first,
            last=last,
            channel_independent=data.channel_independent,
        )

    def shapes(self, series_set: SeriesSet) -> Shapes:
        data = self.config.data
        n_targets = 1 if data.channel_independent else len(data.targets)
        n_future = len(data.future_covariates)
        return Shapes(
            input_len=data.input_len,
            horizon=data.horizon,
            n_targets=n_targets,
            n_past=len(data.past_covariates) + n_future,
            n_future=n_future,
            n_static=len(data.static_covariates),
            quantiles=self.config.quantiles,
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        frame: pd.DataFrame | SeriesSet,
        run_dir: str | Path | None = None,
        resume: bool = False,
    ) -> FitResult:
        """Train on every series' train part, early-stopping on its validation part."""
        series_set = frame if isinstance(frame, SeriesSet) else self.load(frame)
        split = self.split(series_set)
        self.freq = series_set.freq
        self.seen_until = {
            s.id: s.time[end - 1].isoformat()
            for s, end in zip(series_set.series, split.test_start, strict=True)
        }
        self.scaler = SeriesScaler(self.config.data.scaler).fit(series_set, stop=split.train_end)
        scaled = self.scaler.transform(series_set)
        train = self.windows(scaled, [0] * len(split.train_end), split.train_end)
        val = self.windows(scaled, split.train_end, split.test_start, stride=1)
        log.info(
            "%d training and %d validation windows over %d series",
            len(train),
            len(val),
            len(series_set),
        )
        torch.manual_seed(self.config.train.seed)
        self.model = build_model(self.config.model, self.shapes(series_set))
        trainer = Trainer(
            self.model,
            self._step,
            self.config.train,
            run_dir=run_dir,
            saved_config={"forecast": self.config.to_dict()},
        )
        self.fit_result = trainer.fit(train, val, resume=resume)
        self.model.cpu().eval()
        return self.fit_result

    def _step(self, model: torch.nn.Module, batch: dict[str, Tensor], state: Any) -> StepOutput:
        predicted = model(batch)  # (B, H, C, Q)
        qs = self.config.quantiles
        quantiles = torch.tensor(qs, device=predicted.device) if qs else None
        loss = forecast_loss(self.config.loss, batch["target"], predicted, quantiles)
        point = predicted[..., self._point_index()]
        metrics = {
            "mae": (point - batch["target"]).abs().mean().item(),
            "mse": (point - batch["target"]).pow(2).mean().item(),
        }
        return StepOutput(loss, weight=batch["target"].shape[0], metrics=metrics)

    def _point_index(self) -> int:
        return self.config.quantiles.index(0.5) if self.config.quantiles else 0

    def _require_fitted(self) -> tuple[torch.nn.Module, SeriesScaler]:
        if self.model is None or self.scaler is None:
            raise ValueError(
                "this Forecaster is not fitted yet: call fit(), or Forecaster.load_from(path) "
                "for a saved one"
            )
        return self.model, self.scaler

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def forecast_windows(
        self,
        dataset: WindowDataset,
        batch_size: int = 256,
        scaled: bool = False,
        scaler: SeriesScaler | None = None,
    ) -> np.ndarray:
        """Forecasts for every window, (N, H, C, Q), in the data's units (or the scaler's).

        ``scaler`` is the one ``dataset`` was scaled with (``scaler_for`` of its series); the
        fitted one by default.
        """
        model, fitted = self._require_fitted()
        scaler = scaler or fitted
        model.eval()
        outputs = []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            predicted = model(batch)  # (B, H, C, Q), scaled units
            if scaled:
                outputs.append(predicted.numpy())
                continue
            channel = batch.get("channel")  # (B,) when channel-independent
            if channel is None:
                values = [  # in float64: float32 would round the data's units above 2^24
                    scaler.inverse_target(predicted[..., q].double(), batch["series"])
                    for q in range(predicted.shape[-1])
                ]  # each (B, H, C)
            else:
                values = [
                    scaler.inverse_target(
                        predicted[..., 0, q].double(), batch["series"], channel=channel
                    ).unsqueeze(-1)
                    for q in range(predicted.shape[-1])
                ]  # each (B, H, 1)
            outputs.append(torch.stack(values, dim=-1).numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0,))

    def predict(
        self, frame: pd.DataFrame | SeriesSet, future: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """Forecast ``horizon`` steps after the end of each series in ``frame``.

        ``frame`` may hold any of the series the forecaster was fitted on, in any order. A model
        with known-future covariates needs their values over the horizon: ``future`` holds, for
        every series, the ``horizon`` timestamps after its end with those columns (and the id
        column in long format).

        Returns a long table: series id, time, target column name, ``forecast`` (the point
        forecast) and one ``q<level>`` column per quantile.
        """
        self._require_fitted()
        data = self.config.data
        # (new data to forecast from: nothing is held out, interpolation may read all of it)
        series_set = frame if isinstance(frame, SeriesSet) else self.load(frame, held_out=False)
        scaler = self.scaler_for(series_set)
        check_min_length(series_set, data.input_len, f"input_len {data.input_len}")
        if data.future_covariates and future is None:
            raise ValueError(
                f"this model reads the known-future covariates {list(data.future_covariates)}, "
                f"so predict() needs their values over the {data.horizon} steps after each "
                "series' end: pass them as future= (CLI: --future FILE)"
            )
        if future is not None and not data.future_covariates:
            raise ValueError("future= was given but the model has no future covariates")
        padded = extend_for_origin(series_set, data.horizon, future_tables(future, data))
        scaled = scaler.transform(padded)
        ends = [len(s) for s in padded.series]
        dataset = self.windows(scaled, [e - data.horizon for e in ends], ends, stride=1)
        values = self.forecast_windows(dataset, scaler=scaler)  # (N, H, C, Q)
        table = self._to_frame(padded, dataset, values)
        if isinstance(frame, pd.DataFrame) and data.id_col is not None:
            ids = {str(value): value for value in frame[data.id_col].unique()}
            table["series"] = table["series"].map(ids)  # the ids as given (ints stay ints)
        return table

    def _to_frame(
        self, series_set: SeriesSet, dataset: WindowDataset, values: np.ndarray
    ) -> pd.DataFrame:
        data, qs = self.config.data, self.config.quantiles
        rows = []
        for (window, channel), forecast in zip(item_windows(dataset), values, strict=True):
            series = series_set.series[window.series_index]
            origin = window.start + data.input_len
            times = series.time[origin : origin + data.horizon]
            channels = [data.targets[channel]] if channel is not None else list(data.targets)
            for c, name in enumerate(channels):
                for k, when in enumerate(times):
                    row = {
                        "series": series.id,
                        "time": when,
                        "target": name,
                        "forecast": float(forecast[k, c, self._point_index()]),
                    }
                    for qi, q in enumerate(qs):
                        row[f"q{q:g}"] = float(forecast[k, c, qi])
                    rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """One safetensors file: config, weights, scaler statistics, frequency."""
        model, scaler = self._require_fitted()
        return save_checkpoint(
            path,
            {
                "format": FORMAT,
                "config": self.config.to_dict(),
                "model": model.state_dict(),
                "scaler": scaler.state_dict(),
                "freq": self.freq,
                "shapes": vars(model.shapes).copy(),
                **({} if self.seen_until is None else {"seen_until": dict(self.seen_until)}),
            },
        )

    @classmethod
    def load_from(cls, path: str | Path) -> Forecaster:
        """Rebuild a fitted forecaster from ``save()``'s file (no code is run from it)."""
        state = load_checkpoint(path)
        if state.get("format") not in READABLE:
            raise ValueError(
                f"{path} is not a saved Forecaster this lstmkit reads (format "
                f"{state.get('format')!r}, expected one of {list(READABLE)})"
            )
        forecaster = cls(ForecastConfig.from_dict(state["config"]))
        shapes = Shapes(**{**state["shapes"], "quantiles": tuple(state["shapes"]["quantiles"])})
        forecaster.model = build_model(forecaster.config.model, shapes)
        load_weights(forecaster.model, state["model"], path)
        forecaster.model.eval()
        forecaster.scaler = SeriesScaler.from_state_dict(state["scaler"])
        forecaster.freq = state["freq"]
        seen = state.get("seen_until")
        forecaster.seen_until = None if seen is None else {str(k): str(v) for k, v in seen.items()}
        return forecaster

    def check_held_out(self, series_set: SeriesSet, test_start: list[int]) -> None:
        """Raise if a series' test part begins at or before the last step fit trained or
        validated on: its scores would be of data the model was fitted to."""
        if self.seen_until is None:
            return
        for series, start in zip(series_set.series, test_start, strict=True):
            seen = self.seen_until.get(series.id)
            # clock times: data read with a time zone once and without one later (local-midnight
            # dates across a daylight-saving change, say) still compare
            first = series.time[start].tz_localize(None)
            if seen is not None and first <= pd.Timestamp(seen).tz_localize(None):
                raise ValueError(
                    f"series {series.id!r}: its test part starts at {series.time[start]}, but "
                    f"the forecaster trained or validated on it up to {seen}; score it on the "
                    "frame it was fitted on, or on data that follows it"
                )


def check_seasonal_history(series_set: SeriesSet, data: DataConfig, history: int) -> None:
    """Raise (before any training) unless ``history`` steps before the first test origin
    cover more than one season: the seasonal naive baseline and MASE need it."""
    period = data.period(series_set.freq)
    if history <= period:
        source = (
            "as set by data.seasonal_period"
            if data.seasonal_period
            else f"from the frequency {series_set.freq!r}"
        )
        raise ValueError(
            f"the seasonal period is {period} steps ({source}) but "
            f"the shortest series has only {history} steps before its test part; the seasonal "
            "naive baseline and MASE need more than one season of history: set "
            "data.seasonal_period (--seasonal-period) to a shorter season, or give more history"
        )


def item_windows(dataset: WindowDataset) -> list[tuple[Window, int | None]]:
    """The (window, channel) behind each item; channel is None unless channel-independent."""
    if not dataset.channel_independent:
        return [(w, None) for w in dataset.windows]
    return [(w, c) for w in dataset.windows for c in range(dataset.n_channels)]


def _same_freq(a: str, b: str) -> bool:
    try:
        return to_offset(a) == to_offset(b)
    except ValueError:
        return a == b
