"""ETT long-horizon benchmark (protocol: ../shared/BENCHMARKS.md section 2).

Chronological split 12/4/4 months by row index (hourly: train [0, 8640), val [8640, 11520),
test [11520, 14400); x4 for the 15-minute files), each channel z-scored with training
statistics, all 7 channels forecast, MSE and MAE on the normalised values over every test
window (stride 1), input length 96, horizons 96/192/336/720. Our model: the segment-wise LSTM
(SegRNN design with an LSTM cell), channel-independent.

    python benchmarks/ett.py --data-dir ../shared/data --datasets ETTh1 --horizons 96 \
        --out benchmarks/results/ett.json

Prints our MSE/MAE beside SegRNN, PatchTST and DLinear, and writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from lstmkit.tasks.forecasting import models as forecast_models
from lstmkit.tasks.forecasting.config import DataConfig, ForecastConfig
from lstmkit.tasks.forecasting.evaluation import evaluate
from lstmkit.tasks.forecasting.forecaster import Forecaster
from lstmkit.tasks.forecasting.models import ModelConfig
from lstmkit.training import EarlyStoppingConfig, OptimConfig, ScheduleConfig, TrainConfig

HORIZONS = (96, 192, 336, 720)
# MSE / MAE references (SegRNN README; PatchTST and DLinear columns from the iTransformer paper)
REFERENCE_MSE = {
    "ETTh1": {
        "SegRNN": (0.368, 0.408, 0.444, 0.446),
        "PatchTST": (0.414, 0.460, 0.501, 0.500),
        "DLinear": (0.386, 0.437, 0.481, 0.519),
    },
    "ETTh2": {
        "SegRNN": (0.278, 0.359, 0.421, 0.432),
        "PatchTST": (0.302, 0.388, 0.426, 0.431),
        "DLinear": (0.333, 0.477, 0.594, 0.831),
    },
    "ETTm1": {
        "SegRNN": (0.330, 0.369, 0.399, 0.454),
        "PatchTST": (0.329, 0.367, 0.399, 0.454),
        "DLinear": (0.345, 0.380, 0.413, 0.474),
    },
    "ETTm2": {
        "SegRNN": (0.173, 0.237, 0.296, 0.389),
        "PatchTST": (0.175, 0.241, 0.305, 0.402),
        "DLinear": (0.193, 0.284, 0.369, 0.554),
    },
}
MODELS = ("SegRNN", "PatchTST", "DLinear")
CHANNELS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
# SegRNN's own settings for input length 96 (its scripts/SegRNN/Lookback_96/*.sh): segment
# length and Adam learning rate per dataset; everywhere hidden 512, dropout 0.5, batch 256,
# 30 epochs, patience 10, and the full rate for 4 epochs, then x0.8 a epoch (its "type3"
# schedule). We run the same recipe with an LSTM cell where SegRNN has a GRU. (The earlier
# benchmarks/results/ett.json held the full rate for 3 epochs: --hold-epochs 3.)
SEGRNN_RECIPE = {
    "ETTh1": {"segment_len": 24, "lr": 1e-3},
    "ETTh2": {"segment_len": 24, "lr": 2e-4},
    "ETTm1": {"segment_len": 48, "lr": 2e-4},
    "ETTm2": {"segment_len": 48, "lr": 1e-4},
}


def split_sizes(name: str) -> tuple[int, int, int]:
    """(train, val, test) rows of the standard split."""
    k = 4 if name.startswith("ETTm") else 1
    return 8640 * k, 2880 * k, 2880 * k


class GRUEncoder(torch.nn.Module):
    """torch.nn.GRU behind lstmkit.nn.LSTM's call signature (a state (h, c) in and out, c a copy
    of h): the segment model with SegRNN's own cell, for ``--rnn gru`` only, a diagnostic of how
    much of a gap to SegRNN is the cell rather than the rest of the pipeline."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **options):
        super().__init__()
        if options:
            raise ValueError(f"--rnn gru takes no LSTM options, got {sorted(options)}")
        self.gru = torch.nn.GRU(input_size, hidden_size, num_layers, batch_first=True)

    def forward(self, x, state=None):
        out, h = self.gru(x, None if state is None else state[0].contiguous())
        return out, (h, h)


def learning_rates(name: str, args: argparse.Namespace) -> list[float]:
    """The rates to try on ``name``: ``--lr-grid``, else ``--lr``, else SegRNN's."""
    if args.lr_grid:
        return [float(v) for v in args.lr_grid.split(",")]
    return [args.lr or SEGRNN_RECIPE[name]["lr"]]


def lstm_options(args: argparse.Namespace) -> dict:
    """The LSTM options that differ from lstmkit's defaults (none for ``--rnn gru``)."""
    options = {"cell": args.cell, "forget_bias": args.forget_bias}
    defaults = {"cell": "lstm", "forget_bias": 1.0}
    changed = {k: v for k, v in options.items() if v != defaults[k]}
    if changed and args.rnn == "gru":
        raise SystemExit(f"--rnn gru takes no LSTM options, got {sorted(changed)}")
    return changed


def run_cell(path: Path, name: str, horizon: int, lr: float, args: argparse.Namespace) -> dict:
    """Train one model on one cell; its validation loss (best epoch) and test MSE / MAE."""
    train_rows, val_rows, test_rows = split_sizes(name)
    segment_len = args.segment_len or SEGRNN_RECIPE[name]["segment_len"]
    # optimiser steps per epoch: full batches of the stride-1 training windows
    windows = (train_rows - 96 - horizon) // args.stride + 1
    epoch_steps = windows // args.batch_size  # full batches only (the loader drops the rest)
    frame = pd.read_csv(path).iloc[: train_rows + val_rows + test_rows]  # tail rows unused
    config = ForecastConfig(
        data=DataConfig(
            time_col="date",
            targets=tuple(CHANNELS),
            input_len=96,
            horizon=horizon,
            val_size=val_rows,
            test_size=test_rows,
            scaler="standard",
            stride=args.stride,
        ),
        model=ModelConfig(
            kind="segment",
            hidden_size=args.hidden,
            segment_len=segment_len,
            dropout=args.dropout,
            normalization=args.normalization,
            lstm=lstm_options(args),
        ),
        train=TrainConfig(
            max_epochs=args.epochs,
            max_steps=args.max_steps,
            max_seconds=args.max_seconds,
            device=args.device,
            num_workers=args.workers,
            batch_size=args.batch_size,
            seed=args.seed,
            clip_norm=None,
            ema_decay=args.ema_decay,
            optim=OptimConfig(lr=lr),
            schedule=ScheduleConfig(
                name="step",
                step_size=max(1, epoch_steps),
                gamma=args.lr_decay,
                step_delay=max(0, args.hold_epochs - 1) * epoch_steps,  # 1st decay after hold
            ),
            early_stopping=EarlyStoppingConfig(patience=args.patience),
            progress=sys.stderr.isatty(),
        ),
        loss="mse",
    )
    start = time.perf_counter()
    forecaster = Forecaster(config)
    fit = forecaster.fit(frame)
    report = evaluate(forecaster, frame, scaled=True)
    return {
        "dataset": name,
        "horizon": horizon,
        "mse": report["model"]["mse"],
        "mae": report["model"]["mae"],
        "val_loss": fit.best_metric,
        "windows": report["windows"],
        "epochs": fit.epochs,
        "steps": fit.steps,
        "stopped": fit.reason,
        "segment_len": segment_len,
        "lr": lr,
        "seconds": time.perf_counter() - start,
    }


def markdown(rows: list[dict], runs: list[dict]) -> str:
    lines = ["# ETT long-horizon benchmark (input length 96, normalised MSE / MAE)", ""]
    for meta in runs:
        lines += [
            f"Command: `{meta['command']}`  ",
            f"Machine: {meta['machine']}, {meta['threads']} threads, torch {meta['torch']}; "
            f"date {meta['date']}; commit {meta['commit']}"
            + (f"; {meta['note']}" if meta.get("note") else ""),
            "",
        ]
    lines += [
        "Each row is the run with the lowest validation loss among the learning rates tried "
        "on that cell (all runs are listed below the table).",
        "",
        "| dataset | horizon | lstmkit MSE | lstmkit MAE | SegRNN MSE | PatchTST MSE | "
        "DLinear MSE | lr | epochs | wall time (s) | where |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        refs = REFERENCE_MSE[r["dataset"]]
        i = HORIZONS.index(r["horizon"])
        lines.append(
            f"| {r['dataset']} | {r['horizon']} | {r['mse']:.3f} | {r['mae']:.3f} | "
            f"{refs['SegRNN'][i]:.3f} | {refs['PatchTST'][i]:.3f} | "
            f"{refs['DLinear'][i]:.3f} | {r['lr']:g} | {r['epochs']} | {r['seconds']:.0f} | "
            f"{r['where']} |"
        )
    mse = {"lstmkit": sum(r["mse"] for r in rows) / max(1, len(rows))}
    if len(rows) == len(REFERENCE_MSE) * len(HORIZONS):
        refs = {m: sum(sum(v[m]) for v in REFERENCE_MSE.values()) / len(rows) for m in MODELS}
        lines += [
            "",
            f"Average MSE over the 16 cells: lstmkit {mse['lstmkit']:.4f}, "
            + ", ".join(f"{m} {v:.4f}" for m, v in refs.items())
            + f"; average MAE: lstmkit {sum(r['mae'] for r in rows) / len(rows):.4f}.",
        ]
    lines += [
        "",
        "All runs (validation loss = the best epoch's MSE on the validation windows):",
        "",
        "| dataset | horizon | lr | validation loss | test MSE | test MAE | epochs | where |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for c in sorted(r["candidates"], key=lambda c: -c["lr"]):
            lines.append(
                f"| {c['dataset']} | {c['horizon']} | {c['lr']:g} | {c['val_loss']:.4f} | "
                f"{c['mse']:.4f} | {c['mae']:.4f} | {c['epochs']} | {c['where']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--datasets", default="ETTh1,ETTh2,ETTm1,ETTm2")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument(
        "--cells", default="", help="explicit run order, e.g. ETTh1:96,ETTh2:96 (overrides both)"
    )
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--normalization", default="last")
    parser.add_argument(
        "--rnn",
        choices=["lstm", "gru"],
        default="lstm",
        help="gru: torch.nn.GRU in place of lstmkit's LSTM (SegRNN's cell; a diagnostic)",
    )
    parser.add_argument(
        "--cell", default="lstm", help="lstmkit's LSTM cell: lstm, peephole, layernorm or cifg"
    )
    parser.add_argument(
        "--forget-bias", type=float, default=1.0, help="forget-gate bias at init (lstmkit's 1.0)"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=0, help="optimiser steps cap (0: none)")
    parser.add_argument(
        "--max-seconds", type=float, default=0.0, help="training time cap per cell (0: none)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.0, help="0: SegRNN's rate per dataset")
    parser.add_argument(
        "--lr-grid",
        default="",
        help="rates to try per cell, comma-separated; the lowest validation loss is reported",
    )
    parser.add_argument(
        "--segment-len", type=int, default=0, help="0: SegRNN's segment length per dataset"
    )
    parser.add_argument("--lr-decay", type=float, default=0.8, help="lr factor per epoch")
    parser.add_argument("--hold-epochs", type=int, default=4, help="epochs at the full lr")
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="validate a moving average of the weights"
    )
    parser.add_argument("--stride", type=int, default=1, help="between training windows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ett.json"))
    parser.add_argument(
        "--append",
        action="store_true",
        help="add these cells to the rows already in --out (same settings)",
    )
    args = parser.parse_args()

    ett = args.data_dir / "ett"
    if not ett.is_dir():
        print(f"skipped: no ETT data at {ett} (pass --data-dir pointing at shared/data)")
        return
    torch.set_num_threads(args.threads)
    if args.rnn == "gru":  # the segment model builds its encoder through this name
        forecast_models.LSTM = GRUEncoder
    meta = run_meta(args)
    previous = json.loads(args.out.read_text()) if args.append and args.out.exists() else None
    runs: list[dict] = []
    table = "no cells to run"
    for name, horizon in cells(args):
        ref = REFERENCE_MSE[name]["SegRNN"][HORIZONS.index(horizon)]
        for lr in learning_rates(name, args):
            run = run_cell(ett / f"{name}.csv", name, horizon, lr, args)
            runs.append(run | {"where": meta["where"]})
            print(
                f"{name} H={horizon} lr={lr:g}: validation {run['val_loss']:.4f}, "
                f"MSE {run['mse']:.3f} (SegRNN {ref:.3f}), MAE {run['mae']:.3f}, "
                f"{run['epochs']} epochs, {run['seconds']:.0f} s",
                flush=True,
            )
            table = save(runs, meta, previous, args.out)  # after every run: a cut-off keeps them
    print(table)


def cells(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(dataset, horizon) pairs in run order: ``--cells`` if given, else datasets x horizons."""
    if args.cells:
        pairs = [c.split(":") for c in args.cells.split(",")]
        return [(name, int(h)) for name, h in pairs]
    return [(name, int(h)) for name in args.datasets.split(",") for h in args.horizons.split(",")]


def run_meta(args: argparse.Namespace) -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    gpu = args.device != "cpu" and torch.cuda.is_available()
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": torch.cuda.get_device_name() if gpu else cpu,
        "where": torch.cuda.get_device_name() if gpu else f"CPU, {args.threads} thread(s)",
        "threads": args.threads,
        "torch": torch.__version__,
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: str(v) for k, v in vars(args).items()},
        **(
            {"note": "diagnostic: torch.nn.GRU (SegRNN's cell) in place of the LSTM"}
            if args.rnn == "gru"
            else {}
        ),
    }


def save(runs: list[dict], meta: dict, previous: dict | None, out: Path) -> str:
    """Write JSON and Markdown: one row per cell, the run with the lowest validation loss.

    Each row keeps every run of its cell under ``candidates``; with ``--append`` the runs
    already in ``out`` stay candidates, except those this run repeats (same lr).
    """
    by_cell: dict[tuple[str, int], list[dict]] = {}
    for row in previous["rows"] if previous is not None else []:
        if "candidates" not in row:
            raise ValueError(
                f"{out} was written by an older version of this script (its rows have no "
                "validation loss per run to choose by); write to a new --out file instead"
            )
        for run in row["candidates"]:
            by_cell.setdefault((row["dataset"], row["horizon"]), []).append(run)
    for run in runs:
        old = by_cell.setdefault((run["dataset"], run["horizon"]), [])
        old[:] = [r for r in old if not math.isclose(r["lr"], run["lr"])] + [run]
    rows = []
    for cell in sorted(by_cell, key=lambda c: (list(REFERENCE_MSE).index(c[0]), c[1])):
        candidates = [{k: v for k, v in r.items() if k != "candidates"} for r in by_cell[cell]]
        best = min(candidates, key=lambda r: r["val_loss"])
        rows.append(best | {"candidates": candidates})
    history = [] if previous is None else previous.get("runs", [previous.get("meta")])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "runs": [*history, meta], "rows": rows}, indent=2))
    table = markdown(rows, [*history, meta])
    out.with_suffix(".md").write_text(table)
    return table


if __name__ == "__main__":
    main()
