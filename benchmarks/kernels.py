"""lstmkit's C++ kernel against torch.nn.LSTM on the CPU, in one process.

    .venv/bin/python benchmarks/kernels.py --threads 2 --out benchmarks/results/kernels.json

For each shape (B, T, I, H) it times the forward pass (no grad) and forward+backward (sum of the
output as the loss) of a one-layer unidirectional LSTM with the same weights, alternating ours
and torch's run by run so that any load on the machine hits both alike, and reports medians
(and minima), the ratio torch/ours (> 1: ours is faster), GFLOP/s and the share of the GEMM rate
measured here for a matrix product of the same size. Forward FLOPs = 8·B·T·H·(I+H);
forward+backward counts 3x that. It then times one streaming step at batch 1 (ours,
torch.nn.LSTM called on one step with its state, torch.nn.LSTMCell), and measures each side's
peak memory of one forward+backward as the growth of the process's peak resident set (VmHWM,
reset through /proc/self/clear_refs) in a fresh subprocess. Writes JSON and a Markdown table.

It also counts each call's page faults, and times each shape again in a child process whose
glibc malloc keeps the memory it frees (``NO_FAULTS``: no trimming, no mmap): torch.nn.LSTM
allocates its large temporaries afresh on every call, and under glibc's default settings
each new page of them faults on first touch (about 8,000 faults a training call at
(64, 100, 32, 128) here). The kernel reuses its large buffers (csrc/pool.h), so most of its
lead at large batches is torch's page faults; the second table shows the speed-up without
them, as with an allocator that keeps memory (jemalloc, tcmalloc). The tunables are a
measuring device for the benchmark, not advice: mmap_max=0 serves every allocation from
the heap.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from probe import describe, probe
from report import interleaved

from lstmkit.nn import LSTM
from lstmkit.nn.backends.kernel import kernel_unavailable, load_kernel
from lstmkit.training.memory import keep_freed_memory_unavailable

SHAPES = [(64, 100, 32, 128), (1, 100, 32, 128), (256, 200, 64, 256)]
# glibc malloc that never hands memory back to the OS (read at process start)
NO_FAULTS = "glibc.malloc.trim_threshold=17179869184:glibc.malloc.mmap_max=0"
TARGETS = {  # shape -> (forward+backward, forward) speed-up asked for in issue #6
    (64, 100, 32, 128): (2.0, 1.5),
    (1, 100, 32, 128): (2.0, 1.5),
    (256, 200, 64, 256): (1.3, 1.2),
}
STEP_TARGET_US = 25.0
BATCH_SWEEP = (1, 2, 4, 8, 16)


def flops(b: int, t: int, i: int, h: int) -> float:
    return 8.0 * b * t * h * (i + h)


def make_pair(b: int, t: int, i: int, h: int):
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(i, h, batch_first=True)
    ours = LSTM.from_torch(theirs, backend="kernel")
    x = torch.randn(b, t, i)
    return ours, theirs, x


def forward_fn(model, x):
    def run():
        with torch.no_grad():
            model(x)

    return run


def train_fn(model, x):
    x = x.clone().requires_grad_()

    def run():
        out, _ = model(x)
        out.sum().backward()

    return run


def gemm_rate(b: int, t: int, i: int, h: int, reps: int) -> dict[str, float]:
    """GFLOP/s of (B*T, I+H) x (I+H, 4H): torch.mm (MKL here) and oneDNN (the kernel's)."""
    a, w = torch.randn(b * t, i + h), torch.randn(4 * h, i + h)
    kernel = load_kernel()
    fns = {
        "torch.mm": lambda: torch.mm(a, w.t()),
        "onednn": lambda: kernel.linear_forward(a, w),
    }
    times = interleaved(fns, reps)
    work = 2.0 * b * t * (i + h) * 4 * h
    return {name: work / min(ts) / 1e9 for name, ts in times.items()}


def page_faults(fn, calls: int) -> float:
    """Minor page faults per call of ``fn`` (this process's, over ``calls`` calls)."""
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / calls


def time_pair(shape, mode: str, reps: int) -> dict:
    """Ours and torch's ``mode`` pass at ``shape``, interleaved: seconds per run and page
    faults per call of each."""
    ours, theirs, x = make_pair(*shape)
    make = forward_fn if mode == "forward" else train_fn
    fns = {"torch": make(theirs, x), "ours": make(ours, x)}
    times = interleaved(fns, reps)
    faults = {name: page_faults(fn, max(2, min(reps, 10))) for name, fn in fns.items()}
    return {"times": times, "faults": faults}


def bench_shape(shape, reps: int) -> dict:
    result = {"shape": list(shape), "flops_forward": flops(*shape)}
    gemm = gemm_rate(*shape, reps=max(3, reps // 2))
    result["gemm_gflops"] = gemm
    peak = max(gemm.values())
    for mode, factor in (("forward", 1.0), ("train", 3.0)):
        state = probe()
        timed = time_pair(shape, mode, reps)
        entry = {}
        for name, ts in timed["times"].items():
            med = statistics.median(ts)
            gflops = factor * flops(*shape) / med / 1e9
            entry[name] = {
                "median_ms": med * 1e3,
                "min_ms": min(ts) * 1e3,
                "gflops": gflops,
                "share_of_gemm": gflops / peak,
                "page_faults_per_call": timed["faults"][name],
            }
        entry["speedup"] = entry["torch"]["median_ms"] / entry["ours"]["median_ms"]
        entry["speedup_min"] = entry["torch"]["min_ms"] / entry["ours"]["min_ms"]
        entry["state"] = [state, probe()]  # before and after the timing
        result[mode] = entry
    return result


def no_faults_child(shape: list[int], reps: int) -> None:
    """In a process started with GLIBC_TUNABLES=NO_FAULTS: both passes, printed as JSON."""
    out = {}
    for mode in ("forward", "train"):
        timed = time_pair(shape, mode, reps)
        out[mode] = {
            name: {
                "median_ms": statistics.median(ts) * 1e3,
                "page_faults_per_call": timed["faults"][name],
            }
            for name, ts in timed["times"].items()
        }
    print(json.dumps(out))


def without_page_faults(shape, reps: int, threads: int) -> dict | None:
    """``no_faults_child``'s result for ``shape``, or None where the C library is not glibc
    (whose tunables it sets)."""
    if keep_freed_memory_unavailable() is not None:
        return None
    cmd = [sys.executable, __file__, "--threads", str(threads), "--reps", str(reps)]
    cmd += ["--no-faults-child", *(str(v) for v in shape)]
    env = {**os.environ, "GLIBC_TUNABLES": NO_FAULTS}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for entry in result.values():
        entry["speedup"] = entry["torch"]["median_ms"] / entry["ours"]["median_ms"]
    return result


def bench_batches(reps: int) -> list[dict]:
    """Forward (no grad) at (B, 100, 32, 128) for small B: where ``auto`` runs inference on the
    kernel instead of PyTorch's fused LSTM (the kernel's unit split, below 4 rows per thread)."""
    rows = []
    for batch in BATCH_SWEEP:
        ours, theirs, x = make_pair(batch, 100, 32, 128)
        times = interleaved({"torch": forward_fn(theirs, x), "ours": forward_fn(ours, x)}, reps)
        torch_ms, ours_ms = (statistics.median(times[k]) * 1e3 for k in ("torch", "ours"))
        threads = load_kernel().column_split_threads(batch, 128, 0, 0)
        rows.append(
            {
                "batch": batch,
                "torch_ms": torch_ms,
                "ours_ms": ours_ms,
                "speedup": torch_ms / ours_ms,
                "unit_split": threads > 1,
            }
        )
    return rows


def bench_streaming(steps: int = 5000) -> dict:
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(32, 128)
    cell = torch.nn.LSTMCell(32, 128)
    stream = LSTM.from_torch(theirs).eval().stream()
    x = torch.randn(32)
    state = {"lstm": None, "cell": None}

    def ours():
        stream.step(x)

    def torch_lstm():
        _, state["lstm"] = theirs(x.view(1, 1, 32), state["lstm"])

    def torch_cell():
        state["cell"] = cell(x.view(1, 32), state["cell"])

    out = {}
    with torch.no_grad():
        for name, fn in (
            ("ours", ours),
            ("torch.nn.LSTM", torch_lstm),
            ("torch.nn.LSTMCell", torch_cell),
        ):
            for _ in range(200):
                fn()
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            out[name] = (time.perf_counter() - start) / steps * 1e6
    return {"step_us": out, "uses_kernel": stream.uses_kernel}


def peak_memory_child(impl: str, shape: list[int]) -> None:
    """In a fresh process: peak RSS growth (MiB) of one forward+backward, printed as JSON."""
    kernel_unavailable()  # load the extension before the baseline
    ours, theirs, x = make_pair(*shape)
    model = ours if impl == "ours" else theirs
    x = x.clone().requires_grad_()
    rss = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    out, _ = model(x)
    out.sum().backward()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - rss) / 1024}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(shape, threads: int) -> dict[str, float]:
    out = {}
    for impl in ("torch", "ours"):
        cmd = [sys.executable, __file__, "--threads", str(threads), "--memory-child", impl]
        cmd += [str(v) for v in shape]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[impl] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
    return out


def machine(threads: int) -> dict:
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_id": cpu_id(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "onednn_matmul": load_kernel().has_onednn_matmul(),
    }


def cpu_id() -> str:
    """Family, model and stepping from /proc/cpuinfo ("" where it has none): the model name of
    a virtual machine's CPU may not tell two generations apart."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("cpu family", "model", "stepping") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        return ""
    return ", ".join(f"{k} {v}" for k, v in fields.items())


def wait_for_quiet(limit_s: float = 60.0) -> list[float]:
    """Wait (up to ``limit_s``) for the 1-minute load to drop below 0.5; returns the loads."""
    start = time.time()
    while os.getloadavg()[0] > 0.5 and time.time() - start < limit_s:
        time.sleep(5)
    return list(os.getloadavg())


def state_line(report: dict) -> list[str]:
    """The header line of the machine's state (benchmarks/probe.py), where it was measured."""
    before, after = report.get("state_before"), report.get("state_after")
    if not before:
        return []
    cpu = report["machine"].get("cpu_id")
    where = f" ({cpu})" if cpu else ""
    return [f"- machine state before / after{where}: {describe(before)} / {describe(after or {})}"]


def round_trips(entry: dict) -> str:
    """The round trips measured before and after one pass's timing ("—" where not measured)."""
    trips = [state.get("core_round_trip_ns") for state in entry.get("state", [])]
    if not trips or None in trips:
        return "—"
    return " / ".join(f"{t:.0f}" for t in trips)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# lstmkit kernel vs torch.nn.LSTM (CPU)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['threads']} torch threads; torch {m['torch']}, Python {m['python']}",
        f"- load average before / after: {report['load_before']} / {report['load_after']}",
        *state_line(report),
        "- times are medians of interleaved runs; speed-up = torch time / ours (> 1: ours faster);"
        " GEMM share = GFLOP/s over the best GEMM rate measured here for the same size",
        "",
        "| shape (B, T, I, H) | pass | torch ms | ours ms | speed-up | target | ours GFLOP/s "
        "| torch GFLOP/s | ours / torch share of GEMM | GEMM GFLOP/s (MKL / oneDNN) "
        "| CPU round trip ns, before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["shapes"]:
        shape = tuple(r["shape"])
        gemm = r["gemm_gflops"]
        for mode, label, target in (
            ("forward", "forward", TARGETS[shape][1]),
            ("train", "fwd+bwd", TARGETS[shape][0]),
        ):
            e = r[mode]
            met = "met" if e["speedup"] >= target else "missed"
            torch_ms, ours_ms = e["torch"]["median_ms"], e["ours"]["median_ms"]
            shares = f"{e['ours']['share_of_gemm']:.0%} / {e['torch']['share_of_gemm']:.0%}"
            lines.append(
                f"| {shape} | {label} | {torch_ms:.2f} | {ours_ms:.2f} "
                f"| {e['speedup']:.2f}x | {target}x ({met}) | {e['ours']['gflops']:.0f} "
                f"| {e['torch']['gflops']:.0f} | {shares} "
                f"| {gemm['torch.mm']:.0f} / {gemm['onednn']:.0f} | {round_trips(e)} |"
            )
    lines += page_fault_lines(report)
    lines += [
        "",
        "| forward (no grad) at (B, 100, 32, 128) | torch ms | ours ms | speed-up | unit split |",
        "|---|---|---|---|---|",
    ]
    for r in report.get("batches", []):
        lines.append(
            f"| B = {r['batch']} | {r['torch_ms']:.3f} | {r['ours_ms']:.3f} | "
            f"{r['speedup']:.2f}x | {'yes' if r['unit_split'] else 'no'} |"
        )
    s = report["streaming"]["step_us"]
    lines += [
        "",
        "| streaming step, batch 1, (I, H) = (32, 128) | µs per step |",
        "|---|---|",
        f"| lstmkit `LSTM.stream().step` (target <= {STEP_TARGET_US:.0f} µs) | {s['ours']:.1f} |",
        f"| torch.nn.LSTM, one step with its state | {s['torch.nn.LSTM']:.1f} |",
        f"| torch.nn.LSTMCell | {s['torch.nn.LSTMCell']:.1f} |",
        "",
        "| shape | peak memory of one fwd+bwd, torch MiB | ours MiB |",
        "|---|---|---|",
    ]
    for r in report["shapes"]:
        mem = r["peak_memory_mib"]
        lines.append(f"| {tuple(r['shape'])} | {mem['torch']:.1f} | {mem['ours']:.1f} |")
    lines += [
        "",
        "Peak memory: growth of the peak resident set (VmHWM) during one forward+backward in a "
        "fresh process, after building the model and input.",
    ]
    return "\n".join(lines) + "\n"


def page_fault_lines(report: dict) -> list[str]:
    """The table of page faults per call, and of the speed-ups without them (empty for a report
    from before they were measured)."""
    shapes = [r for r in report["shapes"] if "page_faults_per_call" in r["train"]["torch"]]
    if not shapes:
        return []
    lines = [
        "",
        f"Page faults, and the same calls in a process with `GLIBC_TUNABLES={NO_FAULTS}` "
        "(glibc's malloc keeps what it frees, so torch's fresh temporaries stop faulting; "
        "medians of interleaved runs there):",
        "",
        "| shape (B, T, I, H) | pass | page faults per call, torch / ours | without them: torch ms "
        "| ours ms | speed-up | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in shapes:
        shape = tuple(r["shape"])
        for mode, label, target in (
            ("forward", "forward", TARGETS[shape][1]),
            ("train", "fwd+bwd", TARGETS[shape][0]),
        ):
            e = r[mode]
            torch_faults, ours_faults = (e[k]["page_faults_per_call"] for k in ("torch", "ours"))
            faults = f"{torch_faults:.0f} / {ours_faults:.0f}"
            tuned = (r.get("no_page_faults") or {}).get(mode)
            if tuned is None:
                lines.append(f"| {shape} | {label} | {faults} | not measured (no glibc) | | | |")
                continue
            t, o = tuned["torch"], tuned["ours"]
            met = "met" if tuned["speedup"] >= target else "missed"
            lines.append(
                f"| {shape} | {label} | {faults} (there: {t['page_faults_per_call']:.0f} / "
                f"{o['page_faults_per_call']:.0f}) | {t['median_ms']:.2f} | {o['median_ms']:.2f} "
                f"| {tuned['speedup']:.2f}x | {target}x ({met}) |"
            )
    return lines


def summary(paths: list[str]) -> str:
    """One row per result file: the speed-up of every shape and pass (repeated runs' spread)."""
    lines = [
        "| run | date | state | " + " | ".join(f"{tuple(s)} fwd | fwd+bwd" for s in SHAPES) + " |",
        "|---|---|---|" + "---|---|" * len(SHAPES),
    ]
    for path in paths:
        report = json.loads(Path(path).read_text())
        by_shape = {tuple(r["shape"]): r for r in report["shapes"]}
        cells = [
            f"{by_shape[s][mode]['speedup']:.2f}x" if s in by_shape else "—"
            for s in SHAPES
            for mode in ("forward", "train")
        ]
        state = report.get("state_before") or {}
        trip = state.get("core_round_trip_ns")
        clock = state.get("clock_ghz")
        figures = [f"{clock:.2f} GHz" if clock else "", f"{trip:.0f} ns" if trip else ""]
        where = ", ".join(f for f in figures if f) or "—"
        lines.append(f"| {path} | {report['date']} | {where} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", default="benchmarks/results/kernels.json", help="JSON path")
    parser.add_argument("--reps", type=int, default=20, help="timed runs per case (fewer for big)")
    parser.add_argument("--memory-child", nargs=5, metavar=("IMPL", "B", "T", "I", "H"))
    parser.add_argument("--no-faults-child", nargs=4, type=int, metavar=("B", "T", "I", "H"))
    parser.add_argument(
        "--summarize", nargs="+", metavar="JSON", help="print the speed-ups of earlier result files"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        print(summary(args.summarize))
        return
    torch.set_num_threads(args.threads)
    if args.memory_child:
        impl, *shape = args.memory_child
        peak_memory_child(impl, [int(v) for v in shape])
        return
    if args.no_faults_child:
        no_faults_child(args.no_faults_child, args.reps)
        return
    reason = kernel_unavailable()
    if reason is not None:
        sys.exit(f"cannot benchmark the kernel: {reason}")
    load_before = wait_for_quiet()
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(args.threads),
        "load_before": [round(v, 2) for v in load_before],
        "state_before": probe(),
        "shapes": [],
    }
    for shape in SHAPES:
        reps = args.reps if shape[0] * shape[3] < 256 * 256 else max(3, args.reps // 4)
        result = bench_shape(shape, reps)
        result["peak_memory_mib"] = peak_memory(shape, args.threads)
        result["no_page_faults"] = without_page_faults(shape, reps, args.threads)
        report["shapes"].append(result)
    report["batches"] = bench_batches(max(20, args.reps * 2))
    report["streaming"] = bench_streaming()
    report["load_after"] = [round(v, 2) for v in os.getloadavg()]
    report["state_after"] = probe()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
