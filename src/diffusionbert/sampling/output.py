"""What every sampler of the package returns, diffusion or left to right."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class SampleOutput:
    """Generated texts and their token ids.

    ``token_ids`` [N, S] are the whole final sequences (``[CLS]``, conditioning, and tokens after the cut);
    ``lengths`` the number of text tokens before the first generated ``[SEP]``; ``nfe`` the network calls
    per sample; ``trajectories`` [N, K + 1, S] every state from all-[MASK] to the end, when asked for;
    ``scores`` the mean log p_θ of each sample's generated tokens, each when it was (last) revealed
    (Mask-Predict's score of a text; None where the decoder has none).
    """

    texts: list[str]
    token_ids: Tensor
    lengths: list[int]
    nfe: list[int]
    trajectories: Tensor | None = None
    scores: list[float] | None = None
