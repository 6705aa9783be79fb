"""``ForecastConfig``: data, model and training settings of a forecasting run.

It is built from flags, a TOML/YAML file, or Python, validated field by field, and saved as JSON
with every checkpoint and run directory.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmkit.nn.validation import (
    check_bool,
    check_choice,
    check_nonnegative_int,
    check_positive_int,
)
from lstmkit.tasks.forecasting.models import ModelConfig
from lstmkit.training import TrainConfig

SCALERS = ("standard", "minmax", "none")
LOSSES = ("mse", "mae")
DEFAULT_MAX_EPOCHS = 50
# seasons of calendar frequencies, by pandas' base alias; sub-daily ticks use one day
CALENDAR_SEASONS = {"D": 7, "B": 5, "W": 52, "MS": 12, "ME": 12, "M": 12, "QS": 4, "QE": 4, "Q": 4}


def seasonal_period(freq: str) -> int:
    """The usual season of a pandas frequency alias (see ``DataConfig.period``)."""
    import pandas as pd
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(freq)
    except ValueError:
        return 1
    day = pd.Timedelta(days=1).value
    nanos = getattr(offset, "nanos", None) if isinstance(offset, pd.tseries.offsets.Tick) else None
    if nanos and nanos < day:
        return day // nanos if day % nanos == 0 else 1
    if nanos:  # whole days as a tick ("24h"; pandas 2 makes "D" one too): weeks of days
        days, rest = divmod(nanos, day)
        return 7 // days if rest == 0 and 7 % days == 0 else 1
    base = (offset.rule_code if hasattr(offset, "rule_code") else offset.name).split("-")[0]
    season = CALENDAR_SEASONS.get(base, 1)
    return season // offset.n if offset.n and season % offset.n == 0 else 1


def _as_tuple(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{name} must be a column name or a list of them, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which columns mean what, how windows are cut, and what is held out."""

    time_col: str
    targets: tuple[str, ...]
    id_col: str | None = None  # long format: one series per value of this column
    past_covariates: tuple[str, ...] = ()  # observed up to the forecast origin only
    future_covariates: tuple[str, ...] = ()  # known in advance over the horizon too
    static_covariates: tuple[str, ...] = ()  # constant within each series
    freq: str | None = None  # pandas frequency alias; inferred when None
    fill: str = "none"  # NaNs / missing timestamps: "none" (error), "ffill", "interpolate", "zero"
    input_len: int = 24  # steps of history the model reads
    horizon: int = 12  # steps to forecast
    stride: int = 1  # steps between consecutive training windows
    val_size: int = 0  # steps before the test part used for validation; 0 = one horizon
    test_size: int = 0  # steps at the end held out for evaluation; 0 = none
    scaler: str = "standard"  # per-series scaling fitted on the training part
    channel_independent: bool = False  # each target channel becomes its own series
    seasonal_period: int = 0  # for MASE and the seasonal naive baseline; 0 = from freq

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _as_tuple("data.targets", self.targets))
        for name in ("past_covariates", "future_covariates", "static_covariates"):
            object.__setattr__(self, name, _as_tuple(f"data.{name}", getattr(self, name)))
        if not self.targets:
            raise ValueError("data.targets must name at least one column")
        if not isinstance(self.time_col, str) or not self.time_col:
            raise ValueError(f"data.time_col must be a column name, got {self.time_col!r}")
        check_positive_int("data.input_len", self.input_len)
        check_positive_int("data.horizon", self.horizon)
        check_positive_int("data.stride", self.stride)
        check_nonnegative_int("data.val_size", self.val_size)
        check_nonnegative_int("data.test_size", self.test_size)
        check_nonnegative_int("data.seasonal_period", self.seasonal_period)
        check_choice("data.scaler", self.scaler, SCALERS)
        independent = check_bool("data.channel_independent", self.channel_independent)
        object.__setattr__(self, "channel_independent", independent)

    def check_parts(self) -> None:
        """Raise unless the validation and test parts each hold one whole forecast. (Checked
        when data is split, not on construction, so a saved forecaster always loads.)"""
        for name in ("val_size", "test_size"):
            size = getattr(self, name)
            if 0 < size < self.horizon:
                raise ValueError(
                    f"data.{name} is {size}, shorter than the horizon {self.horizon}: that part "
                    f"must hold at least one whole forecast (0 for "
                    f"{'one horizon' if name == 'val_size' else 'no test part'})"
                )

    @property
    def validation_steps(self) -> int:
        return self.val_size or self.horizon

    def period(self, freq: str) -> int:
        """The seasonal period: as configured, else one day of sub-daily steps ("h" -> 24,
        "15min" -> 96, "2h" -> 12), a week of days (7; 5 business days), a year of weeks,
        months or quarters; 1 when none applies."""
        if self.seasonal_period:
            return self.seasonal_period
        return seasonal_period(freq)


@dataclass(frozen=True)
class ForecastConfig:
    """Everything a forecasting run needs; ``to_dict``/``from_dict`` round-trip it."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=DEFAULT_MAX_EPOCHS))
    quantiles: tuple[float, ...] = ()  # e.g. (0.1, 0.5, 0.9); 0.5 is added if missing
    loss: str = "mse"  # point loss when no quantiles: "mse" or "mae"

    def __post_init__(self) -> None:
        if not isinstance(self.data, DataConfig):
            raise ValueError(f"data must be a DataConfig, got {type(self.data).__name__}")
        check_choice("loss", self.loss, LOSSES)
        qs = tuple(self.quantiles)
        for q in qs:
            if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < q < 1.0:
                raise ValueError(f"quantiles must be numbers strictly between 0 and 1, got {q!r}")
        if qs:
            qs = tuple(sorted(set(qs) | {0.5}))
        names = [f"q{q:g}" for q in qs]  # the forecast table's column names
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(
                f"quantiles {list(qs)} give the same column name {clash[0]!r} twice; use "
                "levels that differ in their first six significant digits"
            )
        object.__setattr__(self, "quantiles", qs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": self.train.to_dict(),
            "quantiles": list(self.quantiles),
            "loss": self.loss,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ForecastConfig:
        """Build from nested mappings (e.g. a parsed TOML/YAML file); unknown keys are errors."""
        sections = {"data", "model", "train", "quantiles", "loss"}
        unknown = sorted(set(values) - sections)
        if unknown:
            raise ValueError(
                f"unknown forecast config section(s) {unknown}; known: {sorted(sections)}"
            )
        if "data" not in values:
            raise ValueError("the forecast config needs a [data] section with time_col and targets")
        data = _build(DataConfig, "data", values["data"])
        model = _build(ModelConfig, "model", values.get("model", {}))
        train = TrainConfig.from_dict({"max_epochs": DEFAULT_MAX_EPOCHS, **values.get("train", {})})
        return cls(
            data=data,
            model=model,
            train=train,
            quantiles=_quantile_list(values.get("quantiles", ())),
            loss=values.get("loss", "mse"),
        )


def _quantile_list(values: Any) -> tuple[Any, ...]:
    """The config's ``quantiles`` as a tuple; a single number or a string is refused (a string
    would be read character by character)."""
    if not isinstance(values, list | tuple):
        raise ValueError(f"quantiles must be a list of numbers such as [0.1, 0.9], got {values!r}")
    return tuple(values)


def _build(kind: type, section: str, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"[{section}] must be a table of settings, got {values!r}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) in [{section}]: {unknown}; known: {sorted(known)}")
    required = [
        f.name
        for f in dataclasses.fields(kind)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in values]
    if missing:
        raise ValueError(f"[{section}] needs {missing}; got only {sorted(values)}")
    return kind(**values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML (.toml) or YAML (.yaml/.yml) or JSON (.json) config file into dicts; a
    file that does not parse, or whose top level is not a table of sections, is a
    ``ValueError`` that names it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"config file must be .toml, .yaml, .yml or .json, got {path.name!r}")
    try:  # (TOML's, JSON's and UTF-8's decode errors are ValueErrors)
        loaded = _parse(path.read_text(encoding="utf-8"), suffix)
    except ValueError as err:
        raise ValueError(f"config file {path} does not parse: {err}") from None
    if not isinstance(loaded, dict):
        raise ValueError(
            f"config file {path} must hold a table of sections ([data], [model], [train]), "
            f"got {type(loaded).__name__}"
        )
    return loaded


def _parse(text: str, suffix: str) -> Any:
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        return tomllib.loads(text)
    if suffix == ".json":
        return json.loads(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:  # "expected ',' or ']', but got ':' at line 3, column 10"
        mark = err.problem_mark
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ValueError(f"{err.problem or err.context}{where}") from None
    except yaml.YAMLError as err:
        raise ValueError(" ".join(str(err).split())) from None
