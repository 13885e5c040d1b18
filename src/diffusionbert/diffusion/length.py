"""The length of a target, read off a target-window model's first prediction.

A pair model trained with ``data.target_window`` W sees every target as its n ≤ W − 1 tokens followed by
``[SEP]`` × (W − n), so at target position i (0-based) the clean token is ``[SEP]`` exactly when n ≤ i. Its
first prediction, on the all-[MASK] window at t = 1, therefore estimates the distribution function of the
text length given the source:

    F(i) = P(n ≤ i | source) ≈ p_θ(x_i = [SEP] | source, all masked),     F(W − 1) = 1.

A network's marginals need not be monotone in i, so :func:`length_cdf` takes their running maximum (the
smallest non-decreasing function above them). :func:`median_length` is then the median of n: the first i
with F(i) ≥ 1/2. Deciding the length first and decoding only that many positions keeps a decoder that
reveals its most confident positions first from choosing the filler early, one ``[SEP]`` at a time, and
cutting the text short (see ``docs/results-e2e.md``); it is how Mask-Predict and LLaDA's fixed answer
lengths work, with the length taken from the denoiser itself rather than a separate length head.
"""

from __future__ import annotations

import torch
from torch import Tensor


def length_cdf(sep_log_probs: Tensor) -> Tensor:
    """F [B, W] from log p_θ(x_i = [SEP]) [B, W] over a target window: the running maximum of the
    probabilities, with F(W − 1) = 1 (every trained target ends in the window)."""
    cdf = sep_log_probs.exp().cummax(dim=-1).values
    cdf[:, -1] = 1.0
    return cdf


def likely_lengths(cdf: Tensor, beam: int) -> Tensor:
    """``beam`` text lengths [B, beam] (long, ≥ 1) under ``cdf`` [B, W]: the median first, then the most
    probable other lengths by P(n = i) = F(i) − F(i − 1), ties to the shorter (Mask-Predict's length beam,
    always holding the length a beam of one decodes). Needs beam ≤ W − 1, the lengths a window holds."""
    median = median_length(cdf).clamp_min(1)
    if beam == 1:
        return median[:, None]
    if not 1 < beam < cdf.shape[-1]:
        raise ValueError(f"beam={beam} outside 1..{cdf.shape[-1] - 1}")
    pmf = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[:, :1]))
    pmf[:, 0] = float("-inf")  # a text has at least one token
    pmf = pmf.scatter(1, median[:, None], float("inf"))
    return pmf.to(torch.float64).argsort(dim=-1, descending=True, stable=True)[:, :beam]


def median_length(cdf: Tensor) -> Tensor:
    """The median text length [B] (long) of a length distribution function ``cdf`` [B, W]: the number of
    positions i with F(i) < 1/2, i.e. the first i with F(i) ≥ 1/2."""
    return (cdf < 0.5).sum(-1).to(torch.long)
