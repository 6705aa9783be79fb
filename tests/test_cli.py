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


def test_demo_reports_model_and_baseline():
    result = runner.invoke(app, ["demo", "--seq-len", "10", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "model    test MSE" in result.output
    assert "baseline test MSE" in result.output


def test_demo_rejects_bad_flags_with_a_message():
    result = runner.invoke(app, ["demo", "--hidden-size", "0"])
    assert result.exit_code != 0
    assert "hidden_size must be a positive integer, got 0" in result.output
