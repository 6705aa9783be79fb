"""Shared by the language-model benchmarks (tinyshakespeare.py, wikitext2.py): a wall-time
budget turned into a step budget, the machine description, and the JSON + Markdown results.

The Trainer stops on steps, not on time, so a budget of M minutes is converted up front: a few
timed training steps of the real model give seconds per step, and the step budget is what fits
in M minutes after the validations (each costs about a third of a training step per token).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lstmkit.data.text import batchify
from lstmkit.tasks.language_model import LanguageModel, LanguageModelConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def data_file(data_dir: Path, *parts: str) -> Path | None:
    """The data file, or None after saying why the benchmark is skipped."""
    path = data_dir.joinpath(*parts)
    if not path.exists():
        print(f"SKIPPED: {path} not found; pass --data-dir pointing at shared/data")
        return None
    return path


def seconds_per_step(
    config: LanguageModelConfig, vocab_size: int, ids: list[int], repeats: int = 3
) -> float:
    """Wall time of one training step (forward, backward, AdamW) of this model on the first
    chunk of the real stream ``ids`` (an adaptive softmax costs more on rare words)."""
    torch.manual_seed(0)
    model = LanguageModel(config, vocab_size).train()
    optimizer = torch.optim.AdamW(model.parameters())
    tokens = batchify(ids, config.batch_streams)[:, : config.bptt + 1]  # (B, bptt + 1)
    timings = []
    for _ in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        out = model(tokens[:, :-1], None, tokens[:, 1:])
        optimizer.zero_grad()
        out.nll.mean().backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    return sorted(timings[1:])[len(timings[1:]) // 2]


def step_budget(
    config: LanguageModelConfig,
    vocab_size: int,
    ids: list[int],
    minutes: float,
    val_tokens: int,
    validations: int,
    reserve_s: float = 30.0,
) -> tuple[int, float]:
    """(optimiser steps, seconds per step) that fit ``minutes`` with ``validations`` evaluations
    of ``val_tokens`` tokens and ``reserve_s`` for setup and the final evaluation."""
    step_s = seconds_per_step(config, vocab_size, ids)
    token_s = step_s / (config.batch_streams * config.bptt)
    eval_s = val_tokens * token_s / 3.0  # forward only
    usable = minutes * 60.0 - reserve_s - (validations + 1) * eval_s
    return max(10, int(usable / step_s)), step_s


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or None


def header(command: str) -> dict[str, Any]:
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
    }


def write_results(out: Path, results: dict[str, Any], title: str, table: list[str]) -> None:
    """``out`` (.json) and the same name with .md: the table, then the run's details."""
    out.parent.mkdir(parents=True, exist_ok=True)
    m = results["machine"]
    m["load_average_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out.write_text(json.dumps(results, indent=2) + "\n")
    curve = [
        f"| {row['step']} | {row.get('seconds', float('nan')):.0f} | {row['val_loss']:.4f} |"
        for row in results.get("history", [])
    ]
    lines = [
        f"# {title}",
        "",
        f"Command: `{results['command']}`  ",
        f"Started: {results['date']}; commit {results['git_commit']}; seed {results['seed']}  ",
        f"Machine: {m['cpu']}, {m['torch_threads']} torch thread(s) of {m['cpus_visible']} "
        f"visible CPUs (load average {m['load_average_at_start']:.1f} at the start, "
        f"{m['load_average_at_end']:.1f} at the end: the machine is shared); "
        f"torch {m['torch']}, Python {m['python']}  ",
        f"Parameters: {results['parameters']:,}; training wall time "
        f"{results['train_seconds']:.0f} s ({results['steps']} steps, budget "
        f"{results['minutes']} min)",
        "",
        "```",
        *table,
        "```",
        "",
        "Validation loss (nats/token) against wall time:",
        "",
        "| step | seconds | val loss |",
        "|---|---|---|",
        *curve,
    ]
    if results.get("samples"):
        lines += ["", "Samples (temperature 0.8, top-k 40, seeded):", ""]
        for sample in results["samples"]:
            lines += ["```", sample, "```"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
