"""What a run carries from step to step, beyond the weights and the optimizer: where it stands
(:class:`TrainerState`: steps, data position), the moving average of its weights (:class:`EMA`), and the RNG
streams of every process.

A checkpoint holds all of it, so a resumed run repeats the uninterrupted one bit for bit: it reads the same
batches from the saved data position on (:func:`batches_from`), draws the same corruption from the shared
generator, and each process continues its own dropout stream (:func:`rng_states`, :func:`restore_rng_states`).
The loop (:mod:`.trainer`) advances this state and :mod:`.checkpointing` writes and reads it; it lives here,
apart from both, so that neither has to spell it out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from ..data import PackedStream, ResumableDataLoader


@dataclass
class TrainerState:
    """Where training stands: optimizer steps taken and the data position (epoch, batch within it)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0  # batches whose loss or gradient was not finite (no optimizer step taken)


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


def batches_from(
    loader: ResumableDataLoader | PackedStream, state: TrainerState, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Global batches from ``state``'s data position on, epoch after epoch, advancing it as they are read."""
    if isinstance(loader, PackedStream):  # endless; its position is its own state
        for batch in loader.batches(batch_size):
            state.epoch = loader.epoch
            state.batch_in_epoch += 1
            yield batch
        return
    while True:
        loader.set_epoch(state.epoch, start_index=state.batch_in_epoch)
        for batch in loader:
            state.batch_in_epoch += 1
            yield batch
        state.epoch += 1
        state.batch_in_epoch = 0


def rng_states(accelerator: Accelerator, generator: torch.Generator) -> dict[str, Any]:
    """Every process's dropout streams (CPU and CUDA, one row per process) and the corruption generator
    (the same on every process). Collective: every process must call it."""
    acc = accelerator
    rng: dict[str, Any] = {
        "torch": acc.gather(torch.get_rng_state().to(acc.device)[None]).cpu(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = acc.gather(torch.cuda.get_rng_state().to(acc.device)[None]).cpu()
    return rng


def restore_rng_states(rng: dict[str, Any], accelerator: Accelerator, generator: torch.Generator) -> None:
    """Put :func:`rng_states`' streams back: the corruption generator always, this process's dropout streams
    when the checkpoint was written by as many processes as this run has (else they start afresh, said once)."""
    generator.set_state(rng["generator"])
    rank, world = accelerator.process_index, accelerator.num_processes
    streams = rng["torch"] if rng["torch"].dim() == 2 else rng["torch"][None]  # 1-D: one process
    if len(streams) == world:
        # clone: set_rng_state reads a row view from its storage's start (torch 2.x), so it needs a copy
        torch.set_rng_state(streams[rank].clone())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"].reshape(world, -1)[rank].clone())
    elif accelerator.is_main_process:
        print(
            f"the checkpoint was written by {len(streams)} process(es), this run has {world}: the data "
            "and noise resume exactly, the dropout streams start afresh"
        )
