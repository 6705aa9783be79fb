"""What each run directory records so a result can be traced: config, versions, git commit."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lstmkit
from lstmkit.training.checkpoint import atomic_write_text


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the git checkout around ``start`` (default: this package), if any."""
    where = start or Path(lstmkit.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    return {
        "lstmkit": lstmkit.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_run_metadata(run_dir: Path, config: dict[str, Any]) -> None:
    """``config.json`` (the resolved configuration) and ``environment.json`` in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True))
    atomic_write_text(run_dir / "environment.json", json.dumps(environment(), indent=2))
