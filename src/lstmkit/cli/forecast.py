"""``lstmkit forecast train|predict|evaluate|backtest``: forecasting from the command line.

Settings come from a config file (``--config run.toml``, TOML, YAML or JSON with sections
[data], [model], [train]) and/or flags; a flag given on the command line wins.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

app = typer.Typer(help="Time-series forecasting with an LSTM.", no_args_is_help=True)
# no markup: messages quote the config's [data] / [train] sections and user paths verbatim
console = Console(markup=False, highlight=False, soft_wrap=True)

Opt = typer.Option
DataFile = Annotated[Path, Opt("--data", help="CSV or Parquet file with the series.")]


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def build_config(config_file: Path | None, flags: dict[str, dict[str, Any]]):
    """The config file's sections, overridden by every flag that was given."""
    from lstmkit.tasks.forecasting.config import ForecastConfig, read_config_file

    values: dict[str, Any] = read_config_file(config_file) if config_file else {}
    for section, settings in flags.items():
        given = {k: v for k, v in settings.items() if v is not None}
        if section == "top":
            values.update(given)
        elif given:
            values[section] = _merge(values.get(section, {}), given)
    values.setdefault("train", {}).setdefault("progress", True)
    return ForecastConfig.from_dict(values)


def _flag_sections(
    *,
    time_col: str | None,
    target: str | None,
    id_col: str | None,
    horizon: int | None,
    input_len: int | None,
    test_size: int | None,
    val_size: int | None,
    past_covariates: str | None,
    future_covariates: str | None,
    static_covariates: str | None,
    freq: str | None,
    fill: str | None,
    seasonal_period: int | None,
    model: str | None,
    hidden_size: int | None,
    epochs: int | None,
    seed: int | None,
    batch_size: int | None,
    lr: float | None,
    quantiles: str | None,
) -> dict[str, dict[str, Any]]:
    """The config sections that the flags ``train`` and ``backtest`` share set (None: not
    given, so the config file's value or the default stands)."""
    return {
        "data": {
            "time_col": time_col,
            "targets": _split(target),
            "id_col": id_col,
            "horizon": horizon,
            "input_len": input_len,
            "test_size": test_size,
            "val_size": val_size,
            "past_covariates": _split(past_covariates),
            "future_covariates": _split(future_covariates),
            "static_covariates": _split(static_covariates),
            "freq": freq,
            "fill": fill,
            "seasonal_period": seasonal_period,
        },
        "model": {"kind": model, "hidden_size": hidden_size},
        "train": {
            "max_epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "optim": None if lr is None else {"lr": lr},
        },
        "top": {"quantiles": _quantiles(quantiles)},
    }


def _sections_from(arguments: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``_flag_sections`` of a command's arguments (its ``locals()``, which hold every one of
    those flags: ``train`` and ``backtest`` both take them all)."""
    names = inspect.signature(_flag_sections).parameters
    return _flag_sections(**{name: arguments[name] for name in names})


def _quantiles(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(q) for q in _split(value) or []]
    except ValueError:
        raise ValueError(
            f"--quantiles must be numbers separated by commas (e.g. 0.1,0.9), got {value!r}"
        ) from None


def _output_file(path: Path) -> Path:
    """``path`` as a file to write: its folder is made; an existing folder there is an error."""
    if path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _run_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a file; give a directory for the run")
    return path


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``changes``, nested tables merged key by key (--lr keeps [optim])."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _print_fills(notes: list[str], fill: str, shown: int = 5) -> None:
    """Say what the fill strategy changed: a count and the first few notes."""
    if not notes:
        return
    console.print(f"{len(notes)} fill(s) with fill={fill!r} (gaps or NaNs in the data):")
    for note in notes[:shown]:
        console.print(f"  {note}")
    if len(notes) > shown:
        console.print(f"  ... and {len(notes) - shown} more")


def _fail(err: Exception) -> None:
    console.print(Text.assemble(("error:", "red"), f" {err}"))
    raise typer.Exit(code=2)


def _read(path: Path):
    from lstmkit.data.series_loading import read_table

    return read_table(path)


@app.command()
def train(
    data: DataFile,
    out: Annotated[Path, Opt(help="Run directory to write.")],
    config: Annotated[Path | None, Opt(help="TOML/YAML/JSON config file.")] = None,
    time_col: Annotated[str | None, Opt(help="Time column.")] = None,
    target: Annotated[str | None, Opt(help="Target column(s), comma-separated.")] = None,
    id_col: Annotated[str | None, Opt(help="Series id column (long format).")] = None,
    horizon: Annotated[int | None, Opt(help="Steps to forecast.")] = None,
    input_len: Annotated[int | None, Opt(help="Steps of history the model reads.")] = None,
    test_size: Annotated[int | None, Opt(help="Steps held out for evaluation.")] = None,
    val_size: Annotated[int | None, Opt(help="Steps for validation (default: horizon).")] = None,
    past_covariates: Annotated[str | None, Opt(help="Past covariate columns.")] = None,
    future_covariates: Annotated[str | None, Opt(help="Known-future covariate columns.")] = None,
    static_covariates: Annotated[str | None, Opt(help="Static covariate columns.")] = None,
    freq: Annotated[str | None, Opt(help="Pandas frequency alias; inferred if absent.")] = None,
    fill: Annotated[str | None, Opt(help="none, ffill, interpolate or zero.")] = None,
    seasonal_period: Annotated[
        int | None, Opt(help="Season in steps for the seasonal naive and MASE (default: by freq).")
    ] = None,
    model: Annotated[str | None, Opt(help="direct, autoregressive or segment.")] = None,
    hidden_size: Annotated[int | None, Opt(help="LSTM units.")] = None,
    quantiles: Annotated[str | None, Opt(help="e.g. 0.1,0.5,0.9 for intervals.")] = None,
    epochs: Annotated[int | None, Opt(help="Training epochs at most.")] = None,
    lr: Annotated[float | None, Opt(help="Learning rate.")] = None,
    seed: Annotated[int | None, Opt(help="Random seed.")] = None,
    batch_size: Annotated[int | None, Opt(help="Windows per training step.")] = None,
    overwrite: Annotated[
        bool, Opt(help="Replace the run already in --out (lstmkit's files there, nothing else).")
    ] = False,
) -> None:
    """Fit a forecaster, score it against the baselines on the test part, write RUN_DIR."""
    from lstmkit.tasks.forecasting.forecaster import Forecaster
    from lstmkit.tasks.forecasting.report import (
        clear_run,
        format_table,
        previous_run,
        write_run_report,
    )

    try:
        cfg = build_config(config, _sections_from(locals()))
        earlier = previous_run(_run_dir(out))
        if earlier and not overwrite:
            raise ValueError(
                f"--out {str(out)!r} already holds a run ({', '.join(earlier)}); give a new "
                "directory, or pass --overwrite to replace that run"
            )
        forecaster = Forecaster(cfg)
        series_set = forecaster.load(_read(data))
        _print_fills(series_set.report, cfg.data.fill)
        if earlier:  # only now: data or settings that fail leave the old run alone
            forecaster.split(series_set)  # (fit checks the parts, lengths and season here)
            clear_run(out)
        result = forecaster.fit(series_set, run_dir=out)
        report = write_run_report(forecaster, series_set, out)
    except (ValueError, OSError) as err:  # OSError: FileNotFoundError, permissions, disks
        _fail(err)
    console.print(f"trained {result.steps} steps in {result.seconds:.1f} s ({result.reason})")
    if report.data_report_path is not None:
        console.print(f"filled values: {report.data_report_path}")
    if report.metrics is not None:
        for row in format_table(report.metrics):
            console.print(row)
        console.print(f"metrics: {report.metrics_path}")
        for plot in report.plots:
            console.print(f"plot: {plot}")
    else:
        console.print(
            "no test part (--test-size 0): nothing scored, so no metrics.json or plots; "
            "train with --test-size N (at least the horizon) to score against the baselines"
        )
    console.print(f"run directory: {out}")


@app.command()
def predict(
    run: Annotated[Path, Opt(help="Run directory written by `forecast train`.")],
    data: DataFile,
    out: Annotated[Path, Opt(help="CSV or Parquet file (by suffix) for the forecasts.")],
    future: Annotated[
        Path | None,
        Opt(help="CSV/Parquet with the known-future covariates over the horizon."),
    ] = None,
) -> None:
    """Forecast the horizon after the end of each series in --data."""
    from lstmkit.tasks.forecasting.forecaster import Forecaster

    try:
        path = _output_file(out)
        forecaster = Forecaster.load_from(run / "forecaster.safetensors")
        series_set = forecaster.load(_read(data))
        _print_fills(series_set.report, forecaster.config.data.fill)
        table = forecaster.predict(series_set, future=None if future is None else _read(future))
        if path.suffix.lower() in (".parquet", ".pq"):
            table.to_parquet(path, index=False)
        else:
            table.to_csv(path, index=False)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"{len(table)} forecast rows for {table['series'].nunique()} series: {out}")


@app.command()
def evaluate(
    run: Annotated[Path, Opt(help="Run directory written by `forecast train`.")],
    data: DataFile,
    out: Annotated[Path | None, Opt(help="Write the metrics JSON here.")] = None,
) -> None:
    """Score a trained forecaster on the test part of --data, beside the baselines."""
    from lstmkit.tasks.forecasting.evaluation import evaluate as run_evaluation
    from lstmkit.tasks.forecasting.forecaster import Forecaster
    from lstmkit.tasks.forecasting.report import format_table

    try:
        target = None if out is None else _output_file(out)
        forecaster = Forecaster.load_from(run / "forecaster.safetensors")
        report = run_evaluation(forecaster, _read(data))
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    for row in format_table(report):
        console.print(row)
    if target is not None:
        target.write_text(json.dumps(report, indent=2))
        console.print(f"metrics: {target}")


@app.command()
def backtest(
    data: DataFile,
    out: Annotated[Path, Opt(help="JSON file for the per-fold and mean metrics.")],
    config: Annotated[Path | None, Opt(help="TOML/YAML/JSON config file.")] = None,
    time_col: Annotated[str | None, Opt(help="Time column.")] = None,
    target: Annotated[str | None, Opt(help="Target column(s), comma-separated.")] = None,
    id_col: Annotated[str | None, Opt(help="Series id column (long format).")] = None,
    horizon: Annotated[int | None, Opt(help="Steps to forecast.")] = None,
    input_len: Annotated[int | None, Opt(help="Steps of history the model reads.")] = None,
    test_size: Annotated[int | None, Opt(help="Steps each fold tests (default: horizon).")] = None,
    val_size: Annotated[int | None, Opt(help="Steps for validation (default: horizon).")] = None,
    past_covariates: Annotated[str | None, Opt(help="Past covariate columns.")] = None,
    future_covariates: Annotated[str | None, Opt(help="Known-future covariate columns.")] = None,
    static_covariates: Annotated[str | None, Opt(help="Static covariate columns.")] = None,
    freq: Annotated[str | None, Opt(help="Pandas frequency alias; inferred if absent.")] = None,
    fill: Annotated[str | None, Opt(help="none, ffill, interpolate or zero.")] = None,
    seasonal_period: Annotated[
        int | None, Opt(help="Season in steps for the seasonal naive and MASE (default: by freq).")
    ] = None,
    quantiles: Annotated[str | None, Opt(help="e.g. 0.1,0.5,0.9 for intervals.")] = None,
    folds: Annotated[int, Opt(help="Forecast origins.")] = 3,
    step: Annotated[int, Opt(help="Steps between origins (default: the test size).")] = 0,
    mode: Annotated[str, Opt(help="expanding or sliding training window.")] = "expanding",
    epochs: Annotated[int | None, Opt(help="Training epochs at most, per fold.")] = None,
    model: Annotated[str | None, Opt(help="direct, autoregressive or segment.")] = None,
    hidden_size: Annotated[int | None, Opt(help="LSTM units.")] = None,
    lr: Annotated[float | None, Opt(help="Learning rate.")] = None,
    seed: Annotated[int | None, Opt(help="Random seed.")] = None,
    batch_size: Annotated[int | None, Opt(help="Windows per training step.")] = None,
) -> None:
    """Refit at several origins and report each fold and the mean, beside the baselines."""
    from lstmkit.tasks.forecasting.evaluation import backtest as run_backtest
    from lstmkit.tasks.forecasting.report import format_table

    try:
        flags = _sections_from(locals())
        flags["train"]["progress"] = False
        cfg = build_config(config, flags)
        target = _output_file(out)
        result = run_backtest(cfg, _read(data), folds=folds, mode=mode, step=step)
        target.write_text(json.dumps(result, indent=2))
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"backtest ({mode}, {folds} folds {result['step']} steps apart), mean of folds:")
    for row in format_table(result["mean"]):
        console.print(row)
    console.print(f"per-fold and mean metrics: {out}")
