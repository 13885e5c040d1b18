"""Fully sharded data parallel training (``training.distributed: fsdp``) on torch's FSDP2.

Each repeated block of the backbone (the classes its Hugging Face model lists in ``_no_split_modules`` that sit
in a ``ModuleList``: ``BertLayer``, ``RobertaLayer``…) becomes one FSDP unit, and the root unit holds the rest
(embeddings, the tied vocabulary head, the time embedding), so tied weights stay in one unit. Every process
keeps 1/N of each unit's parameters, gradients and optimizer state, and gathers a unit's full weights only
while it computes. This is the call accelerate makes for its FSDP2 plugin (``fully_shard`` per layer, then
the root); the trainer makes it itself because accelerate 1.x turns FSDP on for GPU-type devices only, and
this way CPU (gloo) and GPU runs go through one tested path.

Checkpoints stay whole: the model directory, the optimizer and the EMA are gathered into full tensors
(:func:`full_model_state`, :func:`full_optimizer_state`) and written by the main process in the same layout
as a DDP or single-process run, so a run can resume under any number of processes and ``final/`` is a plain
model directory. At the scale this package trains (BERT-base: 110 M parameters, 1.3 GB of weights and Adam
state) the full state fits one host easily.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from ..errors import ConfigError

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def layer_units(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of ``model``'s backbone: its FSDP units (at least one, else a ConfigError)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    units = [
        child
        for module in model.modules()
        if isinstance(module, nn.ModuleList)
        for child in module
        if type(child).__name__ in names
    ]
    if not units:
        raise ConfigError(
            f"training.distributed='fsdp' found no repeated layer to shard in {type(model).__name__} (its "
            "backbone lists none in _no_split_modules); allowed: training.distributed='ddp' for this backbone"
        )
    return units


def shard_model(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place over the default process group: each backbone layer, then the root."""
    for unit in layer_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard_model`."""
    return isinstance(model, FSDPModule)


def reshard(model: nn.Module) -> None:
    """Put every unit's parameters back in their shards (FSDP keeps the root's whole after a forward pass
    without backward, as in an evaluation), so that they can be read and written as shards again."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextmanager
def gradients_kept_local(model: nn.Module) -> Iterator[None]:
    """Within this block backward passes accumulate gradients without reducing them across processes (a
    micro-batch before the last of a step), as DDP's ``no_sync``."""
    assert isinstance(model, FSDPModule)
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (collective), any other tensor as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights on the CPU, by parameter name, on the main process (empty elsewhere; collective:
    every process must call it)."""
    return get_model_state_dict(model, options=_GATHER)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state in the layout of an unsharded ``optimizer.state_dict()``: per parameter
    index, in the order of its groups, on the main process (empty elsewhere; collective: every process must
    call it)."""
    state = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    if not state:
        return state
    index = {name: i for i, name in enumerate(_names_in_order(state["param_groups"]))}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in state["param_groups"]
        ],
    }


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a full, index-keyed optimizer state (any run's checkpoint) into a sharded model's optimizer:
    each process keeps its shard of it."""
    names = _names_in_order(get_optimizer_state_dict(model, optimizer)["param_groups"])
    keyed = {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]} for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, keyed, options=StateDictOptions(full_state_dict=True))


def shard_like(full: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``reference``: sharded the same way when that is a sharded parameter."""
    if isinstance(reference, DTensor):
        return distribute_tensor(full.to(reference.device), reference.device_mesh, reference.placements)
    return full.to(reference.device)


def _names_in_order(groups: list[dict[str, Any]]) -> list[str]:
    return [name for group in groups for name in group["params"]]
