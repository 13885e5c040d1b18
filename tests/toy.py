"""Tiny problems that can be enumerated exactly: a few tokens, a few positions, a fixed random denoiser."""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import Tensor

from diffusionbert.diffusion.corruption import reverse_step
from diffusionbert.diffusion.objectives import DiscreteObjective

VOCAB = 3  # real tokens 0..VOCAB-1
MASK = VOCAB  # the absorbing state, last id
LENGTH = 3
COUNTS = torch.tensor([50, 5, 1, 0])  # corpus counts of the 3 real tokens and [MASK]
NOISE = torch.ones(1, LENGTH, dtype=torch.bool)


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


class ReverseChain:
    """The generative process: p_θ(x_{k−1} | x_k) from the objective's reverse rule and the denoiser."""

    def __init__(self, obj: DiscreteObjective, model: ToyDenoiser):
        self.obj, self.model = obj, model

    @functools.cache  # noqa: B019 - one chain per test, freed with it
    def transition(self, state: tuple[int, ...], k: int) -> dict[tuple[int, ...], float]:
        x_t = torch.tensor(state)[None]
        masked = (x_t == MASK)[0]
        if not masked.any():
            return {state: 1.0}
        time = torch.tensor([k / self.obj.num_steps])
        log_p = torch.log_softmax(self.model.logits(x_t, time)[0, masked], dim=-1)
        rows = torch.zeros(int(masked.sum()), dtype=torch.long)
        u = self.obj.reverse_unmask_probability(
            log_p, rows, x_t, NOISE, torch.tensor([k]), torch.tensor([k - 1])
        )
        step = reverse_step(log_p, u, rows)
        atoms = torch.cat([step.log_reveal()[:, :VOCAB], step.log_stay[:, None]], dim=-1).exp()  # stay = MASK
        positions = masked.nonzero()[:, 0].tolist()
        out: dict[tuple[int, ...], float] = {}
        for choice in itertools.product(range(VOCAB + 1), repeat=len(positions)):
            prob = math.prod(atoms[j, c].item() for j, c in enumerate(choice))
            if prob == 0.0:
                continue
            nxt = list(state)
            for pos, c in zip(positions, choice, strict=True):
                nxt[pos] = c
            out[tuple(nxt)] = out.get(tuple(nxt), 0.0) + prob
        return out

    def marginals(self) -> dict[tuple[int, ...], float]:
        """p_θ(x_0) for every x_0, starting from all-[MASK] at step T."""
        dist = {(MASK,) * LENGTH: 1.0}
        for k in range(self.obj.num_steps, 0, -1):
            nxt: dict[tuple[int, ...], float] = {}
            for state, p in dist.items():
                for s, pt in self.transition(state, k).items():
                    nxt[s] = nxt.get(s, 0.0) + p * pt
            dist = nxt
        return dist

    def brute_force_elbo(self, x0: torch.Tensor) -> float:
        """E_q[log q(x_{1:T}|x_0) − log p(x_{0:T})] over every masking-time assignment τ ∈ {1..T}^L."""
        T = self.obj.num_steps
        alphas = torch.stack(
            [self.obj.alphas(x0[None], NOISE, torch.tensor([k]))[0][0] for k in range(1, T + 1)]
        )
        alphas = torch.cat([alphas, torch.zeros(1, LENGTH, dtype=alphas.dtype)])  # α_0 .. α_T per position
        elbo = 0.0
        for taus in itertools.product(range(1, T + 1), repeat=LENGTH):
            q = math.prod((alphas[tau - 1, i] - alphas[tau, i]).item() for i, tau in enumerate(taus))
            if q <= 0.0:
                continue
            path = [
                tuple(MASK if k >= tau else int(x0[i]) for i, tau in enumerate(taus)) for k in range(T + 1)
            ]
            log_p = sum(math.log(self.transition(path[k], k)[path[k - 1]]) for k in range(1, T + 1))
            elbo += q * (math.log(q) - log_p)
        return elbo


def exact_continuous_nelbo(model: ToyDenoiser, x0: torch.Tensor) -> float:
    """∫_0^1 (1/t) E_q Σ_masked −log p_θ(x_0|x_t) dt for a time-agnostic denoiser and α_t = 1 − t.

    The mask pattern S has probability t^|S| (1 − t)^(L−|S|), so the integral is a Beta function.
    """
    total = 0.0
    for pattern in all_mask_patterns():
        k = int(pattern.sum())
        if k == 0:
            continue
        x_t = torch.where(pattern, MASK, x0)[None]
        log_p = torch.log_softmax(model.logits(x_t, torch.zeros(1))[0], dim=-1)
        ce = -log_p[pattern].gather(-1, x0[pattern][:, None]).sum().item()
        total += math.gamma(k) * math.gamma(LENGTH - k + 1) / math.gamma(LENGTH + 1) * ce
    return total
