"""A run's objects, built from its config: the accelerator, the model and tokenizer, the training and
validation data, the token counts a schedule may need, and the optimizer with its LR schedule; and the summary
of how the run computes that its log opens with.

The trainer calls these once, in a fixed order (it fixes what the seeded RNG draws); kept apart from the loop
(:mod:`.trainer`) so that the loop reads as steps, not as set-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..checkpoint import load_initial_model
from ..config import Config
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
from ..errors import ConfigError, DataError
from ..methods import build_model, get_method, needs_token_counts
from ..models import parameter_groups
from ..models.loading import load_tokenizer, load_weights
from ..utils.runtime import keep_freed_memory
from .sharding import is_sharded, shard_model


def resolve_precision(requested: str, device: torch.device) -> str:
    """Pick the fastest precision the hardware really has: bf16 on GPUs that support it, fp32 on CPUs.

    (Measured on a 2-core AMD CPU without native bf16: bf16 autocast made a MiniLM step 28× slower.)
    """
    if requested != "auto":
        return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[requested]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: Config, device: torch.device) -> Accelerator:
    """The accelerator on ``device``'s type, in the run's precision; the global batch must split evenly."""
    t = cfg.training
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


def setup_summary(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, Any]:
    """How a run computes, for its log: device, processes, how they share the model, precision."""
    acc = accelerator
    processes = acc.num_processes
    sharing = "none" if processes == 1 else ("fsdp" if is_sharded(model) else "ddp")
    setup: dict[str, Any] = {
        "device": str(acc.device),
        "processes": processes,
        "distributed": sharing,
        "precision": {"no": "fp32"}.get(acc.mixed_precision, acc.mixed_precision),
    }
    if acc.device.type == "cuda":
        setup["tf32"] = torch.backends.cuda.matmul.allow_tf32
    return setup


def initial_model(cfg: Config, resume_from: Path | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The network and its tokenizer: from the checkpoint ``resume_from`` when resuming, else from
    ``model.init_from`` or built as the config says; a chat run's tokenizer gets its chat template here (saved
    with it)."""
    if resume_from is not None:
        directory = resume_from / "model"
        model_class = get_method(cfg.diffusion.objective).model
        return load_weights(model_class, directory, dtype=torch.float32), load_tokenizer(directory)
    if cfg.model.init_from:
        model, tokenizer = load_initial_model(cfg)
    else:
        model, tokenizer = build_model(cfg)
    if cfg.data.format == "chat":
        tokenizer.chat_template = chat_template_of(tokenizer, cfg.data.chat_template)
    return model, tokenizer


@dataclass(frozen=True)
class TrainingData:
    """A run's data: the shuffled, resumable training loader (a packed stream with ``data.streaming``), the
    validation batches if any, and the mean source length of a pair run's rows (else None)."""

    train: ResumableDataLoader | PackedStream
    valid: list[dict[str, torch.Tensor]] | None
    source_length: int | None


def training_data(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> TrainingData:
    """The training loader and the validation batches (file order) of ``cfg``'s data files."""
    t = cfg.training
    if cfg.data.streaming:
        stream = PackedStream(
            corpus_files(cfg.data.train_file),
            tokenizer,
            cfg.data.max_length,
            field=cfg.data.field,
            seed=t.seed,
            shuffle_rows=cfg.data.shuffle_rows,
        )
        return TrainingData(stream, _valid_batches(cfg, tokenizer), None)
    train = _load_split(cfg.data.train_file, cfg, tokenizer, cfg.data.max_train_examples)
    if len(train.dataset) < t.batch_size:
        raise DataError(
            f"data.train_file {cfg.data.train_file} has {len(train.dataset)} examples, fewer than "
            f"training.batch_size={t.batch_size}"
        )
    # a pair row's source is noise_start - 2 tokens long ([CLS] source [SEP]): recorded with the model,
    # so that one trained with source dropout can generate without a source from that many [MASK]s
    starts = train.dataset["noise_start"] if cfg.data.pairs else []
    source_length = round(sum(starts) / len(starts)) - 2 if len(starts) else None
    train_loader = make_dataloader(
        train.dataset,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        layout=cfg.data.layout,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        drop_last=True,
    )
    return TrainingData(train_loader, _valid_batches(cfg, tokenizer), source_length)


def _valid_batches(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, torch.Tensor]] | None:
    """The validation batches, in file order (not length-sorted: the first ``eval_batches`` of them are
    a fair subset of the file), if there is a validation file."""
    if not cfg.data.valid_file:
        return None
    valid = _load_split(cfg.data.valid_file, cfg, tokenizer, cfg.data.max_valid_examples)
    loader = make_dataloader(
        valid.dataset,
        cfg.training.batch_size,
        shuffle=False,
        layout=cfg.data.layout,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        bucket_batches=1,
    )
    return list(loader)


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


def training_token_counts(
    cfg: Config, tokenizer: PreTrainedTokenizerBase, train_loader: ResumableDataLoader | PackedStream
) -> torch.Tensor | None:
    """The training split's token counts when the schedule is built from them (spindle), else None."""
    data = cfg.data
    if not needs_token_counts(cfg.diffusion):
        return None
    if isinstance(train_loader, PackedStream):
        return cached_stream_counts(train_loader.files, tokenizer, data.field, data.cache_dir)
    return cached_token_counts(
        data.train_file,
        tokenizer,
        data.source_field or data.field,
        data.cache_dir,
        target_field=data.field if data.source_field else None,
        chat=data.format == "chat",
    )


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


def optimisation(
    cfg: Config, accelerator: Accelerator, model: PreTrainedModel
) -> tuple[torch.nn.Module, AcceleratedOptimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model's parameter groups and its LR schedule, prepared by the accelerator; the model
    comes back prepared too (sharded with ``training.distributed: fsdp`` on several processes)."""
    t, acc = cfg.training, accelerator
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
