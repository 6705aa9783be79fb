"""The command-line front end."""

from typer.testing import CliRunner

from lstmkit import __version__
from lstmkit.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lstmkit {__version__}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_demo_forecasts_airline_passengers_beside_the_baselines(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "seasonal naive" in result.output and "MAE skill" in result.output
    assert (tmp_path / "forecast.png").exists() and (tmp_path / "metrics.json").exists()


def test_adding_reports_model_and_baseline():
    result = runner.invoke(app, ["adding", "--seq-len", "10", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "model    test MSE" in result.output
    assert "baseline test MSE" in result.output


def test_adding_rejects_bad_flags_with_a_message():
    result = runner.invoke(app, ["adding", "--hidden-size", "0"])
    assert result.exit_code != 0
    assert "hidden_size must be a positive integer, got 0" in result.output
