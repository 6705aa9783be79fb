"""Two versions of the C++ kernel against each other in one process, call by call.

    git archive <commit> src | tar -x -C /tmp/old
    python benchmarks/ab_kernel.py --old /tmp/old/src --shape 1 100 32 128 \
        --out benchmarks/results/kernels_repeats/abk_<name>.json

``ab.py`` alternates processes, one per version, and so compares whole versions, Python
included; but this machine's state can change between two processes (see "The machine's two
states" in docs/performance.md), and at batch 1 the spread over processes is as large as the
changes to be measured. For a change to the C++ alone this builds both versions' kernels (each
under a namespace of its own, so that both load into one process) and calls their layer nodes
directly, alternately (which goes first swaps every call), on the same input and weights: a
training call (forward, ``out.sum()``, backward) and a forward pass without gradients. Both see
the same state, and the ratio of their medians resolves about half a percent. The input is
batch-first, as the benchmarks and ``batch_first=True`` give it to the node.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from probe import describe, probe
from report import run_meta, write_report

from lstmkit.nn.backends.kernel import build_digest, compile_kernel

HERE = Path(__file__).resolve().parent
CSRC = Path("lstmkit") / "nn" / "backends" / "csrc"


def build(src: Path, label: str) -> ModuleType:
    """The kernel in ``src/lstmkit/nn/backends/csrc``, its namespace renamed ``lstmkit_<label>``,
    compiled as this checkout's ``kernel.py`` compiles its own (same flags, a cache directory
    named by the same digest)."""
    files = sorted((src / CSRC).iterdir())  # (a version's sources, whatever they are)
    digest = build_digest(src / CSRC, [f.name for f in files])
    sources = Path.home() / ".cache" / "lstmkit" / f"ab-{label}-{digest}"
    csrc = sources / "csrc"
    if not csrc.is_dir():
        csrc.mkdir(parents=True)
        for f in files:
            text = re.sub(r"namespace lstmkit\b", f"namespace lstmkit_{label}", f.read_text())
            text = re.sub(r"\blstmkit::", f"lstmkit_{label}::", text)
            (csrc / f.name).write_text(text)
    return compile_kernel(csrc, f"lstmkit_ab_{label}_{digest}", sources / "build")


def timings(kernels: dict[str, ModuleType], shape: list[int], reps: int) -> dict:
    """Median µs of each kernel's training call and forward pass, called alternately."""
    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)
    x = torch.randn(batch, steps, inputs).transpose(0, 1).requires_grad_()  # (T, B, I) view
    h0, c0 = torch.zeros(1, batch, hidden), torch.zeros(1, batch, hidden)
    scale = hidden**-0.5
    params = [
        (torch.randn(*size) * scale).requires_grad_()
        for size in ((4 * hidden, inputs), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,))
    ]

    def call(kernel: ModuleType, train: bool):
        def run():
            # kind 0 (standard cell), one direction, no projection, biases in the step
            args = (0, 1, False, True, True, None, x, h0, c0, params)
            if train:
                out, _, _ = kernel.layer(*args)
                out.sum().backward()
            else:
                with torch.no_grad():
                    kernel.layer(*args)

        return run

    result = {}
    for mode in ("train", "forward"):
        fns = {name: call(kernel, mode == "train") for name, kernel in kernels.items()}
        for _ in range(max(10, reps // 20)):
            for fn in fns.values():
                fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        order = list(fns)
        for i in range(reps):
            for name in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
        result[mode] = {**{f"{n}_us": m for n, m in medians.items()}}
        result[mode]["new_over_old"] = medians["new"] / medians["old"]
    return result


def markdown(report: dict) -> str:
    lines = [
        f"# In-process A/B of the C++ kernel at (B, T, I, H) = {tuple(report['shape'])}",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; commit of this checkout: {report['commit']}; "
        f"{report['threads']} torch threads; torch {report['torch']}",
        f"- old: `{report['old']}`; new: `{report['new']}`; {report['reps']} calls of each per "
        "round, alternating (which goes first swaps every call); medians",
        f"- machine state before / after: {describe(report['state'][0])} / "
        f"{describe(report['state'][1])}",
        "",
        "| round | training call, old µs | new µs | new / old | forward, old µs | new µs "
        "| new / old |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(report["rounds"], 1):
        t, f = r["train"], r["forward"]
        lines.append(
            f"| {n} | {t['old_us']:.1f} | {t['new_us']:.1f} | {t['new_over_old']:.3f} "
            f"| {f['old_us']:.1f} | {f['new_us']:.1f} | {f['new_over_old']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the other version's src")
    parser.add_argument("--new", type=Path, default=HERE.parent / "src", help="default: ours")
    parser.add_argument("--shape", nargs=4, type=int, default=[1, 100, 32, 128])
    parser.add_argument("--reps", type=int, default=2000, help="timed calls of each per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ab_kernel.json")
    args = parser.parse_args(argv)
    for src in (args.old, args.new):
        if not (src / CSRC / "lstm_kernel.cpp").is_file():
            parser.error(f"{src} is not a src directory holding lstmkit's C++ kernel")
    torch.set_num_threads(args.threads)
    kernels = {"old": build(args.old.resolve(), "old"), "new": build(args.new.resolve(), "new")}
    command = "python benchmarks/ab_kernel.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {**run_meta(command, args.threads), "shape": args.shape, "reps": args.reps}
    report |= {"old": str(args.old), "new": str(args.new), "state": [probe()]}
    report["rounds"] = [timings(kernels, args.shape, args.reps) for _ in range(args.rounds)]
    report["state"].append(probe())
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
