"""The absorbing forward process q and the reverse step built from it.

Positions are independent. q(x_t^i | x_0) keeps the token with probability α_t^i and writes [MASK] otherwise;
a masked token stays masked. For s < t and a masked x_t^i, the posterior q(x_s^i | x_t, x_0) reveals x_0^i
with the unmask probability u = (α_s − α_t) / (1 − α_t). The reverse step p_θ(x_s | x_t) averages that
posterior over the network's prediction p_θ(x_0 | x_t) (x_0-parameterisation), see :func:`reverse_step`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def stratified_uniform(rows: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
    """``rows`` draws u ∈ [0, 1) [rows], float64, one in each of ``rows`` equal strata: a single uniform
    offset on an evenly spaced grid. Each draw is uniform on its own, so an average over them is unbiased;
    together they cover [0, 1) evenly (low discrepancy), so the average varies less than over independent
    draws: how a batch of times (or of copies of one sequence) is drawn for a low-variance bound."""
    offset = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    grid = torch.arange(rows, device=device, dtype=torch.float64) / rows
    return torch.remainder(offset + grid, 1.0)


def mask_tokens(
    x0: Tensor, alpha: Tensor, noise_mask: Tensor, mask_id: int, generator: torch.Generator
) -> Tensor:
    """Draw x_t ~ q(x_t | x_0): each noisable token survives with its probability ``alpha`` [B, L]."""
    draw = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
    masked = noise_mask & (draw >= alpha)
    return torch.where(masked, torch.full_like(x0, mask_id), x0)


def mask_sources(x: Tensor, rows: Tensor, sep_id: int, mask_id: int) -> Tensor:
    """``x`` [B, L] of pair rows ``[CLS] source [SEP] target …`` with the source of the ``rows`` [B] (bool)
    written as [MASK]: the unconditional input that source dropout trains and guidance contrasts with."""
    positions = torch.arange(x.shape[1], device=x.device)
    first_sep = (x == sep_id).long().argmax(-1, keepdim=True)  # the separator: a source holds no [SEP]
    source = (positions >= 1) & (positions < first_sep) & rows[:, None]
    return x.masked_fill(source, mask_id)


def unmask_probability(alpha_s: Tensor, alpha_t: Tensor) -> Tensor:
    """u = (α_s − α_t) / (1 − α_t): probability that a token masked at t is revealed by time s < t.

    Where 1 − α_t = 0 nothing can be masked at t; u is then defined as 1 (any value would do).
    """
    denom = 1.0 - alpha_t
    safe = denom > 0
    u = (alpha_s - alpha_t) / torch.where(safe, denom, torch.ones_like(denom))
    return torch.where(safe, u.clamp(0.0, 1.0), torch.ones_like(u))


def sample_posterior(x_t: Tensor, x0: Tensor, u: Tensor, mask_id: int, generator: torch.Generator) -> Tensor:
    """Draw x_s ~ q(x_s | x_t, x_0): each masked position reveals x_0 with its probability ``u`` [B, L]."""
    draw = torch.rand(x_t.shape, generator=generator, device=x_t.device, dtype=torch.float64)
    reveal = (x_t == mask_id) & (draw < u)
    return torch.where(reveal, x0, x_t)


def _log_or_neg_inf(x: Tensor) -> Tensor:
    """log x, −inf where x ≤ 0, with a finite gradient everywhere (plain log gives 0 · ∞ = NaN at 0)."""
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, torch.ones_like(x))), float("-inf"))


class ReverseStep(NamedTuple):
    """p_θ(x_s | x_t) at n masked positions, in log space.

    log p_θ(x_s = v | x_t) = log p_θ(x_0 = v | x_t) + log u(v) (see :meth:`log_reveal`), and
    ``log_stay[n]`` = log p_θ(x_s = [MASK] | x_t) = log Σ_v p_θ(v | x_t)(1 − u(v)).
    """

    log_p_x0: Tensor
    log_u: Tensor  # per sentence, [B, 1] or [B, V]
    rows: Tensor
    log_stay: Tensor

    def log_reveal(self) -> Tensor:
        """log p_θ(x_s = v | x_t) for every token v, [n, V]."""
        return self.log_p_x0 + self.log_u[self.rows]

    def log_reveal_at(self, tokens: Tensor) -> Tensor:
        """log p_θ(x_s = tokens | x_t) for one token per position, [n] (no [n, V] temporary)."""
        index = tokens.unsqueeze(-1)
        log_u = self.log_u[self.rows, tokens] if self.log_u.shape[-1] > 1 else self.log_u[self.rows, 0]
        return self.log_p_x0.gather(-1, index).squeeze(-1) + log_u


def reverse_step(log_p_x0: Tensor, u: Tensor, rows: Tensor, probs: Tensor | None = None) -> ReverseStep:
    """The x_0-parameterised reverse step from p_θ(x_0 | x_t) [n, V] and unmask probabilities ``u``.

    ``u`` is per sentence: [B, 1] when α does not depend on the token value, or [B, V] (one per candidate v)
    for token-dependent schedules such as spindle; ``rows`` [n] gives each masked position's sentence.
    The probability of staying masked is Σ_v p(v)(1 − u(v)) rather than 1 − Σ_v p(v)u(v): exactly 0 when
    every u is 1, and free of cancellation. ``probs`` = exp(``log_p_x0``) may be passed when the caller has it.
    """
    keep = 1.0 - u
    probs = log_p_x0.exp() if probs is None else probs
    if u.shape[-1] == 1:
        stay = keep[rows, 0] * probs.sum(-1)
    else:  # Σ_v p_n(v) keep_{row(n)}(v) for all n at once, as one matrix product
        stay = (probs @ keep.transpose(0, 1)).gather(-1, rows.unsqueeze(-1)).squeeze(-1)
    return ReverseStep(log_p_x0, _log_or_neg_inf(u), rows, _log_or_neg_inf(stay))


def group_mass(probs: Tensor, groups: Tensor | None, num_groups: int = 1) -> Tensor:
    """p_θ's total mass per token group, [n, G], from probabilities [n, V] and each token's group [V].

    ``groups=None`` is one group of every token ([n, 1]). Positions are summed independently, each in
    vocabulary order, so a position's masses do not depend on which other positions share the call.
    """
    if groups is None:
        return probs.sum(-1, keepdim=True)
    mass = probs.new_zeros(probs.shape[0], num_groups)
    return mass.scatter_add_(1, groups.to(probs.device).expand_as(probs), probs)


def reverse_stay(mass: Tensor, u: Tensor, rows: Tensor) -> Tensor:
    """log p_θ(x_s = [MASK] | x_t) [n] = log Σ_g mass_g (1 − u_g), :func:`reverse_step`'s ``log_stay``.

    ``mass`` [n, G] is :func:`group_mass` of p_θ(x_0 | x_t) and ``u`` [B, G] the unmask probability of each
    group's tokens per sentence (G = 1 when u does not depend on the token). A sampler that keeps the masses
    of one prediction over many steps pays O(n·G) per step instead of O(n·V).
    """
    return _log_or_neg_inf((mass * (1.0 - u)[rows]).sum(-1))
