"""Two versions of lstmkit against each other at one shape, in alternating processes.

    git worktree add /tmp/lstmkit-old <commit>
    python benchmarks/ab.py --old /tmp/lstmkit-old/src --rounds 8 \
        --out benchmarks/results/kernels_repeats/ab_<name>.json

On this machine the speed of a run swings by up to 1.6x from minute to minute, more than the
changes to be measured, so one run of ``kernels.py`` per version does not tell them apart. Here
each round starts one process per version, in the order old, new, new, old, ...; each process
times lstmkit's layer (``backend="kernel"`` unless ``--backend``) and torch.nn.LSTM with the
same weights, called alternately ``--reps`` times each: a training call (forward, ``out.sum()``,
backward) and a forward pass without gradients. The summary gives, per version, the median and
range over the rounds of each process's median time and of its speed-up over torch (torch time /
ours), which cancels some of the machine's swings. ``--new`` defaults to this checkout's
``src``; a version is whatever ``import lstmkit`` finds first on its ``PYTHONPATH``. A version
whose C++ kernel is not built yet compiles it in its first process, before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from report import interleaved, short_commit, write_report

HERE = Path(__file__).resolve().parent


def child(
    shape: list[int], backend: str, reps: int, threads: int, bidirectional: bool, cell: str
) -> dict:
    """Median ms of ours and torch's training call and forward pass at ``shape`` (torch's the
    standard cell's, a yardstick, when ``cell`` is a variant)."""
    from lstmkit.nn import LSTM

    torch.set_num_threads(threads)
    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(inputs, hidden, batch_first=True, bidirectional=bidirectional)
    if cell == "lstm":
        ours = LSTM.from_torch(theirs, backend=backend)
    else:
        options = dict(bidirectional=bidirectional, batch_first=True, cell=cell)
        ours = LSTM(inputs, hidden, backend=backend, **options)
    x = torch.randn(batch, steps, inputs).requires_grad_()

    def train(model):
        def run():
            out, _ = model(x)
            out.sum().backward()

        return run

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)

        return run

    result = {"lstmkit": str(Path(sys.modules["lstmkit"].__file__).parent)}
    for name, make in (("train", train), ("forward", forward)):
        times = interleaved({"ours": make(ours), "torch": make(theirs)}, reps, warmup=20)
        for who, values in times.items():
            result[f"{name}_{who}_ms"] = statistics.median(values) * 1e3
    return result


def run_version(src: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
    cmd += ["--shape", *map(str, args.shape), "--backend", args.backend]
    cmd += ["--reps", str(args.reps), "--threads", str(args.threads)]
    cmd += ["--bidirectional"] if args.bidirectional else []
    cmd += ["--cell", args.cell]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(HERE)])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the run of {src} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def commit_of(src: str) -> str:
    """The commit of the git checkout holding ``src``, abbreviated, or "unknown"."""
    return short_commit(src)


def summarize(runs: list[dict]) -> dict:
    out = {}
    for name in ("train", "forward"):
        ours = [r[f"{name}_ours_ms"] for r in runs]
        ratio = [r[f"{name}_torch_ms"] / r[f"{name}_ours_ms"] for r in runs]
        out[name] = {
            "ours_ms_median": statistics.median(ours),
            "ours_ms_range": [min(ours), max(ours)],
            "speedup_median": statistics.median(ratio),
            "speedup_range": [min(ratio), max(ratio)],
        }
    return out


def markdown(report: dict) -> str:
    b, t, i, h = report["shape"]
    layer = ", bidirectional" if report.get("bidirectional") else ""
    if report.get("cell", "lstm") != "lstm":
        layer += f", the {report['cell']} cell (torch: the standard cell, as a yardstick)"
    lines = [
        f"# A/B at (B, T, I, H) = ({b}, {t}, {i}, {h}){layer}: two versions of lstmkit, "
        "alternating",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; commit of this checkout: {report['commit']}; "
        f"{report['threads']} torch threads; torch {report['torch']}",
        f"- old: commit {report['old_commit']}; new: commit {report['new_commit']}; "
        f"{report['rounds']} rounds "
        f"(old, new, new, old, ...), {report['reps']} calls of each side per process",
        "- per process: median ms of ours, and speed-up = torch's median / ours; below, the "
        "median and range over the processes",
        "",
        "| version | training call, ours ms | speed-up | forward, ours ms | speed-up |",
        "|---|---|---|---|---|",
    ]
    for version in ("old", "new"):
        s = report["summary"][version]
        cells = []
        for name in ("train", "forward"):
            v = s[name]
            lo, hi = v["ours_ms_range"]
            rlo, rhi = v["speedup_range"]
            cells.append(f"{v['ours_ms_median']:.3f} ({lo:.3f}-{hi:.3f})")
            cells.append(f"{v['speedup_median']:.2f}x ({rlo:.2f}-{rhi:.2f}x)")
        lines.append(f"| {version} | " + " | ".join(cells) + " |")
    lines += ["", "Each process, in the order run:", ""]
    lines += ["| # | version | train ours / torch ms | forward ours / torch ms |"]
    lines += ["|---|---|---|---|"]
    for n, r in enumerate(report["runs"], 1):
        lines.append(
            f"| {n} | {r['version']} | {r['train_ours_ms']:.3f} / {r['train_torch_ms']:.3f} | "
            f"{r['forward_ours_ms']:.3f} / {r['forward_torch_ms']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the other version's src directory (e.g. a git worktree)")
    parser.add_argument("--new", default=str(HERE.parent / "src"), help="default: this checkout")
    parser.add_argument("--shape", nargs=4, type=int, default=[1, 100, 32, 128])
    parser.add_argument("--backend", default="kernel")
    parser.add_argument("--rounds", type=int, default=8, help="processes per version")
    parser.add_argument("--reps", type=int, default=300, help="timed calls per side and process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bidirectional", action="store_true", help="a bidirectional layer")
    parser.add_argument("--cell", default="lstm", help="lstmkit's cell (torch runs lstm)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ab.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(
            json.dumps(
                child(
                    args.shape,
                    args.backend,
                    args.reps,
                    args.threads,
                    args.bidirectional,
                    args.cell,
                )
            )
        )
        return
    if not args.old:
        parser.error("--old is required: the src directory of the version to compare against")
    for src in (args.old, args.new):
        if not (Path(src) / "lstmkit" / "__init__.py").is_file():
            parser.error(f"{src} is not a src directory holding the lstmkit package")
    order = ["old", "new", "new", "old"]
    runs = []
    for n in range(2 * args.rounds):
        version = order[n % 4]
        result = run_version(getattr(args, version), args)
        runs.append({"version": version, **result})
        time.sleep(1)
    report = {
        "command": "python benchmarks/ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now().isoformat(timespec="seconds"),
        "commit": short_commit(),
        "threads": args.threads,
        "torch": torch.__version__,
        "shape": args.shape,
        "bidirectional": args.bidirectional,
        "cell": args.cell,
        "old": args.old,
        "new": args.new,
        "old_commit": commit_of(args.old),
        "new_commit": commit_of(args.new),
        "rounds": args.rounds,
        "reps": args.reps,
        "runs": runs,
        "summary": {v: summarize([r for r in runs if r["version"] == v]) for v in ("old", "new")},
    }
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
