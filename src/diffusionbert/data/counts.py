"""Step 4: how often each token occurs in the training data, the input of the spindle noise schedule."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from ..errors import DataError, first_line
from ..utils.io import atomic_file
from .chat import load_chat
from .files import load_texts
from .stream import LineReader
from .tokenize import tokenize_dataset

logger = logging.getLogger(__name__)

# Bump when the counting rule of cached_token_counts changes, so old cache files are not reused.
_COUNTS_FORMAT = "diffusionbert-token-counts-v1"
_HASH_CHUNK = 1 << 20


def token_counts(data: datasets.Dataset | Iterable[Sequence[int]], vocab_size: int) -> torch.Tensor:
    """How often each token id occurs, as a long tensor ``[vocab_size]`` (input of the spindle schedule).

    For a :func:`tokenize_dataset` dataset only positions that would be in ``noise_mask`` are counted (from
    ``noise_start`` on: no leading ``[CLS]``, no pair source; padding does not exist in stored rows). Any
    other iterable of id sequences is counted in full — the caller chooses the positions.

    Raises:
        DataError: an id is negative or ``>= vocab_size``.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in _noised_id_chunks(data):
        if ids.size == 0:
            continue
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise DataError(f"token id {int(bad[0])} is outside the vocabulary 0..{vocab_size - 1}")
        counts += np.bincount(ids, minlength=vocab_size)
    return torch.from_numpy(counts)


def _noised_id_chunks(data: datasets.Dataset | Iterable[Sequence[int]]) -> Iterator[np.ndarray]:
    """Flat arrays of the ids to count: per Arrow batch for a dataset, per sequence otherwise."""
    if not isinstance(data, datasets.Dataset):
        for seq in data:
            yield np.asarray(seq, dtype=np.int64).reshape(-1)
        return
    for table in data.with_format("arrow", columns=["input_ids", "noise_start"]).iter(batch_size=10_000):
        lists = table.column("input_ids")
        lengths = pc.list_value_length(lists).to_numpy()
        flat = pc.list_flatten(lists).to_numpy().astype(np.int64)
        row_starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        position = np.arange(flat.size) - row_starts
        noise_start = np.repeat(table.column("noise_start").to_numpy(), lengths)
        yield flat[position >= noise_start]


def cached_token_counts(
    path: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase,
    field: str | None = None,
    cache_dir: str | os.PathLike[str] = ".cache/diffusionbert",
    *,
    target_field: str | None = None,
    chat: bool = False,
    datasets_cache_dir: str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """:func:`token_counts` of a local training file, cached on disk as a safetensors file.

    Counts are taken over the sentence layout *without truncation* (every text token and its ``[SEP]``, no
    ``[CLS]``; for pairs the target and final ``[SEP]``), so they do not depend on ``max_length`` or the
    layout. The cache file ``token_counts-<key>.safetensors`` in ``cache_dir`` is keyed by a sha256 of the
    data file's bytes, the tokenizer's content (vocabulary, normalisation and model, not its path) and the
    field names. With ``chat`` the file holds chat records (:func:`~diffusionbert.data.chat.load_chat`) and
    the answers are counted; the key then includes the tokenizer's chat template. It is written atomically (temporary file, then :func:`os.replace`), so concurrent runs never
    see half a file; an unreadable or inconsistent cache file is logged and recomputed. ``datasets_cache_dir``
    is passed to :func:`load_texts`.
    """
    name = os.fspath(path)
    if not Path(name).is_file():
        raise DataError(f"{name}: file not found (token counts are cached for local files only)")
    vocab_size = len(tokenizer)
    key = hashlib.sha256(
        json.dumps(
            [
                _COUNTS_FORMAT,
                _file_sha256(Path(name)),
                _tokenizer_hash(tokenizer),
                field,
                target_field,
                tokenizer.chat_template if chat else None,
            ]
        ).encode()
    ).hexdigest()
    cache_file = Path(cache_dir) / f"token_counts-{key[:32]}.safetensors"
    cached = _read_cached_counts(cache_file, vocab_size)
    if cached is not None:
        return cached
    if chat:
        texts = load_chat(name, tokenizer, cache_dir=datasets_cache_dir)
    else:
        texts = load_texts(name, field, target_field=target_field, cache_dir=datasets_cache_dir)
    counts = token_counts(tokenize_dataset(texts, tokenizer, "sentence", max_length=None).dataset, vocab_size)
    metadata = {"format": _COUNTS_FORMAT, "key": key, "source": name}
    atomic_file(
        cache_file, lambda tmp: save_file({"counts": counts.contiguous()}, str(tmp), metadata=metadata)
    )
    return counts


def cached_stream_counts(
    files: Sequence[Path],
    tokenizer: PreTrainedTokenizerBase,
    field: str | None = None,
    cache_dir: str | os.PathLike[str] = ".cache/diffusionbert",
) -> torch.Tensor:
    """:func:`token_counts` of a streamed corpus (:mod:`~diffusionbert.data.stream`), counted in one pass over
    its files a chunk at a time (memory does not grow with the corpus) and cached like
    :func:`cached_token_counts`, by the same rule (every text token and its ``[SEP]``).

    The cache key holds each file's path, size and modification time rather than a hash of its bytes, which
    would cost a second pass over a corpus of many gigabytes.
    """
    vocab_size = len(tokenizer)
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(
        json.dumps([_COUNTS_FORMAT, "stream", stats, _tokenizer_hash(tokenizer), field]).encode()
    ).hexdigest()
    cache_file = Path(cache_dir) / f"token_counts-{key[:32]}.safetensors"
    cached = _read_cached_counts(cache_file, vocab_size)
    if cached is not None:
        return cached
    counts = np.zeros(vocab_size, dtype=np.int64)
    sep = np.array([tokenizer.sep_token_id])
    for file in files:
        reader, offset, ended = LineReader(file, field), 0, False
        try:
            while not ended:
                texts, offset, ended = reader.read(offset, 4096)
                if texts:
                    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
                    flat = np.concatenate(
                        [np.asarray(i, dtype=np.int64) for i in ids] + [sep.repeat(len(ids))]
                    )
                    counts += np.bincount(flat, minlength=vocab_size)
        finally:
            reader.close()
    result = torch.from_numpy(counts)
    metadata = {"format": _COUNTS_FORMAT, "key": key, "source": f"{len(files)} streamed file(s)"}
    atomic_file(
        cache_file, lambda tmp: save_file({"counts": result.contiguous()}, str(tmp), metadata=metadata)
    )
    return result


def _read_cached_counts(cache_file: Path, vocab_size: int) -> torch.Tensor | None:
    """The counts of a cache file, or None when there is none or it is unreadable or of another shape."""
    if not cache_file.exists():
        return None
    try:
        cached = load_file(cache_file)["counts"]
        if cached.dtype == torch.long and cached.shape == (vocab_size,):
            return cached
        logger.warning(
            "%s: cached counts have shape %s, expected (%d,); recomputing",
            cache_file,
            tuple(cached.shape),
            vocab_size,
        )
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        logger.warning("%s: unreadable token-count cache (%s); recomputing", cache_file, first_line(exc))
    return None


def _file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(partial(fh.read, _HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what determines a tokenizer's ids, independent of where it was loaded from.

    For a fast tokenizer this is its ``tokenizer.json`` minus the ``truncation``/``padding`` state (which the
    tokenizer mutates when called); otherwise the class name and the full vocabulary.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = [type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
