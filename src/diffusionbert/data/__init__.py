"""Local text files → Hugging Face ``datasets`` → tokenised, padded batches for diffusion training and eval.

The pipeline has four steps, each a public function in a module of its own (:mod:`.files`, :mod:`.tokenize`,
:mod:`.batches`, :mod:`.counts`) so the trainer, the evaluator and the tests can use them separately:

1. :func:`load_texts` reads ``.txt`` / ``.jsonl`` / ``.json`` / ``.csv`` files (or a hub dataset id) into a
   :class:`datasets.Dataset` with a ``text`` column, or ``source`` + ``target`` columns for conditional pairs.
   Files are checked *before* ``datasets`` sees them (missing, empty, binary, not UTF-8) so that the user gets
   a one-line :class:`~diffusionbert.errors.DataError` naming the file, line and byte instead of a pyarrow
   trace.
2. :func:`tokenize_dataset` turns it into rows of token ids in one of two layouts: ``"sentence"`` (one example
   per row, ``[CLS] … [SEP]``, truncated, padded later per batch) or ``"packed"`` (all examples concatenated
   and cut into chunks of exactly ``max_length``). Pairs are encoded ``[CLS] source [SEP] target [SEP]``.
3. :func:`make_dataloader` batches rows with dynamic padding, optional length bucketing and a seeded,
   resumable :class:`ResumableBatchSampler`.
4. :func:`token_counts` / :func:`cached_token_counts` give the token frequencies that the spindle noise
   schedule needs.

A corpus larger than memory skips steps 1–3: :class:`PackedStream` (:mod:`.stream`) reads many files as a
stream, packs them on the fly and resumes at its exact position; :func:`cached_stream_counts` counts it in
one pass.

Every tokenised row stores ``input_ids``, ``n_words`` and ``noise_start``: the index of the first position the
diffusion may mask and score. Storing one integer instead of a mask keeps rows small and lets :func:`collate`
build ``noise_mask = (position >= noise_start) & real token`` for any layout:

* sentence: ``noise_start = 1`` — everything but the leading ``[CLS]``; the final ``[SEP]`` *is* noised, it is
  the end-of-sentence token the model must learn to place.
* pairs: ``noise_start`` = first target token — the source and its ``[SEP]`` are the condition, never masked
  (partial noising); the target and the final ``[SEP]`` are.
* packed: ``noise_start = 0`` — every position is noised but the ``[CLS]`` tokens that mark document starts
  inside a chunk (given: the denoiser never predicts ``[CLS]``; :func:`collate` keeps them out of
  ``noise_mask``). Chunks begin at arbitrary points in the token stream, so position 0 is not special; the
  model learns to place a text's end (``[SEP]``) like any other token.
"""

from .batches import ResumableBatchSampler, ResumableDataLoader, collate, make_dataloader
from .counts import cached_stream_counts, cached_token_counts, token_counts
from .files import load_texts
from .stream import PackedStream, corpus_files
from .tokenize import TokenizedDataset, tokenize_dataset

__all__ = [
    "PackedStream",
    "ResumableBatchSampler",
    "ResumableDataLoader",
    "TokenizedDataset",
    "cached_stream_counts",
    "cached_token_counts",
    "collate",
    "corpus_files",
    "load_texts",
    "make_dataloader",
    "token_counts",
    "tokenize_dataset",
]
