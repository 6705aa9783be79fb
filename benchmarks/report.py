"""What benchmarks share: the commit they ran at, median and interleaved timings, and writing a
result."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch


def short_commit(where: str | None = None) -> str:
    """The commit of the checkout holding ``where`` (default: the working directory's),
    abbreviated, and whether tracked files there differ from it; "unknown" outside a git
    checkout."""
    git = ["git"] if where is None else ["git", "-C", where]
    scope = [] if where is None else ["--", "."]

    def run(*args: str) -> str:
        done = subprocess.run([*git, *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = run("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = run("status", "--porcelain", "--untracked-files=no", *scope)
    return commit + (" with uncommitted changes" if dirty else "")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` in a row, after ``warmup`` untimed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict, reps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Run each function ``reps`` times, alternating between them; seconds per run."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
    return times


def lstm_call_ms(
    lstm: torch.nn.Module, x: torch.Tensor, train: bool, repeats: int, warmup: int = 2
) -> float:
    """Median ms of one call of ``lstm`` on ``x``: the forward pass without gradients, or
    (``train``) forward and backward from ``out.sum()``."""

    def run() -> None:
        if not train:
            with torch.no_grad():
                lstm(x)
            return
        out, _ = lstm(x)
        out.sum().backward()

    return median_seconds(run, repeats, warmup) * 1e3


def run_meta(command: str, threads: int) -> dict:
    """What a result file records about its run: command, commit, date, machine, threads."""
    return {
        "command": command,
        "commit": short_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": threads,
        "torch": torch.__version__,
    }


def write_report(out: Path, report: dict, markdown: Callable[[dict], str]) -> None:
    """``report`` as JSON at ``out`` and as Markdown beside it; prints the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
