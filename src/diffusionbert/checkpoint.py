"""Checkpoints as safetensors + JSON, written atomically, loaded without unpickling.

A model directory (``final/`` or ``checkpoints/step-N/model``) is a Hugging Face directory (config.json,
model.safetensors, tokenizer files) plus ``diffusion.json`` (the model and objective settings, and what data
the model was trained on: plain texts or source/target pairs), ``decoding.json`` (the model's default
decoding: the run's ``sampling:`` section, like transformers' ``generation_config.json``; a directory
without one decodes with the library's defaults) and, for the spindle schedule,
``token_counts.safetensors``: everything the sampler and evaluator need.
A training checkpoint adds optimizer, LR scheduler, EMA, RNG and data-position state for exact resume, and
the run's whole config (``run_config.json``), which a resumed run is checked against.
Every directory is written under a temporary name and renamed into place, so a crash or a full disk never
leaves a half-written checkpoint, and earlier ones are untouched.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import Config, DecodingConfig, DiffusionConfig, ModelConfig, config_from_dict
from .diffusion.self_prompt import SelfPrompt, self_prompt_layout
from .errors import CheckpointError, ConfigError, first_line
from .methods import Method, get_method
from .models.loading import check_no_code, load_tokenizer, load_weights
from .utils.io import (
    atomic_directory,
    read_json,
    read_tensors,
    remove_temporaries,
    save_state,
    write_json,
)

DIFFUSION_FILE = "diffusion.json"
DECODING_FILE = "decoding.json"
COUNTS_FILE = "token_counts.safetensors"
RUN_CONFIG_FILE = "run_config.json"
TRAINING_STATES = ("trainer", "optimizer", "scheduler", "rng")
"""The states every training checkpoint holds (``name.safetensors`` + ``name.json``; ``ema`` when EMA is on)."""
_STEP_DIR = re.compile(r"^step-(\d+)$")
_DATA_KEYS: dict[str, tuple[type, ...]] = {
    "pairs": (bool,),
    "format": (str,),
    "max_length": (int,),
    "target_window": (int,),
    "source_dropout": (int, float),
    "self_prompt": (int, float),
    "source_length": (int,),
}
"""What ``diffusion.json`` records of a model's data, and the type of each."""


def save_model_dir(
    directory: Path,
    model: Any,
    tokenizer: Any,
    cfg: Config,
    token_counts: torch.Tensor | None,
    source_length: int | None = None,
) -> None:
    """Fill ``directory`` (already created) with a self-contained model directory of a run of ``cfg``;
    ``source_length`` is a pair model's mean source length in training (tokens)."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    data = {
        "pairs": cfg.data.pairs,
        "format": cfg.data.format,
        "layout": cfg.data.layout,
        "max_length": cfg.data.max_length,
        "target_window": cfg.data.target_window,
        "source_dropout": cfg.training.source_dropout,
        "self_prompt": cfg.training.self_prompt,
        "source_length": source_length,
    }
    write_json(
        directory / DIFFUSION_FILE,
        {"model": asdict(cfg.model), "diffusion": asdict(cfg.diffusion), "data": data},
        sort_keys=True,
    )
    save_decoding(directory, cfg.sampling)
    if token_counts is not None:
        save_file({"counts": token_counts.contiguous()}, str(directory / COUNTS_FILE))


def save_decoding(directory: Path, decoding: DecodingConfig) -> bool:
    """Write a model directory's default decoding (``decoding.json``) atomically, unless it already holds
    exactly that; True when it was written."""
    path = directory / DECODING_FILE
    if path.is_file() and read_json(path) == decoding.to_dict():
        return False
    write_json(path, decoding.to_dict(), sort_keys=True)
    return True


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
    remove_temporaries(checkpoints_dir)


def save_training_checkpoint(
    checkpoints_dir: Path,
    step: int,
    write_model: Callable[[Path], None],
    states: dict[str, Any],
    cfg: Config,
    keep_last: int,
) -> Path:
    """Write ``step-N`` with the model directory, named states and run config, atomically; prune old ones."""
    target = checkpoints_dir / f"step-{step:07d}"
    with atomic_directory(target) as tmp:
        (tmp / "model").mkdir()
        write_model(tmp / "model")
        for name, state in states.items():
            save_state(tmp, name, state)
        write_json(tmp / RUN_CONFIG_FILE, cfg.to_dict(), sort_keys=True)
    prune_checkpoints(checkpoints_dir, keep_last)
    return target


def checkpoint_problem(directory: Path) -> str | None:
    """Why the training checkpoint ``directory`` cannot be resumed from, or None when it can.

    Checks that every file a resume reads is there, every JSON file parses and every safetensors file has a
    whole header and as many bytes as the header announces (what a killed write or a truncated copy breaks).
    """
    required = [f"{name}.{ext}" for name in TRAINING_STATES for ext in ("json", "safetensors")]
    required += [f"model/{name}" for name in ("config.json", DIFFUSION_FILE, "model.safetensors")]
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory)
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
        except (OSError, ValueError, SafetensorError) as exc:
            return f"{name} is corrupt ({first_line(exc)})"
    return None


@dataclass(frozen=True)
class LoadedModel:
    """A model directory loaded for sampling or evaluation."""

    directory: Path
    model: Any
    tokenizer: Any
    model_cfg: ModelConfig
    diffusion_cfg: DiffusionConfig
    token_counts: torch.Tensor | None
    trained_on_pairs: bool | None = None
    """True: trained on source/target pairs; False: on plain texts; None: not recorded (older directories)."""
    target_window: int | None = None
    """The target positions a pair model was trained with (``data.target_window``), if fixed."""
    source_dropout: float | None = None
    """How often its source was hidden in training (``training.source_dropout``); None: not recorded."""
    self_prompt: SelfPrompt | None = None
    """The self-prompt layout its network reads (trained with ``training.self_prompt`` > 0), else None."""
    source_length: int | None = None
    """A pair model's mean source length in training (tokens); None: plain texts or not recorded."""
    max_length: int | None = None
    """The longest sequence it was trained on (``data.max_length``); None: not recorded."""
    chat: bool = False
    """Trained on chat records (``data.format: chat``): its sources are conversations rendered by its
    tokenizer's chat template."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Its default decoding (``decoding.json``; the library's defaults where the directory has none)."""

    @property
    def method(self) -> Method:
        """The registry entry of the model's method (``diffusion.objective``)."""
        return get_method(self.diffusion_cfg.objective)


def load_model_dir(directory: str | Path, device: torch.device | str | None = None) -> LoadedModel:
    """Load a model directory written by :func:`save_model_dir` (``final/`` or a step checkpoint).

    A training run's directory (with ``final/``) or a step checkpoint (with ``model/``) is accepted too.
    """
    directory = Path(directory)
    if directory.is_file():
        raise CheckpointError(
            f"checkpoint {directory} is a file; allowed: a model directory (a run's final/ or a checkpoint)"
        )
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    for sub in ("final", "model"):
        if not (directory / DIFFUSION_FILE).exists() and (directory / sub / DIFFUSION_FILE).exists():
            directory = directory / sub
    if not (directory / DIFFUSION_FILE).exists() and (directory / "config.json").is_file():
        raise CheckpointError(
            f"{directory} is a plain Hugging Face model directory (no {DIFFUSION_FILE}), not a trained "
            f"diffusionbert model; allowed: a run's final/ or a checkpoint (to train one from it: "
            f"model.backbone={directory})"
        )
    check_no_code(directory)  # links out of it, devices, pickle shards: refused before anything is read
    meta = read_json(directory / DIFFUSION_FILE)
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint file {directory / DIFFUSION_FILE} is corrupt: expected a JSON object, got "
            f"{type(meta).__name__}"
        )
    try:
        cfg = config_from_dict({"model": meta["model"], "diffusion": meta["diffusion"]})
        model_class = get_method(cfg.diffusion.objective).model
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint file {directory / DIFFUSION_FILE} is corrupt: missing {exc}"
        ) from None
    except ConfigError as exc:  # a value of the wrong type or an unknown name: say which file holds it
        raise CheckpointError(f"checkpoint file {directory / DIFFUSION_FILE}: {exc}") from None
    counts = read_tensors(directory / COUNTS_FILE)["counts"] if (directory / COUNTS_FILE).exists() else None
    _check_model_type(directory, cfg.diffusion.objective, model_class.config_class.model_type)
    model = load_weights(model_class, directory, dtype=torch.float32)
    tokenizer = load_tokenizer(directory)
    if device is not None:
        model.to(device)
    model.eval()
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    for key, kinds in _DATA_KEYS.items():
        if data.get(key) is not None and (
            not isinstance(data[key], kinds) or isinstance(data[key], bool) != (bool in kinds)
        ):
            raise CheckpointError(
                f"checkpoint file {directory / DIFFUSION_FILE}: data.{key}={data[key]!r} is not valid; expected "
                f"{' or '.join(kind.__name__ for kind in kinds)}"
            )
    decoding = DecodingConfig()
    if (directory / DECODING_FILE).is_file():
        try:
            decoding = DecodingConfig.from_dict(
                read_json(directory / DECODING_FILE), str(directory / DECODING_FILE)
            )
        except ConfigError as exc:  # the message names the file and the option
            raise CheckpointError(str(exc)) from None
    return LoadedModel(
        directory,
        model,
        tokenizer,
        cfg.model,
        cfg.diffusion,
        counts,
        data.get("pairs"),
        data.get("target_window"),
        data.get("source_dropout"),
        self_prompt_layout(tokenizer) if data.get("self_prompt") else None,
        data.get("source_length"),
        data.get("max_length"),
        data.get("format") == "chat",
        decoding,
    )


def load_initial_model(cfg: Config) -> tuple[Any, Any]:
    """The network and tokenizer a run starts from when ``model.init_from`` names a trained model directory
    (the second stage of a recipe). Its weights are all trained by now, so none counts as newly created (no
    head learning rate); its method, time design and blocks must be the run's, as the weights fit no other.
    Its source attention is the run's (a second stage on pairs may isolate its source: the same weights, a
    mask that keeps the source from reading the answer).

    Raises:
        CheckpointError: not a trained model directory (see :func:`load_model_dir`).
        ConfigError: it holds another method's model, or another time design.
    """
    directory = cfg.model.init_from
    assert directory is not None  # the caller checks; narrows the type
    loaded = load_model_dir(directory)
    blocks = getattr(loaded.model.config, "block_size", None)
    for option, wanted, found in (
        ("diffusion.objective", cfg.diffusion.objective, loaded.diffusion_cfg.objective),
        ("model.time_conditioning", cfg.model.time_conditioning, loaded.model_cfg.time_conditioning),
        ("diffusion.block_size", cfg.diffusion.block_size if blocks is not None else None, blocks),
    ):
        if wanted != found:
            raise ConfigError(
                f"model.init_from={directory} holds a model with {option}={found!r} but this run has "
                f"{option}={wanted!r}; allowed: the same {option} as the model it starts from"
            )
    if cfg.model.source_attention != loaded.model_cfg.source_attention:
        loaded.model.config.sep_token_id = loaded.tokenizer.sep_token_id  # where a source ends
        loaded.model.config.source_attention = cfg.model.source_attention
    loaded.model.config.new_parameter_names = []
    loaded.model.train()
    return loaded.model, loaded.tokenizer


def _check_model_type(directory: Path, objective: str, expected: str) -> None:
    """Refuse a directory whose config.json holds another kind of model than its method's."""
    config = read_json(directory / "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(
            f"checkpoint file {directory / 'config.json'} is corrupt: expected a JSON object, got "
            f"{type(config).__name__}"
        )
    found = config.get("model_type")
    if found != expected:
        raise CheckpointError(
            f"checkpoint {directory} holds a {found!r} model, but its {DIFFUSION_FILE} names objective "
            f"{objective!r}, whose model is {expected!r}"
        )
