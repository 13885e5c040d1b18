"""The training loop: a pre-trained BERT and a text file in, a generative diffusion LM out.

Built on accelerate, so the same loop runs on a CPU, one GPU, or many (``torchrun`` / ``accelerate launch``).
Every process reads the same global batch and draws the same corruption from one seeded generator, then
trains on its own slice of rows; the loss is normalised by the global token count, so N processes follow
the same trajectory as one (up to float reduction order and dropout noise), whether each holds the whole
model (DDP) or a shard of every layer (``training.distributed: fsdp``, :mod:`.sharding`). Each process keeps its own
dropout stream, and a checkpoint stores every process's, so a resumed run repeats the uninterrupted one bit
for bit. A step whose loss or gradient is not finite is skipped (counted and logged); too many in a row stop
the run with :class:`~diffusionbert.errors.TrainingError`, before anything diverged is saved.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..checkpoint import list_checkpoints, load_initial_model, save_model_dir, save_training_checkpoint
from ..config import Config, save_config
from ..data import (
    PackedStream,
    ResumableDataLoader,
    TokenizedDataset,
    cached_stream_counts,
    cached_token_counts,
    corpus_files,
    load_texts,
    make_dataloader,
    tokenize_dataset,
)
from ..data.chat import chat_template_of, load_chat
from ..diffusion.corruption import mask_sources
from ..diffusion.objectives import Objective
from ..diffusion.self_prompt import self_prompt_layout
from ..errors import ConfigError, DataError, DiffusionBertError, TrainingError
from ..methods import build_model, check_config, get_method, needs_token_counts, objective_from_config
from ..models import parameter_groups
from ..models.loading import load_tokenizer, load_weights
from ..utils.io import atomic_directory, atomic_file, load_state
from ..utils.runtime import default_device, keep_freed_memory
from .bound import BoundResult, nll_bound
from .logger import RunLogger, training_progress
from .run_dir import RunLock, prepare_run_dir, resume_point
from .sharding import (
    full_model_state,
    full_optimizer_state,
    full_tensor,
    gradients_kept_local,
    is_sharded,
    load_full_optimizer_state,
    reshard,
    shard_like,
    shard_model,
)
from .step import denoiser_terms


@dataclass
class TrainerState:
    """Where training stands: optimizer steps taken and the data position (epoch, batch within it)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0  # batches whose loss or gradient was not finite (no optimizer step taken)


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


def resolve_precision(requested: str, device: torch.device) -> str:
    """Pick the fastest precision the hardware really has: bf16 on GPUs that support it, fp32 on CPUs.

    (Measured on a 2-core AMD CPU without native bf16: bf16 autocast made a MiniLM step 28× slower.)
    """
    if requested != "auto":
        return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[requested]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def lr_lambda(step: int, warmup: int, total: int, decay: str) -> float:
    """Multiplier of the base LR: linear warm-up, then linear or cosine decay to 0, constant, or the inverse
    square root of the step (``sqrt(warmup / step)``, DiffusionBERT's released training code)."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    if decay == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / max(step, 1))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of the trainable weights, kept in fp32."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - self.decay)

    def copy_to(self, model: torch.nn.Module) -> None:
        copy_weights(model, self.shadow)


@torch.no_grad()
def copy_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Write ``weights`` into ``model``'s parameters of the same names (a tied parameter once, under the
    name ``named_parameters`` gives it)."""
    for name, param in model.named_parameters():
        if name in weights:
            param.copy_(weights[name].to(param.dtype))


def _load_split(
    path: str, cfg: Config, tokenizer: PreTrainedTokenizerBase, limit: int | None
) -> TokenizedDataset:
    """Read and tokenise one split; with ``data.source_field`` the examples are (source, target) pairs, with
    ``data.format: chat`` (rendered prompt, answer) pairs whose prompt loses its oldest tokens when too long."""
    if cfg.data.format == "chat":
        texts = load_chat(path, tokenizer, cfg.data.cache_dir)
    elif cfg.data.source_field:
        texts = load_texts(path, cfg.data.source_field, target_field=cfg.data.field)
    else:
        texts = load_texts(path, cfg.data.field)
    if limit is not None and limit < len(texts):
        texts = texts.select(range(limit))
    return tokenize_dataset(
        texts,
        tokenizer,
        cfg.data.layout,
        cfg.data.max_length,
        target_window=cfg.data.target_window,
        source_cut="start" if cfg.data.format == "chat" else "end",
    )


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
        self.ckpt_dir = self.out / "checkpoints"
        self.accelerator = self._accelerator(default_device(device))
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
        model, self.tokenizer = self._model()
        self.train_loader, self.valid_batches = self._data()
        self.counts = self._token_counts()
        self.objective: Objective = objective_from_config(
            cfg.diffusion, self.tokenizer.mask_token_id, self.counts
        )
        self.self_prompt = self_prompt_layout(self.tokenizer) if cfg.training.self_prompt > 0 else None
        self.model, self.optimizer, self.scheduler = self._optimisation(model)
        self.ema = EMA(self.unwrapped, cfg.training.ema_decay) if cfg.training.ema_decay > 0 else None
        self.generator = torch.Generator(device=self.accelerator.device).manual_seed(cfg.training.seed)
        self.state = TrainerState()
        if self.resume_from is not None:
            self._restore(self.resume_from)
            if self.state.step > cfg.training.max_steps:
                raise ConfigError(
                    f"training.max_steps={cfg.training.max_steps} is below the step of the checkpoint to "
                    f"resume ({self.state.step}, {self.resume_from}); allowed: max_steps >= {self.state.step}"
                )

    def close(self) -> None:
        """Release the output directory's lock (:meth:`fit` does it when it ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _accelerator(self, device: torch.device) -> Accelerator:
        """The accelerator on ``device``'s type, in the run's precision; the global batch must split evenly."""
        t = self.cfg.training
        if device.type == "cpu":
            keep_freed_memory()  # [n, V] temporaries reuse heap pages instead of new mmaps every step
        elif device.type == "cuda":
            if device.index is not None:
                torch.cuda.set_device(device)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
        # cpu=True makes accelerate pick up torchrun's ranks as a gloo process group on CPU-only machines
        accelerator = Accelerator(
            mixed_precision=resolve_precision(t.precision, device), cpu=device.type == "cpu"
        )
        world = accelerator.num_processes
        if t.batch_size % (world * t.grad_accum):
            raise ConfigError(
                f"training.batch_size={t.batch_size} contradicts {world} process(es) x "
                f"training.grad_accum={t.grad_accum}: the global batch must split evenly"
            )
        return accelerator

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

    def _model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The network and its tokenizer: from the checkpoint when resuming, else from ``model.init_from`` or
        built as the config says; a chat run's tokenizer gets its chat template here (saved with it)."""
        if self.resume_from is not None:
            directory = self.resume_from / "model"
            model_class = get_method(self.cfg.diffusion.objective).model
            return load_weights(model_class, directory, dtype=torch.float32), load_tokenizer(directory)
        if self.cfg.model.init_from:
            model, tokenizer = load_initial_model(self.cfg)
        else:
            model, tokenizer = build_model(self.cfg)
        if self.cfg.data.format == "chat":
            tokenizer.chat_template = chat_template_of(tokenizer, self.cfg.data.chat_template)
        return model, tokenizer

    def _data(self) -> tuple[ResumableDataLoader | PackedStream, list[dict[str, torch.Tensor]] | None]:
        """The shuffled, resumable training loader (a packed stream with ``data.streaming``) and the
        validation batches (file order) if any."""
        cfg, t = self.cfg, self.cfg.training
        pad_id = self.tokenizer.pad_token_id
        if cfg.data.streaming:
            self.source_length = None
            stream = PackedStream(
                corpus_files(cfg.data.train_file),
                self.tokenizer,
                cfg.data.max_length,
                field=cfg.data.field,
                seed=t.seed,
                shuffle_rows=cfg.data.shuffle_rows,
            )
            return stream, self._valid_batches()
        train = _load_split(cfg.data.train_file, cfg, self.tokenizer, cfg.data.max_train_examples)
        if len(train.dataset) < t.batch_size:
            raise DataError(
                f"data.train_file {cfg.data.train_file} has {len(train.dataset)} examples, fewer than "
                f"training.batch_size={t.batch_size}"
            )
        # a pair row's source is noise_start - 2 tokens long ([CLS] source [SEP]): recorded with the model,
        # so that one trained with source dropout can generate without a source from that many [MASK]s
        starts = train.dataset["noise_start"] if cfg.data.pairs else []
        self.source_length = round(sum(starts) / len(starts)) - 2 if len(starts) else None
        train_loader = make_dataloader(
            train.dataset,
            t.batch_size,
            shuffle=True,
            seed=t.seed,
            layout=cfg.data.layout,
            pad_token_id=pad_id,
            cls_token_id=self.tokenizer.cls_token_id,
            drop_last=True,
        )
        return train_loader, self._valid_batches()

    def _valid_batches(self) -> list[dict[str, torch.Tensor]] | None:
        """The validation batches, in file order (not length-sorted: the first ``eval_batches`` of them are
        a fair subset of the file), if there is a validation file."""
        cfg = self.cfg
        if not cfg.data.valid_file:
            return None
        valid = _load_split(cfg.data.valid_file, cfg, self.tokenizer, cfg.data.max_valid_examples)
        loader = make_dataloader(
            valid.dataset,
            cfg.training.batch_size,
            shuffle=False,
            layout=cfg.data.layout,
            pad_token_id=self.tokenizer.pad_token_id,
            cls_token_id=self.tokenizer.cls_token_id,
            bucket_batches=1,
        )
        return list(loader)

    def _token_counts(self) -> torch.Tensor | None:
        """The training split's token counts when the schedule is built from them (spindle), else None."""
        data = self.cfg.data
        if not needs_token_counts(self.cfg.diffusion):
            return None
        if isinstance(self.train_loader, PackedStream):
            return cached_stream_counts(self.train_loader.files, self.tokenizer, data.field, data.cache_dir)
        return cached_token_counts(
            data.train_file,
            self.tokenizer,
            data.source_field or data.field,
            data.cache_dir,
            target_field=data.field if data.source_field else None,
            chat=data.format == "chat",
        )

    def _optimisation(
        self, model: PreTrainedModel
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW over the model's parameter groups and its LR schedule, prepared by the accelerator."""
        t, acc = self.cfg.training, self.accelerator
        sharded = t.distributed == "fsdp" and acc.num_processes > 1
        if sharded:  # before the optimizer: it must hold the sharded parameters
            model = shard_model(model.to(acc.device))
        groups = parameter_groups(model, t.lr, t.head_lr, t.weight_decay)
        # one fused kernel: ~9x faster than the per-parameter loop on CPU (torch >= 2.4 has it on CPU and CUDA)
        fused = acc.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(groups, lr=t.lr, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_lambda(step, t.warmup_steps, t.max_steps, t.lr_decay)
        )
        if sharded:  # FSDP reduces the gradients itself: only the optimizer goes through accelerate
            return model, acc.prepare(optimizer), scheduler
        model, optimizer = acc.prepare(model, optimizer)
        return model, optimizer, scheduler

    def setup(self) -> dict[str, Any]:
        """How this run computes, for its log: device, processes, how they share the model, precision."""
        acc = self.accelerator
        processes = acc.num_processes
        sharing = "none" if processes == 1 else ("fsdp" if is_sharded(self.model) else "ddp")
        setup: dict[str, Any] = {
            "device": str(acc.device),
            "processes": processes,
            "distributed": sharing,
            "precision": {"no": "fp32"}.get(acc.mixed_precision, acc.mixed_precision),
        }
        if acc.device.type == "cuda":
            setup["tf32"] = torch.backends.cuda.matmul.allow_tf32
        return setup

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
        log = RunLogger(self.out, enabled=self.is_main)
        try:
            log.write({"step": self.state.step, **self.setup()})
            if self.resume_from is not None:
                log.write({"step": self.state.step, "resumed_from": self.resume_from.name, **self.changes})
            self._loop(log)
            final_bound = self._log_bound(log) if self.valid_batches else None
            self.save_checkpoint()
            final = self.save_final()
        finally:
            log.close()
            self.close()
        return TrainResult(self.out, final, self.state.step, final_bound)

    def _loop(self, log: RunLogger) -> None:
        """Optimizer steps up to ``max_steps``, with the in-loop evaluations and checkpoints."""
        t = self.cfg.training
        bad_in_row = 0
        with training_progress(self.progress and self.is_main) as bar:
            task = bar.add_task("training", total=t.max_steps, completed=self.state.step, loss="-", speed="-")
            batches = self._batches()
            while self.state.step < t.max_steps:  # a resumed run that already finished trains no more
                batch = next(batches)
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
                        }
                    )
                if self.state.step == t.max_steps:
                    break  # the final evaluation and checkpoint follow the loop
                if t.eval_every and self.state.step % t.eval_every == 0 and self.valid_batches:
                    self._log_bound(log)
                if t.save_every and self.state.step % t.save_every == 0:
                    self.save_checkpoint()

    def _diverged(self, in_row: int) -> TrainingError:
        """The error that stops a run whose last ``in_row`` batches all had a non-finite loss or gradient."""
        checkpoints = list_checkpoints(self.ckpt_dir)
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

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Global batches from the saved data position on, epoch after epoch."""
        if isinstance(self.train_loader, PackedStream):  # endless; its position is its own state
            for batch in self.train_loader.batches(self.cfg.training.batch_size):
                self.state.epoch = self.train_loader.epoch
                self.state.batch_in_epoch += 1
                yield batch
            return
        while True:
            self.train_loader.set_epoch(self.state.epoch, start_index=self.state.batch_in_epoch)
            for batch in self.train_loader:
                self.state.batch_in_epoch += 1
                yield batch
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

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

    # ----------------------------------------------------------------------------------- evaluation, state

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

    def _model_to_write(self, use_ema: bool = False) -> PreTrainedModel | None:
        """The whole model a directory is written from, on the main process (None elsewhere): the trained
        one, or a copy with the EMA weights. Collective when the model is sharded: every process must call it,
        and the full weights are gathered into an unsharded copy."""
        model = self.unwrapped
        ema = use_ema and self.ema is not None
        if not is_sharded(model):
            if not self.is_main or not ema:
                return model if self.is_main else None
            model = copy.deepcopy(model)
            self.ema.copy_to(model)
            return model
        state = full_model_state(model)
        averaged = self._full_ema() if ema else None
        if not self.is_main:
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

    def _rng_states(self) -> dict[str, Any]:
        """Every process's dropout streams (CPU and CUDA, one row per process) and the corruption generator
        (the same on every process). Collective: every process must call it."""
        acc = self.accelerator
        rng: dict[str, Any] = {
            "torch": acc.gather(torch.get_rng_state().to(acc.device)[None]).cpu(),
            "generator": self.generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = acc.gather(torch.cuda.get_rng_state().to(acc.device)[None]).cpu()
        return rng

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly: weights, optimizer, LR schedule, EMA, the RNG streams of
        every process, the data position, and the run's config (checked on resume)."""
        rng = self._rng_states()
        sharded = is_sharded(self.model)  # then gathering the states below is collective
        model = self._model_to_write()
        optimizer = self.optimizer.optimizer
        optimizer_state = full_optimizer_state(self.model, optimizer) if sharded else optimizer.state_dict()
        ema = self._full_ema() if self.ema is not None else None
        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return
        states: dict[str, Any] = {
            "trainer": asdict(self.state),
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }
        if ema is not None:
            states["ema"] = ema
        if isinstance(self.train_loader, PackedStream):
            states["stream"] = self.train_loader.state()
        save_training_checkpoint(
            self.ckpt_dir,
            self.state.step,
            lambda directory: self._write_model(directory, model),
            states,
            self.cfg,
            self.cfg.training.keep_last,
        )

    def _restore(self, directory: Path) -> None:
        self.state = TrainerState(**load_state(directory, "trainer"))
        optimizer_state = load_state(directory, "optimizer")  # whole, whatever wrote it
        if is_sharded(self.model):
            load_full_optimizer_state(self.model, self.optimizer.optimizer, optimizer_state)
        else:
            self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(load_state(directory, "scheduler"))
        if isinstance(self.train_loader, PackedStream):
            self.train_loader.load_state(load_state(directory, "stream"))
        rng = load_state(directory, "rng")
        self.generator.set_state(rng["generator"])
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        streams = rng["torch"] if rng["torch"].dim() == 2 else rng["torch"][None]  # 1-D: one process
        if len(streams) == world:
            # clone: set_rng_state reads a row view from its storage's start (torch 2.x), so it needs a copy
            torch.set_rng_state(streams[rank].clone())
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"].reshape(world, -1)[rank].clone())
        elif self.is_main:
            print(
                f"the checkpoint was written by {len(streams)} process(es), this run has {world}: the data "
                "and noise resume exactly, the dropout streams start afresh"
            )
        if self.ema is not None:
            shadow = self.ema.shadow
            self.ema.shadow = {k: shard_like(v, shadow[k]) for k, v in load_state(directory, "ema").items()}

    def save_final(self) -> Path:
        """``final/``: the model to sample from and evaluate (EMA weights when EMA is on)."""
        final = self.out / "final"
        model = self._model_to_write(use_ema=True)
        self.accelerator.wait_for_everyone()
        if model is not None:
            with atomic_directory(final) as tmp:
                self._write_model(tmp, model)
        return final


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


def run_finished(cfg: Config) -> bool:
    """True when the run's final model exists and its newest checkpoint reached ``max_steps``."""
    out = Path(cfg.training.output_dir)
    checkpoints = list_checkpoints(out / "checkpoints")
    if not (out / "final" / "diffusion.json").is_file() or not checkpoints:
        return False
    return int(load_state(checkpoints[-1][1], "trainer")["step"]) >= cfg.training.max_steps


def train_or_reuse(
    cfg: Config,
    progress: bool = True,
    device: str | torch.device | None = None,
    overwrite: bool = False,
) -> bool:
    """Reuse a finished run, resume an interrupted one, or start one; True when any training ran.

    What happens is said in one line, so re-running a long job after an interruption is always safe. With
    ``overwrite`` the run in the output directory is deleted and trained again."""
    out = Path(cfg.training.output_dir)
    if overwrite:
        train(cfg, progress=progress, device=device, overwrite=True)
        return True
    if run_finished(cfg):
        print(f"reusing the finished run in {out}")
        return False
    resume = bool(list_checkpoints(out / "checkpoints"))
    if resume:
        print(f"resuming the interrupted run in {out}")
    # a run killed before its first checkpoint left only logs: start over; a final/ is never replaced here
    overwrite = not resume and not (out / "final").exists()
    train(cfg, resume=resume, progress=progress, device=device, overwrite=overwrite)
    return True
