"""ETT over several seeds at once: ``ett.py`` processes side by side, then a summary.

    python benchmarks/ett_seeds.py --data-dir ../shared/data --device cuda --seeds 2024,1,2 \
        --groups 4 --name ett_hold4 -- --hold-epochs 4

Cuts the 16 cells into ``--groups`` groups of about equal cost per seed and starts one
``benchmarks/ett.py`` process per (seed, group), all at once (``--jobs`` caps how many run
together): a small model leaves one GPU mostly idle, so twelve processes on one H200 take about
as long as one. Arguments after ``--`` go to every ``ett.py``. Each seed's runs are merged into
``<name>_s<seed>.json``/``.md`` (ett.py's format), and the seeds into
``<name>_summary.json``/``.md``: per cell the test MSE of each seed and their mean beside
SegRNN's, and the 16-cell averages.
``--summary-only`` rebuilds the summary from the per-seed files already in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ett import HORIZONS, MODELS, REFERENCE_MSE, save

SCRIPT = Path(__file__).resolve().parent / "ett.py"


def cost(name: str, horizon: int) -> float:
    """Rough relative training time of a cell: the 15-minute files have 4x the rows."""
    return (4.0 if name.startswith("ETTm") else 1.0) * (1.0 + horizon / 400)


def groups(cells: list[tuple[str, int]], n: int) -> list[list[tuple[str, int]]]:
    """Longest-first greedy split into ``n`` groups of about equal total cost."""
    if n < 1:
        raise ValueError(f"--groups must be at least 1, got {n}")
    out: list[list[tuple[str, int]]] = [[] for _ in range(min(n, len(cells)))]
    for cell in sorted(cells, key=lambda c: -cost(*c)):
        min(out, key=lambda g: sum(cost(*c) for c in g)).append(cell)
    return out


OWN_FLAGS = ("--data-dir", "--device", "--threads", "--workers", "--seed", "--cells", "--out")


def check_extra(extra: list[str]) -> None:
    """Arguments for ett.py must not set what this script sets for each process."""
    clash = sorted({a.split("=")[0] for a in extra} & set(OWN_FLAGS))
    if clash:
        raise SystemExit(
            f"ett_seeds.py sets {', '.join(clash)} for each ett.py process itself; "
            f"remove them after '--' (got: {' '.join(extra)})"
        )


def run_all(args: argparse.Namespace, extra: list[str], tmp: Path) -> int:
    """Start every (seed, group) process, at most ``--jobs`` at a time; wait for all.

    Returns how many failed (each failed one's log is printed whole)."""
    cells = [(d, int(h)) for d in args.datasets.split(",") for h in args.horizons.split(",")]
    todo = []
    for seed in args.seeds.split(","):
        for i, group in enumerate(groups(cells, args.groups)):
            spec = ",".join(f"{d}:{h}" for d, h in group)
            options = {
                "--data-dir": args.data_dir,
                "--device": args.device,
                "--threads": args.threads,
                "--workers": 0,  # a worker process per run would oversubscribe the cores
                "--seed": seed,
                "--cells": spec,
                "--out": tmp / f"s{seed}_g{i}.json",
            }
            flags = [str(v) for pair in options.items() for v in pair]
            command = [sys.executable, str(SCRIPT), *flags, *extra]
            todo.append((command, tmp / f"s{seed}_g{i}.log"))
    started: list[tuple[subprocess.Popen, Path]] = []
    for command, log in todo:
        while sum(p.poll() is None for p, _ in started) >= args.jobs:
            time.sleep(1)
        print(" ".join(command[1:]), flush=True)
        with log.open("w") as sink:  # the child keeps its own copy of the descriptor
            started.append((subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT), log))
    failed = 0
    for process, log in started:
        code = process.wait()
        lines = log.read_text().splitlines(keepends=True)
        if code != 0:
            failed += 1
            print(f"== {log.name} FAILED (exit {process.returncode}):\n" + "".join(lines))
        else:
            print(f"== {log.name}\n" + "".join(line for line in lines if " H=" in line), end="")
    return failed


def merge(tmp: Path, out_dir: Path, name: str, seeds: list[str]) -> None:
    """One ett.py result file per seed from that seed's group files."""
    for seed in seeds:
        previous, target = None, out_dir / f"{name}_s{seed}.json"
        for part in sorted(tmp.glob(f"s{seed}_g*.json")):
            data = json.loads(part.read_text())
            runs = [c for row in data["rows"] for c in row["candidates"]]
            save(runs, data["meta"], previous, target)
            previous = json.loads(target.read_text())


def summary(out_dir: Path, name: str, seeds: list[str], command: str) -> str:
    """Per-cell test MSE of every seed, their mean, SegRNN's, and the 16-cell averages."""
    per_seed = {}
    for seed in seeds:
        path = out_dir / f"{name}_s{seed}.json"
        if not path.exists():
            raise SystemExit(f"no result file for seed {seed}: {path} (run without --summary-only)")
        rows = json.loads(path.read_text())["rows"]
        per_seed[seed] = {(r["dataset"], r["horizon"]): r["mse"] for r in rows}
    cells = [(d, h) for d in REFERENCE_MSE for h in HORIZONS]
    rows = [
        {
            "dataset": d,
            "horizon": h,
            "mse": {s: mse[(d, h)] for s, mse in per_seed.items()},
            "mean": statistics.fmean(mse[(d, h)] for mse in per_seed.values()),
            "segrnn": REFERENCE_MSE[d]["SegRNN"][HORIZONS.index(h)],
        }
        for d, h in cells
        if per_seed and all((d, h) in mse for mse in per_seed.values())
    ]
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    links = ", ".join(f"[{name}_s{s}.md]({name}_s{s}.md)" for s in per_seed)
    lines = [
        f"# ETT over {len(per_seed)} seed(s): test MSE per seed",
        "",
        f"Command: `{command}`  ",
        f"Date {date}; the per-seed files give each run's command, machine and commit: {links}",
        "",
        "| dataset | horizon | " + " | ".join(f"seed {s}" for s in per_seed) + " | mean | "
        "spread | SegRNN |",
        "|---|---|" + "---|" * (len(per_seed) + 3),
    ]
    for r in rows:
        values = list(r["mse"].values())
        lines.append(
            f"| {r['dataset']} | {r['horizon']} | "
            + " | ".join(f"{v:.4f}" for v in values)
            + f" | {r['mean']:.4f} | {max(values) - min(values):.4f} | {r['segrnn']:.3f} |"
        )
    result: dict = {"command": command, "date": date, "seeds": list(per_seed), "rows": rows}
    if len(rows) == len(cells):
        averages = {s: statistics.fmean(r["mse"][s] for r in rows) for s in per_seed}
        mean = statistics.fmean(r["mean"] for r in rows)
        refs = {
            m: statistics.fmean(sum((d[m] for d in REFERENCE_MSE.values()), ())) for m in MODELS
        }
        ties = sum(math.isclose(round(r["mean"], 3), r["segrnn"]) for r in rows)
        wins = sum(round(r["mean"], 3) < r["segrnn"] for r in rows)
        lines.append(
            "| **average** | | "
            + " | ".join(f"{v:.4f}" for v in averages.values())
            + f" | {mean:.4f} | | {refs['SegRNN']:.4f} |"
        )
        per = ", ".join(f"seed {s} {v:.4f}" for s, v in averages.items())
        others = ", ".join(f"{m} {v:.4f}" for m, v in refs.items())
        lines += [
            "",
            f"Average test MSE over the 16 cells: {per}; mean of the seeds {mean:.4f}; {others}. "
            f"Against SegRNN, by the seed mean rounded to three decimals: {wins} wins, {ties} "
            f"ties, {len(rows) - wins - ties} losses.",
        ]
        result |= {"average": averages, "mean": mean, "references": refs}
    else:
        lines += ["", f"Only {len(rows)} of the 16 cells have every seed: no averages."]
    (out_dir / f"{name}_summary.json").write_text(json.dumps(result, indent=2))
    text = "\n".join(lines) + "\n"
    (out_dir / f"{name}_summary.md").write_text(text)
    return text


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--seeds", default="2024,1,2")
    parser.add_argument("--datasets", default="ETTh1,ETTh2,ETTm1,ETTm2")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument("--groups", type=int, default=4, help="processes per seed")
    parser.add_argument("--jobs", type=int, default=0, help="processes at once (0: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="ett_seeds", help="result file prefix")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    seeds = args.seeds.split(",")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    if not args.summary_only:
        if not (args.data_dir / "ett").is_dir():
            print(f"skipped: no ETT data at {args.data_dir / 'ett'} (pass --data-dir)")
            return
        check_extra(extra)
        args.jobs = args.jobs or len(seeds) * args.groups
        args.out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            failed = run_all(args, extra, Path(tmp))
            if failed:  # never replace complete result files with partial ones
                raise SystemExit(
                    f"{failed} ett.py process(es) failed (logs above); nothing was written to "
                    f"{args.out_dir}"
                )
            merge(Path(tmp), args.out_dir, args.name, seeds)
    print(summary(args.out_dir, args.name, seeds, command))


if __name__ == "__main__":
    main()
