"""What benchmarks share: the commit they ran at, a median timing, and writing a result."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def short_commit() -> str:
    """The checkout's commit, abbreviated; "unknown" outside a git checkout."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


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


def write_report(out: Path, report: dict, markdown: Callable[[dict], str]) -> None:
    """``report`` as JSON at ``out`` and as Markdown beside it; prints the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
