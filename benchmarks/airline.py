"""The demo as a benchmark: airline passengers, forecast 1960 from 1949-1959.

    python benchmarks/airline.py --out benchmarks/results/airline.json

Runs exactly what `make demo` runs (lstmkit.tasks.forecasting.demo) and records the model
and baseline metrics with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from lstmkit.tasks.forecasting.demo import run_demo
from lstmkit.tasks.forecasting.report import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/airline.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        fit, report = run_demo(run_dir)
    metrics = report.metrics
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "steps": fit.steps,
        "seconds": round(fit.seconds, 1),
        "stopped": fit.reason,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "metrics": metrics}, indent=2))
    lines = [
        "# Airline passengers: forecast of 1960 (the demo)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; torch {meta['torch']}; "
        f"{args.threads} threads; {fit.steps} steps in {fit.seconds:.1f} s",
        "",
        "```",
        *format_table(metrics),
        "```",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
