"""What a run reports while it trains: JSONL + TensorBoard logs, and the progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunLogger:
    """JSONL and TensorBoard logs of the main process."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.file = (out / "log.jsonl").open("a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()


def training_progress(enabled: bool) -> Progress:
    """The training progress bar: steps, loss, real tokens per second, elapsed and remaining time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
