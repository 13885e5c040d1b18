"""Diffusion-NAT's self-prompting: the denoiser reads an estimate of x_0 as a prompt before its input.

A self-prompting model sees every row as

    [CLS] source [SEP] prompt [SEP] x_t's noisable span …        (pairs; plain texts: [CLS] prompt [SEP] …)

where the *prompt* has one token per noisable position of the row (the span where ``noise_mask`` is True, which
is contiguous in every layout) and the rest of the row follows it unchanged, right-padded. The prompt is an
estimate of x_0 over that span: x_t's token where it is revealed and the denoiser's most likely token where it
is masked (:meth:`SelfPrompt.from_estimate`), or all [MASK] when there is none yet (:meth:`SelfPrompt.empty`).
Training shows the model both (the estimate from a first, gradient-free pass on the same x_t, for a share of
the rows); sampling starts from the empty prompt and feeds back the previous step's estimate, so each step
costs one network call on a longer sequence. Logits are asked for and returned at the moved positions of x_t,
in the same row-major order, so a loss or a sampler reads them as without a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError


def insert_before_span(values: Tensor, span: Tensor, inserted: Tensor, separator: int, fill: int) -> Tensor:
    """``values`` [B, L] with each row's ``span`` entries of ``inserted`` [B, L] and one ``separator`` put
    just before the row's span, which moves right (with everything after it) by the span's length + 1; the
    result [B, L + longest span + 1] is filled with ``fill`` after each row's end."""
    batch, length = values.shape
    sizes = span.sum(-1)
    if bool((sizes == 0).any()):
        raise ConfigError("self-prompting needs a noisable position in every row; allowed: non-empty targets")
    starts = span.long().argmax(-1)
    columns = torch.arange(length, device=values.device)
    if bool((span != ((columns >= starts[:, None]) & (columns < (starts + sizes)[:, None]))).any()):
        raise ConfigError("self-prompting needs each row's noisable positions to be one contiguous span")
    moved = columns + torch.where(columns >= starts[:, None], sizes[:, None] + 1, 0)
    out = torch.full((batch, length + int(sizes.max()) + 1), fill, dtype=values.dtype, device=values.device)
    out.scatter_(1, moved, values)
    out[:, :length] = torch.where(span, inserted, out[:, :length])  # the span's old columns hold the prompt
    out[torch.arange(batch, device=values.device), starts + sizes] = separator
    return out


@dataclass(frozen=True)
class SelfPrompt:
    """The prompted layout of a self-prompting model (see the module doc), by its special ids."""

    mask_id: int
    sep_id: int
    pad_id: int

    def empty(self, x_t: Tensor, noise_mask: Tensor) -> Tensor:
        """The prompt without an estimate: [MASK] over the noisable span (aligned with x_t [B, L])."""
        return x_t.masked_fill(noise_mask, self.mask_id)

    @staticmethod
    def from_estimate(x_t: Tensor, masked: Tensor, estimate: Tensor) -> Tensor:
        """The prompt of an estimate [n] of the ``masked`` positions (row-major): x_t elsewhere."""
        prompt = x_t.clone()
        prompt[masked] = estimate
        return prompt

    def inputs(
        self,
        x_t: Tensor,
        noise_mask: Tensor,
        prompt: Tensor,
        positions: Tensor,
        attention_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The model's ``input_ids``, ``positions`` (x_t's, moved) and ``attention_mask`` (None stays None)
        for rows ``x_t`` with ``prompt`` over their ``noise_mask`` span."""
        ids = insert_before_span(x_t, noise_mask, prompt, self.sep_id, self.pad_id)
        none = torch.zeros_like(positions)
        moved = insert_before_span(positions, noise_mask, none, False, False)
        if attention_mask is None:
            return ids, moved, None
        seen = torch.ones_like(attention_mask)
        return ids, moved, insert_before_span(attention_mask, noise_mask, seen, 1, 0)


def self_prompt_layout(tokenizer: object) -> SelfPrompt:
    """The layout of a tokenizer's [MASK], [SEP] and [PAD] ids."""
    ids = [getattr(tokenizer, f"{name}_token_id", None) for name in ("mask", "sep", "pad")]
    if None in ids:
        raise ConfigError(
            "self-prompting needs [MASK], [SEP] and [PAD] tokens; allowed: a BERT-family tokenizer"
        )
    return SelfPrompt(*ids)
