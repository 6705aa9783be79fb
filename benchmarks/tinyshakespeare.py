"""Tiny Shakespeare, character level, nanoGPT protocol (../shared/BENCHMARKS.md section 3).

The first 90% of the characters train, the last 10% validate; the figure is the validation
cross-entropy in nats per character, against nanoGPT's 1.4697 (10.7M-parameter transformer on
a GPU) and about 1.88 (its small CPU config). The target is <= 1.47 within one hour on 2 CPU
cores. The whole validation text is scored in 8 parallel streams with the LSTM state carried
from chunk to chunk (nanoGPT scores random 256-character windows).

    python benchmarks/tinyshakespeare.py --minutes 60          # the full protocol
    python benchmarks/tinyshakespeare.py --minutes 8 --threads 1  # a short check

Writes benchmarks/results/tinyshakespeare.json and .md (validation loss against wall time and
samples).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
from pathlib import Path

import torch
from lm_common import DEFAULT_DATA, REPO, data_file, header, step_budget, write_results

from lstmkit.data.text import read_corpus, split_text
from lstmkit.data.tokenizers import CharTokenizer
from lstmkit.tasks.generation import GenerationConfig, generate
from lstmkit.tasks.language_model import LanguageModelConfig, train_language_model
from lstmkit.training import EarlyStoppingConfig, OptimConfig, ScheduleConfig, TrainConfig

NANOGPT_GPU = 1.4697  # nanoGPT shakespeare_char, 10.7M parameters, GPU
NANOGPT_CPU = 1.88  # nanoGPT's small CPU configuration (about)
TARGET = 1.47


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=640)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--streams", type=int, default=32, help="parallel streams per batch")
    p.add_argument("--bptt", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.2, help="hidden, output and weight drop")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--backend", default="fused", help="LSTM backend (fused: torch's kernel)")
    p.add_argument("--evals", type=int, default=20, help="validations during training")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the run directory here")
    p.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "tinyshakespeare.json"
    )
    return p.parse_args()


def main() -> int:
    args = parse_args()
    started = header(shlex.join(["python", *sys.argv]))  # date and machine load at the start
    path = data_file(args.data_dir, "tinyshakespeare", "input.txt")
    if path is None:
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    text = read_corpus(path)
    train_text, val_text = split_text(text, 0.1)  # nanoGPT: data[: int(n * 0.9)]
    tokenizer = CharTokenizer.fit(text)  # nanoGPT's vocabulary: every character of the file
    config = LanguageModelConfig(
        embedding_size=args.embedding_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        tie_weights=False,
        hidden_dropout=args.dropout,
        output_dropout=args.dropout,
        weight_dropout=args.dropout,
        bptt=args.bptt,
        variable_bptt=True,
        batch_streams=args.streams,
        eval_streams=8,
        lstm={"backend": args.backend},
        seed=args.seed,
    )
    steps, step_s = step_budget(
        config,
        tokenizer.vocab_size,
        tokenizer.encode(train_text),
        args.minutes,
        len(val_text),
        args.evals,
    )
    per_pass = (len(train_text) // args.streams - 1) / args.bptt
    passes = math.ceil(steps / per_pass) + 1
    print(
        f"budget {args.minutes} min: {steps} steps of {step_s:.2f} s, {steps / per_pass:.1f} passes"
    )
    train = TrainConfig(
        max_epochs=passes,
        max_steps=steps,
        max_seconds=args.minutes * 60.0,  # a hard stop, should the machine slow down
        eval_every=max(1, steps // args.evals),
        clip_norm=1.0,
        seed=args.seed,
        log_every=10,
        optim=OptimConfig(lr=args.lr, weight_decay=0.01),
        schedule=ScheduleConfig(
            name="cosine", warmup_steps=min(100, steps // 10), min_lr_ratio=0.1
        ),
        early_stopping=EarlyStoppingConfig(patience=args.evals),
    )
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or Path(scratch)
        result = train_language_model(
            config, train_text, val_text, train, run_dir=run_dir, tokenizer=tokenizer
        )
    val = result.validation
    samples = [
        "".join(
            generate(
                result.model,
                tokenizer,
                "\n",
                GenerationConfig(max_new_tokens=400, temperature=0.8, top_k=40, seed=seed),
            )
        )
        for seed in (0, 1)
    ]
    table = [
        f"{'':34}{'val nats/char':>14}{'parameters':>12}{'wall time':>12}  hardware",
        f"{'lstmkit LSTM (this run)':34}{val.cross_entropy:>14.4f}"
        f"{result.parameters / 1e6:>11.2f}M{result.fit.seconds:>11.0f}s  "
        f"{torch.get_num_threads()} CPU thread(s)",
        f"{'nanoGPT transformer (reference)':34}{NANOGPT_GPU:>14.4f}{'10.7M':>12}{'':>12}  GPU",
        f"{'nanoGPT small CPU config':34}{NANOGPT_CPU:>14.2f}{'':>12}{'':>12}  CPU",
        f"{'target':34}{'<= ' + str(TARGET):>14}{'':>12}{'60 min':>12}  2 CPU cores",
    ]
    print("\n".join(table))
    results = {
        **started,
        "benchmark": "tinyshakespeare-char",
        "protocol": "nanoGPT: first 90% train, last 10% validation; nats per character",
        "seed": args.seed,
        "minutes": args.minutes,
        "val_loss_nats_per_char": val.cross_entropy,
        "val_bits_per_char": val.bits_per_char,
        "reference": {"nanogpt_gpu": NANOGPT_GPU, "nanogpt_cpu": NANOGPT_CPU, "target": TARGET},
        "target_met": val.cross_entropy <= TARGET and args.minutes <= 60,
        "parameters": result.parameters,
        "train_seconds": result.fit.seconds,
        "steps": result.fit.steps,
        "seconds_per_step_calibrated": step_s,
        "reason": result.fit.reason,
        "config": config.to_dict(),
        "train": train.to_dict(),
        "history": result.history,
        "samples": samples,
    }
    write_results(args.out, results, "Tiny Shakespeare, character level (nanoGPT protocol)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
