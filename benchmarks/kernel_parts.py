"""Where a small training call's time goes: the C++ kernel's parts against the whole call.

    python benchmarks/kernel_parts.py --threads 2 --out benchmarks/results/kernel_parts.json

At (B, T, I, H) = (1, 1, 32, 128) (a call that is all fixed cost), (1, 100, 32, 128) and
(64, 100, 32, 128) it times, each as the median of many calls in a row on an idle machine
(no interleaving, so each part keeps its weights in cache, unlike ``kernels.py``):

- ours and torch.nn.LSTM: a forward without gradients, a forward with them, and a training call
  (forward, ``out.sum()``, backward); the same three for the layer's C++ autograd node called
  directly (time-major input, no module around it);
- the C++ recurrence alone, forward (saving what backward needs) and backward through time,
  called directly (the forward without writing h' into the weight gradients' operand, which
  a training call's forward loop also does);
- the GEMMs of the layer: the input projection, dx, and the weight gradients as the layer
  computes them (``weight_gradients`` in ``csrc/weights.h``: in float where dW^T takes at most
  512 KiB, on the BRGEMM micro-kernel in chunks of 128 rows, the biases' gradient with them as
  one more row, which the backward loop then leaves out; elsewhere two small products or one
  on oneDNN's matmul).

What the whole call costs beyond the parts is Python, autograd and the module call. Writes JSON
and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import torch
from kernels import machine, wait_for_quiet
from report import median_seconds, short_commit, write_report

from lstmkit.nn import LSTM
from lstmkit.nn.backends.kernel import CELL_KINDS, kernel_unavailable, load_kernel


def median_us(fn, reps: int, warmup: int = 20) -> float:
    return median_seconds(fn, reps, warmup) * 1e6


def parts(batch: int, steps: int, inputs: int, hidden: int, reps: int) -> dict[str, float]:
    """Median µs of each part at this shape."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(inputs, hidden, batch_first=True)
    ours = LSTM.from_torch(theirs, backend="kernel")
    x = torch.randn(batch, steps, inputs)
    xg = x.clone().requires_grad_()

    def no_grad(model):
        def run():
            with torch.no_grad():
                model(x)

        return run

    def train(model):
        def run():
            out, _ = model(xg)
            out.sum().backward()

        return run

    kernel = load_kernel()
    cell = ours.cells[0]
    w_hh = cell.weight_hh.detach()
    bias = (cell.bias_ih + cell.bias_hh).detach()
    xproj = torch.randn(steps, batch, 4 * hidden)
    h0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    out = torch.empty(steps, batch, hidden)
    kind = CELL_KINDS["lstm"]
    # where the layer sums the biases' gradient with the weight gradients (weights.h: float,
    # dW^T and its row of ones within 512 KiB), its backward loop leaves that sum out
    bias_in_product = (inputs + hidden + 1) * 4 * hidden * 4 <= 512 * 1024
    args = (xproj, h0, c0, w_hh, None, None, bias, [], None, False, kind)
    saved = [t for t in kernel.forward(*args, True, out)[2:] if t is not None]
    grad_out = torch.ones(steps, batch, hidden)
    grad_xproj = torch.empty(steps, batch, 4 * hidden)
    flat_x = x.transpose(0, 1).reshape(steps * batch, inputs)
    w_ih = cell.weight_ih.detach()
    grad = torch.randn(steps * batch, 4 * hidden)
    h = torch.randn(steps * batch, hidden)
    xh = torch.cat([flat_x, h], dim=1)
    # the layer's C++ autograd node called directly, time-major, without the module around it
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    x_tm = x.transpose(0, 1).contiguous().requires_grad_()
    h0_1, c0_1 = h0.unsqueeze(0), c0.unsqueeze(0)

    def node():
        return kernel.layer(kind, 1, False, True, True, None, x_tm, h0_1, c0_1, params)

    def node_no_grad():
        with torch.no_grad():
            node()

    def node_train():
        node()[0].sum().backward()

    timed = {
        "ours: forward, no grad": no_grad(ours),
        "torch: forward, no grad": no_grad(theirs),
        "ours: forward with grad": lambda: ours(xg),
        "torch: forward with grad": lambda: theirs(xg),
        "ours: training call": train(ours),
        "torch: training call": train(theirs),
        "ours, the C++ node alone: forward, no grad": node_no_grad,
        "ours, the C++ node alone: forward with grad": node,
        "ours, the C++ node alone: training call": node_train,
        "C++ forward loop (saving)": lambda: kernel.forward(*args, True, out),
        "C++ backward loop": lambda: kernel.backward(
            grad_out,
            None,
            None,
            grad_xproj,
            h0,
            w_hh,
            None,
            None,
            [],
            None,
            False,
            kind,
            not bias_in_product,
            saved,
        ),
        "GEMM: input projection x W_ih^T": lambda: kernel.linear_forward(flat_x, w_ih),
        "GEMM: dx = dz W_ih": lambda: kernel.linear_forward(grad, w_ih.t()),
        "GEMM: dW_ih and dW_hh (and db)": lambda: kernel.weight_gradients(
            grad, xh, inputs, bias_in_product
        ),
    }
    start = time.perf_counter()  # warm every part, and the CPU's clock, before timing any
    while time.perf_counter() - start < 0.5:
        for fn in timed.values():
            fn()
    return {name: median_us(fn, reps) for name, fn in timed.items()}


def markdown(report: dict) -> str:
    lines = [
        "# Where a training call's time goes (CPU)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; commit {report['commit']}; machine: "
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"{report['machine']['threads']} torch threads; torch {report['machine']['torch']}",
        f"- load average before / after: {report['load_before']} / {report['load_after']}",
        "- medians of calls in a row (each part warm in cache); µs",
        "",
        "| part | " + " | ".join(f"(B, T, I, H) = {s}" for s in report["shapes"]) + " |",
        "|---|" + "---|" * len(report["shapes"]),
    ]
    names = list(report["parts"][report["shapes"][0]])
    for name in names:
        cells = [f"{report['parts'][s][name]:.1f}" for s in report["shapes"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for shape in report["shapes"]:
        p = report["parts"][shape]
        inside = p["C++ forward loop (saving)"] + p["C++ backward loop"]
        inside += sum(v for k, v in p.items() if k.startswith("GEMM"))
        ours, theirs = p["ours: training call"], p["torch: training call"]
        lines.append(
            f"- {shape}: ours {ours:.0f} µs, torch {theirs:.0f} µs ({theirs / ours:.2f}x); the C++ "
            f"loops and the layer's GEMMs {inside:.0f} µs, the rest (Python, autograd, the "
            f"module call) {ours - inside:.0f} µs; the C++ node alone "
            f"{p['ours, the C++ node alone: training call']:.0f} µs, so the module's Python "
            f"around it {ours - p['ours, the C++ node alone: training call']:.0f} µs."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel_parts.json"))
    args = parser.parse_args()
    reason = kernel_unavailable()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    torch.set_num_threads(args.threads)
    shapes = [(1, 1, 32, 128), (1, 100, 32, 128), (64, 100, 32, 128)]
    load_before = wait_for_quiet()
    report = {
        "command": "python benchmarks/kernel_parts.py "
        f"--threads {args.threads} --reps {args.reps} --out {args.out}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": short_commit(),
        "machine": machine(args.threads),
        "load_before": load_before,
        "shapes": [str(s) for s in shapes],
        "parts": {str(s): parts(*s, reps=args.reps if s[0] == 1 else 40) for s in shapes},
    }
    report["load_after"] = list(os.getloadavg())
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
