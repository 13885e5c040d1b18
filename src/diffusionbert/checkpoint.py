"""Checkpoints as safetensors + JSON, written atomically, loaded without unpickling.

A model directory (``final/`` or ``checkpoints/step-N/model``) is a Hugging Face directory (config.json,
model.safetensors, tokenizer files) plus ``diffusion.json`` (the objective and schedule settings) and, for
the spindle schedule, ``token_counts.safetensors``: everything the sampler and evaluator need.
A training checkpoint adds optimizer, LR scheduler, EMA, RNG and data-position state for exact resume.
Every directory is written under a temporary name and renamed into place, so a crash or a full disk never
leaves a half-written checkpoint, and earlier ones are untouched.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .config import DiffusionConfig, ModelConfig, config_from_dict
from .errors import CheckpointError
from .methods import Method, get_method
from .models.loading import load_tokenizer, load_weights
from .utils.io import atomic_directory, read_json, read_tensors, save_state, write_json

DIFFUSION_FILE = "diffusion.json"
COUNTS_FILE = "token_counts.safetensors"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def save_model_dir(
    directory: Path,
    model: Any,
    tokenizer: Any,
    model_cfg: ModelConfig,
    diffusion_cfg: DiffusionConfig,
    token_counts: torch.Tensor | None,
) -> None:
    """Fill ``directory`` (already created) with a self-contained model directory."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    write_json(directory / DIFFUSION_FILE, {"model": asdict(model_cfg), "diffusion": asdict(diffusion_cfg)})
    if token_counts is not None:
        save_file({"counts": token_counts.contiguous()}, str(directory / COUNTS_FILE))


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints, oldest first (temporary directories are never listed)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints_dir.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(checkpoints_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints, and stale temporaries of crashed writes."""
    for _, path in list_checkpoints(checkpoints_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for path in checkpoints_dir.glob(".step-*"):
        shutil.rmtree(path, ignore_errors=True)


def save_training_checkpoint(
    checkpoints_dir: Path,
    step: int,
    write_model: Callable[[Path], None],
    states: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write ``step-N`` with the model directory and named states, atomically, then prune old ones."""
    target = checkpoints_dir / f"step-{step:07d}"
    with atomic_directory(target) as tmp:
        (tmp / "model").mkdir()
        write_model(tmp / "model")
        for name, state in states.items():
            save_state(tmp, name, state)
    prune_checkpoints(checkpoints_dir, keep_last)
    return target


@dataclass(frozen=True)
class LoadedModel:
    """A model directory loaded for sampling or evaluation."""

    directory: Path
    model: Any
    tokenizer: Any
    model_cfg: ModelConfig
    diffusion_cfg: DiffusionConfig
    token_counts: torch.Tensor | None

    @property
    def method(self) -> Method:
        """The registry entry of the model's method (``diffusion.objective``)."""
        return get_method(self.diffusion_cfg.objective)


def load_model_dir(directory: str | Path, device: torch.device | str | None = None) -> LoadedModel:
    """Load a model directory written by :func:`save_model_dir` (``final/`` or a step checkpoint).

    A training run's directory (with ``final/``) or a step checkpoint (with ``model/``) is accepted too.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    for sub in ("final", "model"):
        if not (directory / DIFFUSION_FILE).exists() and (directory / sub / DIFFUSION_FILE).exists():
            directory = directory / sub
    meta = read_json(directory / DIFFUSION_FILE)
    try:
        cfg = config_from_dict({"model": meta["model"], "diffusion": meta["diffusion"]})
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint file {directory / DIFFUSION_FILE} is corrupt: missing {exc}"
        ) from None
    counts = read_tensors(directory / COUNTS_FILE)["counts"] if (directory / COUNTS_FILE).exists() else None
    model_class = get_method(cfg.diffusion.objective).model
    _check_model_type(directory, cfg.diffusion.objective, model_class.config_class.model_type)
    try:
        model = load_weights(model_class, directory, dtype=torch.float32)
        tokenizer = load_tokenizer(directory)
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(
            f"checkpoint {directory} could not be loaded: {str(exc).splitlines()[0]}"
        ) from None
    if device is not None:
        model.to(device)
    model.eval()
    return LoadedModel(directory, model, tokenizer, cfg.model, cfg.diffusion, counts)


def _check_model_type(directory: Path, objective: str, expected: str) -> None:
    """Refuse a directory whose config.json holds another kind of model than its method's."""
    found = read_json(directory / "config.json").get("model_type")
    if found != expected:
        raise CheckpointError(
            f"checkpoint {directory} holds a {found!r} model, but its {DIFFUSION_FILE} names objective "
            f"{objective!r}, whose model is {expected!r}"
        )
