"""The command-line front end."""

import pytest
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


def test_keep_freed_memory_flag_sets_it_before_the_command(monkeypatch):
    """--keep-freed-memory calls keep_freed_memory() (replaced here: the real one holds for the
    whole test process), and says so when it cannot take effect."""
    from lstmkit.training import memory

    calls = []

    def fake() -> str:
        calls.append(True)
        return "keeping freed memory needs glibc's malloc; this process runs on musl"

    monkeypatch.setattr(memory, "keep_freed_memory", fake)
    result = runner.invoke(
        app, ["--keep-freed-memory", "adding", "--seq-len", "10", "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [True]
    assert "note: --keep-freed-memory has no effect: keeping freed memory needs glibc" in (
        result.output
    )
    assert "model    test MSE" in result.output


def test_without_the_flag_freed_memory_is_left_alone(monkeypatch):
    from lstmkit.training import memory

    monkeypatch.setattr(memory, "keep_freed_memory", lambda: pytest.fail("called"))
    result = runner.invoke(app, ["adding", "--seq-len", "10", "--epochs", "1"])
    assert result.exit_code == 0, result.output
