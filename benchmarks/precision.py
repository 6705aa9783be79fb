"""How far float32 runs drift from float64 over time, per cell and backend.

    python benchmarks/precision.py --out benchmarks/results/precision.json

For each cell (one layer, (B, I, H) = (16, 64, 256), lstmkit's default initialisation, random
inputs) and each backend that can run it here, the float32 output at step t is compared with
the reference loop run in float64 on the same weights and inputs: the largest absolute
difference over the batch and units at t = 10 ... 400. A backend is exact when it drifts as
little as the float32 reference loop does. A drift that grows with t in every backend is the
cell's own sensitivity to rounding, not a backend's error: a layer-normalised recurrence
rescales W_hh h to unit variance at every step, so nothing damps a small difference. This is
why ``benchmarks/gpu.py`` also compares each path with float64.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
from pathlib import Path

import torch
from report import short_commit, write_report

from lstmkit.nn import LSTM

CELLS = ("lstm", "peephole", "layernorm", "cifg")
STEPS = (10, 50, 100, 200, 400)


def backends(device: str) -> list[str]:
    return ["reference", "kernel" if device == "cpu" else "fused", "compiled"]


def drift(cell: str, backend: str, device: str, batch: int, size: int, hidden: int) -> list | None:
    """Largest |float32 - float64| of the output at each of STEPS; None if it cannot run."""
    torch.manual_seed(0)
    model = LSTM(size, hidden, cell=cell, batch_first=True, backend="reference").to(device)
    exact = copy.deepcopy(model).double()
    model.config = model.config.replace(backend=backend)
    x = torch.randn(batch, max(STEPS), size, device=device)
    try:
        with torch.no_grad():
            got = model(x)[0].double()
    except ValueError:  # this backend cannot run this cell
        return None
    with torch.no_grad():
        want = exact(x.double())[0]
    error = (got - want).abs().amax(dim=(0, 2))
    return [error[t - 1].item() for t in STEPS]


def markdown(report: dict) -> str:
    lines = [
        "# float32 against float64: largest output difference at step t",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, torch {report['torch']}; date {report['date']}; "
        f"commit {report['commit']}",
        "",
        f"One layer, (B, I, H) = {tuple(report['shape'])}, random inputs, lstmkit's default "
        "initialisation; each float32 run against the reference loop in float64.",
        "",
        "| cell | backend | " + " | ".join(f"t = {t}" for t in STEPS) + " |",
        "|---|---|" + "---|" * len(STEPS),
    ]
    for r in report["rows"]:
        values = " | ".join(f"{v:.1e}" for v in r["error"])
        lines.append(f"| {r['cell']} | {r['backend']} | {values} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision.json"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")
    shape = (16, 64, 256)
    rows = []
    for cell in CELLS:
        for backend in backends(args.device):
            error = drift(cell, backend, args.device, *shape)
            if error is not None:
                rows.append({"cell": cell, "backend": backend, "error": error})
                print(cell, backend, " ".join(f"{v:.1e}" for v in error), flush=True)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": torch.cuda.get_device_name() if args.device == "cuda" else platform.machine(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": short_commit(),
        "shape": list(shape),
        "steps": list(STEPS),
        "rows": rows,
    }
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
