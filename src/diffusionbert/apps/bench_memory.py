"""The soak row of ``make bench``: a real training run's resident memory, early and late, must stay flat.

A training process that grows with every step ends in the kernel's OOM killer rather than in a checkpoint.
The run trains a config (the demo's: RADD on E2E, length-bucketed batches of many shapes) for the last of
the measured steps, logging every step (the resident memory before that step's freed memory is handed back);
each measured step reports the peak over the :data:`SOAK_WINDOW` steps up to it, so one batch's length does
not decide the row.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import load_config
from ..errors import ConfigError
from ..training import train
from ..utils.runtime import resident_memory_mb

SOAK_WINDOW = 10
"""Steps whose peak each measured step reports."""

FLAT_TOLERANCE = 0.10
"""How far (relative) the late peaks may lie from the first measured one for memory to count as flat."""


@dataclass(frozen=True)
class SoakPoint:
    """The peak resident memory (MiB) over the :data:`SOAK_WINDOW` steps ending at ``step``."""

    step: int
    rss_mb: float


def bench_memory(
    config: Path, steps: Sequence[int], seed: int = 0, device: str | torch.device | None = None
) -> list[SoakPoint]:
    """Train ``config`` for ``max(steps)`` steps in a scratch folder and read its resident memory at ``steps``
    (each at least :data:`SOAK_WINDOW`, strictly increasing)."""
    if not steps or list(steps) != sorted(set(steps)) or steps[0] < SOAK_WINDOW:
        raise ConfigError(
            f"soak steps {list(steps)} are not valid; allowed: increasing steps of at least {SOAK_WINDOW}"
        )
    if resident_memory_mb() is None:  # before minutes of training, not after
        raise ConfigError("the soak run reads resident memory from /proc/self/statm, which this system lacks")
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        cfg = load_config(
            config,
            [
                f"training.output_dir={scratch}/run",
                f"training.max_steps={steps[-1]}",
                f"training.seed={seed}",
                "training.log_every=1",
                "training.eval_every=0",
                "training.save_every=0",
            ],
        )
        train(cfg, progress=False, device=device)
        lines = (Path(scratch) / "run" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    records = [r for r in map(json.loads, lines) if r.get("rss_mb") is not None and "tokens_per_s" in r]
    points = []
    for step in steps:
        window = [r for r in records if step - SOAK_WINDOW < r["step"] <= step]
        points.append(SoakPoint(step, max(r["rss_mb"] for r in window)))
    return points


def is_flat(points: Sequence[SoakPoint]) -> bool:
    """Every later peak within :data:`FLAT_TOLERANCE` of the first (the first measured step ends warm-up)."""
    first = points[0].rss_mb
    return all(abs(p.rss_mb - first) <= FLAT_TOLERANCE * first for p in points[1:])


def memory_report(points: Sequence[SoakPoint], settings: str) -> str:
    """The soak section of docs/benchmarks.md."""
    first = points[0].rss_mb
    lines = [
        "## Memory over a long training run (soak)",
        "",
        settings,
        "",
        f"| step | resident memory, peak of the {SOAK_WINDOW} steps up to it | against the first |",
        "|---|---|---|",
        *(f"| {p.step} | {p.rss_mb:,.0f} MiB | {p.rss_mb / first - 1:+.1%} |" for p in points),
        "",
        f"Flat within {FLAT_TOLERANCE:.0%} after warm-up: **{'yes' if is_flat(points) else 'no'}**.",
        "",
    ]
    return "\n".join(lines)
