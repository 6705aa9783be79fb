"""``lstmkit text train|generate|evaluate``: language models on any UTF-8 text file or folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

text_app = typer.Typer(
    name="text",
    help="Language models: train on a text file or folder, generate text, evaluate.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(error: Exception) -> typer.Exit:
    err_console.print(f"Error: {error}", markup=False)
    return typer.Exit(code=1)


@text_app.command()
def train(
    corpus: Annotated[Path, typer.Argument(help="UTF-8 text file, or a folder of them.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    val: Annotated[
        Path | None, typer.Option(help="Validation text; default: the end of the corpus.")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Share of the corpus (its end) held out without --val.")
    ] = 0.1,
    tokenizer: Annotated[str, typer.Option(help="char, word or bpe.")] = "char",
    vocab_size: Annotated[int, typer.Option(help="word: limit (0 = all); bpe: size.")] = 0,
    embedding_size: Annotated[int, typer.Option(help="Embedding size E.")] = 128,
    hidden_size: Annotated[int, typer.Option(help="LSTM units per layer.")] = 256,
    layers: Annotated[int, typer.Option(help="LSTM layers.")] = 2,
    tie_weights: Annotated[bool, typer.Option(help="Share embedding and decoder.")] = True,
    adaptive_softmax: Annotated[bool, typer.Option(help="Adaptive softmax output.")] = False,
    bptt: Annotated[int, typer.Option(help="Steps per chunk (truncated BPTT).")] = 128,
    variable_bptt: Annotated[bool, typer.Option(help="AWD-LSTM's random chunk lengths.")] = False,
    streams: Annotated[int, typer.Option(help="Parallel streams per batch.")] = 32,
    embedding_dropout: Annotated[float, typer.Option(help="Drop word types.")] = 0.0,
    input_dropout: Annotated[float, typer.Option(help="Variational, embeddings.")] = 0.0,
    hidden_dropout: Annotated[float, typer.Option(help="Variational, between layers.")] = 0.0,
    output_dropout: Annotated[float, typer.Option(help="Variational, LSTM output.")] = 0.0,
    weight_dropout: Annotated[float, typer.Option(help="DropConnect on W_hh.")] = 0.0,
    ar: Annotated[float, typer.Option(help="Activation regularisation alpha.")] = 0.0,
    tar: Annotated[float, typer.Option(help="Temporal activation regularisation beta.")] = 0.0,
    epochs: Annotated[int, typer.Option(help="Passes over the training text.")] = 1,
    max_steps: Annotated[int, typer.Option(help="Optimiser steps at most (0 = no limit).")] = 0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-3,
    backend: Annotated[str, typer.Option(help="LSTM backend: auto, fused, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
) -> None:
    """Train a language model; writes config.json, checkpoints/, metrics.csv and metrics.json."""
    from lstmkit.data.text import read_corpus, split_text
    from lstmkit.tasks.language_model import LanguageModelConfig, train_language_model
    from lstmkit.training import OptimConfig, ScheduleConfig, TrainConfig

    try:
        config = LanguageModelConfig(
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            embedding_size=embedding_size,
            hidden_size=hidden_size,
            num_layers=layers,
            tie_weights=tie_weights,
            adaptive_softmax=adaptive_softmax,
            bptt=bptt,
            variable_bptt=variable_bptt,
            batch_streams=streams,
            embedding_dropout=embedding_dropout,
            input_dropout=input_dropout,
            hidden_dropout=hidden_dropout,
            output_dropout=output_dropout,
            weight_dropout=weight_dropout,
            ar_alpha=ar,
            tar_beta=tar,
            lstm={"backend": backend},
            seed=seed,
        )
        train_config = TrainConfig(
            max_epochs=epochs,
            max_steps=max_steps,
            seed=seed,
            progress=progress,
            optim=OptimConfig(lr=lr),
            schedule=ScheduleConfig(name="cosine", min_lr_ratio=0.1),
        )
        text = read_corpus(corpus)
        if val is None:
            train_text, val_text = split_text(text, val_fraction)
        else:
            train_text, val_text = text, read_corpus(val)
        result = train_language_model(
            config, train_text, val_text, train_config, run_dir=out, resume=resume
        )
    except ValueError as err:
        raise _fail(err) from err
    v = result.validation
    console.print(
        f"validation: cross-entropy {v.cross_entropy:.4f} nats/token, perplexity "
        f"{v.perplexity:.2f}, {v.bits_per_char:.4f} bits/char"
    )
    console.print(
        f"{result.parameters:,} parameters, {result.fit.steps} steps, "
        f"{result.fit.seconds:.1f} s; run directory: {out}"
    )


@text_app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "\n",
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 200,
    strategy: Annotated[str, typer.Option(help="sample, greedy or beam.")] = "sample",
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0).")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Keep the k most likely tokens (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus mass in (0, 1].")] = 1.0,
    beam_size: Annotated[int, typer.Option(help="Beams for --strategy beam.")] = 4,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stop: Annotated[
        str | None, typer.Option(help="One token that ends the text (e.g. $'\\n' or '<eos>').")
    ] = None,
    length_penalty: Annotated[
        float, typer.Option(help="Beam: finished scores / length ** this (0 favours short).")
    ] = 1.0,
) -> None:
    """Continue a prompt, printing each token as it is produced."""
    from lstmkit.tasks.generation import GenerationConfig
    from lstmkit.tasks.generation import generate as generate_text
    from lstmkit.tasks.language_model import load_language_model

    try:
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            strategy=strategy,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            beam_size=beam_size,
            seed=seed,
            stop=stop,
            length_penalty=length_penalty,
        )
        loaded = load_language_model(run)
        pieces = generate_text(loaded.model, loaded.tokenizer, prompt, config)
        first = next(pieces, "")  # validates the prompt before anything is printed
    except ValueError as err:
        raise _fail(err) from err
    typer.echo(prompt + first, nl=False)
    for piece in pieces:
        typer.echo(piece, nl=False)  # click.echo flushes: tokens appear as they are made
    typer.echo()


@text_app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    corpus: Annotated[Path, typer.Argument(help="UTF-8 text file or folder to score.")],
    streams: Annotated[int, typer.Option(help="Parallel streams (1 = one long context).")] = 1,
    bptt: Annotated[int, typer.Option(help="Steps per chunk.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cross-entropy, perplexity and bits per character of a model on a text."""
    from lstmkit.data.text import read_corpus
    from lstmkit.tasks.language_model import evaluate_language_model, load_language_model

    try:
        loaded = load_language_model(run)
        result = evaluate_language_model(
            loaded.model, loaded.tokenizer, read_corpus(corpus), streams=streams, bptt=bptt
        )
    except ValueError as err:
        raise _fail(err) from err
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(f"cross-entropy  {result.cross_entropy:.4f} nats/token")
    console.print(f"perplexity     {result.perplexity:.2f}")
    console.print(f"bits per char  {result.bits_per_char:.4f}")
    console.print(f"tokens scored  {result.tokens:,} ({result.characters:,} characters)")
