"""Block diffusion (BD3-LM; Arriola et al., ICLR 2025): masked diffusion inside blocks, autoregressive across them.

The noisable positions of a text (its answer, for a pair) are cut into blocks of ``block_size`` B, counted from
the first noisable position. Each block b draws its own time t_b and is masked like MDLM's x_t with α(t_b);
the network reads every block of x_t together with the clean blocks before it (block-causal attention, in one
pass over x_t ⊕ x_0: :meth:`~diffusionbert.models.DiffusionBertForMaskedLM.forward` with ``clean=x0``) and the
NELBO is MDLM's, per block:

    −log p(x) ≤ Σ_b E_{t_b} [ w(t_b) Σ_{i ∈ b masked} −log p_θ(x_0^i | x_t^b, x_0^{<b}) ],   w = −α' / (1 − α).

With B = 1 a block is one token, masked with probability 1 − α(t): the expectation is Σ_i −log p_θ(x_i |
x_{<i}), exactly an autoregressive NLL; with B the whole window it is exactly MDLM's bound. Sampling decodes
block by block, each with any masked-diffusion sampler, and a text ends at the block holding its [SEP].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .corruption import mask_tokens
from .losses import LossTerms, weighted_cross_entropy_loss
from .objectives import ContinuousObjective, Corrupted
from .schedules import NoiseSchedule


def noisable_blocks(noise_mask: Tensor, block_size: int) -> Tensor:
    """Per position [B, L], its block: ⌊(i − first) / B⌋ from the row's first noisable position (−1 before it
    and wherever nothing is noised)."""
    columns = torch.arange(noise_mask.shape[1], device=noise_mask.device)
    first = noise_mask.long().argmax(-1, keepdim=True)
    blocks = (columns[None] - first).div(block_size, rounding_mode="floor")
    return torch.where(noise_mask, blocks, -1)


class BlockDiffusionObjective(ContinuousObjective):
    """BD3-LM's NELBO (module doc): a time per block, MDLM's weighted cross-entropy in each."""

    name: ClassVar[str] = "bd3lm"

    def __init__(self, mask_id: int, schedule: NoiseSchedule, block_size: int) -> None:
        super().__init__(mask_id, schedule)
        self.block_size = block_size

    def block_times(self, blocks: Tensor, generator: torch.Generator) -> Tensor:
        """t ∈ (0, 1] per row and block [B, n_blocks], float64, on one evenly spaced grid with a uniform offset
        over all the batch's blocks (low discrepancy, as MDLM's per-row times)."""
        rows, count = blocks.shape[0], int(blocks.max()) + 1
        return self.times(rows * count, generator, blocks.device).view(rows, count)

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        blocks = noisable_blocks(noise_mask, self.block_size)
        t = self.block_times(blocks, generator).gather(1, blocks.clamp_min(0))  # each position its block's t
        x_t = mask_tokens(x0, self.schedule.alpha(t), noise_mask, self.mask_id, generator)
        return Corrupted(
            x_t=x_t,
            noise_mask=noise_mask,
            masked=noise_mask & (x_t == self.mask_id),
            time=t.mean(-1).to(torch.float32),  # the network is time-agnostic; a row's mean, for the record
            weight=self.schedule.nelbo_weight(t),
        )

    def corrupted_at(self, x0: Tensor, noise_mask: Tensor, t: Tensor, x_t: Tensor) -> Corrupted:
        """Package given per-position times ``t`` [B, L] and x_t (each block's t repeated over it), e.g. to
        sum the bound exactly over times and mask patterns."""
        return Corrupted(
            x_t=x_t,
            noise_mask=noise_mask,
            masked=noise_mask & (x_t == self.mask_id),
            time=t.mean(-1).to(torch.float32),
            weight=self.schedule.nelbo_weight(t),
        )

    def terms(
        self, model: torch.nn.Module, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
    ) -> LossTerms:
        logits = model(
            corrupted.x_t, attention_mask, t=corrupted.time, positions=corrupted.masked, clean=x0
        ).logits
        return self.loss(logits, x0, corrupted)

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        weights = corrupted.weight[corrupted.masked].to(logits.dtype)
        return weighted_cross_entropy_loss(logits, x0[corrupted.masked], weights)
