"""Tiny problems that can be enumerated exactly: a few tokens, a few positions, a fixed random denoiser."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

VOCAB = 3  # real tokens 0..VOCAB-1
MASK = VOCAB  # the absorbing state, last id
LENGTH = 3


class ToyDenoiser:
    """p_θ(x_0 | x_t): a fixed random table over every x_t, optionally varying linearly with t.

    Logits are float64 with −inf at [MASK], as the real model's forbidden ids are.
    """

    def __init__(self, seed: int = 0, time_dependent: bool = False, vocab: int = VOCAB, length: int = LENGTH):
        gen = torch.Generator().manual_seed(seed)
        self.vocab, self.length = vocab, length
        n_states = (vocab + 1) ** length
        self.table = 2.0 * torch.randn(n_states, length, vocab, generator=gen, dtype=torch.float64)
        self.slope = (
            torch.randn(n_states, length, vocab, generator=gen, dtype=torch.float64)
            if time_dependent
            else torch.zeros(n_states, length, vocab, dtype=torch.float64)
        )

    def state_index(self, x_t: Tensor) -> Tensor:
        weights = (self.vocab + 1) ** torch.arange(self.length - 1, -1, -1)
        return (x_t * weights).sum(-1)

    def logits(self, x_t: Tensor, time: Tensor) -> Tensor:
        """Logits [B, L, V + 1] for x_t [B, L] at times [B]."""
        idx = self.state_index(x_t)
        real = self.table[idx] + time.to(torch.float64).view(-1, 1, 1) * self.slope[idx]
        mask_col = torch.full((*real.shape[:2], 1), float("-inf"), dtype=torch.float64)
        return torch.cat([real, mask_col], dim=-1)


def all_sequences(vocab: int = VOCAB, length: int = LENGTH) -> Tensor:
    """Every clean sequence [V^L, L]."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)))


def all_mask_patterns(length: int = LENGTH) -> Tensor:
    """Every subset of positions as a bool tensor [2^L, L]."""
    return torch.tensor(list(itertools.product([False, True], repeat=length)))


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of observed ``counts`` to exact ``probs`` (cells of expected count < 5 pooled)."""
    expected = counts.sum() * probs
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum().view(1)])
    expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    keep = expected > 0
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return torch.special.gammaincc(torch.tensor(dof / 2.0), chi2 / 2.0).item()
