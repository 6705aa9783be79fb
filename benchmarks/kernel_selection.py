"""Where the C++ kernel is faster than PyTorch's fused LSTM: the data behind ``auto``.

Forward+backward (``--mode train``) or the forward pass without gradients (``--mode forward``,
eval mode) of the standard cell, kernel vs fused, in one process, at shapes people train
(forecasters, AWD-LSTM-sized language models). ``auto``'s choice for that mode and batch is
shown beside each shape (``lstmkit.nn.backends.KERNEL_MAX_HIDDEN`` for training).

    python benchmarks/kernel_selection.py --threads 2 --out benchmarks/results/kernel_selection.json
    python benchmarks/kernel_selection.py --mode forward \
        --out benchmarks/results/kernel_selection_forward.json

``--mode small`` sweeps inference at small batches instead (below four rows per thread, and 4 to
128 rows): hidden 16 to 768 at (B, 100, 32), the two backends called alternately, the speed-up
a median over many calls:

    python benchmarks/kernel_selection.py --mode small --threads 2 \
        --out benchmarks/results/kernel_selection_small.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from report import interleaved, lstm_call_ms

from lstmkit.nn import LSTM
from lstmkit.nn.backends import Placement, select_backend

# (batch, steps, input, hidden, layers, directions)
SHAPES = [
    (1, 100, 32, 128, 1, 1),
    (64, 100, 32, 128, 1, 1),
    (64, 100, 64, 256, 1, 1),
    (256, 200, 64, 256, 1, 1),
    (128, 96, 7, 512, 1, 1),
    (64, 128, 256, 512, 2, 1),
    (32, 35, 650, 650, 2, 1),
    (20, 70, 400, 1150, 1, 1),
    # bidirectional: a small tagger, a text classifier over embeddings, speech frames
    (32, 50, 16, 128, 1, 2),
    (32, 200, 300, 128, 2, 2),
    (8, 500, 40, 256, 3, 2),
]


SMALL_HIDDEN = (16, 32, 64, 90, 128, 256, 512, 768)


def small_batches(threads: int) -> list[int]:
    """Every batch below four rows per thread, and 4 to 128 rows in powers of two."""
    return sorted(set(range(1, 4 * threads)) | {4, 8, 16, 32, 64, 128})


def small_batch_rows(threads: int) -> list[dict]:
    """Forward (no grad, eval) at (B, 100, 32, H) for the batches of ``small_batches``, fused
    and kernel called alternately on the same weights."""
    rows = []
    for hidden in SMALL_HIDDEN:
        for batch in small_batches(threads):
            torch.manual_seed(0)
            fused = LSTM(32, hidden, backend="fused").eval()
            kernel = LSTM(32, hidden, backend="kernel").eval()
            kernel.load_state_dict(fused.state_dict())
            x = torch.randn(batch, 100, 32)
            calls = 200 if hidden * batch <= 4096 else 40
            with torch.no_grad():
                fns = {"fused": lambda m=fused, x=x: m(x), "kernel": lambda m=kernel, x=x: m(x)}
                times = interleaved(fns, calls, warmup=10)
            f, k = (statistics.median(times[n]) * 1e3 for n in ("fused", "kernel"))
            shape = (batch, 100, 32, hidden, 1, 1)
            rows.append(
                {
                    "shape": shape,
                    "fused_ms": f,
                    "kernel_ms": k,
                    "speedup": f / k,
                    "auto": auto_choice(shape, False),
                }
            )
            print(f"{shape}: fused {f:.3f} ms, kernel {k:.3f} ms, {f / k:.2f}x", flush=True)
    return rows


def small_batch_table(rows: list[dict], threads: int) -> list[str]:
    """Hidden sizes down, batches across: the kernel's speed-up and what ``auto`` picks."""
    batches = small_batches(threads)
    lines = [
        "| hidden | " + " | ".join(f"B = {b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for hidden in SMALL_HIDDEN:
        cells = [f"{r['speedup']:.2f}x ({r['auto']})" for r in rows if r["shape"][3] == hidden]
        lines.append(f"| {hidden} | " + " | ".join(cells) + " |")
    return lines


def median_ms(backend: str, shape: tuple[int, ...], repeats: int, train: bool) -> float:
    batch, steps, inputs, hidden, layers, directions = shape
    torch.manual_seed(0)
    lstm = LSTM(inputs, hidden, layers, bidirectional=directions == 2, backend=backend)
    lstm.train(train)
    x = torch.randn(batch, steps, inputs, requires_grad=train)
    return lstm_call_ms(lstm, x, train, repeats)


def auto_choice(shape: tuple[int, ...], train: bool) -> str:
    """The backend ``auto`` runs this shape's first layer with, in this mode and at this batch."""
    batch, _, inputs, hidden, layers, directions = shape
    config = LSTM(inputs, hidden, layers, bidirectional=directions == 2).config
    placement = Placement(torch.device("cpu"), torch.float32, batch)
    return select_backend(config, train, False, placement).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=["train", "forward", "small"], default="train")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/kernel_selection.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = []
    train = args.mode == "train"
    small = args.mode == "small"
    if small:
        rows = small_batch_rows(args.threads)
    for shape in [] if small else SHAPES:
        fused = median_ms("fused", shape, args.repeats, train)
        kernel = median_ms("kernel", shape, args.repeats, train)
        rows.append(
            {
                "shape": shape,
                "fused_ms": fused,
                "kernel_ms": kernel,
                "speedup": fused / kernel,
                "auto": auto_choice(shape, train),
            }
        )
        print(
            f"{shape}: fused {fused:.1f} ms, kernel {kernel:.1f} ms, {fused / kernel:.2f}x",
            flush=True,
        )
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": args.threads,
        "load_before": load,
        "load_after": os.getloadavg(),
    }
    what = "forward+backward" if train else "forward (no grad, eval)"
    if small:
        what += ", small batches (speed-up of the kernel, and what auto picks)"
    lines = [
        f"# C++ kernel vs fused, {what} of the standard cell",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; torch {meta['torch']}; {args.threads} threads; load "
        f"average before {load[0]:.2f}",
        "",
    ]
    if small:
        lines += small_batch_table(rows, args.threads)
    else:
        lines += [
            "| (B, T, I, H, layers, directions) | fused ms | kernel ms | kernel speed-up "
            "| auto picks |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {tuple(r['shape'])} | {r['fused_ms']:.1f} | {r['kernel_ms']:.1f} | "
            f"{r['speedup']:.2f}x | {r['auto']} |"
            for r in rows
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta | {"mode": args.mode}, "rows": rows}, indent=2))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
