"""Step 2: texts → rows of token ids, in the sentence or the packed layout (see :mod:`diffusionbert.data`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from ..config import LAYOUTS
from ..errors import ConfigError, DataError, invalid_choice

logger = logging.getLogger(__name__)

_MIN_MAX_LENGTH = 4
SOURCE_CUTS = ("end", "start")
"""Which end of a too-long pair source is dropped (see :func:`tokenize_dataset`)."""


@dataclass(frozen=True)
class TokenizedDataset:
    """Result of :func:`tokenize_dataset`.

    Attributes:
        dataset: rows with ``input_ids`` (list of int), ``noise_start`` (int) and ``n_words`` (int); see the
            module docstring for ``noise_start`` and :func:`collate` for ``n_words``.
        layout: ``"sentence"`` or ``"packed"``.
        num_truncated: sentence layout: number of examples cut to ``max_length``; packed layout: always 0
            (nothing is truncated, only the incomplete last chunk is dropped).
    """

    dataset: datasets.Dataset
    layout: str
    num_truncated: int


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    layout: str = "sentence",
    max_length: int | None = 128,
    *,
    target_window: int | None = None,
    source_cut: str = "end",
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> TokenizedDataset:
    """Tokenise a :func:`load_texts` dataset with the model's tokenizer (batched ``Dataset.map``).

    Layouts:

    * ``"sentence"`` — one example per row, ``[CLS] text [SEP]``, cut to ``max_length`` tokens (default 128,
      the paper's LM1B setup) by dropping text tokens from the end; the final ``[SEP]`` is kept, as with the
      tokenizer's own truncation. ``max_length=None`` disables truncation (used for token statistics). Rows
      are *not* padded here: :func:`collate` pads each batch to its longest row.
      Pair datasets (``source``/``target`` columns) become ``[CLS] source [SEP] target [SEP]`` — the same ids
      as the tokenizer's pair encoding — and truncation drops tokens from the end of the *source* first (the
      target is what is generated and scored); only if the target alone does not fit is it cut as well.
      With ``target_window`` W the target takes exactly W positions: cut to W - 1 tokens if longer, then
      filled with ``[SEP]`` (at least one), and the source is cut to what is left of ``max_length``.
      ``source_cut`` says which tokens of a too-long source go: those at its ``"end"`` (default) or at its
      ``"start"`` (a chat prompt: the oldest part of the conversation goes, its question stays).
    * ``"packed"`` — every example is encoded ``[CLS] text [SEP]`` without truncation, all ids are
      concatenated in dataset order and cut into chunks of exactly ``max_length``; the incomplete tail (fewer
      than ``max_length`` tokens) is dropped. The concatenation is built in memory (one int32 per token).
      ``n_words`` is not meaningful for a chunk and is -1. Pair datasets are rejected.

    ``n_words`` counts the whitespace words of the text (the target for pairs) that the kept tokens cover: for
    a truncated example only the words up to the cut (a word cut in the middle counts), so a per-word
    perplexity divides the scored NLL by the scored words only; :attr:`TokenizedDataset.num_truncated` says
    how many examples were cut.

    The number of truncated examples is returned in :attr:`TokenizedDataset.num_truncated` and logged as a
    warning when non-zero.

    Raises:
        ConfigError: unknown layout; ``max_length`` too small, above ``tokenizer.model_max_length`` or
            ``None`` for packed; pairs with packed; a tokenizer without ``[CLS]``/``[SEP]``.
        DataError: the dataset has neither a ``text`` nor ``source``/``target`` columns; packed corpus shorter
            than one chunk.
    """
    if layout not in LAYOUTS:
        raise invalid_choice("layout", layout, LAYOUTS)
    if max_length is None:
        if layout == "packed":
            raise ConfigError("max_length must be set for the packed layout (it is the chunk length)")
    elif max_length < _MIN_MAX_LENGTH:
        raise ConfigError(f"max_length={max_length} is too small; need at least {_MIN_MAX_LENGTH}")
    elif max_length > tokenizer.model_max_length:
        raise ConfigError(
            f"max_length={max_length} exceeds the tokenizer's model_max_length={tokenizer.model_max_length}"
        )
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ConfigError(
            f"tokenizer {tokenizer.name_or_path!r} has no [CLS]/[SEP] token; a BERT-family one is needed"
        )
    columns = set(dataset.column_names)
    pairs = {"source", "target"} <= columns
    if not pairs and "text" not in columns:
        raise DataError(
            f"dataset has columns {sorted(columns)}; expected 'text' or 'source'+'target' (see load_texts)"
        )
    if pairs and layout == "packed":
        raise ConfigError("layout='packed' does not support source/target pairs; use layout='sentence'")
    if source_cut not in SOURCE_CUTS:
        raise invalid_choice("source_cut", source_cut, SOURCE_CUTS)
    if target_window is not None and (not pairs or max_length is None or target_window > max_length - 3):
        raise ConfigError(
            f"target_window={target_window} needs source/target pairs and max_length >= target_window + 3"
        )

    encode = _encode_pairs if pairs else _encode_sentences
    features = datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "noise_start": datasets.Value("int32"),
            "n_words": datasets.Value("int32"),
            "truncated": datasets.Value("bool"),
        }
    )
    encoded = dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=features,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": None if layout == "packed" else max_length,
            **({"target_window": target_window, "source_cut": source_cut} if pairs else {}),
        },
        desc=f"Tokenising ({layout})",
    )
    num_truncated = int(pc.sum(encoded.data.column("truncated")).as_py() or 0)
    encoded = encoded.remove_columns("truncated")
    if num_truncated:
        limit = f"max_length={max_length}"
        if target_window is not None:
            limit += f" or their targets to the window of {target_window} (data.target_window)"
        logger.warning("truncated %d of %d examples to %s", num_truncated, len(encoded), limit)
    if layout == "packed":
        assert max_length is not None  # checked above; narrows the type
        encoded = _pack(encoded, max_length)
    return TokenizedDataset(dataset=encoded, layout=layout, num_truncated=num_truncated)


def _encode_sentences(
    batch: dict[str, list[str]], tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> dict[str, list[Any]]:
    """Batched map: ``[CLS] text [SEP]`` cut to ``max_length``, ``noise_start = 1``, whitespace word counts.

    Text tokens are encoded without special tokens and capped at ``budget + 1`` so that a truncated example is
    detected (length > budget) without tokenising very long lines in full or triggering the tokenizer's
    too-long warning.
    """
    texts = batch["text"]
    budget = None if max_length is None else max_length - 2
    ids = _encode_plain(tokenizer, texts, budget)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    return {
        "input_ids": [[cls_id, *t[:budget], sep_id] for t in ids],
        "noise_start": [1] * len(texts),
        "n_words": [
            _scored_words(tokenizer, text, budget if budget is not None and len(t) > budget else None)
            for text, t in zip(texts, ids, strict=True)
        ],
        "truncated": [budget is not None and len(t) > budget for t in ids],
    }


def _encode_pairs(
    batch: dict[str, list[str]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    target_window: int | None = None,
    source_cut: str = "end",
) -> dict[str, list[Any]]:
    """Batched map: ``[CLS] source [SEP] target [SEP]``, source truncated first (at its ``source_cut`` end),
    noise from the target on; with ``target_window`` the target part is cut or filled with ``[SEP]`` to
    exactly that many tokens.

    ``n_words`` counts the *target* words only: the source is given, not modelled.
    """
    budget = None if max_length is None else max_length - 3
    target_budget = budget if target_window is None else target_window - 1
    sources = _encode_plain(tokenizer, batch["source"], budget if source_cut == "end" else None)
    targets = _encode_plain(tokenizer, batch["target"], target_budget)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    out: dict[str, list[Any]] = {"input_ids": [], "noise_start": [], "n_words": [], "truncated": []}
    for src, tgt, text in zip(sources, targets, batch["target"], strict=True):
        target_cut = target_budget is not None and len(tgt) > target_budget
        if target_budget is not None:
            tgt = tgt[:target_budget]
        ending = [sep_id] * (1 if target_window is None else target_window - len(tgt))
        truncated = budget is not None and (target_cut or len(src) + len(tgt) + len(ending) > budget + 1)
        if budget is not None:
            keep = budget + 1 - len(tgt) - len(ending)
            src = src[:keep] if source_cut == "end" else src[max(len(src) - keep, 0) :]
        out["input_ids"].append([cls_id, *src, sep_id, *tgt, *ending])
        out["noise_start"].append(len(src) + 2)
        out["n_words"].append(_scored_words(tokenizer, text, target_budget if target_cut else None))
        out["truncated"].append(truncated)
    return out


def _encode_plain(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], budget: int | None
) -> list[list[int]]:
    """Ids of ``texts`` without special tokens, capped at ``budget + 1`` ids (uncapped when ``None``)."""
    if budget is None:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return tokenizer(texts, add_special_tokens=False, truncation=True, max_length=budget + 1)["input_ids"]


def _scored_words(tokenizer: PreTrainedTokenizerBase, text: str, kept: int | None) -> int:
    """Whitespace words of ``text`` covered by its first ``kept`` tokens (None: all of them are kept)."""
    if kept is None:
        return len(text.split())
    if not tokenizer.is_fast:  # no offsets: count the words of the kept tokens decoded
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(tokenizer.decode(ids[:kept]).split())
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    end = offsets[kept - 1][1] if kept else 0
    return len(text[:end].split())


def _pack(encoded: datasets.Dataset, max_length: int) -> datasets.Dataset:
    """Concatenate all rows' ids (in order) and cut them into ``max_length`` chunks; drop the short tail."""
    flat = pc.list_flatten(encoded.with_format("arrow")[:]["input_ids"]).to_numpy()
    n_chunks = len(flat) // max_length
    if n_chunks == 0:
        raise DataError(
            f"corpus has {len(flat)} tokens, fewer than one packed chunk of max_length={max_length}"
        )
    dropped = len(flat) - n_chunks * max_length
    if dropped:
        logger.info("packing: dropped the last %d of %d tokens (incomplete chunk)", dropped, len(flat))
    return datasets.Dataset.from_dict(
        {
            "input_ids": flat[: n_chunks * max_length].astype(np.int32).reshape(n_chunks, max_length),
            "noise_start": np.zeros(n_chunks, dtype=np.int32),
            "n_words": np.full(n_chunks, -1, dtype=np.int32),
        }
    )
