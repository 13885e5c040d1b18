"""Writing a run's checkpoints and its final model, and restoring a run from one of its checkpoints.

The files' layout is :mod:`diffusionbert.checkpoint`'s; this module fills it from the trainer's objects and
puts a checkpoint back into them: weights, optimizer, LR schedule, EMA, the RNG streams of every process and
the data position (:mod:`.state`). When the model is sharded (:mod:`.sharding`) the states are gathered whole
first, so every process takes part in a write and the main process writes the files. Kept apart from the loop
(:mod:`.trainer`), which only says when to write.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..checkpoint import list_checkpoints, save_model_dir, save_training_checkpoint
from ..config import Config
from ..data import PackedStream, ResumableDataLoader
from ..errors import ConfigError
from ..methods import get_method
from ..utils.io import atomic_directory, load_state
from .sharding import (
    full_model_state,
    full_optimizer_state,
    full_tensor,
    is_sharded,
    load_full_optimizer_state,
    shard_like,
)
from .state import EMA, TrainerState, copy_weights, restore_rng_states, rng_states


class RunCheckpoints:
    """The checkpoints (``checkpoints/step-N/``) and the final model (``final/``) of one run, written from the
    trainer's objects and restored into them. It holds the same objects as the trainer, none of which is
    replaced while the run lasts (a restore loads states into them)."""

    def __init__(
        self,
        cfg: Config,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer: AcceleratedOptimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        ema: EMA | None,
        generator: torch.Generator,
        train_loader: ResumableDataLoader | PackedStream,
        tokenizer: PreTrainedTokenizerBase,
        counts: torch.Tensor | None,
        source_length: int | None,
    ) -> None:
        """``tokenizer``, ``counts`` and ``source_length`` are written with every model directory."""
        self.cfg = cfg
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ema = ema
        self.generator = generator
        self.train_loader = train_loader
        self.tokenizer = tokenizer
        self.counts = counts
        self.source_length = source_length
        out = Path(cfg.training.output_dir)
        self.directory = out / "checkpoints"
        self.final = out / "final"

    def save(self, state: TrainerState) -> None:
        """Everything needed to continue exactly: weights, optimizer, LR schedule, EMA, the RNG streams of
        every process, the data position, and the run's config (checked on resume)."""
        rng = rng_states(self.accelerator, self.generator)
        sharded = is_sharded(self.model)  # then gathering the states below is collective
        model = self._model_to_write()
        optimizer = self.optimizer.optimizer
        optimizer_state = full_optimizer_state(self.model, optimizer) if sharded else optimizer.state_dict()
        ema = self._full_ema() if self.ema is not None else None
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        states: dict[str, Any] = {
            "trainer": asdict(state),
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }
        if ema is not None:
            states["ema"] = ema
        if isinstance(self.train_loader, PackedStream):
            states["stream"] = self.train_loader.state()
        save_training_checkpoint(
            self.directory,
            state.step,
            lambda directory: self._write_model(directory, model),
            states,
            self.cfg,
            self.cfg.training.keep_last,
        )

    def restore(self, directory: Path) -> TrainerState:
        """Load the checkpoint ``directory`` into the run's objects and return where it stood; a checkpoint
        beyond ``training.max_steps`` is refused (the model is loaded from it when the run is built)."""
        state = TrainerState(**load_state(directory, "trainer"))
        optimizer_state = load_state(directory, "optimizer")  # whole, whatever wrote it
        if is_sharded(self.model):
            load_full_optimizer_state(self.model, self.optimizer.optimizer, optimizer_state)
        else:
            self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(load_state(directory, "scheduler"))
        if isinstance(self.train_loader, PackedStream):
            self.train_loader.load_state(load_state(directory, "stream"))
        restore_rng_states(load_state(directory, "rng"), self.accelerator, self.generator)
        if self.ema is not None:
            shadow = self.ema.shadow
            self.ema.shadow = {k: shard_like(v, shadow[k]) for k, v in load_state(directory, "ema").items()}
        max_steps = self.cfg.training.max_steps
        if state.step > max_steps:
            raise ConfigError(
                f"training.max_steps={max_steps} is below the step of the checkpoint to "
                f"resume ({state.step}, {directory}); allowed: max_steps >= {state.step}"
            )
        return state

    def save_final(self) -> Path:
        """``final/``: the model to sample from and evaluate (EMA weights when EMA is on)."""
        model = self._model_to_write(use_ema=True)
        self.accelerator.wait_for_everyone()
        if model is not None:
            with atomic_directory(self.final) as tmp:
                self._write_model(tmp, model)
        return self.final

    def _model_to_write(self, use_ema: bool = False) -> PreTrainedModel | None:
        """The whole model a directory is written from, on the main process (None elsewhere): the trained
        one, or a copy with the EMA weights. Collective when the model is sharded: every process must call it,
        and the full weights are gathered into an unsharded copy."""
        model = self.accelerator.unwrap_model(self.model)
        is_main = self.accelerator.is_main_process
        ema = use_ema and self.ema is not None
        if not is_sharded(model):
            if not is_main or not ema:
                return model if is_main else None
            model = copy.deepcopy(model)
            self.ema.copy_to(model)
            return model
        state = full_model_state(model)
        averaged = self._full_ema() if ema else None
        if not is_main:
            return None
        with torch.random.fork_rng(devices=[]):  # its random init must not move the dropout stream
            whole = get_method(self.cfg.diffusion.objective).model(model.config)
        whole.load_state_dict(state)
        if averaged is not None:
            copy_weights(whole, averaged)
        return whole

    def _full_ema(self) -> dict[str, torch.Tensor]:
        """The EMA weights, whole, on the CPU (collective when the model is sharded)."""
        assert self.ema is not None
        return {name: full_tensor(value).cpu() for name, value in self.ema.shadow.items()}

    def _write_model(self, directory: Path, model: PreTrainedModel) -> None:
        save_model_dir(directory, model, self.tokenizer, self.cfg, self.counts, self.source_length)


def run_finished(cfg: Config) -> bool:
    """True when the run's final model exists and its newest checkpoint reached ``max_steps``."""
    out = Path(cfg.training.output_dir)
    checkpoints = list_checkpoints(out / "checkpoints")
    if not (out / "final" / "diffusion.json").is_file() or not checkpoints:
        return False
    return int(load_state(checkpoints[-1][1], "trainer")["step"]) >= cfg.training.max_steps
