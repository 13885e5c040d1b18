"""Stopping a run cleanly when it is asked to: SIGTERM (what SLURM, Kubernetes and ``timeout`` send before they
kill) or Ctrl-C.

While :class:`StopRequests` is installed, those signals only set a flag; the loop reads it at the next step
boundary, writes a checkpoint there and ends with :class:`~diffusionbert.errors.RunStopped`, whose message says
how to resume (and whose exit code is the shell's for the signal: 143, 130). With several processes the flag is
agreed on by all of them (one stops only when one of them was asked), so they stop at the same step and
write one checkpoint. A second Ctrl-C while the checkpoint is written is a plain KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch
from accelerate import Accelerator

SIGNALS = {signal.SIGTERM: ("SIGTERM", 143), signal.SIGINT: ("Ctrl-C", 130)}
"""The signals that stop a run at its next step, their names in messages and their exit codes."""


class StopRequests:
    """Install with ``with StopRequests() as stop:``; ``stop.requested`` names the first signal that came."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.requested = self.requested or number

    def agreed(self, accelerator: Accelerator) -> int | None:
        """The signal any of the run's processes was asked to stop by (the same answer in every process)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([self.requested or 0], device=accelerator.device)
        return int(accelerator.reduce(flag, reduction="max")[0]) or None
