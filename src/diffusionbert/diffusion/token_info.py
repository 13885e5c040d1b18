"""Corpus token counts → the per-token values a_v that the spindle schedule centres and compares.

Two forms, both from unigram counts c_v of the training split:
- reference (the public DiffusionBERT code): a_v = log(c_v + 1) / max_u log(c_u + 1) ∈ [0, 1],
  high for frequent tokens;
- paper (arXiv 2211.15029): a_v = token information h_v = −log p̂_v in nats, with the add-one estimate
  p̂_v = (c_v + 1) / (N + V), high for rare tokens.
The corpus centre is the mean of a over the corpus tokens (count-weighted); for the paper form it is the
unigram entropy of the corpus.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError
from .schedules import NoiseSchedule, SpindleCentering, SpindleForm, SpindleSchedule


def _check_counts(counts: Tensor) -> Tensor:
    if counts.ndim != 1 or counts.numel() == 0 or bool((counts < 0).any()):
        raise DataError("token counts must be a non-empty 1-D tensor of non-negative integers")
    if int(counts.sum()) == 0:
        raise DataError("token counts are all zero: the training data has no tokens to count")
    return counts.to(torch.float64)


def reference_token_values(counts: Tensor) -> Tensor:
    """a_v = log(c_v + 1) / max_u log(c_u + 1): the reference code's normalised log frequency."""
    log_counts = torch.log1p(_check_counts(counts))
    return log_counts / log_counts.max()


def token_information(counts: Tensor) -> Tensor:
    """h_v = −log p̂_v with add-one smoothing, in nats: the paper's per-token information."""
    counts = _check_counts(counts)
    return -torch.log((counts + 1.0) / (counts.sum() + counts.numel()))


def corpus_centre(values: Tensor, counts: Tensor) -> float:
    """Count-weighted mean of a over the corpus tokens."""
    counts = _check_counts(counts)
    return float((values * counts).sum() / counts.sum())


def spindle_from_counts(
    base: NoiseSchedule,
    counts: Tensor,
    form: SpindleForm = "reference",
    lam: float = 0.3,
    centering: SpindleCentering = "sentence",
    clip: bool = True,
) -> SpindleSchedule:
    """A spindle schedule whose token values and corpus centre come from training-split counts."""
    values = reference_token_values(counts) if form == "reference" else token_information(counts)
    return SpindleSchedule(
        base=base,
        token_values=values,
        corpus_centre=corpus_centre(values, counts),
        form=form,
        lam=lam,
        centering=centering,
        clip=clip,
    )
