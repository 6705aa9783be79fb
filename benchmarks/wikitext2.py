"""WikiText-2, word level (../shared/BENCHMARKS.md section 3): validation and test perplexity
with the parameter count and the wall time, against AWD-LSTM's 68.6 / 65.8 (24M-33M
parameters, ~750 GPU epochs) and the awd-lstm-lm reproduction's 68.7 / 65.6.

The standard files split the data; words are the files' whitespace tokens plus one ``<eos>``
per line (vocabulary 33,278, as pytorch/examples). The model is a 2-layer LSTM with an adaptive
softmax (the full 33k-way softmax dominates the cost on a CPU) and AWD-LSTM's regularisers.
Validation and test text are scored in 10 parallel streams with the state carried.

    python benchmarks/wikitext2.py --minutes 60                # the documented full budget
    python benchmarks/wikitext2.py --minutes 8 --threads 1     # a short check

Writes benchmarks/results/wikitext2.json and .md.
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

from lstmkit.data.text import read_corpus
from lstmkit.data.tokenizers import WordTokenizer
from lstmkit.tasks.language_model import (
    LanguageModelConfig,
    evaluate_language_model,
    train_language_model,
)
from lstmkit.training import EarlyStoppingConfig, OptimConfig, ScheduleConfig, TrainConfig

REFERENCES = (  # (name, validation ppl, test ppl, parameters, budget)
    ("AWD-LSTM (Merity et al. 2017)", 68.6, 65.8, "24M-33M", "~750 GPU epochs"),
    ("awd-lstm-lm reproduction", 68.7, 65.6, "24M-33M", "~750 GPU epochs"),
)
EVAL_STREAMS = 10
SPLITS = ("train", "valid", "test")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--streams", type=int, default=32, help="parallel streams per batch")
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--backend", default="fused", help="LSTM backend (fused: torch's kernel)")
    p.add_argument("--evals", type=int, default=8, help="validations during training")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the run directory here")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "wikitext2.json")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    started = header(shlex.join(["python", *sys.argv]))  # date and machine load at the start
    paths = [data_file(args.data_dir, "wikitext2", f"wiki.{s}.tokens") for s in SPLITS]
    if any(p is None for p in paths):
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    train_text, val_text, test_text = (read_corpus(p) for p in paths)
    tokenizer = WordTokenizer.fit(train_text)  # 33,278 words incl. <eos> and <unk>
    config = LanguageModelConfig(
        tokenizer="word",
        embedding_size=args.embedding_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        tie_weights=False,
        adaptive_softmax=True,
        cutoffs=(2000, 10000),
        # AWD-LSTM's regularisers at rates for a budget of a few epochs (its WikiText-2 rates,
        # in this order 0.1 / 0.65 / 0.2 / 0.4 / 0.5, are for ~750 epochs)
        embedding_dropout=0.05,
        input_dropout=0.2,
        hidden_dropout=0.1,
        output_dropout=0.2,
        weight_dropout=0.1,
        ar_alpha=2.0,
        tar_beta=1.0,
        bptt=args.bptt,
        variable_bptt=True,
        batch_streams=args.streams,
        eval_streams=EVAL_STREAMS,
        lstm={"backend": args.backend},
        seed=args.seed,
    )
    train_ids = tokenizer.encode(train_text)
    val_tokens = len(tokenizer.encode(val_text))
    steps, step_s = step_budget(
        config,
        tokenizer.vocab_size,
        train_ids,
        args.minutes,
        val_tokens,
        args.evals,
        reserve_s=60.0,
    )
    train_tokens = len(train_ids)
    per_pass = (train_tokens // args.streams - 1) / args.bptt
    passes = math.ceil(steps / per_pass) + 1
    epochs = steps / per_pass
    print(f"budget {args.minutes} min: {steps} steps of {step_s:.2f} s, {epochs:.2f} epochs")
    train = TrainConfig(
        max_epochs=passes,
        max_steps=steps,
        max_seconds=args.minutes * 60.0,  # a hard stop, should the machine slow down
        eval_every=max(1, steps // args.evals),
        clip_norm=0.25,
        seed=args.seed,
        log_every=10,
        optim=OptimConfig(lr=args.lr, weight_decay=1.2e-6),
        schedule=ScheduleConfig(
            name="cosine", warmup_steps=min(100, steps // 10), min_lr_ratio=0.1
        ),
        early_stopping=EarlyStoppingConfig(patience=args.evals),
    )
    with tempfile.TemporaryDirectory() as scratch:
        result = train_language_model(
            config,
            train_text,
            val_text,
            train,
            run_dir=args.run_dir or Path(scratch),
            tokenizer=tokenizer,
        )
    val = result.validation
    test = evaluate_language_model(
        result.model, tokenizer, test_text, streams=EVAL_STREAMS, bptt=args.bptt
    )
    table = [
        f"{'':32}{'val ppl':>9}{'test ppl':>10}{'parameters':>12}  budget",
        f"{'lstmkit LSTM (this run)':32}{val.perplexity:>9.1f}{test.perplexity:>10.1f}"
        f"{result.parameters / 1e6:>11.1f}M  {result.fit.seconds / 60:.1f} min, "
        f"{torch.get_num_threads()} CPU thread(s), {result.fit.steps / per_pass:.2f} epochs",
        *(f"{n:32}{v:>9.1f}{t:>10.1f}{p:>12}  {b}" for n, v, t, p, b in REFERENCES),
    ]
    print("\n".join(table))
    results = {
        **started,
        "benchmark": "wikitext2-word",
        "protocol": "standard train/valid/test files; one <eos> per line; perplexity",
        "seed": args.seed,
        "minutes": args.minutes,
        "val_perplexity": val.perplexity,
        "test_perplexity": test.perplexity,
        "val_cross_entropy": val.cross_entropy,
        "test_cross_entropy": test.cross_entropy,
        "epochs": result.fit.steps / per_pass,
        "reference": [
            {"name": n, "val_ppl": v, "test_ppl": t, "parameters": p, "budget": b}
            for n, v, t, p, b in REFERENCES
        ],
        "parameters": result.parameters,
        "vocab_size": tokenizer.vocab_size,
        "train_seconds": result.fit.seconds,
        "steps": result.fit.steps,
        "seconds_per_step_calibrated": step_s,
        "reason": result.fit.reason,
        "config": config.to_dict(),
        "train": train.to_dict(),
        "history": result.history,
    }
    write_results(args.out, results, "WikiText-2, word level", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
