"""The autoregressive objective: next-token prediction scored on the tokens the diffusion bounds score.

A peer of the absorbing objectives, not a special case of them: it corrupts nothing (x_t = x_0), and its loss
is the exact negative log-likelihood by the chain rule. Because it scores exactly the noisable tokens, the
per-token and per-word perplexities of an AR model and of the diffusion models come out of the same
evaluator and compare directly (the AR number is exact, the diffusion numbers are upper bounds).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError
from .losses import LossTerms, cross_entropy
from .objectives import Corrupted, TokenObjective


class AutoregressiveObjective(TokenObjective):
    """Next-token prediction scored on the diffusion's noisable tokens: the exact NLL by the chain rule.

    Scored tokens are exactly those of ``noise_mask``: in the sentence layout every token after ``[CLS]``,
    including the final ``[SEP]`` as end-of-sentence (for pairs, the target and its ``[SEP]``, conditioned
    on the source). That is the count the diffusion bounds divide by, so per-token and per-word perplexities
    are comparable. Token ``i + 1`` is predicted at position ``i``, hence
    ``masked[:, i] = noise_mask[:, i + 1]`` and nothing is corrupted (``x_t = x_0``, ``t = 0``).
    ``mask_id`` is kept for the uniform constructor and unused. The objective is only meaningful with a
    causal model such as :class:`~diffusionbert.models.CausalLMForComparison`: a bidirectional masked LM would see the token it is
    asked to predict.
    """

    name: ClassVar[str] = "ar"

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        """The scored positions; draws nothing (``generator`` is accepted for the common signature)."""
        if bool(noise_mask[:, 0].any()):
            raise ConfigError(
                f"noise_mask marks position 0 in {int(noise_mask[:, 0].sum())} row(s), which an "
                "autoregressive model cannot score (nothing precedes it); allowed: noise_mask False in "
                "column 0, e.g. data.layout='sentence' (not 'packed')"
            )
        masked = torch.cat([noise_mask[:, 1:], torch.zeros_like(noise_mask[:, :1])], dim=1)
        time = torch.zeros(x0.shape[0], device=x0.device)
        return Corrupted(x_t=x0, noise_mask=noise_mask, masked=masked, time=time)

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        """Summed cross-entropy of ``logits`` [n, V] (at ``corrupted.masked``) against the next tokens."""
        targets = x0[:, 1:][corrupted.masked[:, :-1]]
        nll = cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets).sum()
        return LossTerms(nll, nll)
