"""Pure loss functions of the absorbing diffusion objectives, evaluated at masked positions only.

Every function takes ``logits`` [n, V] (the network's output at the n masked positions; forbidden ids such
as [MASK] and padding are −inf) and ``targets`` [n] (the clean tokens x_0 there), works in log space, and
returns :class:`LossTerms`: the sum to optimise and the sum that estimates the NELBO, both in nats. The
caller divides by the number of scored tokens. Which positions are masked and how t was drawn is the
business of :mod:`.objectives`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .corruption import reverse_step


class LossTerms(NamedTuple):
    """``loss``: the sum to minimise; ``nll``: an unbiased estimate of the summed NELBO (nats)."""

    loss: Tensor
    nll: Tensor


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """−log p_θ(x_0 | x_t) per position [n], with p_θ = softmax(logits)."""
    return torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def discrete_bound_kl(
    log_p: Tensor, targets: Tensor, u_q: Tensor, u_p: Tensor, rows: Tensor, probs: Tensor | None = None
) -> Tensor:
    """KL(q(x_s | x_t, x_0) ‖ p_θ(x_s | x_t)) per masked position [n], one term of the discrete-T bound.

    ``log_p`` [n, V] is log p_θ(x_0 | x_t). q has two atoms: x_0 with probability ``u_q`` [n] and [MASK] with
    1 − u_q. p_θ is the reverse step with unmask probabilities ``u_p`` per sentence ([B, 1], or [B, V] per
    candidate for token-dependent schedules) and ``rows`` [n] the positions' sentences. At s = 0 (u = 1) the
    term is the reconstruction loss −log p_θ(x_0 | x_1). ``probs`` = exp(``log_p``) may be passed if at hand.
    """
    step = reverse_step(log_p, u_p, rows, probs)
    keep = 1.0 - u_q
    zero = torch.zeros_like(u_q)  # an atom q never visits adds nothing (and no 0 · −inf)
    reveal_term = torch.where(u_q > 0, torch.xlogy(u_q, u_q) - u_q * step.log_reveal_at(targets), zero)
    stay_term = torch.where(keep > 0, torch.xlogy(keep, keep) - keep * step.log_stay, zero)
    return reveal_term + stay_term


def d3pm_hybrid_loss(
    log_p: Tensor,
    targets: Tensor,
    u_q: Tensor,
    u_p: Tensor,
    rows: Tensor,
    num_steps: int,
    hybrid_weight: float,
    probs: Tensor | None = None,
) -> LossTerms:
    """The paper's objective: T · KL at a uniformly drawn step (the bound) + λ · cross-entropy.

    Unlike the other losses it takes log-probabilities ``log_p`` (normalised; the reverse rule needs them
    anyway, so the caller computes them once), and optionally their exponentials ``probs``.
    """
    nll = num_steps * discrete_bound_kl(log_p, targets, u_q, u_p, rows, probs).sum()
    ce = -log_p.gather(-1, targets.unsqueeze(-1)).sum()
    return LossTerms(nll + hybrid_weight * ce, nll)


def weighted_cross_entropy_loss(logits: Tensor, targets: Tensor, weights: Tensor) -> LossTerms:
    """Cross-entropy times a per-position weight that makes it a NELBO estimate.

    The continuous-time NELBO (MD4 / MDLM) uses −α'_t / (1 − α_t) of the row's t; RADD's time-free
    any-order objective uses L / k with k of the row's L tokens masked.
    """
    nll = (weights * cross_entropy(logits, targets)).sum()
    return LossTerms(nll, nll)


def rdm_loss(logits: Tensor, targets: Tensor, rdm_weights: Tensor, elbo_weights: Tensor) -> LossTerms:
    """RDM's reweighted cross-entropy; the NELBO estimate uses the bound's own weights on the same draw."""
    ce = cross_entropy(logits, targets)
    return LossTerms((rdm_weights * ce).sum(), (elbo_weights * ce).sum())


def score_entropy_loss(logits: Tensor, targets: Tensor, weights: Tensor) -> LossTerms:
    """SEDD-absorbing denoising score entropy with unnormalised scores, the network's raw ``logits``.

    With log-scores ℓ_v + log(α_t / (1 − α_t)) the score entropy at a masked position, times σ'(t), is
    w_t · (Σ_v e^{ℓ_v} − ℓ_{x_0} − 1) with w_t the NELBO weight; it is ≥ 0 and reduces to the NELBO's
    cross-entropy when ℓ is normalised (Σ_v e^{ℓ_v} = 1).
    """
    target_logit = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    nll = (weights * (torch.logsumexp(logits, dim=-1).exp() - target_logit - 1.0)).sum()
    return LossTerms(nll, nll)
