"""The training step's core: where a loss meets the model. The trainer and the bound both score through it."""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.losses import LossTerms
from ..diffusion.objectives import Corrupted, Objective


def denoiser_terms(
    model: torch.nn.Module, objective: Objective, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
) -> LossTerms:
    """Run the denoiser on x_t, at masked positions only, and score it: where a loss meets the model."""
    logits = model(corrupted.x_t, attention_mask, t=corrupted.time, positions=corrupted.masked).logits
    return objective.loss(logits, x0, corrupted)
