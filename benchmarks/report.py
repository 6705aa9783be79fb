"""What the GPU and precision benchmarks share: the commit they ran at, and writing a result."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path


def short_commit() -> str:
    """The checkout's commit, abbreviated; "unknown" outside a git checkout."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


def write_report(out: Path, report: dict, markdown: Callable[[dict], str]) -> None:
    """``report`` as JSON at ``out`` and as Markdown beside it; prints the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
