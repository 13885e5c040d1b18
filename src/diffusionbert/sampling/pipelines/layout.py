"""Where a generated text sits in the sequence, and where it ends.

Sequences use the training layout ``[CLS] x_1 … x_L``: position 0 is kept and positions 1..L are generated
from all-[MASK]. Conditioning fixes tokens: a ``prompt`` right after ``[CLS]``, an ``infill`` template whose
``[MASK]`` placeholders are the only generated positions, or a seq2seq ``source`` in the pair layout
``[CLS] source [SEP] target …`` where only the target is generated. A pair model generating without a source
reads a *hidden source* first (``[MASK]`` × its mean source length, then ``[SEP]``: the input source dropout
trained it on). :func:`template` builds one such template (a :class:`Layout` of one row), checked against
the model's window; templates of several sources are stacked, right-padded with ``[PAD]``.

A text ends at its first generated ``[SEP]`` (``end="generated"``, :func:`text_ends`), or, for a model trained
with a target window, at the length the model predicts from one first call (``end="predicted"``,
:func:`resolve_end` and :func:`predicted_ends`): the window after it becomes given ``[SEP]`` filler, as in
training, and the decoded positions never hold ``[SEP]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ...diffusion.length import length_cdf, likely_lengths
from ...errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Sequence templates [R, S]: ids with [MASK] where generated (and [PAD] after a shorter template), the
    generated and noisable positions, and per template where the text starts, from where a generated [SEP]
    cuts it (after every given token) and where the template ends (before its padding)."""

    ids: Tensor
    generated: Tensor
    noise_mask: Tensor
    text_start: Tensor
    cut_from: Tensor
    end: Tensor

    @classmethod
    def stack(cls, layouts: list[Layout], pad_id: int) -> Layout:
        """One layout of several one-template layouts, right-padded to the longest."""
        width = max(layout.ids.shape[1] for layout in layouts)

        def pad(name: str, value: int | bool) -> Tensor:
            rows = [getattr(layout, name) for layout in layouts]
            return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=value) for r in rows])

        return cls(
            pad("ids", pad_id),
            pad("generated", False),
            pad("noise_mask", False),
            torch.cat([layout.text_start for layout in layouts]),
            torch.cat([layout.cut_from for layout in layouts]),
            torch.cat([layout.end for layout in layouts]),
        )

    def select(self, rows: Tensor) -> Layout:
        """The templates of ``rows`` (one index per output row)."""
        return Layout(
            self.ids[rows],
            self.generated[rows],
            self.noise_mask[rows],
            self.text_start[rows],
            self.cut_from[rows],
            self.end[rows],
        )


@dataclass(frozen=True)
class Conditioning:
    """What one call generates from: at most one of a ``prompt``, an ``infill`` template and a ``source``
    (one text, or a list decoded in one call)."""

    prompt: str | None = None
    infill: str | None = None
    source: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("prompt", "infill", "source") if getattr(self, name)]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} were both given; allowed: at most one of them")

    @property
    def mode(self) -> str:
        """``source``, ``infill``, ``prompt`` or ``unconditional``."""
        return next((name for name in ("source", "infill", "prompt") if getattr(self, name)), "unconditional")

    def sources(self) -> list[str | None]:
        """One entry per template: each source of a list (checked non-empty), else the one source or None."""
        source = self.source
        sources = [source] if source is None or isinstance(source, str) else list(source)
        if not sources or (len(sources) > 1 and not all(one and one.strip() for one in sources)):
            raise ConfigError("a source in the list is empty; allowed: a text or a list of non-empty texts")
        return sources


def template(
    tokenizer: PreTrainedTokenizerBase,
    window: int,
    length: int,
    conditioning: Conditioning,
    source: str | None,
    hidden: list[int],
) -> Layout:
    """The one-row template of ``conditioning`` (with ``source`` its one source), on the CPU: ``length``
    generated positions (an infill template fixes its own), ``hidden`` (a hidden source) before a text
    without a source, all within ``window`` positions (a one-line ConfigError naming the limit)."""
    tok, prompt, infill = tokenizer, conditioning.prompt, conditioning.infill
    mask, cls_id = tok.mask_token_id, tok.cls_token_id
    start = 1 + len(hidden)  # the first position of the text
    if infill:
        body = _encode(tok, infill)
        if mask not in body:
            raise ConfigError(
                f"infill={infill!r} has no {tok.mask_token} placeholder; allowed: text with at least one"
            )
        ids = torch.tensor([cls_id, *hidden, *body])
        generated = (ids == mask) & (torch.arange(len(ids)) >= start)
    else:
        if length < 1:
            raise ConfigError(f"length={length} is not valid; allowed: length >= 1")
        if source:
            fixed = [*_encode(tok, source), tok.sep_token_id]
            to_generate = length
        else:
            fixed = [*hidden, *(_encode(tok, prompt) if prompt else [])]
            if len(fixed) - len(hidden) > length:
                raise ConfigError(
                    f"prompt has {len(fixed) - len(hidden)} tokens but length={length}; allowed: a prompt "
                    "of at most length tokens (length counts the prompt)"
                )
            to_generate = length - len(fixed) + len(hidden)
        ids = torch.tensor([cls_id, *fixed, *[mask] * to_generate])
        generated = torch.arange(len(ids)) > len(fixed)
    if len(ids) > window:
        if source:
            raise ConfigError(
                f"source of {len(ids) - length - 2} tokens plus length={length} needs {len(ids)} positions, "
                f"more than the model's {window}; allowed: a shorter source or length"
            )
        if infill:
            raise ConfigError(
                f"the infill template needs {len(ids)} positions, more than the model's {window}; "
                f"allowed: a template of at most {window - start} tokens"
            )
        raise ConfigError(
            f"length={length} needs {len(ids)} positions, more than the model's {window}; allowed: "
            f"length <= {window - start}"
        )
    text_start = len(ids) - length if source else start
    noise_mask = torch.arange(len(ids)) >= text_start
    cut_from = int((~generated).nonzero().max()) + 1
    return Layout(
        ids[None],
        generated[None],
        noise_mask[None],
        torch.tensor([text_start]),
        torch.tensor([cut_from]),
        torch.tensor([len(ids)]),
    )


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def text_ends(tokens: Tensor, layout: Layout, sep_id: int) -> list[int]:
    """Per row, the position of the first generated [SEP] after every given token (else the end of its
    template)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    after_given = positions >= layout.cut_from[:, None]
    cuts = (tokens == sep_id) & layout.generated & after_given
    first = cuts.long().argmax(-1)
    return torch.where(cuts.any(-1), first, layout.end).tolist()


def resolve_end(
    end: str | None, length: int, infill: str | None, target_window: int | None, self_prompting: bool
) -> str:
    """Where the texts of a call end: ``end`` checked (a predicted end needs the window the model learned to
    end texts in, filled from its start or after a prompt), or for None the predicted end wherever it
    applies (a model with a target window, decoded in that window, no infill, not self-prompting)."""
    if end is None:
        applies = not infill and target_window == length and not self_prompting
        return "predicted" if applies else "generated"
    if end == "generated":
        return end
    if infill:
        raise ConfigError(
            'end="predicted" decodes a window from its start, an infill fixes its own positions; '
            'allowed: end="generated" with infill='
        )
    if target_window is None:
        raise ConfigError(
            'end="predicted" needs a model trained with data.target_window (it learns where a text ends '
            'by filling the window with [SEP]); allowed: end="generated" for this model'
        )
    if length != target_window:
        raise ConfigError(
            f'end="predicted" with length={length}, but the model learned its ends in a window of '
            f"{target_window}; allowed: length={target_window}"
        )
    if self_prompting:
        raise ConfigError(
            'end="predicted" is not implemented for a self-prompting model; allowed: end="generated"'
        )
    return end


def predicted_ends(
    layout: Layout,
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    time: float,
    batch_size: int,
    sep_id: int,
    beam: int = 1,
) -> Layout:
    """``layout`` with each template's text cut to its median predicted length (at least one generated
    token): one network call ``predict(ids, times, positions)`` on the all-[MASK] target window at ``time``
    (t = 1) gives p_θ(x_i = [SEP]) at its generated positions (after the source, or after a prompt), whose
    running maximum is the length's distribution function (:mod:`~diffusionbert.diffusion.length`); the
    window after the text becomes given [SEP] filler, as in training. With ``beam`` l > 1 each template
    becomes l consecutive templates, cut at its l likely lengths (:func:`likely_lengths`, the median first).

    Raises:
        ConfigError: a beam longer than the lengths a template's window can hold.
    """
    windows = layout.generated.sum(-1)
    if beam > 1 and beam > int(windows.min()) - 1:
        raise ConfigError(
            f"length_beam={beam} but a window of {int(windows.min())} positions holds "
            f"{int(windows.min()) - 1} text lengths; allowed: length_beam <= {int(windows.min()) - 1}"
        )
    lengths = []
    device = layout.ids.device
    for start in range(0, layout.ids.shape[0], batch_size):
        rows = layout.select(torch.arange(start, min(start + batch_size, layout.ids.shape[0]), device=device))
        times = torch.full((rows.ids.shape[0],), time, dtype=torch.float32, device=device)
        logits = predict(rows.ids, times, rows.generated)
        sep_log_probs = torch.log_softmax(logits.float(), -1)[:, sep_id].view(rows.ids.shape[0], -1)
        lengths.append(likely_lengths(length_cdf(sep_log_probs), beam))
    candidates = torch.cat(lengths)  # [R, beam]
    layout = layout.select(torch.arange(layout.ids.shape[0], device=device).repeat_interleave(beam))
    text_end = layout.cut_from + candidates.flatten()
    columns = torch.arange(layout.ids.shape[1], device=device)
    filler = (columns >= text_end[:, None]) & layout.generated
    return Layout(
        layout.ids.masked_fill(filler, sep_id),
        layout.generated & ~filler,
        layout.noise_mask,
        layout.text_start,
        layout.cut_from,
        text_end,
    )
