"""lstmkit's GPU paths against torch.nn.LSTM (cuDNN) and against the reference loop.

    python benchmarks/gpu.py --out benchmarks/results/gpu.json

Needs a CUDA device (prints why and exits otherwise). For each shape (B, T, I, H) and cell it
times forward (no grad) and forward+backward (a fixed weighted sum of the output as the loss)
of a one-layer unidirectional LSTM:

- ``cudnn``: torch.nn.LSTM, for the standard cell only;
- ``auto``: lstmkit's automatic choice (cuDNN through the fused backend for the standard cell,
  the compiled step for the variants);
- ``graphed``: the compiled step recorded as CUDA graphs and replayed (``backend="graphed"``,
  asked for by name), for the variants only;
- ``reference``: lstmkit's reference loop (PyTorch ops, one launch per op per step).

Runs alternate between the implementations; medians of ``--reps`` runs after warm-up. The
first call (forward+backward, then forward) includes the step's compilation and the second
the recording of the graphs; both are reported separately. It also
checks that ``auto`` and ``reference`` agree: the largest difference over the output and every
gradient, relative to the largest value of each. Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
from report import short_commit, write_report

from lstmkit.nn import LSTM
from lstmkit.nn.convert import to_torch

SHAPES = [(64, 100, 32, 128), (1, 100, 32, 128), (256, 200, 64, 256)]
CELLS = ["lstm", "peephole", "layernorm", "cifg"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def forward_fn(model, x):
    def run():
        with torch.no_grad():
            model(x)

    return run


def train_fn(model, x, weight):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(x)[0]
        (out * weight).sum().backward()

    return run


def interleaved(fns: dict, reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def models(cell: str, shape, device: str) -> dict[str, torch.nn.Module]:
    _, _, i, h = shape
    torch.manual_seed(0)
    ours = LSTM(i, h, cell=cell, batch_first=True).to(device)
    reference = copy.deepcopy(ours)
    reference.config = reference.config.replace(backend="reference")
    out = {"auto": ours, "reference": reference}
    if cell == "lstm":
        out["cudnn"] = to_torch(ours).to(device)
    elif device == "cuda":  # CUDA graphs only (a CPU dry run skips the column)
        out["graphed"] = copy.deepcopy(reference)
        out["graphed"].config = reference.config.replace(backend="graphed")
    return out


def outputs_and_grads(model, x, weight) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(x)[0]
    (out * weight).sum().backward()
    return [out.detach()] + [p.grad for p in model.parameters()]


def worst_difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """Largest |got - want| over the tensors, each relative to its largest |want|."""
    worst = 0.0
    for a, r in zip(got, want, strict=True):
        a, r = a.double(), r.double()
        worst = max(worst, ((a - r).abs().max() / r.abs().max().clamp_min(1e-30)).item())
    return worst


def agreement(auto, reference, x, weight) -> dict[str, float]:
    """auto against the float32 reference loop, and both against the loop in float64.

    The float64 columns tell a real discrepancy from float32 rounding that the recurrence
    itself amplifies (as the layer-norm cell does over long sequences): then the float32
    reference loop is as far from float64 as auto is.
    """
    got = outputs_and_grads(auto, x, weight)
    ref = outputs_and_grads(reference, x, weight)
    exact = outputs_and_grads(copy.deepcopy(reference).double(), x.double(), weight.double())
    return {
        "auto_vs_reference": worst_difference(got, ref),
        "auto_vs_float64": worst_difference(got, exact),
        "reference_vs_float64": worst_difference(ref, exact),
    }


class RecompileLimitWatch(logging.Handler):
    """Collects the functions dynamo gave up compiling (its recompile limit): their later calls
    run eagerly without further notice, so a row timed after that is not the compiled step."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "recompile_limit" in message or "cache_size_limit" in message:
            self.text.append(message)

    def hit(self, cell_class: str) -> bool:
        return any(f"_state_only_{cell_class}" in m for m in self.text)


WATCH = RecompileLimitWatch()
EAGER = " (ran eagerly: dynamo's recompile limit)"


def bench(cell: str, shape, reps: int, device: str) -> dict:
    b, t, i, h = shape
    x = torch.randn(b, t, i, device=device)
    weight = torch.randn(b, t, h, device=device)
    impls = models(cell, shape, device)
    row: dict = {"cell": cell, "shape": list(shape), "backend": impls["auto"].backend_choice.name}
    first = impls.get("graphed", impls["auto"])
    for key in ("first_call_s", "second_call_s"):  # compiling, then recording the graphs
        row[key] = timed(train_fn(first, x, weight)) + timed(forward_fn(first, x))
    for kind, make in (("train", lambda m: train_fn(m, x, weight)), ("forward", forward_fn)):
        fns = {name: (make(m) if kind == "train" else make(m, x)) for name, m in impls.items()}
        for fn in fns.values():
            for _ in range(2):
                fn()
        times = interleaved(fns, reps)
        row[kind] = {name: statistics.median(v) * 1e3 for name, v in times.items()}  # ms
    errors = agreement(impls["auto"], impls["reference"], x, weight)
    row["max_relative_difference"] = errors.pop("auto_vs_reference")
    row |= errors
    if "graphed" in impls:
        graphed = agreement(impls["graphed"], impls["reference"], x, weight)
        row["graphed_difference"] = graphed["auto_vs_reference"]
    if row["backend"] == "compiled":
        cls = type(impls["auto"].cells[0]).__name__
        row["fell_back_to_eager"] = WATCH.hit(cls)  # dynamo's recompile limit: not compiled
    return row


def markdown(report: dict) -> str:
    lines = [
        "# GPU paths: lstmkit against cuDNN and against its reference loop",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['device']}, torch {report['torch']}, CUDA {report['cuda']}; "
        f"date {report['date']}; commit {report['commit']}",
        "",
        "Milliseconds per call (median of alternating runs), one layer, float32. `auto` is "
        "cuDNN through the fused backend for the standard cell and the compiled step for the "
        "variants; `graphed` is the compiled step recorded as CUDA graphs and replayed; "
        "`reference` is the Python loop over time. First calls: seconds for the first "
        "forward+backward and forward (compiling) and for the second (recording the graphs), "
        "of `graphed` where it runs. Difference: largest "
        "|auto - reference| over output and gradients, relative to the largest value; "
        "against float64: the same for auto and for the float32 reference loop, each against "
        "the reference loop run in float64.",
        "",
        "| cell | (B, T, I, H) | backend | fwd+bwd auto | fwd+bwd graphed | fwd+bwd reference "
        "| fwd+bwd cuDNN | fwd auto / graphed / reference | speed-up vs reference (fwd+bwd / "
        "fwd) | first calls (s) | difference (auto / graphed) | against float64 (auto / "
        "reference) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        tr, fw = r["train"], r["forward"]
        cudnn = f"{tr['cudnn']:.2f}" if "cudnn" in tr else "—"
        graphed = f"{tr['graphed']:.2f}" if "graphed" in tr else "—"
        fw_graphed = f"{fw['graphed']:.2f}" if "graphed" in fw else "—"
        difference = f"{r['max_relative_difference']:.1e}" + (
            f" / {r['graphed_difference']:.1e}" if "graphed_difference" in r else ""
        )
        calls = f"{r['first_call_s']:.1f}" + (
            f" / {r['second_call_s']:.1f}" if "second_call_s" in r else ""
        )
        lines.append(
            f"| {r['cell']} | {tuple(r['shape'])} | {r['backend']} | {tr['auto']:.2f} | "
            f"{graphed} | {tr['reference']:.2f} | {cudnn} | {fw['auto']:.2f} / {fw_graphed} "
            f"/ {fw['reference']:.2f} | {tr['reference'] / tr['auto']:.1f}× / "
            f"{fw['reference'] / fw['auto']:.1f}× | {calls} | "
            f"{difference}{EAGER if r.get('fell_back_to_eager') else ''} | "
            + (
                f"{r['auto_vs_float64']:.1e} / {r['reference_vs_float64']:.1e} |"
                if "auto_vs_float64" in r
                else "— |"
            )
        )
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES))
    parser.add_argument("--device", default="cuda", help="cpu only for a dry run of the script")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures the GPU paths)")
        return
    torch.set_float32_matmul_precision("highest")  # no TF32: float32 exact for the comparison
    logging.getLogger("torch._dynamo").addHandler(WATCH)
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for shape in [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]:
        for cell in args.cells.split(","):
            row = bench(cell, shape, args.reps, args.device)
            tr = row["train"]
            print(
                f"{cell:9s} {shape}: {row['backend']:8s} fwd+bwd {tr['auto']:.2f} ms "
                f"(reference {tr['reference']:.2f}"
                + (f", cuDNN {tr['cudnn']:.2f}" if "cudnn" in tr else "")
                + (f", graphed {tr['graphed']:.2f}" if "graphed" in tr else "")
                + f"), first call {row['first_call_s']:.1f} s, "
                f"difference {row['max_relative_difference']:.1e}",
                flush=True,
            )
            rows.append(row)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": short_commit(),
        "rows": rows,
    }
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
