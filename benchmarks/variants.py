"""The LSTM variants on the C++ kernel against the reference loop, which is their only other
CPU path (torch.nn.LSTM runs none of them).

Per cell (peephole, layer norm, CIFG; the standard cell for scale) and shape, the median time
of a forward+backward call and of a forward call without gradients, kernel and reference in the
same process, and their ratio. Shapes: the two small ones of kernels.py and the segment
forecaster's encoder at ETTh (batch 256 x 7 channels, 4 segment tokens of width 512).

    python benchmarks/variants.py --threads 2 --out benchmarks/results/variants.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from report import lstm_call_ms, run_meta, write_report

from lstmkit.nn import LSTM

CELLS = ("lstm", "peephole", "layernorm", "cifg")
SHAPES = [(1, 100, 32, 128), (64, 100, 32, 128), (1792, 4, 512, 512)]  # (B, T, I, H)


def median_ms(cell: str, backend: str, shape: tuple[int, ...], train: bool, repeats: int) -> float:
    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)
    lstm = LSTM(inputs, hidden, cell=cell, backend=backend).train(train)
    x = torch.randn(batch, steps, inputs, requires_grad=train)
    return lstm_call_ms(lstm, x, train, repeats, warmup=3)


def markdown(report: dict) -> str:
    lines = [
        "# LSTM variants: C++ kernel against the reference loop",
        "",
        f"`{report['command']}` at {report['commit']}, {report['date']}; {report['machine']}, "
        f"{report['threads']} threads, torch {report['torch']}. Median ms per call "
        f"({report['repeats']} calls per row after 3 untimed, a tenth as many, at least 3, at "
        "batches above 1000); ratio = reference / kernel.",
        "",
        "| cell | (B, T, I, H) | pass | kernel ms | reference ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['cell']} | {tuple(r['shape'])} | {r['pass']} | {r['kernel_ms']:.2f} | "
            f"{r['reference_ms']:.2f} | {r['reference_ms'] / r['kernel_ms']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/variants.json"))
    args = parser.parse_args()
    cells = args.cells.split(",")
    unknown = sorted(set(cells) - set(CELLS))
    if unknown:
        parser.error(f"--cells takes {', '.join(CELLS)}; got {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    rows = []
    for shape in SHAPES:
        repeats = max(3, args.repeats // (10 if shape[0] > 1000 else 1))
        for cell in cells:
            for train in (True, False):
                times = {
                    f"{backend}_ms": median_ms(cell, backend, shape, train, repeats)
                    for backend in ("kernel", "reference")
                }
                rows.append(
                    {"cell": cell, "shape": shape, "pass": "fwd+bwd" if train else "forward"}
                    | times
                )
    command = "python benchmarks/variants.py " + (
        f"--threads {args.threads} --repeats {args.repeats} --cells {args.cells}"
    )
    report = run_meta(command, args.threads) | {"repeats": args.repeats, "rows": rows}
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
