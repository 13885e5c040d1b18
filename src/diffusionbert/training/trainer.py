"""The training loop: a pre-trained BERT and a text file in, a generative diffusion LM out.

Built on accelerate, so the same loop runs on a CPU, one GPU, or many (``torchrun`` / ``accelerate launch``).
Every process reads the same global batch and draws the same corruption from one seeded generator, then
trains on its own slice of rows; the loss is normalised by the global token count, so N processes follow
the same trajectory as one (up to float reduction order and dropout noise), whether each holds the whole
model (DDP) or a shard of every layer (``training.distributed: fsdp``, :mod:`.sharding`). Each process keeps its own
dropout stream, and a checkpoint stores every process's, so a resumed run repeats the uninterrupted one bit
for bit. A step whose loss or gradient is not finite is skipped (counted and logged); too many in a row stop
the run with :class:`~diffusionbert.errors.TrainingError`, before anything diverged is saved.

This module is the loop; what it delegates lives beside it: building the run's objects (:mod:`.build`), the
state a run carries from step to step (:mod:`.state`), and writing and restoring checkpoints
(:mod:`.checkpointing`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list
from transformers import PreTrainedModel

from ..checkpoint import DECODING_FILE, list_checkpoints, save_decoding
from ..config import Config, save_config
from ..diffusion.corruption import mask_sources
from ..diffusion.objectives import Objective
from ..diffusion.self_prompt import self_prompt_layout
from ..errors import ConfigError, DataError, DiffusionBertError, RunStopped, TrainingError
from ..methods import check_config, objective_from_config
from ..utils.io import atomic_file
from ..utils.runtime import default_device, release_freed_memory, resident_memory_mb
from .bound import BoundResult, nll_bound
from .build import (
    initial_model,
    make_accelerator,
    optimisation,
    setup_summary,
    training_data,
    training_token_counts,
)
from .checkpointing import RunCheckpoints, run_finished
from .logger import RunLogger, training_progress
from .run_dir import RunLock, prepare_run_dir, resume_point
from .sharding import full_tensor, gradients_kept_local, is_sharded, reshard
from .state import EMA, TrainerState, batches_from
from .step import denoiser_terms
from .stopping import SIGNALS, StopRequests


@dataclass(frozen=True)
class StepResult:
    """What one call of :meth:`Trainer.train_step` did: per-token loss and NLL, token counts, and whether
    the optimizer step was taken (False: the loss or the gradient was not finite, the batch was skipped)."""

    loss: float
    nll: float
    scored_tokens: int
    real_tokens: int
    applied: bool


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    final_dir: Path
    steps: int
    final_bound: BoundResult | None


def _shard_rows(batch_size: int, world: int, rank: int, accum: int) -> list[slice]:
    """This process's micro-batches: its contiguous 1/world of the global batch, cut into ``accum`` parts."""
    per_rank = batch_size // world
    per_micro = per_rank // accum
    start = rank * per_rank
    return [slice(start + i * per_micro, start + (i + 1) * per_micro) for i in range(accum)]


class Trainer:
    """Owns the objects of a run; :meth:`fit` is the loop."""

    def __init__(
        self,
        cfg: Config,
        resume: bool = False,
        progress: bool = True,
        device: str | torch.device | None = None,
        overwrite: bool = False,
    ) -> None:
        """Check ``cfg`` for its method, then build, in this order (it fixes what the seeded RNG draws): the
        accelerator on ``device`` (default: CUDA when present), the run directory's lock, the model, the
        data, the objective, the optimizer, and restore the newest loadable checkpoint when ``resume``.

        The output directory is locked from here until :meth:`fit` ends (or :meth:`close`). A directory that
        already holds a run needs ``resume`` (continue it) or ``overwrite`` (delete it first)."""
        self.cfg = cfg = check_config(cfg)
        if not cfg.data.train_file:
            raise ConfigError("data.train_file is not set; allowed: a local .txt, .jsonl or .csv file")
        self.progress = progress
        self.out = Path(cfg.training.output_dir)
        self.accelerator = make_accelerator(cfg, default_device(device))
        self.lock: RunLock | None = None
        try:
            self._build(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _build(self, resume: bool, overwrite: bool) -> None:
        cfg = self.cfg
        self.resume_from, self.changes = self._claim_output_dir(resume, overwrite)
        torch.manual_seed(cfg.training.seed + self.accelerator.process_index)
        model, self.tokenizer = initial_model(cfg, self.resume_from)
        data = training_data(cfg, self.tokenizer)
        self.train_loader, self.valid_batches = data.train, data.valid
        counts = training_token_counts(cfg, self.tokenizer, self.train_loader)
        self.objective: Objective = objective_from_config(cfg.diffusion, self.tokenizer.mask_token_id, counts)
        self.self_prompt = self_prompt_layout(self.tokenizer) if cfg.training.self_prompt > 0 else None
        self.model, self.optimizer, self.scheduler = optimisation(cfg, self.accelerator, model)
        self.ema = EMA(self.unwrapped, cfg.training.ema_decay) if cfg.training.ema_decay > 0 else None
        self.generator = torch.Generator(device=self.accelerator.device).manual_seed(cfg.training.seed)
        self.checkpoints = RunCheckpoints(
            cfg,
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            self.ema,
            self.generator,
            self.train_loader,
            self.tokenizer,
            counts,
            data.source_length,
        )
        self.state = TrainerState()
        if self.resume_from is not None:
            self.state = self.checkpoints.restore(self.resume_from)

    def close(self) -> None:
        """Release the output directory's lock (:meth:`fit` does it when it ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _claim_output_dir(self, resume: bool, overwrite: bool) -> tuple[Path | None, dict[str, Any]]:
        """Lock the output directory (main process), check it against ``resume``/``overwrite``, and pick the
        checkpoint to continue from; every process learns the outcome, or raises the same error."""
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                self.lock = RunLock(self.out)
                checkpoints = prepare_run_dir(self.out, resume, overwrite)
                outcome[0] = resume_point(checkpoints, self.cfg) if resume else (None, {})
            except DiffusionBertError as exc:
                outcome[0] = exc
        if self.accelerator.num_processes > 1:
            broadcast_object_list(outcome)
        if isinstance(outcome[0], DiffusionBertError):
            raise outcome[0]
        return outcome[0]

    @property
    def unwrapped(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ------------------------------------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Train to ``max_steps``, evaluating, logging and checkpointing on the way; write ``final/``.

        The output directory's lock is released when this returns or raises."""
        if self.is_main:
            # what really runs (resumed: with its changes)
            atomic_file(self.out / "config.yaml", lambda tmp: save_config(self.cfg, tmp))
        resumed_at = self.state.step if self.resume_from is not None else None
        log = RunLogger(self.out, enabled=self.is_main, resumed_at=resumed_at)
        try:
            log.write({"step": self.state.step, **setup_summary(self.accelerator, self.model)})
            if self.resume_from is not None:
                log.write({"step": self.state.step, "resumed_from": self.resume_from.name, **self.changes})
            with StopRequests() as stop:
                self._loop(log, stop)
            final_bound = self._log_bound(log) if self.valid_batches else None
            self.checkpoints.save(self.state)
            final = self.checkpoints.save_final()
        finally:
            log.close()
            self.close()
        return TrainResult(self.out, final, self.state.step, final_bound)

    def _loop(self, log: RunLogger, stop: StopRequests) -> None:
        """Optimizer steps up to ``max_steps``, with the in-loop evaluations and checkpoints; a stop request
        (SIGTERM, Ctrl-C) ends it at the next step boundary with a checkpoint (:mod:`.stopping`)."""
        t = self.cfg.training
        bad_in_row = 0
        with training_progress(self.progress and self.is_main) as bar:
            task = bar.add_task("training", total=t.max_steps, completed=self.state.step, loss="-", speed="-")
            batches = batches_from(self.train_loader, self.state, t.batch_size)
            saved = self.resume_from is not None  # the checkpoint resumed from holds this step
            while self.state.step < t.max_steps:  # a resumed run that already finished trains no more
                try:
                    batch = next(batches)
                except DataError as exc:  # a streamed corpus changed under the run
                    raise self._data_failed(exc, saved, log) from None
                started = time.perf_counter()
                result = self.train_step(batch)
                if not result.applied:
                    bad_in_row += 1
                    self.state.skipped_steps += 1
                    log.write({"step": self.state.step, "skipped_nonfinite": self.state.skipped_steps})
                    if bad_in_row >= t.max_nonfinite_in_row:
                        raise self._diverged(bad_in_row)
                    continue
                bad_in_row = 0
                self.state.step += 1
                self.state.tokens_seen += result.real_tokens
                speed = result.real_tokens / (time.perf_counter() - started)
                bar.update(task, completed=self.state.step, loss=f"{result.loss:.3f}", speed=f"{speed:,.0f}")
                if self.state.step % t.log_every == 0 or self.state.step == t.max_steps:
                    log.write(
                        {
                            "step": self.state.step,
                            "loss": result.loss,
                            "nll_per_token": result.nll,
                            "lr": self.scheduler.get_last_lr()[0],
                            "tokens_per_s": speed,
                            "scored_tokens": result.scored_tokens,
                            "epoch": self.state.epoch,
                            "processes": self.accelerator.num_processes,
                            "rss_mb": resident_memory_mb(),
                        }
                    )
                release_freed_memory()  # batches of new shapes leave blocks behind (utils.runtime)
                if self.state.step == t.max_steps:
                    break  # the final evaluation and checkpoint follow the loop
                if t.eval_every and self.state.step % t.eval_every == 0 and self.valid_batches:
                    self._log_bound(log)
                saved = bool(t.save_every and self.state.step % t.save_every == 0)
                if saved:
                    self.checkpoints.save(self.state)
                if (signal_number := stop.agreed(self.accelerator)) is not None:
                    raise self._stopped(signal_number, saved, log)

    def _stopped(self, signal_number: int, saved: bool, log: RunLogger) -> RunStopped:
        """Write a checkpoint at this step (unless one was just written) and say how to go on."""
        name, code = SIGNALS[signal_number]
        if not saved:
            self.checkpoints.save(self.state)
        log.write({"step": self.state.step, "stopped": name})
        return RunStopped(
            f"training stopped by {name} at step {self.state.step} of {self.cfg.training.max_steps}, with a "
            f"checkpoint there; to continue, run the same command with --resume",
            code,
        )

    def _data_failed(self, error: DataError, saved: bool, log: RunLogger) -> DataError:
        """Keep the steps done (a checkpoint, unless one was just written or none was taken) and say so on
        the error's one line."""
        if self.state.step == 0:
            return error
        if not saved:
            self.checkpoints.save(self.state)
        log.write({"step": self.state.step, "stopped": "data error"})
        return DataError(
            f"{error}; a checkpoint at step {self.state.step} holds the run: mend the data and run the same "
            "command with --resume"
        )

    def _diverged(self, in_row: int) -> TrainingError:
        """The error that stops a run whose last ``in_row`` batches all had a non-finite loss or gradient."""
        checkpoints = list_checkpoints(self.checkpoints.directory)
        kept = (
            f"the newest checkpoint is {checkpoints[-1][1]}" if checkpoints else "no checkpoint was written"
        )
        return TrainingError(
            f"training diverged: the loss or gradient was not finite for {in_row} batches in a row after step "
            f"{self.state.step} (training.max_nonfinite_in_row={in_row}); no final/ was written and {kept}; "
            f"try a lower training.lr (now {self.cfg.training.lr!r})"
        )

    def _log_bound(self, log: RunLogger) -> BoundResult:
        bound = self.evaluate()
        log.write(
            {
                "step": self.state.step,
                "valid_nats_per_token": bound.nats_per_token,
                "valid_ppl_per_word": bound.ppl_per_word,
            }
        )
        return bound

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepResult:
        """One optimizer step on a global batch, or none when its loss or gradient is not finite.

        Every process sees the same reduced loss and the same (all-reduced) gradient norm, so all of them
        take or skip the step together."""
        t, acc = self.cfg.training, self.accelerator
        x0 = batch["input_ids"].to(acc.device)
        attention_mask = batch["attention_mask"].to(acc.device)
        noise_mask = batch["noise_mask"].to(acc.device)
        corrupted = self.objective.corrupt(x0, noise_mask, self.generator)  # identical on every process
        if t.source_dropout > 0:  # drawn from the same generator, so also identical on every process
            dropped = torch.rand(x0.shape[0], generator=self.generator, device=acc.device) < t.source_dropout
            tok = self.tokenizer
            x_t = mask_sources(corrupted.x_t, dropped, tok.sep_token_id, tok.mask_token_id)
            corrupted = dataclasses.replace(corrupted, x_t=x_t)
        estimate_rows = None
        if t.self_prompt > 0:  # the rows shown their own estimate as the prompt, also identical everywhere
            estimate_rows = (
                torch.rand(x0.shape[0], generator=self.generator, device=acc.device) < t.self_prompt
            )
        n_tokens = int(noise_mask.sum())
        scale = acc.num_processes / max(n_tokens, 1)  # DDP averages gradients over processes
        micro_batches = _shard_rows(x0.shape[0], acc.num_processes, acc.process_index, t.grad_accum)
        self.model.train()
        sums = torch.zeros(2, device=acc.device, dtype=torch.float64)  # loss, nll
        for i, rows in enumerate(micro_batches):
            width = int(attention_mask[rows].sum(-1).max())  # drop all-padding columns
            sync = self._keep_gradients_local() if i < len(micro_batches) - 1 else contextlib.nullcontext()
            with sync, acc.autocast():
                terms = denoiser_terms(
                    self.model,
                    self.objective,
                    x0[rows, :width],
                    attention_mask[rows, :width],
                    corrupted.select(rows, width),
                    self.self_prompt,
                    None if estimate_rows is None else estimate_rows[rows],
                )
                acc.backward(terms.loss * scale)
            sums += torch.stack([terms.loss.detach(), terms.nll.detach()]).double()
        sums = acc.reduce(sums, reduction="sum") / max(n_tokens, 1)
        # without clipping (grad_clip 0) an infinite bound only measures the norm: the gradient is unchanged
        grad_norm = full_tensor(acc.clip_grad_norm_(self.model.parameters(), t.grad_clip or math.inf))
        applied = bool(torch.isfinite(sums).all()) and math.isfinite(float(grad_norm))
        if applied:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if applied and self.ema is not None:
            self.ema.update(self.unwrapped)
        return StepResult(float(sums[0]), float(sums[1]), n_tokens, int(attention_mask.sum()), applied)

    def _keep_gradients_local(self) -> contextlib.AbstractContextManager[None]:
        """A micro-batch before the last of a step: its gradients stay local (DDP's no_sync, FSDP's own)."""
        if is_sharded(self.model):
            return gradients_kept_local(self.model)
        return self.accelerator.no_sync(self.model)

    # ----------------------------------------------------------------------------------------- evaluation

    def evaluate(self) -> BoundResult:
        """The NLL bound on the validation batches (EMA weights when enabled), same draws every time."""
        model = self.unwrapped
        backup = None
        if self.ema is not None:
            backup = {n: p.detach().clone() for n, p in model.named_parameters()}
            self.ema.copy_to(model)
        try:
            return nll_bound(
                model,
                self.objective,
                self.valid_batches,
                seed=self.cfg.training.seed,
                max_batches=self.cfg.training.eval_batches,
                self_prompt=self.self_prompt,
            )
        finally:
            if is_sharded(model):
                reshard(model)
            if backup is not None:
                with torch.no_grad():
                    for name, param in model.named_parameters():
                        param.copy_(backup[name])


def train(
    cfg: Config,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a model as ``cfg`` says; with ``resume``, continue from the newest loadable checkpoint exactly;
    with ``overwrite``, delete the run already in the output directory first."""
    return Trainer(cfg, resume=resume, progress=progress, device=device, overwrite=overwrite).fit()


def train_or_reuse(
    cfg: Config,
    progress: bool = True,
    device: str | torch.device | None = None,
    overwrite: bool = False,
) -> bool:
    """Reuse a finished run, resume an interrupted one, or start one; True when any training ran.

    What happens is said in one line, so re-running a long job after an interruption is always safe. A
    reused run's default decoding becomes the config's ``sampling:`` (it may change without training). With
    ``overwrite`` the run in the output directory is deleted and trained again."""
    out = Path(cfg.training.output_dir)
    if overwrite:
        train(cfg, progress=progress, device=device, overwrite=True)
        return True
    if run_finished(cfg):
        print(f"reusing the finished run in {out}")
        if save_decoding(out / "final", cfg.sampling):  # decoding settings change without training
            print(
                f"  its default decoding is now the config's sampling section ({out / 'final' / DECODING_FILE})"
            )
        return False
    resume = bool(list_checkpoints(out / "checkpoints"))
    if resume:
        print(f"resuming the interrupted run in {out}")
    # a run killed before its first checkpoint left only logs: start over; a final/ is never replaced here
    overwrite = not resume and not (out / "final").exists()
    train(cfg, resume=resume, progress=progress, device=device, overwrite=overwrite)
    return True
