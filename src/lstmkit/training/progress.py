"""A progress bar with loss, metric and throughput — only on a terminal, and only when asked."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, enabled: bool, total: int | None, description: str = "training") -> None:
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(description, total=total, info="")

    def update(self, completed: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
