"""The training step's core: where a loss meets the model. The trainer and the bound both score through it."""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.losses import LossTerms
from ..diffusion.objectives import Corrupted, Objective, TokenObjective
from ..diffusion.self_prompt import SelfPrompt
from ..errors import ConfigError


def denoiser_terms(
    model: torch.nn.Module,
    objective: Objective,
    x0: Tensor,
    attention_mask: Tensor,
    corrupted: Corrupted,
    self_prompt: SelfPrompt | None = None,
    estimate_rows: Tensor | None = None,
) -> LossTerms:
    """Run the denoiser on the corrupted batch and score it (:meth:`Objective.terms`): where a loss meets
    the model.

    A self-prompting model (``self_prompt``) reads a prompt before x_t's span: the empty one, or for the rows
    of ``estimate_rows`` [B] (bool) its own estimate of x_0 from a first pass without gradient on the same
    x_t (:mod:`~diffusionbert.diffusion.self_prompt`); only the second pass is scored."""
    if self_prompt is None:
        return objective.terms(model, x0, attention_mask, corrupted)
    x_t, masked, time = corrupted.x_t, corrupted.masked, corrupted.time

    def prompted(prompt: Tensor) -> Tensor:
        ids, positions, attention = self_prompt.inputs(
            x_t, corrupted.noise_mask, prompt, masked, attention_mask
        )
        return model(ids, attention, t=time, positions=positions).logits

    if not isinstance(objective, TokenObjective):
        raise ConfigError(
            f"objective={objective.name!r} does not read token ids; self-prompting needs one that does"
        )
    prompt = self_prompt.empty(x_t, corrupted.noise_mask)
    if estimate_rows is not None and bool(estimate_rows.any()):
        with torch.no_grad():
            estimate = prompted(prompt).argmax(-1)
        prompt = torch.where(estimate_rows[:, None], self_prompt.from_estimate(x_t, masked, estimate), prompt)
    return objective.loss(prompted(prompt), x0, corrupted)
