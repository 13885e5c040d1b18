"""Step 3: tokenised rows → padded batches, in a seeded order that can resume mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import LAYOUTS
from ..errors import ConfigError, DataError, invalid_choice


def collate(
    examples: Sequence[dict[str, Any]], pad_token_id: int, cls_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad rows of :func:`tokenize_dataset` to the longest one in the batch (dynamic padding).

    Returns:
        * ``input_ids`` long ``[B, L]``, ``pad_token_id`` after each row's end;
        * ``attention_mask`` long ``[B, L]``, 1 = real token;
        * ``noise_mask`` bool ``[B, L]``: positions the diffusion may mask and score — real tokens at or after
          the row's ``noise_start``, never padding, and never a ``[CLS]`` when ``cls_token_id`` is given (a
          packed row's document starts stay visible: the denoiser never predicts ``[CLS]``);
        * ``n_words`` long ``[B]``: whitespace word count of the example's text (target text for pairs, -1 for
          packed chunks). Per-word perplexity is ``exp(total NLL / sum(n_words + 1))``, the +1 being the
          end-of-sentence ``[SEP]``.
    """
    lengths = torch.tensor([len(e["input_ids"]) for e in examples], dtype=torch.long)
    width = int(lengths.max())
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : lengths[row]] = torch.as_tensor(example["input_ids"], dtype=torch.long)
    positions = torch.arange(width).unsqueeze(0)
    real = positions < lengths.unsqueeze(1)
    noise_start = torch.tensor([int(e["noise_start"]) for e in examples], dtype=torch.long).unsqueeze(1)
    return {
        "input_ids": input_ids,
        "attention_mask": real.long(),
        "noise_mask": real & (positions >= noise_start) & (input_ids != cls_token_id),
        "n_words": torch.tensor([int(e["n_words"]) for e in examples], dtype=torch.long),
    }


class ResumableBatchSampler(Sampler[list[int]]):
    """Seeded batch sampler with optional length bucketing that can resume in the middle of an epoch.

    The order of epoch ``e`` depends only on ``(seed, e)``: with ``shuffle`` the examples are permuted by a
    :class:`torch.Generator` seeded with ``seed + e`` (the :class:`~torch.utils.data.DistributedSampler`
    convention), otherwise they keep dataset order. With ``lengths`` and ``bucket_batches > 1`` the order is
    cut into windows of ``batch_size * bucket_batches`` examples, each window is sorted by length (stable) and
    cut into batches, so a batch holds examples of similar length and dynamic padding wastes little; when
    shuffling, the batches are then permuted by the same generator so that lengths do not grow steadily within
    an epoch.

    Call :meth:`set_epoch` at the start of every epoch. To resume after ``k`` batches of epoch ``e`` call
    ``set_epoch(e, start_index=k)``: iteration then yields exactly the batches ``k, k+1, …`` of the full
    epoch.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        lengths: Sequence[int] | np.ndarray | None = None,
        bucket_batches: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be a positive integer")
        if lengths is not None and len(lengths) != num_examples:
            raise ConfigError(f"lengths has {len(lengths)} entries for {num_examples} examples")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.lengths = None if lengths is None or bucket_batches <= 1 else np.asarray(lengths)
        self.bucket_batches = bucket_batches
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Select the epoch whose order to produce, skipping its first ``start_index`` batches."""
        if not 0 <= start_index <= self.num_batches:
            raise ConfigError(
                f"start_index={start_index} is outside 0..{self.num_batches} (batches per epoch)"
            )
        self.epoch = epoch
        self.start_index = start_index

    @property
    def num_batches(self) -> int:
        """Batches in a full epoch (ignoring ``start_index``)."""
        if self.drop_last:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order (a pure function of ``seed`` and ``epoch``)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.num_examples, generator=generator).numpy()
        else:
            order = np.arange(self.num_examples)
        if self.lengths is not None:
            window = np.arange(self.num_examples) // (self.batch_size * self.bucket_batches)
            order = order[np.lexsort((self.lengths[order], window))]
        batches = [
            order[i : i + self.batch_size].tolist() for i in range(0, self.num_examples, self.batch_size)
        ]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle and self.lengths is not None:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.start_index :]

    def __len__(self) -> int:
        return self.num_batches - self.start_index


class ResumableDataLoader(DataLoader[dict[str, torch.Tensor]]):
    """A :class:`DataLoader` whose every random draw depends on ``(seed, epoch)`` only.

    The batch order comes from its :class:`ResumableBatchSampler`; the base seed of its worker processes from
    its own generator, reseeded by :meth:`set_epoch`. A plain ``DataLoader`` draws that base seed from torch's
    global RNG whenever an iterator is created, so a run resumed in the middle of an epoch (one iterator more
    than the uninterrupted run made) shifted every later dropout mask; this one leaves the global RNG alone.
    """

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Produce epoch ``epoch`` from its batch ``start_index`` on (see :meth:`ResumableBatchSampler.set_epoch`)."""
        self.batch_sampler.set_epoch(epoch, start_index)
        self.generator.manual_seed(_epoch_seed(self.batch_sampler.seed, epoch))


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for ``(seed, epoch)``, well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_dataloader(
    dataset: datasets.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    layout: str = "sentence",
    pad_token_id: int,
    cls_token_id: int | None = None,
    drop_last: bool = False,
    bucket_batches: int = 50,
    num_workers: int = 0,
) -> ResumableDataLoader:
    """A :class:`ResumableDataLoader` over a :func:`tokenize_dataset` dataset yielding :func:`collate` batches.

    Batches come from a :class:`ResumableBatchSampler` (``loader.batch_sampler``): the order is reproducible
    from ``seed`` and the epoch, and ``loader.set_epoch(epoch, start_index=k)`` skips the first ``k`` batches
    to resume mid-epoch. Iterating draws nothing from torch's global RNG. For the sentence layout, examples are bucketed by length within windows
    of ``bucket_batches`` batches (``bucket_batches <= 1`` disables it); packed chunks all have the same
    length, so there is nothing to bucket. Rows are fetched a batch at a time (``Dataset.__getitems__``).
    ``cls_token_id`` keeps every ``[CLS]`` out of ``noise_mask`` (:func:`collate`).
    """
    if layout not in LAYOUTS:
        raise invalid_choice("layout", layout, LAYOUTS)
    missing = {"input_ids", "noise_start", "n_words"} - set(dataset.column_names)
    if missing:
        raise DataError(f"dataset lacks columns {sorted(missing)}; pass the output of tokenize_dataset")
    lengths = None
    if layout == "sentence" and bucket_batches > 1:
        lengths = pc.list_value_length(dataset.with_format("arrow")[:]["input_ids"]).to_numpy()
    sampler = ResumableBatchSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        lengths=lengths,
        bucket_batches=bucket_batches,
    )
    return ResumableDataLoader(
        dataset.select_columns(["input_ids", "noise_start", "n_words"]),
        batch_sampler=sampler,
        collate_fn=partial(collate, pad_token_id=pad_token_id, cls_token_id=cls_token_id),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(_epoch_seed(seed, 0)),
    )
