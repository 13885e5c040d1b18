"""The reverse process of Gaussian embedding diffusion (Diffusion-LM): from N(0, I) to words, step by step.

The absorbing families reveal tokens (:mod:`.loop`); here every generated position holds a vector z [D] the
whole way, so the loop is simpler: each step calls the network once on all rows (a self-conditioning network
also reads the last step's x̂), takes x̂ (optionally clamped to the most likely word's embedding) and draws
z_s from the model's posterior step
(:func:`~diffusionbert.diffusion.embedding.reverse_step`). At t = 0 the words are drawn from the family's
rounding distribution p(w | z_0). Given positions ([CLS], a prompt, an infill's text, a source) keep their clean
embeddings throughout, as in training.

Every draw comes from the row's own generator (:class:`~.draws.RowRandom`), so a sample does not depend on
the batch it falls in. The trajectory, when asked for, holds each step's most likely words under x̂ (the
text the model currently has in mind), with the first state all [MASK] like the absorbing loop's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from ..diffusion.embedding import EmbeddingDenoiser, EmbeddingObjective, reverse_step
from .draws import Generators, RowRandom, gumbel_argmax
from .loop import DenoiseResult


def denoise_embeddings(
    model: EmbeddingDenoiser,
    objective: EmbeddingObjective,
    ids: Tensor,
    generated: Tensor,
    steps: int,
    generator: Generators,
    *,
    attention_mask: Tensor | None = None,
    clamp: bool = True,
    mask_id: int,
    return_trajectory: bool = False,
    advance: Callable[[int], None] | None = None,
) -> DenoiseResult:
    """Words at the ``generated`` [B, L] positions of ``ids`` [B, L] after ``steps`` reverse steps from t = 1.

    ``clamp`` applies Diffusion-LM's clamping trick at every step (not the process the bound scores, but
    what the paper samples with); without it the steps are the model's own p(z_s | z_t).
    """
    batch = ids.shape[0]
    grid = objective.reverse_grid(steps)
    random = RowRandom(generator, batch)
    rows = generated.nonzero()[:, 0]
    dim = objective.embedding_dim
    z = model.embed(ids).clone()
    z[generated] = random.normal(rows, dim).to(z.dtype)
    trajectory = None
    if return_trajectory:
        trajectory = ids.masked_fill(generated, mask_id).unsqueeze(1).repeat(1, steps + 1, 1)
    gammas = objective.gamma(model, torch.tensor(grid, device=ids.device)).to(z.dtype)
    self_conditioning = bool(getattr(model.config, "self_conditioning", False))
    previous = torch.zeros_like(z) if self_conditioning else None  # x̂ of the last step, fed back
    for index, (t, _) in enumerate(itertools.pairwise(grid)):
        time = torch.full((batch,), t, dtype=torch.float32, device=ids.device)
        output = model(z, attention_mask, t=time, positions=generated, self_condition=previous).prediction
        x_hat = objective.clean_estimate(model, output, z[generated], gammas[index])
        if previous is not None:
            previous[generated] = x_hat
        if clamp:
            x_hat = objective.clamp(model, x_hat)
        noise = random.normal(rows, dim).to(z.dtype)
        z[generated] = reverse_step(z[generated], x_hat, gammas[index + 1], gammas[index], noise)
        if trajectory is not None:
            trajectory[:, index + 1][generated] = objective.rounding_log_probs(model, x_hat).argmax(-1)
        if advance is not None:
            advance(1)
    log_probs = objective.rounding_log_probs(model, z[generated]).to(torch.float64)
    tokens = ids.masked_scatter(generated, gumbel_argmax(log_probs, rows, random))
    if trajectory is not None:
        trajectory[:, -1] = tokens
    return DenoiseResult(tokens, torch.full((batch,), steps, device=ids.device), trajectory)
