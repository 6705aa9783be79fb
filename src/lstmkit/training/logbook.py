"""Metric rows to ``metrics.csv`` (and TensorBoard when asked), one row per logging event.

The CSV grows a column when a new metric first appears (it is rewritten then, which is rare),
so train rows (loss, grad_norm, lr, ...) and validation rows (val_loss, ...) share one file.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLog:
    def __init__(self, run_dir: Path | None, tensorboard: bool = False) -> None:
        self.path = None if run_dir is None else run_dir / "metrics.csv"
        self.columns: list[str] = ["step", "epoch"]
        self.rows: list[dict[str, Any]] = []
        self.writer = None
        if tensorboard and run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is an optional extra
                raise ValueError(
                    "tensorboard=True needs the tensorboard package: "
                    "pip install 'lstmkit[tensorboard]'"
                ) from err
            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def load_existing(self) -> None:
        """On resume, keep the rows already written (up to the checkpoint's step, trimmed)."""
        if self.path is None or not self.path.exists():
            return
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            self.columns = list(reader.fieldnames or self.columns)
            self.rows = [dict(row) for row in reader]

    def trim_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (written by a run that was then interrupted)."""
        self.rows = [r for r in self.rows if int(float(r["step"])) <= step]
        self._rewrite()

    def write(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "epoch": epoch, **metrics}
        self.rows.append(row)
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        if self.path is None:
            return
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        if self.path is None:
            return
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
