"""One training step of the segment forecaster (SegRNN with an LSTM) at the ETT benchmark's
sizes, three ways: the decoder as it runs (projections once per query and per state, the gate
arithmetic of every pair fused in C++), the same with that arithmetic in PyTorch ops
(broadcast), and every (state, query) pair built out as a row of its own (how SegRNN's code
decodes, and lstmkit's before 2c8692f).

The model is SegRNN's for input length 96 (hidden 512, dropout 0.5, batch 256, 7 channels,
segments of 24 on ETTh and 48 on ETTm); a step is forward, MSE loss, backward and Adam. The
three run in the same process, one after another per case, on random data of the benchmark's
shape.

    python benchmarks/segment_step.py --threads 1 --out benchmarks/results/segment_step.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from report import median_seconds, run_meta, write_report

import lstmkit.tasks.forecasting.decoding as decoding
from lstmkit.tasks.forecasting.models import ModelConfig, SegmentForecaster, Shapes

CASES = [(24, 96), (24, 192), (24, 720), (48, 192)]  # (segment length, horizon)


MODES = ("fused", "broadcast", "rowwise")


def step_seconds(cell: str, segment: int, horizon: int, mode: str, repeats: int) -> float:
    torch.manual_seed(0)
    config = ModelConfig(
        kind="segment", hidden_size=512, segment_len=segment, dropout=0.5, lstm={"cell": cell}
    )
    model = SegmentForecaster(config, Shapes(96, horizon, 7, 0, 0, 0))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    batch = {"past_target": torch.randn(256, 96, 7)}
    target = torch.randn(256, horizon, 7, 1)
    real_layer, real_check = decoding._LSTMLayer, decoding.pair_step_unsupported
    real_pair_step = decoding.pair_step
    fused_calls = []

    def counted_pair_step(*args):
        fused_calls.append(1)
        return real_pair_step(*args)

    def step() -> None:
        optimizer.zero_grad()
        loss = (model(batch) - target).square().mean()
        loss.backward()
        optimizer.step()

    if mode == "rowwise":  # decode_step factors only an lstmkit LSTM: hide the class
        decoding._LSTMLayer = type(None)
    if mode == "broadcast":  # the fused pair step declines: PyTorch ops
        decoding.pair_step_unsupported = lambda *args: "benchmarking the other path"
    decoding.pair_step = counted_pair_step
    try:
        seconds = median_seconds(step, repeats, warmup=1)
    finally:
        decoding._LSTMLayer, decoding.pair_step_unsupported = real_layer, real_check
        decoding.pair_step = real_pair_step
    if bool(fused_calls) != (mode == "fused"):
        raise SystemExit(
            f"{cell}: the {mode} mode did not take its path (fused step calls: {len(fused_calls)})"
        )
    return seconds


def markdown(report: dict) -> str:
    lines = [
        "# Segment forecaster: one training step, three ways to decode",
        "",
        f"`{report['command']}` at {report['commit']}, {report['date']}; {report['machine']}, "
        f"{report['threads']} thread(s), torch {report['torch']}. Median seconds per step "
        f"({report['repeats']} steps after 1 untimed); speed-up = built out / fused.",
        "",
        "| cell | segment | horizon | decoder rows | fused s | broadcast s | built out s "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['cell']} | {r['segment']} | {r['horizon']} | {r['decoder_rows']} | "
            f"{r['fused_s']:.3f} | {r['broadcast_s']:.3f} | {r['rowwise_s']:.3f} | "
            f"{r['rowwise_s'] / r['fused_s']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cells", default="lstm,cifg")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/segment_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for cell in args.cells.split(","):
        for segment, horizon in CASES:
            times = {
                f"{mode}_s": step_seconds(cell, segment, horizon, mode, args.repeats)
                for mode in MODES
            }
            rows.append(
                {
                    "cell": cell,
                    "segment": segment,
                    "horizon": horizon,
                    "decoder_rows": 256 * 7 * horizon // segment,
                }
                | times
            )
    command = (
        f"python benchmarks/segment_step.py --threads {args.threads} "
        f"--repeats {args.repeats} --cells {args.cells}"
    )
    report = run_meta(command, args.threads) | {"repeats": args.repeats, "rows": rows}
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
