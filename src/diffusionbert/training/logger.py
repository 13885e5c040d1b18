"""What a run reports while it trains: JSONL + TensorBoard logs, and the progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..utils.io import atomic_file


class RunLogger:
    """JSONL and TensorBoard logs of the main process."""

    def __init__(self, out: Path, enabled: bool, resumed_at: int | None = None) -> None:
        """Append to ``out/log.jsonl``; a run resumed at step ``resumed_at`` first drops the records of the
        steps after it (written before the interruption, and about to be trained again), so the log holds
        each step once."""
        self.enabled = enabled
        path = out / "log.jsonl"
        if enabled and resumed_at is not None and path.is_file():
            kept = [
                line for line in path.read_text(encoding="utf-8").splitlines() if _step(line) <= resumed_at
            ]
            atomic_file(
                path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
            )
        self.file = path.open("a", encoding="utf-8") if enabled else None
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


def _step(line: str) -> float:
    """The step of a log line (an unreadable line, left by a kill mid-write, counts as past every step)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


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
