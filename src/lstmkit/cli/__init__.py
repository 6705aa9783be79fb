"""Command-line front end: ``lstmkit --help``. The ``cli`` package is the only code that prints.

Each task adds its subcommands from its own module here (``lstmkit forecast ...`` from
``cli/forecast.py``, ``lstmkit text ...`` from ``cli/text.py``), registered at the bottom.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lstmkit import __version__
from lstmkit.cli.forecast import app as forecast_app

app = typer.Typer(
    name="lstmkit",
    help="LSTM networks made practical: explicit gates, verified numerics, training craft.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(markup=False, highlight=False, soft_wrap=True)  # paths print verbatim

# one sub-app per task, each in its own module of this package
app.add_typer(forecast_app, name="forecast")


def _version(value: bool) -> None:
    if value:
        console.print(f"lstmkit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
    keep_freed_memory: Annotated[
        bool,
        typer.Option(
            "--keep-freed-memory",
            help="Keep memory the process frees for its later allocations (glibc's malloc): "
            "CPU training steps stop page-faulting on fresh temporaries, at the cost of holding "
            "the peak heap until exit.",
        ),
    ] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    if keep_freed_memory:
        from lstmkit.training.memory import keep_freed_memory as keep

        reason = keep()
        if reason is not None:
            console.print(f"note: --keep-freed-memory has no effect: {reason}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs at most.")] = 300,
) -> None:
    """Forecast 1960 of the airline passengers series (built in) and compare to baselines."""
    from lstmkit.tasks.forecasting.demo import run_demo
    from lstmkit.tasks.forecasting.report import format_table

    console.print(
        "Airline passengers 1949-1960 (built in): train to 1958, validate on 1959, "
        "forecast the 12 months of 1960."
    )
    try:
        fit, report = run_demo(out, max_epochs=epochs, progress=True)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    console.print(f"trained {fit.steps} steps in {fit.seconds:.1f} s ({fit.reason})")
    for row in format_table(report.metrics):
        console.print("  " + row)
    console.print(f"plot: {report.plots[0]}")
    console.print(f"run directory: {out}")


@app.command()
def adding(
    seq_len: Annotated[int, typer.Option(help="Steps per sequence (T).")] = 50,
    hidden_size: Annotated[int, typer.Option(help="LSTM units.")] = 32,
    cell: Annotated[str, typer.Option(help="lstm, peephole, layernorm or cifg.")] = "lstm",
    epochs: Annotated[int, typer.Option(help="Training epochs at most.")] = 8,
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """The adding problem: can the LSTM remember two marked numbers across T steps?"""
    from lstmkit.tasks.adding import SOLVED_MSE, AddingConfig, default_train_config, train_adding

    try:
        config = AddingConfig(
            seq_len=seq_len, hidden_size=hidden_size, lstm={"cell": cell}, seed=seed
        )
        train = default_train_config(max_epochs=epochs, seed=seed, progress=True)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    console.print(
        f"Adding problem, T={seq_len}: the LSTM must add the two marked values of {seq_len} steps."
    )
    result = train_adding(config, train, run_dir=out)
    console.print(
        f"  model    test MSE {result.test_mse:.4f}  ({result.steps} steps, "
        f"{result.seconds:.1f} s, {cell} cell, {hidden_size} units)"
    )
    console.print(f"  baseline test MSE {result.baseline_mse:.4f}  (always predict 1.0)")
    verdict = "solved" if result.solved else "not solved"
    console.print(
        f"  skill {result.skill:.3f} vs baseline; {verdict} (threshold MSE < {SOLVED_MSE})"
    )
    if out is not None:
        console.print(f"  run directory: {out}")


from lstmkit.cli.text import text_app  # noqa: E402  (subcommands register after the app)

app.add_typer(text_app, name="text")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
