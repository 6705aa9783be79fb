"""How well validation MSE ranks the ETT runs on file by their test MSE, per dataset and horizon.

    python benchmarks/ett_agreement.py --out benchmarks/results/ett_agreement.json

Reads every ``ett.py`` result file given (by default ``benchmarks/results/ett*.json``, less the
choice and summary files, which only copy rows), takes each run it lists (every learning rate
tried, every cell variant, seed and training option), drops runs that appear in two files, and
reports per (dataset, horizon): the number of runs, the Spearman and Pearson correlations of
validation and test MSE across them, and the test MSE of the run with the lowest validation MSE
beside the lowest test MSE of all. A choice made on validation can only be as good as that
agreement: where it is near zero, the configurations on file differ on test by more than
validation can tell apart. No training; a few seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import short_commit, write_report

SKIP = ("choice", "summary", "agreement")


def default_files(results: Path) -> list[Path]:
    return sorted(p for p in results.glob("ett*.json") if not any(s in p.name for s in SKIP))


def runs_of(paths: list[Path]) -> list[dict]:
    """Every run with a validation and a test MSE, each once (by dataset, horizon, both MSEs)."""
    runs, seen = [], set()
    for path in paths:
        for row in json.loads(path.read_text()).get("rows", []):
            for run in row.get("candidates", [row]):
                val, test = run.get("val_loss"), run.get("mse")
                if not isinstance(val, float) or not isinstance(test, float) or math.isnan(val):
                    continue
                key = (run["dataset"], run["horizon"], val, test)
                if key not in seen:
                    seen.add(key)
                    runs.append(run | {"file": path.name})
    return runs


def agreement(runs: list[dict], min_runs: int) -> list[dict]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["horizon"]), []).append(run)
    table = []
    for (dataset, horizon), group in sorted(groups.items()):
        if len(group) < min_runs:
            continue
        val = pd.Series([r["val_loss"] for r in group])
        test = pd.Series([r["mse"] for r in group])
        chosen = min(group, key=lambda r: r["val_loss"])
        table.append(
            {
                "dataset": dataset,
                "horizon": horizon,
                "runs": len(group),
                "spearman": val.rank().corr(test.rank()),  # (pandas' own needs scipy)
                "pearson": val.corr(test),
                "test_min": test.min(),
                "test_max": test.max(),
                "test_of_lowest_val": chosen["mse"],
                "lowest_val_file": chosen["file"],
            }
        )
    return table


def markdown(report: dict) -> str:
    lines = [
        "# ETT: does validation MSE rank the runs on file as test MSE does?",
        "",
        f"`{report['command']}`",
        "",
        f"Date {report['date']}; commit {report['commit']}; {report['files']} result files, "
        f"{report['runs']} distinct runs (every learning rate, cell variant, seed and training "
        f"option on file); rows with at least {report['min_runs']} runs. Spearman: rank "
        "correlation of validation and test MSE across the runs of a row (1: validation orders "
        "them exactly as test does; 0: no relation).",
        "",
        "| dataset | horizon | runs | Spearman | Pearson | test MSE, best to worst run | "
        "test MSE of the lowest-validation run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["table"]:
        lines.append(
            f"| {r['dataset']} | {r['horizon']} | {r['runs']} | {r['spearman']:.2f} | "
            f"{r['pearson']:.2f} | {r['test_min']:.4f}-{r['test_max']:.4f} | "
            f"{r['test_of_lowest_val']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="ett.py result files (JSON)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ett_agreement.json"))
    args = parser.parse_args(argv)
    paths = args.files or default_files(args.results)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise SystemExit(f"no ett.py result files to read (missing: {missing or args.results})")
    runs = runs_of(paths)
    command = "python benchmarks/ett_agreement.py" + (
        " " + " ".join(str(p) for p in args.files) if args.files else ""
    )
    command += f" --min-runs {args.min_runs} --out {args.out}"
    report = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": short_commit(),
        "files": len(paths),
        "runs": len(runs),
        "min_runs": args.min_runs,
        "table": agreement(runs, args.min_runs),
    }
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
