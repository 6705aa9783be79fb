"""Bad data gets a clear error through the Forecaster; the CLI trains, predicts, evaluates."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstmkit.cli import app
from lstmkit.tasks.forecasting import DataConfig, ForecastConfig, Forecaster, ModelConfig
from lstmkit.training import TrainConfig

from .conftest import make_long_frame


def _forecaster(**data):
    base = dict(time_col="date", targets=("sales",), id_col="store", input_len=14, horizon=7)
    base.update(data)
    return Forecaster(
        ForecastConfig(
            data=DataConfig(**base),
            model=ModelConfig(hidden_size=8),
            train=TrainConfig(max_epochs=1, batch_size=16),
        )
    )


def test_missing_target_column(long_frame):
    with pytest.raises(
        ValueError,
        match=r"column\(s\) \['revenue'\] not found; available "
        r"columns: \[",
    ):
        _forecaster(targets=("revenue",)).fit(long_frame)


def test_non_numeric_values(long_frame):
    frame = long_frame.astype({"sales": object})
    frame.loc[5, "sales"] = "n/a"
    with pytest.raises(ValueError, match="'sales' has non-numeric value 'n/a' at row 5"):
        _forecaster().fit(frame)


def test_duplicate_timestamps(long_frame):
    frame = pd.concat([long_frame, long_frame.iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate"):
        _forecaster().fit(frame)


def test_series_shorter_than_one_window(long_frame):
    short = long_frame[long_frame["date"] < "2020-01-20"]
    with pytest.raises(ValueError, match=r"series 's0' has 19 steps, fewer than"):
        _forecaster().fit(short)


def test_nans_are_an_error_unless_a_fill_is_chosen(long_frame):
    frame = long_frame.copy()
    frame.loc[10, "sales"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _forecaster().fit(frame)
    forecaster = _forecaster(fill="interpolate")
    series = forecaster.load(frame)
    assert any("interpolate" in note for note in series.report)
    forecaster.fit(series)


def test_missing_timestamps_are_reported(long_frame):
    frame = long_frame.drop(index=[20, 21])
    with pytest.raises(ValueError, match="missing"):
        _forecaster().fit(frame)


def test_bad_config_values():
    with pytest.raises(ValueError, match="data.horizon must be a positive integer, got 0"):
        DataConfig(time_col="t", targets="y", horizon=0)
    with pytest.raises(
        ValueError,
        match="model.kind must be one of 'direct', 'autoregressive', 'segment'; got 'tcn'",
    ):
        ModelConfig(kind="tcn")
    with pytest.raises(
        ValueError, match="quantiles must be numbers strictly between 0 and 1, got 1.5"
    ):
        ForecastConfig(data=DataConfig(time_col="t", targets="y"), quantiles=(0.1, 1.5))
    with pytest.raises(ValueError, match=r"\[data\] needs \['targets'\]; got only \['time_col'\]"):
        ForecastConfig.from_dict({"data": {"time_col": "t"}})
    with pytest.raises(ValueError, match="must not set .'bidirectional'.: the forecasting models"):
        ModelConfig(lstm={"bidirectional": True})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) in \[data\]: \['horizn'\]"):
        ForecastConfig.from_dict({"data": {"time_col": "t", "targets": "y", "horizn": 3}})
    with pytest.raises(ValueError, match=r"model.segment_len \(5\) must divide input_len \(14\)"):
        Forecaster(
            ForecastConfig(
                data=DataConfig(
                    time_col="date", targets="sales", id_col="store", input_len=14, horizon=7
                ),
                model=ModelConfig(kind="segment", segment_len=5),
                train=TrainConfig(max_epochs=1, batch_size=16),
            )
        ).fit(make_long_frame())


runner = CliRunner()


def test_cli_train_predict_evaluate_backtest(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    config = tmp_path / "run.toml"
    config.write_text("[model]\nhidden_size = 8\n[train]\nmax_epochs = 2\nbatch_size = 16\n")
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "forecast",
            "train",
            "--data",
            str(data),
            "--time-col",
            "date",
            "--target",
            "sales",
            "--id-col",
            "store",
            "--horizon",
            "7",
            "--input-len",
            "14",
            "--test-size",
            "7",
            "--quantiles",
            "0.1,0.9",
            "--config",
            str(config),
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "seasonal naive" in result.output and "skill" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"model", "naive", "seasonal_naive", "skill", "beats"} <= set(metrics)
    assert (run / "forecast.png").stat().st_size > 1000
    assert (run / "error_by_horizon.png").exists()
    assert json.loads((run / "config.json").read_text())["forecast"]["model"]["hidden_size"] == 8

    preds = tmp_path / "preds.csv"
    result = runner.invoke(
        app, ["forecast", "predict", "--run", str(run), "--data", str(data), "--out", str(preds)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(preds)
    assert len(table) == 3 * 7 and {"q0.1", "q0.5", "q0.9"} <= set(table.columns)

    result = runner.invoke(app, ["forecast", "evaluate", "--run", str(run), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "LSTM" in result.output

    out = tmp_path / "bt.json"
    result = runner.invoke(
        app,
        [
            "forecast",
            "backtest",
            "--data",
            str(data),
            "--time-col",
            "date",
            "--target",
            "sales",
            "--id-col",
            "store",
            "--horizon",
            "7",
            "--input-len",
            "14",
            "--folds",
            "2",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["folds"]) == 2


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    result = runner.invoke(
        app,
        [
            "forecast",
            "train",
            "--data",
            str(data),
            "--time-col",
            "date",
            "--target",
            "revenue",
            "--horizon",
            "7",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "not found; available columns" in result.output
    result = runner.invoke(
        app,
        [
            "forecast",
            "train",
            "--data",
            str(tmp_path / "nope.csv"),
            "--time-col",
            "d",
            "--target",
            "y",
            "--horizon",
            "3",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "nope.csv" in result.output


def test_cli_flags_merge_into_the_config_file_tables(tmp_path):
    from lstmkit.cli.forecast import build_config

    config = tmp_path / "run.toml"
    config.write_text(
        '[data]\ntime_col = "d"\ntargets = "y"\n[train.optim]\nname = "sgd"\nweight_decay = 0.01\n'
    )
    built = build_config(config, {"train": {"optim": {"lr": 0.5}}, "data": {"horizon": 3}})
    assert built.train.optim.name == "sgd" and built.train.optim.weight_decay == 0.01
    assert built.train.optim.lr == 0.5 and built.data.horizon == 3
    assert built.train.max_epochs == 50  # one default everywhere


def _train_args(data, out, *extra):
    return [
        "forecast", "train", "--data", str(data), "--time-col", "date", "--target", "sales",
        "--id-col", "store", "--horizon", "7", "--input-len", "14", "--epochs", "1",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_cli_says_what_a_fill_changed_and_keeps_it_in_the_run(tmp_path):
    frame = make_long_frame().drop(index=[10, 11])
    frame.loc[50, "sales"] = float("nan")
    data = tmp_path / "gaps.csv"
    frame.to_csv(data, index=False)
    run = tmp_path / "run"
    result = runner.invoke(app, _train_args(data, run, "--test-size", "7"))
    assert result.exit_code == 2 and "missing timestamp" in result.output  # refused by default
    result = runner.invoke(app, _train_args(data, run, "--test-size", "7", "--fill", "ffill"))
    assert result.exit_code == 0, result.output
    assert "2 fill(s) with fill='ffill'" in result.output
    assert "series 's0': 2 missing timestamp(s) filled by ffill" in result.output
    saved = json.loads((run / "data_report.json").read_text())
    assert saved["fill"] == "ffill" and len(saved["fills"]) == 2
    assert json.loads((run / "metrics.json").read_text())["fill_notes"] == 2
    assert "scored as if observed" in result.output


def test_cli_predicts_with_future_covariates_into_parquet(tmp_path):
    frame = make_long_frame()
    last_week = frame.groupby("store").cumcount(ascending=False) < 7
    data, future = tmp_path / "head.csv", tmp_path / "future.csv"
    frame[~last_week].to_csv(data, index=False)
    frame[last_week][["date", "store", "promo"]].to_csv(future, index=False)
    run = tmp_path / "run"
    result = runner.invoke(app, _train_args(data, run, "--future-covariates", "promo"))
    assert result.exit_code == 0, result.output
    predict = ["forecast", "predict", "--run", str(run), "--data", str(data)]
    result = runner.invoke(app, [*predict, "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "--future FILE" in result.output
    out = tmp_path / "p.parquet"
    result = runner.invoke(app, [*predict, "--future", str(future), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)  # a Parquet file, as its suffix says
    assert len(table) == 21 and set(table["series"]) == {"s0", "s1", "s2"}
    result = runner.invoke(app, [*predict, "--future", str(future), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory; give a file name" in result.output
    evaluate = ["forecast", "evaluate", "--run", str(run), "--data", str(data)]
    result = runner.invoke(app, [*evaluate, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory; give a file name" in result.output


def test_cli_errors_keep_bracketed_text_and_name_the_flag(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    config = tmp_path / "run.toml"
    config.write_text("[model]\nhidden_size = 8\n")
    result = runner.invoke(
        app, ["forecast", "train", "--data", str(data), "--config", str(config), "--out", "r"]
    )
    assert result.exit_code == 2
    assert "needs a [data] section" in result.output  # not eaten as console markup
    result = runner.invoke(app, _train_args(data, tmp_path / "r", "--quantiles", "0.1,abc"))
    assert result.exit_code == 2
    assert "--quantiles must be numbers separated by commas" in result.output
    result = runner.invoke(app, _train_args(data, tmp_path / "r", "--test-size", "3"))
    assert result.exit_code == 2
    assert "data.test_size is 3, shorter than the horizon 7" in result.output
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = runner.invoke(app, _train_args(data, a_file))
    assert result.exit_code == 2 and "is a file; give a directory" in result.output


def test_cli_backtest_reports_skill_and_refuses_overlapping_folds(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    args = [
        "forecast", "backtest", "--data", str(data), "--time-col", "date", "--target", "sales",
        "--id-col", "store", "--horizon", "7", "--input-len", "14", "--epochs", "1",
        "--folds", "2", "--quantiles", "0.1,0.9",
    ]  # fmt: skip
    out = tmp_path / "bt.json"
    result = runner.invoke(app, [*args, "--test-size", "14", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 folds 14 steps apart" in result.output
    assert "seasonal naive: MAE skill" in result.output and "interval coverage" in result.output
    mean = json.loads(out.read_text())["mean"]
    assert {"skill", "beats", "interval"} <= set(mean)
    result = runner.invoke(app, [*args, "--test-size", "14", "--step", "7", "--out", str(out)])
    assert result.exit_code == 2
    assert "step 7 is shorter than the test part (14 steps)" in result.output
    result = runner.invoke(app, [*args, "--folds", "30", "--out", str(out)])
    assert result.exit_code == 2
    assert "30 folds 7 steps apart leave the shortest series (80 steps)" in result.output
