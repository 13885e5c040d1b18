"""Semi-autoregressive decoding (LLaDA): the generated positions cut into blocks, denoised left to right.

Each block runs the whole denoising loop (:func:`~diffusionbert.sampling.loop.denoise`) with its own
``timesteps``, from all-[MASK] to clean tokens, while the blocks after it stay [MASK] (the network sees them
as masked, as at the start of a plain call) and the blocks before it stay as they were decoded. Inside a
block any sampler works; LLaDA's choice is low-confidence remasking (``confidence``). A long answer then
needs no global plan: its start is fixed before its end is decided.

With an ``end_id`` a row stops once it has generated that token (its text's end) in a block: its later
blocks become ``end_id`` filler without a network call, so a short answer in a long window costs only the
blocks it spans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..diffusion.reverse import Time
from ..diffusion.self_prompt import SelfPrompt
from ..errors import ConfigError
from .draws import Generators
from .loop import Denoiser, DenoiseResult, denoise
from .samplers import Sampler


def block_index(generated: Tensor, block_length: int) -> Tensor:
    """Per position [B, L], the block it belongs to: the k-th run of ``block_length`` generated positions of
    its row, counted left to right (−1 where nothing is generated)."""
    if block_length < 1:
        raise ConfigError(f"block_length={block_length} is not valid; allowed: block_length >= 1")
    rank = generated.long().cumsum(-1) - 1
    return torch.where(generated, rank // block_length, -1)


def denoise_blocks(
    denoiser: Denoiser,
    x: Tensor,
    sampler: Sampler,
    timesteps: Sequence[tuple[Time, Time]],
    generator: Generators,
    *,
    generated: Tensor,
    blocks: Tensor,
    end_id: int | None = None,
    noise_mask: Tensor | None = None,
    cache: bool = False,
    return_trajectory: bool = False,
    advance: Callable[[int], None] | None = None,
    self_prompt: SelfPrompt | None = None,
    on_step: Callable[[Tensor], None] | None = None,
) -> DenoiseResult:
    """Decode the ``generated`` positions of x block by block (see the module doc): ``blocks`` [B, L] numbers
    each generated position's block (:func:`block_index`, or a block-diffusion model's own blocks; −1 where
    nothing is generated). Each block walks all of ``timesteps``, so a call takes up to ``blocks ×
    len(timesteps)`` steps. The other arguments mean what they mean for :func:`denoise`; the trajectory holds
    the start and every step of every block ([B, blocks · K + 1, L]), and ``advance`` counts
    ``len(timesteps)`` per block."""
    num_blocks = int(blocks.max()) + 1
    x = x.masked_fill(generated, sampler.mask_id)
    nfe = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    ended = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    states = [x.unsqueeze(1)] if return_trajectory else []
    scores = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    noise_mask = generated if noise_mask is None else noise_mask
    for k in range(num_blocks):
        block = (blocks == k) & ~ended[:, None]
        result = denoise(
            denoiser,
            x,
            sampler,
            timesteps,
            generator,
            generated=block,
            noise_mask=noise_mask,
            cache=cache,
            return_trajectory=return_trajectory,
            advance=advance,
            self_prompt=self_prompt,
            on_step=on_step,
        )
        x, nfe = result.tokens, nfe + result.nfe
        assert result.scores is not None
        scores = torch.where(block, result.scores, scores)
        if result.trajectory is not None:
            states.append(result.trajectory[:, 1:])
        if end_id is not None:
            ended |= ((x == end_id) & block).any(-1)
            x = x.masked_fill((blocks > k) & ended[:, None], end_id)
    return DenoiseResult(x, nfe, torch.cat(states, 1) if return_trajectory else None, scores)
