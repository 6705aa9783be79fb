"""Where the C++ kernel is faster than PyTorch's fused LSTM: the data behind ``auto``.

Forward+backward (``--mode train``) or the forward pass without gradients (``--mode forward``,
eval mode) of the standard cell, kernel vs fused, in one process, at shapes people train
(forecasters, AWD-LSTM-sized language models). ``auto``'s choice for that mode and batch is
shown beside each shape (``lstmkit.nn.backends.KERNEL_MAX_HIDDEN`` for training).

    python benchmarks/kernel_selection.py --threads 2 --out benchmarks/results/kernel_selection.json
    python benchmarks/kernel_selection.py --mode forward \
        --out benchmarks/results/kernel_selection_forward.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from report import lstm_call_ms

from lstmkit.nn import LSTM
from lstmkit.nn.backends import Placement, select_backend

# (batch, steps, input, hidden, layers)
SHAPES = [
    (1, 100, 32, 128, 1),
    (64, 100, 32, 128, 1),
    (64, 100, 64, 256, 1),
    (256, 200, 64, 256, 1),
    (128, 96, 7, 512, 1),
    (64, 128, 256, 512, 2),
    (32, 35, 650, 650, 2),
    (20, 70, 400, 1150, 1),
]


def median_ms(backend: str, shape: tuple[int, ...], repeats: int, train: bool) -> float:
    batch, steps, inputs, hidden, layers = shape
    torch.manual_seed(0)
    lstm = LSTM(inputs, hidden, layers, backend=backend).train(train)
    x = torch.randn(batch, steps, inputs, requires_grad=train)
    return lstm_call_ms(lstm, x, train, repeats)


def auto_choice(shape: tuple[int, ...], train: bool) -> str:
    """The backend ``auto`` runs this shape's first layer with, in this mode and at this batch."""
    batch, _, inputs, hidden, layers = shape
    config = LSTM(inputs, hidden, layers).config
    placement = Placement(torch.device("cpu"), torch.float32, batch)
    return select_backend(config, train, False, placement).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=["train", "forward"], default="train")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/kernel_selection.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = []
    train = args.mode == "train"
    for shape in SHAPES:
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
    lines = [
        f"# C++ kernel vs fused, {'forward+backward' if train else 'forward (no grad, eval)'} "
        "of the standard cell",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; torch {meta['torch']}; {args.threads} threads; load "
        f"average before {load[0]:.2f}",
        "",
        "| (B, T, I, H, layers) | fused ms | kernel ms | kernel speed-up | auto picks |",
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
