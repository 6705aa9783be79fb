"""Command-line front end: ``lstmkit --help``. The only module that prints."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from lstmkit import __version__

app = typer.Typer(
    name="lstmkit",
    help="LSTM networks made practical: explicit gates, verified numerics, training craft.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


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
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@app.command()
def demo(
    seq_len: Annotated[int, typer.Option(help="Steps per sequence (T).")] = 50,
    hidden_size: Annotated[int, typer.Option(help="LSTM units.")] = 32,
    cell: Annotated[str, typer.Option(help="lstm, peephole, layernorm or cifg.")] = "lstm",
    max_steps: Annotated[int, typer.Option(help="Optimiser steps at most.")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train an LSTM on the adding problem (built in, no data needed) and compare to a baseline."""
    from lstmkit.tasks.adding import SOLVED_MSE, AddingConfig, train_adding

    try:
        config = AddingConfig(
            seq_len=seq_len, hidden_size=hidden_size, cell=cell, max_steps=max_steps, seed=seed
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    console.print(
        f"Adding problem, T={seq_len}: the LSTM must add the two marked values of {seq_len} steps."
    )
    with console.status("training...") as status:
        result = train_adding(
            config, on_eval=lambda step, mse: status.update(f"step {step}: test MSE {mse:.4f}")
        )
    console.print(
        f"  model    test MSE {result.test_mse:.4f}  ({result.steps} steps, "
        f"{result.seconds:.1f} s, {config.cell} cell, {hidden_size} units)"
    )
    console.print(f"  baseline test MSE {result.baseline_mse:.4f}  (always predict 1.0)")
    verdict = "solved" if result.solved else "not solved"
    console.print(
        f"  skill {result.skill:.3f} vs baseline; {verdict} (threshold MSE < {SOLVED_MSE})"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
