"""A CPU training step with and without ``lstmkit.training.keep_freed_memory()``.

    .venv/bin/python benchmarks/freed_memory.py --out benchmarks/results/freed_memory.json

One step of an LSTM (B, T, I, H) = (64, 100, 32, 128) with a linear head, the MSE loss and
Adam (``zero_grad(set_to_none=True)``, as PyTorch's default): lstmkit's layer (kernel backend)
or ``torch.nn.LSTM``. Each (layer, setting) runs in a fresh process, since the setting holds for
the whole process, in rounds that alternate the order; each process reports the median time of
``--steps`` steps after ten warm-up steps and its minor page faults per step. See "Torch's page
faults" in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from report import run_meta, write_report

SHAPE = (64, 100, 32, 128)
CASES = [(layer, keep) for layer in ("lstmkit", "torch") for keep in (False, True)]


def child(layer: str, keep: bool, steps: int, threads: int) -> dict:
    """In a fresh process: the median ms of a training step and page faults per step."""
    if keep:
        from lstmkit.training.memory import keep_freed_memory

        reason = keep_freed_memory()
        if reason is not None:
            sys.exit(reason)
    from lstmkit.nn import LSTM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    b, t, i, h = SHAPE
    if layer == "lstmkit":
        lstm = LSTM(i, h, batch_first=True, backend="kernel")
    else:
        lstm = torch.nn.LSTM(i, h, batch_first=True)
    head = torch.nn.Linear(h, 1)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], 1e-3)
    x, y = torch.randn(b, t, i), torch.randn(b, t, 1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out, _ = lstm(x)
        torch.nn.functional.mse_loss(head(out), y).backward()
        opt.step()

    for _ in range(10):
        step()
    times = []
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / steps
    return {"median_ms": statistics.median(times) * 1e3, "faults_per_step": faults}


def markdown(report: dict) -> str:
    lines = [
        "# A CPU training step with and without keep_freed_memory()",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; commit {report['commit']}; {report['threads']} torch threads; "
        f"torch {report['torch']}",
        f"- one step at (B, T, I, H) = {SHAPE}: the LSTM, a linear head, MSE, Adam; medians over "
        f"{report['steps']} steps per process, {report['rounds']} processes per case",
        "",
        "| layer | malloc | median ms per step, per process | page faults per step | "
        "median over the processes |",
        "|---|---|---|---|---|",
    ]
    for case in report["cases"]:
        runs = case["runs"]
        ms = ", ".join(f"{r['median_ms']:.2f}" for r in runs)
        faults = ", ".join(f"{r['faults_per_step']:.0f}" for r in runs)
        median = statistics.median(r["median_ms"] for r in runs)
        setting = "keep_freed_memory()" if case["keep"] else "glibc's defaults"
        lines.append(f"| {case['layer']} | {setting} | {ms} | {faults} | {median:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes per case")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/freed_memory.json"))
    parser.add_argument("--child", nargs=2, metavar=("LAYER", "KEEP"))
    args = parser.parse_args(argv)
    if args.child:
        layer, keep = args.child[0], args.child[1] == "keep"
        print(json.dumps(child(layer, keep, args.steps, args.threads)))
        return
    from lstmkit.training.memory import keep_freed_memory_unavailable

    reason = keep_freed_memory_unavailable()
    if reason is not None:
        sys.exit(f"cannot compare: {reason}")
    runs: dict[tuple[str, bool], list[dict]] = {case: [] for case in CASES}
    for n in range(args.rounds):
        for layer, keep in CASES if n % 2 == 0 else CASES[::-1]:
            cmd = [sys.executable, __file__, "--steps", str(args.steps)]
            cmd += ["--threads", str(args.threads), "--child", layer, "keep" if keep else "default"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[(layer, keep)].append(json.loads(done.stdout.strip().splitlines()[-1]))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    report = {
        **run_meta(command, args.threads),
        "steps": args.steps,
        "rounds": args.rounds,
        "cases": [{"layer": lay, "keep": keep, "runs": runs[(lay, keep)]} for lay, keep in CASES],
    }
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
