"""What the reproduction apps (``reproduce``, ``reproduce_e2e``, ``reproduce_instruct``) share: their plans.

A *plan* is a YAML mapping that describes one reproduction: a base run config and overrides of it for each
model to train, how every model is evaluated (the protocol, the same for each), the rows of the results
table and the paper's claims to check. Each app turns its plan into frozen dataclasses, trains the runs it
names (reusing finished ones, resuming interrupted ones), stores every evaluation next to what it evaluated,
keyed by what it depends on, so that re-running does only what is missing, and writes a markdown results
page whose hand-written discussion survives regeneration. The helpers here are those steps, the same for
every app: reading a plan and finding its entries by name, training named runs, the stored records and their
keys, and the parts of the page the apps have in common.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from ..config import Config
from ..errors import ConfigError
from ..sampling.pipelines import check_trained_decoding
from ..training import train_or_reuse
from ..utils.io import write_json

# ---------------------------------------------------------------------------------------------- the plan


def read_plan(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a plan file (a one-line error when it is missing or not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reproduction plan {path} not found")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"reproduction plan {path} must be a YAML mapping")
    return raw


def build_dataclass(cls: type, raw: Any, where: str) -> Any:
    """A frozen dataclass from a YAML mapping, rejecting unknown keys by name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where} has no key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


_Named = TypeVar("_Named")


def named(items: Sequence[_Named], name: str, kind: str) -> _Named:
    """The item of a plan's list called ``name`` (its ``name`` field), or a one-line error listing them."""
    for item in items:
        if item.name == name:
            return item
    listed = ", ".join(item.name for item in items)
    raise ConfigError(f"{kind} {name!r} is not in the plan; {kind}s: {listed}")


def check_unique(path: Path, kind: str, names: Sequence[str]) -> None:
    """A plan's ``kind`` names must be present and unique."""
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"reproduction plan {path}: {kind} names must be present and unique: {list(names)}")


# ------------------------------------------------------------------------------------ training and records


def check_runs(runs: Sequence[tuple[str, str, Config]]) -> None:
    """Refuse, naming the run, one whose default decoding its model could not decode with
    (:func:`~diffusionbert.sampling.pipelines.check_trained_decoding`): before hours of training."""
    for name, _, cfg in runs:
        try:
            check_trained_decoding(cfg)
        except ConfigError as exc:
            raise ConfigError(f"run {name!r}: {exc}") from None


def train_named(
    runs: list[tuple[str, str, Config]], progress: bool = True, device: str | None = None
) -> None:
    """Train (or reuse, or resume) each ``(name, label, config)`` in order; each run's training wall time
    accumulates in its ``timing.json``. Every run is checked (:func:`check_runs`) before any trains."""
    check_runs(runs)
    for index, (name, label, cfg) in enumerate(runs):
        print(f"[{index + 1}/{len(runs)}] {name}: {label}")
        started = time.perf_counter()
        if train_or_reuse(cfg, progress=progress, device=device):
            timing = Path(cfg.training.output_dir) / "timing.json"
            seconds = time.perf_counter() - started
            previous = json.loads(timing.read_text())["train_seconds"] if timing.is_file() else 0.0
            write_json(timing, {"train_seconds": previous + seconds})


def stored_record(path: Path, key: dict[str, object]) -> dict[str, Any] | None:
    """A stored JSON record if it was computed for ``key``, else None."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("key") == key else None


def written_at(model_dir: Path) -> int | None:
    """When a model directory's weights were written (ns), so a retrained row is evaluated again."""
    weights = model_dir / "model.safetensors"
    return weights.stat().st_mtime_ns if weights.is_file() else None


# ----------------------------------------------------------------------------------------------- the page


def paired_gap(better: tuple[float, ...], worse: tuple[float, ...]) -> float:
    """Mean per-batch bound difference (worse − better) over its standard error: the batches are the same
    sentences with the same draws for both rows, so sentence difficulty cancels."""
    diff = torch.tensor(worse, dtype=torch.float64) - torch.tensor(better, dtype=torch.float64)
    if len(diff) < 2:
        raise ConfigError("a paired comparison needs at least two batches; lower protocol.batch_size")
    return float(diff.mean() / (diff.std() / math.sqrt(len(diff))))


DISCUSSION_START = "<!-- discussion: hand-written, kept when make reproduce regenerates this page -->"
DISCUSSION_END = "<!-- end of discussion -->"


def _preserved_discussion(path: Path) -> str:
    """The hand-written discussion of an existing results page (kept across regenerations)."""
    if not path.is_file():
        return "_(no discussion yet)_\n"
    text = path.read_text(encoding="utf-8")
    start, end = text.find(DISCUSSION_START), text.find(DISCUSSION_END)
    if start < 0 or end < start:
        return "_(no discussion yet)_\n"
    return text[start + len(DISCUSSION_START) : end].strip("\n") + "\n"


def discussion_section(path: Path) -> list[str]:
    """The lines of a results page's discussion: its heading and the hand-written text of the page at
    ``path`` between the markers, kept across regenerations."""
    return ["## Discussion", "", DISCUSSION_START, _preserved_discussion(path).rstrip("\n"), DISCUSSION_END]
