"""The training step's core: where a loss meets the model. The trainer and the bound both score through it."""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.losses import LossTerms
from ..diffusion.objectives import Corrupted, Objective
from ..diffusion.self_prompt import SelfPrompt


def denoiser_terms(
    model: torch.nn.Module,
    objective: Objective,
    x0: Tensor,
    attention_mask: Tensor,
    corrupted: Corrupted,
    self_prompt: SelfPrompt | None = None,
    estimate_rows: Tensor | None = None,
) -> LossTerms:
    """Run the denoiser on x_t, at masked positions only, and score it: where a loss meets the model.

    A self-prompting model (``self_prompt``) reads a prompt before x_t's span: the empty one, or for the rows
    of ``estimate_rows`` [B] (bool) its own estimate of x_0 from a first pass without gradient on the same
    x_t (:mod:`~diffusionbert.diffusion.self_prompt`); only the second pass is scored."""
    x_t, masked, time = corrupted.x_t, corrupted.masked, corrupted.time
    if self_prompt is None:
        return objective.loss(model(x_t, attention_mask, t=time, positions=masked).logits, x0, corrupted)

    def prompted(prompt: Tensor) -> Tensor:
        ids, positions, attention = self_prompt.inputs(
            x_t, corrupted.noise_mask, prompt, masked, attention_mask
        )
        return model(ids, attention, t=time, positions=positions).logits

    prompt = self_prompt.empty(x_t, corrupted.noise_mask)
    if estimate_rows is not None and bool(estimate_rows.any()):
        with torch.no_grad():
            estimate = prompted(prompt).argmax(-1)
        prompt = torch.where(estimate_rows[:, None], self_prompt.from_estimate(x_t, masked, estimate), prompt)
    return objective.loss(prompted(prompt), x0, corrupted)
