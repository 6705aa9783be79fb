"""Where PyTorch's fused LSTM leaves oneDNN on CPU: projections and variable-length batches.

torch.nn.LSTM runs the standard cell on oneDNN's fused RNN primitive on CPU, but not with a
projection (``proj_size > 0``: it warns and uses its default implementation) nor for a batch
whose sequences differ in length (it runs them packed, step by step). This times the C++ kernel
against the fused backend in exactly those cases, inference (eval, no grad) and training
(forward and backward from ``out.sum()``), calls alternating on the same weights, and shows what
``backend="auto"`` picks for each. It is the data behind ``_fused_off_onednn`` in
``lstmkit.nn.backends``.

    python benchmarks/kernel_fallback.py --threads 2 \
        --out benchmarks/results/kernel_selection_fallback.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from pathlib import Path

import torch
from report import interleaved, run_meta, write_report

from lstmkit.nn import LSTM
from lstmkit.nn.backends import Placement, select_backend

# (mode, batch, steps, input, hidden, layers, directions, proj_size, padded)
CASES = [
    ("inference", 8, 100, 32, 128, 1, 1, 0, True),
    ("inference", 64, 100, 32, 128, 1, 1, 0, True),
    ("inference", 256, 50, 32, 256, 1, 1, 0, True),
    ("inference", 128, 96, 7, 512, 1, 1, 0, True),
    ("inference", 32, 35, 650, 650, 2, 1, 0, True),
    ("inference", 20, 70, 400, 1150, 1, 1, 0, True),
    ("inference", 32, 200, 300, 128, 2, 2, 0, True),
    ("inference", 1, 100, 32, 128, 1, 1, 64, False),
    ("inference", 4, 100, 32, 256, 1, 1, 64, False),
    ("inference", 64, 100, 32, 256, 1, 1, 64, False),
    ("inference", 256, 200, 64, 512, 1, 1, 128, False),
    ("inference", 20, 70, 400, 1150, 1, 1, 400, False),
    ("training", 64, 100, 32, 128, 1, 1, 0, True),
    ("training", 32, 200, 300, 128, 2, 2, 0, True),
    ("training", 20, 70, 400, 1150, 1, 1, 0, True),
    ("training", 32, 35, 650, 1024, 2, 1, 0, True),
    ("training", 16, 300, 40, 512, 2, 1, 128, False),
    ("training", 20, 70, 400, 1150, 1, 1, 400, False),
]


def lengths_for(batch: int, steps: int) -> torch.Tensor:
    """Lengths from a quarter of ``steps`` to all of them, the first sequence full."""
    lengths = torch.randint(
        steps // 4, steps + 1, (batch,), generator=torch.Generator().manual_seed(0)
    )
    lengths[0] = steps
    return lengths


def time_case(case: tuple, reps: int) -> dict:
    mode, batch, steps, inputs, hidden, layers, directions, proj, padded = case
    training = mode == "training"
    options = dict(bidirectional=directions == 2, proj_size=proj, batch_first=True)
    torch.manual_seed(0)
    kernel = LSTM(inputs, hidden, layers, backend="kernel", **options).train(training)
    fused = LSTM(inputs, hidden, layers, backend="fused", **options).train(training)
    fused.load_state_dict(kernel.state_dict())
    x = torch.randn(batch, steps, inputs, requires_grad=training)
    lengths = lengths_for(batch, steps) if padded and batch > 1 else None

    def call(lstm):
        def run():
            if training:
                out, _ = lstm(x, lengths=lengths)
                out.sum().backward()
            else:
                with torch.no_grad():
                    lstm(x, lengths=lengths)

        return run

    work = batch * steps * hidden * (inputs + hidden) * layers * directions * (3 if training else 1)
    calls = max(3, min(reps, int(2e9 / work)))
    times = interleaved({"fused": call(fused), "kernel": call(kernel)}, calls)
    fused_ms, kernel_ms = (statistics.median(times[n]) * 1e3 for n in ("fused", "kernel"))
    config = LSTM(inputs, hidden, layers, **options).config
    placement = Placement(torch.device("cpu"), torch.float32, batch, padded=lengths is not None)
    return {
        "case": list(case),
        "calls": calls,
        "fused_ms": fused_ms,
        "kernel_ms": kernel_ms,
        "speedup": fused_ms / kernel_ms,
        "auto": select_backend(config, training, False, placement).name,
    }


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [
        "# The C++ kernel against PyTorch's fused LSTM where it leaves oneDNN (CPU)",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; commit {meta['commit']}; {meta['threads']} threads; torch "
        f"{meta['torch']}; load average before / after: {meta['load_before']} / "
        f"{meta['load_after']}",
        "- medians of calls alternating between the two backends on the same weights; speed-up "
        "= fused / kernel; padded: lengths from a quarter of the steps to all of them",
        "",
        "| mode | (B, T, I, H, layers, directions) | projection | padded | fused ms | kernel ms "
        "| kernel speed-up | auto picks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        mode, *shape, proj, padded = row["case"]
        lines.append(
            f"| {mode} | {tuple(shape)} | {proj or '-'} | {'yes' if padded else '-'} | "
            f"{row['fused_ms']:.2f} | {row['kernel_ms']:.2f} | {row['speedup']:.2f}x | "
            f"{row['auto']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=40, help="calls of each backend, at most")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/kernel_selection_fallback.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    load = os.getloadavg()
    rows = []
    for case in CASES:
        rows.append(time_case(case, args.reps))
        print(f"{case}: {rows[-1]['speedup']:.2f}x ({rows[-1]['auto']})", flush=True)
    meta = run_meta(" ".join(["python", *sys.argv]), args.threads)
    meta |= {"load_before": [round(v, 2) for v in load]}
    meta |= {"load_after": [round(v, 2) for v in os.getloadavg()]}
    write_report(args.out, {"meta": meta, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
