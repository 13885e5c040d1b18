"""Left-to-right decoding of a causal LM (the AR baseline) with a key-value cache: sampling, greedy, beam search.

Every row starts from a prefix, ``[CLS]`` alone or, for a model trained on pairs, ``[CLS] source [SEP]`` (the
training layout, so the first token drawn is the target's first), and grows one token per network call until
it draws ``[SEP]`` or reaches ``length`` tokens. Prefixes of different lengths share a batch left-padded, with
an attention mask and explicit positions; the first call encodes the prefixes, every later call only the newest
token of each unfinished row against the cache (:meth:`CausalLMForComparison.next_token_logits`).

Decoders (``sampler`` names):

- ``autoregressive``: a draw from p(x_i | x_<i), reshaped by temperature / top-k / top-p, with the diffusion
  samplers' machinery (float64 Gumbel-max, one generator per sample from the seed and its index), so samples
  do not depend on the batch;
- ``greedy``: the most likely token at every position;
- ``beam`` (4 beams) or ``beam:N``: beam search. A hypothesis ends when it draws ``[SEP]`` and is scored by
  its log-probability divided by its length in tokens, ``[SEP]`` included (length penalty 1, as in Hugging
  Face's default); a source stops once it has N ended hypotheses (early stopping) or at ``length`` tokens,
  where its live beams end as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.progress import Progress
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..config import DEFAULT_LENGTH, DecodingConfig
from ..errors import ConfigError
from ..models.causal_lm import CausalLMForComparison
from .draws import RowRandom, Sharpening, gumbel_argmax, sample_generator
from .output import SampleOutput

DEFAULT_BEAMS = 4
LEFT_TO_RIGHT_DECODERS: dict[str, str] = {
    "autoregressive": "a draw per token (temperature / top-k / top-p apply)",
    "greedy": "the most likely token per position",
    "beam": f"beam search, {DEFAULT_BEAMS} beams (beam:N for N), log-probability per token",
}


@dataclass(frozen=True)
class LeftToRightDecoder:
    """A parsed decoder name: ``kind`` is a key of :data:`LEFT_TO_RIGHT_DECODERS`, ``beams`` its beam count."""

    kind: str
    beams: int = 1

    @classmethod
    def parse(cls, name: str) -> LeftToRightDecoder:
        """``autoregressive``, ``greedy``, ``beam`` or ``beam:N`` (N >= 1), else a one-line error."""
        kind, _, width = name.partition(":")
        if kind not in LEFT_TO_RIGHT_DECODERS or (width and kind != "beam"):
            raise ConfigError(
                f"sampler={name!r} does not apply to an autoregressive model; allowed: "
                f"{', '.join(LEFT_TO_RIGHT_DECODERS)} or beam:N (left to right)"
            )
        if kind != "beam":
            return cls(kind)
        if width and not (width.isdigit() and int(width) >= 1):
            raise ConfigError(f"sampler={name!r} has no valid beam count; allowed: beam:N with N >= 1")
        return cls(kind, int(width) if width else DEFAULT_BEAMS)


class _CachedRows:
    """A batch of left-padded prefixes behind one key-value cache, grown by one token per row per call.

    ``log_p`` [B, V] (float32) is each row's next-token distribution given everything so far."""

    def __init__(self, model: CausalLMForComparison, prefixes: Sequence[Sequence[int]], pad_id: int) -> None:
        device = next(model.parameters()).device
        width = max(len(prefix) for prefix in prefixes)
        ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long, device=device)
        self.mask = torch.zeros_like(ids)
        for row, prefix in enumerate(prefixes):
            ids[row, width - len(prefix) :] = torch.tensor(prefix, device=device)
            self.mask[row, width - len(prefix) :] = 1
        positions = (self.mask.cumsum(-1) - 1).clamp_min(0)
        self.model = model
        logits, self.cache = model.next_token_logits(ids, self.mask, positions)
        self.log_p = torch.log_softmax(logits.float(), -1)
        self.next_position = positions[:, -1] + 1

    def keep(self, rows: Tensor) -> None:
        """Keep the rows ``rows`` (indices; a repeated index copies a row, as beam search needs), in order."""
        self.cache.reorder_cache(rows)
        self.mask, self.next_position, self.log_p = (
            self.mask[rows],
            self.next_position[rows],
            self.log_p[rows],
        )

    def extend(self, tokens: Tensor) -> None:
        """Append ``tokens`` [B] (one per row) and compute the next distributions: one network call."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits, self.cache = self.model.next_token_logits(
            tokens[:, None], self.mask, self.next_position[:, None], self.cache
        )
        self.log_p = torch.log_softmax(logits.float(), -1)
        self.next_position = self.next_position + 1


def _draw(
    rows: _CachedRows, length: int, sep: int, sharpening: Sharpening, random: RowRandom
) -> tuple[list[list[int]], list[int]]:
    """Sampling (or greedy, at temperature 0): the tokens drawn per row, ``[SEP]`` included, and its calls."""
    size = rows.log_p.shape[0]
    alive = torch.arange(size, device=rows.log_p.device)
    drawn_rows: list[list[int]] = [[] for _ in range(size)]
    for step in range(length):
        drawn = gumbel_argmax(sharpening(rows.log_p), alive, random)
        for row, token in zip(alive.tolist(), drawn.tolist(), strict=True):
            drawn_rows[row].append(token)
        going = drawn != sep
        if step == length - 1 or not going.any():
            break
        if not going.all():
            rows.keep(going.nonzero().squeeze(-1))
        alive = alive[going]
        rows.extend(drawn[going])
    return drawn_rows, [len(row) for row in drawn_rows]


def _beam_search(rows: _CachedRows, length: int, sep: int, beams: int) -> tuple[list[list[int]], list[int]]:
    """Beam search per prefix (see the module doc): the best hypothesis's tokens per row and its calls."""
    sources, device = rows.log_p.shape[0], rows.log_p.device
    rows.keep(torch.arange(sources, device=device).repeat_interleave(beams))
    scores = torch.full((sources, beams), float("-inf"), device=device)
    scores[:, 0] = 0.0  # every beam starts as the same prefix: only one may propose the first tokens
    history = torch.zeros((sources * beams, 0), dtype=torch.long, device=device)
    ended: list[list[tuple[float, list[int]]]] = [[] for _ in range(sources)]
    calls = [0] * sources
    for step in range(length):
        live = [i for i in range(sources) if len(ended[i]) < beams]
        for i in live:
            calls[i] += 1
        vocab = rows.log_p.shape[-1]
        total = (scores[:, :, None] + rows.log_p.view(sources, beams, vocab)).view(sources, -1)
        top_scores, top_index = total.topk(min(2 * beams, total.shape[-1]), dim=-1)
        next_beam = torch.zeros((sources, beams), dtype=torch.long, device=device)
        next_token = torch.full((sources, beams), sep, dtype=torch.long, device=device)
        next_score = torch.full((sources, beams), float("-inf"), device=device)
        for i in live:
            kept = 0
            for score, index in zip(top_scores[i].tolist(), top_index[i].tolist(), strict=True):
                if score == float("-inf") or kept == beams:
                    break
                beam, token = divmod(index, vocab)
                if token == sep:
                    ended[i].append((score / (step + 1), [*history[i * beams + beam].tolist(), sep]))
                else:
                    next_beam[i, kept], next_token[i, kept], next_score[i, kept] = beam, token, score
                    kept += 1
        flat = (torch.arange(sources, device=device)[:, None] * beams + next_beam).view(-1)
        history = torch.cat([history[flat], next_token.view(-1, 1)], dim=1)
        scores = next_score
        if step == length - 1:
            for i in live:
                if len(ended[i]) < beams:
                    ended[i] += [
                        (s / length, history[i * beams + b].tolist())
                        for b, s in enumerate(scores[i].tolist())
                        if s > float("-inf")
                    ]
            break
        if all(len(found) >= beams for found in ended):
            break
        rows.keep(flat)
        rows.extend(next_token.view(-1))
    return [max(found, key=lambda pair: pair[0])[1] for found in ended], calls


@torch.inference_mode()
def generate_left_to_right(
    model: CausalLMForComparison,
    tokenizer: PreTrainedTokenizerBase,
    decoding: DecodingConfig,
    *,
    source: str | Sequence[str] | None = None,
    progress: bool = False,
) -> SampleOutput:
    """Decode ``decoding.num_samples`` texts of at most ``decoding.length`` tokens (default
    :data:`~diffusionbert.config.DEFAULT_LENGTH`; per source, with ``source``), left to right.

    With a list of sources the output holds ``num_samples`` texts for each, source after source. The decoding's
    ``sampler`` is a decoder name (module doc; default ``autoregressive``); temperature / top-k / top-p apply
    to ``autoregressive`` only, and beam search returns one text per source; ``steps`` does not count.
    ``nfe`` counts network calls per text (for beam search, the calls of its source's beams together).
    ``token_ids`` hold the prefix and the drawn tokens, right-padded with [PAD].
    """
    num_samples, length = decoding.num_samples, decoding.length or DEFAULT_LENGTH
    sampler = decoding.sampler or "autoregressive"
    decoder = LeftToRightDecoder.parse(sampler)
    sharpening = Sharpening(decoding.temperature, decoding.top_k, decoding.top_p)
    if decoder.kind != "autoregressive" and not sharpening.is_identity:
        raise ConfigError(
            f"temperature/top_k/top_p reshape draws; allowed: them with sampler 'autoregressive', not {sampler!r}"
        )
    if decoder.kind == "beam" and num_samples != 1:
        raise ConfigError(
            f"beam search returns one text per source; allowed: num_samples=1, not {num_samples}"
        )
    if decoder.kind == "greedy":
        sharpening = Sharpening(temperature=0.0)
    sources = [source] if source is None or isinstance(source, str) else list(source)
    if not sources or any(one is not None and not one.strip() for one in sources):
        raise ConfigError("a source in the list is empty; allowed: a text or a list of non-empty texts")
    prefixes = [_prefix(tokenizer, one) for one in sources]
    longest = max(len(prefix) for prefix in prefixes)
    if length < 1 or longest + length > model.max_input_length:
        raise ConfigError(
            f"length={length} is not valid; allowed: 1 <= length <= {model.max_input_length - longest} (the "
            f"model's {model.max_input_length} positions less the longest prefix, [CLS] included)"
        )
    model.eval()
    device = next(model.parameters()).device
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    per_call = max(1, decoding.batch_size // decoder.beams)
    total = num_samples * len(sources)
    drawn: list[list[int]] = []
    nfe: list[int] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"decoding ({sampler})", total=total)
        for start in range(0, total, per_call):
            indices = range(start, min(start + per_call, total))
            batch = _CachedRows(model, [prefixes[i // num_samples] for i in indices], pad)
            if decoder.kind == "beam":
                tokens, calls = _beam_search(batch, length, sep, decoder.beams)
            else:
                generators = [sample_generator(decoding.seed, i, device) for i in indices]
                random = RowRandom(generators, len(indices))
                tokens, calls = _draw(batch, length, sep, sharpening, random)
            drawn += tokens
            nfe += calls
            bar.advance(task, len(indices))
    ends = [row.index(sep) if sep in row else len(row) for row in drawn]
    texts = tokenizer.batch_decode(
        [row[:end] for row, end in zip(drawn, ends, strict=True)], skip_special_tokens=True
    )
    whole = [[*prefixes[i // num_samples], *row] for i, row in enumerate(drawn)]
    width = max(len(row) for row in whole)
    token_ids = torch.tensor([[*row, *[pad] * (width - len(row))] for row in whole])
    return SampleOutput(texts=texts, token_ids=token_ids, lengths=ends, nfe=nfe)


def _prefix(tokenizer: PreTrainedTokenizerBase, source: str | None) -> list[int]:
    """``[CLS]``, or ``[CLS] source [SEP]``: the tokens a text is decoded after (the training layout)."""
    if source is None:
        return [tokenizer.cls_token_id]
    return [
        tokenizer.cls_token_id,
        *tokenizer(source, add_special_tokens=False)["input_ids"],
        tokenizer.sep_token_id,
    ]
