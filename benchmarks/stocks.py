"""Daily stock prices: next-day LSTM forecasts against the random walk, honestly reported.

Six stocks (AAPL, AMZN, GOOGL, JPM, MSFT, XOM; 2013-02-08 .. 2018-02-07, ../shared/data/stocks)
as one global model in long format. Trading days are business days with market holidays
missing, so the loader is told ``freq="B"`` and ``fill="ffill"`` (a holiday repeats the last
close) and reports every fill. The last 250 trading days of each stock are the test part.

The random walk (tomorrow = today) is the naive baseline; MAE skill > 0 would mean the LSTM
beats it. Efficient-market reasoning says it should not by much — this is a worked example of
measuring that, not a trading strategy.

    python benchmarks/stocks.py --data-dir ../shared/data --out benchmarks/results/stocks.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from lstmkit.tasks.forecasting.config import DataConfig, ForecastConfig
from lstmkit.tasks.forecasting.evaluation import evaluate
from lstmkit.tasks.forecasting.forecaster import Forecaster
from lstmkit.tasks.forecasting.models import ModelConfig
from lstmkit.training import EarlyStoppingConfig, OptimConfig, TrainConfig

TICKERS = ("AAPL", "AMZN", "GOOGL", "JPM", "MSFT", "XOM")


def verdict(mae_skill: float) -> str:
    """Say plainly what a skill score means; a 1% edge is within noise for daily prices."""
    if abs(mae_skill) < 0.01:
        return "a tie in practice (less than 1% apart)"
    return "the LSTM beats the random walk" if mae_skill > 0 else "the random walk wins"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--input-len", type=int, default=30)
    parser.add_argument("--test-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stocks.json"))
    args = parser.parse_args()
    folder = args.data_dir / "stocks"
    if not folder.is_dir():
        print(f"skipped: no stock data at {folder} (pass --data-dir pointing at shared/data)")
        return
    torch.set_num_threads(args.threads)
    frame = pd.concat([pd.read_csv(folder / f"{t}_data.csv") for t in TICKERS])
    config = ForecastConfig(
        data=DataConfig(
            time_col="date",
            targets=("close",),
            id_col="Name",
            freq="B",
            fill="ffill",
            input_len=args.input_len,
            horizon=1,
            val_size=125,
            test_size=args.test_size,
            scaler="standard",
        ),
        model=ModelConfig(kind="direct", hidden_size=64, normalization="last"),
        train=TrainConfig(
            max_epochs=args.epochs,
            batch_size=64,
            seed=args.seed,
            optim=OptimConfig(lr=1e-3),
            early_stopping=EarlyStoppingConfig(patience=5),
            progress=sys.stderr.isatty(),
        ),
        loss="mae",
    )
    start = time.perf_counter()
    forecaster = Forecaster(config)
    series = forecaster.load(frame)
    fit = forecaster.fit(series)
    report = evaluate(forecaster, series)
    seconds = time.perf_counter() - start
    model, walk = report["model"], report["naive"]
    skill = report["skill"]["vs_naive"]
    lines = [
        "# Daily stocks: next-day close, LSTM vs random walk",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ",
        f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; torch "
        f"{torch.__version__}; {args.threads} threads; wall time {seconds:.0f} s; "
        f"{fit.steps} steps ({fit.reason})",
        "",
        f"Data notes: {len(series.report)} fill notes (market holidays on the business-day grid)",
        "",
        "| model | MAE ($) | RMSE ($) | sMAPE % | MASE |",
        "|---|---|---|---|---|",
        f"| LSTM (global, 6 stocks) | {model['mae']:.3f} | {model['rmse']:.3f} | "
        f"{model['smape']:.3f} | {model['mase']:.3f} |",
        f"| random walk (naive) | {walk['mae']:.3f} | {walk['rmse']:.3f} | {walk['smape']:.3f} "
        f"| {walk['mase']:.3f} |",
        "",
        f"MAE skill vs random walk: {skill['mae']:+.4f}, MSE skill {skill['mse']:+.4f} "
        f"over {report['windows']} test days: {verdict(skill['mae'])}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"report": report, "fill_notes": series.report, "seconds": seconds, "steps": fit.steps},
            indent=2,
        )
    )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
