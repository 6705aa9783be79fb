"""A run directory holds one run's files only, and config files fail with the file named:
a second `forecast train` into a run directory, quoted booleans, broken or misshapen files."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lstmkit.cli import app
from lstmkit.tasks.forecasting import DataConfig, ForecastConfig, Forecaster, ModelConfig
from lstmkit.tasks.forecasting.config import read_config_file
from lstmkit.tasks.forecasting.report import clear_run, write_run_report
from lstmkit.training import EarlyStoppingConfig, TrainConfig
from lstmkit.training.checkpoint import load_checkpoint, save_checkpoint

from .conftest import make_long_frame

runner = CliRunner()


def _train(data, out, *extra):
    args = [
        "forecast", "train", "--data", str(data), "--time-col", "date", "--target", "sales",
        "--id-col", "store", "--horizon", "7", "--input-len", "14", "--epochs", "1",
        "--hidden-size", "8", "--out", str(out), *extra,
    ]  # fmt: skip
    return runner.invoke(app, args)


def test_a_run_directory_is_not_trained_into_twice_unless_overwritten(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    run = tmp_path / "run"
    assert _train(data, run, "--test-size", "7").exit_code == 0
    scores = (run / "metrics.json").read_text()
    (run / "notes.txt").write_text("mine")  # a user's own file

    result = _train(data, run)
    assert result.exit_code == 2
    assert f"--out '{run}' already holds a run (config.json" in result.output
    assert "pass --overwrite to replace that run" in result.output
    assert (run / "metrics.json").read_text() == scores  # refused before touching anything

    result = _train(data, run, "--overwrite", "--test-size", "3")  # a setting that fails
    assert result.exit_code == 2 and "shorter than the horizon" in result.output
    assert (run / "metrics.json").read_text() == scores  # the old run is still whole

    result = _train(data, run, "--overwrite")  # now without a test part
    assert result.exit_code == 0, result.output
    assert "no test part (--test-size 0): nothing scored" in result.output
    assert not (run / "metrics.json").exists()  # the earlier run's scores and plots are gone
    assert not (run / "forecast.png").exists() and not (run / "error_by_horizon.png").exists()
    assert (run / "forecaster.safetensors").exists() and (run / "notes.txt").read_text() == "mine"
    config = json.loads((run / "config.json").read_text())["forecast"]
    assert config["data"]["test_size"] == 0


def test_overwrite_removes_a_linked_folder_s_link_not_its_files(tmp_path):
    """Checkpoints kept on another disk through a symbolic link stay where they are."""
    elsewhere = tmp_path / "big_disk"
    elsewhere.mkdir()
    (elsewhere / "kept.safetensors").write_text("weights")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    (run / "config.json").write_text("{}")
    assert clear_run(run) == ["config.json", "checkpoints"]
    assert list(run.iterdir()) == [] and (elsewhere / "kept.safetensors").read_text() == "weights"


def test_a_forecaster_saved_before_static_scaling_still_loads_and_predicts_as_trained(tmp_path):
    """Format /1 (no "static" statistics): its static covariates pass through unscaled, as the
    model was trained on them; files are /2 now, which an older lstmkit refuses by name."""
    frame = make_long_frame()
    config = ForecastConfig(
        data=DataConfig(time_col="date", targets="sales", id_col="store", input_len=14,
                        horizon=7, static_covariates="size"),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(max_epochs=1),
    )  # fmt: skip
    forecaster = Forecaster(config)
    forecaster.fit(frame)
    path = forecaster.save(tmp_path / "new.safetensors")
    state = load_checkpoint(path)
    assert state["format"] == "lstmkit.forecaster/2" and "static" in state["scaler"]
    del state["scaler"]["static"]
    state["format"] = "lstmkit.forecaster/1"
    save_checkpoint(tmp_path / "old.safetensors", state)
    old = Forecaster.load_from(tmp_path / "old.safetensors")
    raw = old.scaler.transform(old.load(frame))
    assert [float(s.static[0]) for s in raw] == [1.0, 2.0, 3.0]  # unscaled, as saved
    scaled = forecaster.scaler.transform(forecaster.load(frame))
    np.testing.assert_allclose([s.static[0] for s in scaled], [-1.2247449, 0, 1.2247449], rtol=1e-6)
    assert len(old.predict(frame)) == 3 * 7


def test_the_run_report_removes_files_that_are_not_this_runs(tmp_path):
    """Through the Python API too: the report leaves no earlier run's scores or fills."""
    for name in ("metrics.json", "forecast.png", "error_by_horizon.png", "data_report.json"):
        (tmp_path / name).write_text("an earlier run")
    config = ForecastConfig(
        data=DataConfig(time_col="date", targets="sales", id_col="store", input_len=14, horizon=7),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(max_epochs=1),
    )
    forecaster = Forecaster(config)
    series_set = forecaster.load(make_long_frame())
    forecaster.fit(series_set)
    report = write_run_report(forecaster, series_set, tmp_path)
    assert report.metrics is None and report.data_report_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecaster.safetensors"]


@pytest.mark.parametrize(
    "build,message",
    [
        (
            lambda: DataConfig(time_col="t", targets="y", channel_independent="false"),
            "data.channel_independent must be true or false, got 'false'",
        ),
        (
            lambda: EarlyStoppingConfig(enabled="no"),
            "early_stopping.enabled must be true or false, got 'no'",
        ),
        (
            lambda: EarlyStoppingConfig(restore_best=0),
            "early_stopping.restore_best must be true or false, got 0",
        ),
    ],
    ids=["channel_independent", "enabled", "restore_best"],
)
def test_quoted_booleans_are_refused(build, message):
    """'false' is a true value to Python: read by its truthiness it would turn the option on."""
    with pytest.raises(ValueError, match=message):
        build()


def test_numpy_booleans_are_taken_as_booleans():
    """As pandas hands them out (a sweep table's row, say); stored as Python bools."""
    data = DataConfig(time_col="t", targets="y", channel_independent=np.True_)
    stopping = EarlyStoppingConfig(enabled=np.False_)
    assert data.channel_independent is True and stopping.enabled is False


@pytest.mark.parametrize(
    "name,text,message",
    [
        (
            "broken.yaml",
            "data:\n  targets: [sales\n  horizon: 7\n",
            "does not parse: expected ',' or ']', but got ':' at line 3, column 10",
        ),
        ("broken.toml", "[data\ntime_col = 'd'\n", "does not parse"),
        ("broken.json", '{"data": ', "does not parse"),
        ("list.json", '["data"]', "must hold a table of sections .* got list"),
        ("list.yaml", "- data\n", "must hold a table of sections .* got list"),
    ],
)
def test_config_files_that_do_not_parse_are_named(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=f"config file {path} {message}"):
        read_config_file(path)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"quantiles": 0.1}, r"quantiles must be a list of numbers such as \[0.1, 0.9\], got 0.1"),
        ({"quantiles": "0.1,0.9"}, "quantiles must be a list of numbers .* got '0.1,0.9'"),
        (
            {"model": {"lstm": {"cel": "peephole"}}},
            r"unknown LSTM option\(s\) in model.lstm: \['cel'\]; known: \['backend', 'bias',",
        ),
    ],
    ids=["scalar-quantiles", "string-quantiles", "lstm-typo"],
)
def test_misshapen_settings_are_refused_by_name(values, message):
    with pytest.raises(ValueError, match=message):
        ForecastConfig.from_dict({"data": {"time_col": "t", "targets": "y"}, **values})


def test_the_cli_reports_a_broken_config_file_without_a_traceback(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  targets: [sales\n  horizon: 7\n")
    result = runner.invoke(app, ["forecast", "train", "--data", str(data), "--config",
                                 str(config), "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2
    assert f"error: config file {config} does not parse" in result.output
    assert "Traceback" not in result.output


def test_backtest_takes_the_data_and_model_flags_of_train(tmp_path, monkeypatch):
    """Every series has a gap: --fill alone cannot tell the frequency, --freq can; the model
    flags reach the config that every fold trains with."""
    from lstmkit.tasks.forecasting import evaluation

    frame = make_long_frame()
    frame = frame.drop(index=frame.groupby("store").nth(10).index)  # one missing day each
    data = tmp_path / "gaps.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "bt.json"
    args = [
        "forecast", "backtest", "--data", str(data), "--time-col", "date", "--target", "sales",
        "--id-col", "store", "--horizon", "7", "--input-len", "14", "--epochs", "1",
        "--folds", "2", "--fill", "ffill", "--out", str(out),
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "cannot infer the frequency" in result.output
    seen = []
    real = evaluation.backtest
    monkeypatch.setattr(
        evaluation, "backtest", lambda cfg, *a, **k: seen.append(cfg) or real(cfg, *a, **k)
    )
    model = ["--freq", "D", "--hidden-size", "8", "--batch-size", "16", "--model",
             "autoregressive", "--seed", "3", "--lr", "0.01"]  # fmt: skip
    result = runner.invoke(app, [*args, *model])
    assert result.exit_code == 0, result.output
    assert "2 folds 7 steps apart" in result.output and json.loads(out.read_text())["mean"]
    (cfg,) = seen
    assert (cfg.data.freq, cfg.model.kind, cfg.model.hidden_size) == ("D", "autoregressive", 8)
    assert (cfg.train.batch_size, cfg.train.seed, cfg.train.optim.lr) == (16, 3, 0.01)


def test_evaluate_without_a_test_part_says_to_train_with_one(tmp_path):
    data = tmp_path / "sales.csv"
    make_long_frame().to_csv(data, index=False)
    run = tmp_path / "run"
    assert _train(data, run).exit_code == 0
    result = runner.invoke(app, ["forecast", "evaluate", "--run", str(run), "--data", str(data)])
    assert result.exit_code == 2
    assert "train it again with a test size of at least the horizon (--test-size N" in (
        result.output
    )
