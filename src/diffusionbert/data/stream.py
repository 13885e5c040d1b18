"""Corpora larger than memory (``data.streaming: true``): many text files read as a stream, tokenised and
packed on the fly, in a seeded order that resumes exactly.

:func:`corpus_files` expands ``data.train_file`` (a path or a glob such as ``corpus/part-*.txt``) into its
files, in sorted order. :class:`PackedStream` reads them a few hundred lines at a time (``.txt``: one text per
line; ``.jsonl``: one record per line, its ``field``), encodes each text as ``[CLS] text [SEP]`` like the
packed layout (:func:`~diffusionbert.data.tokenize.tokenize_dataset`) and cuts the concatenation into rows of
exactly ``max_length`` ids. Rows pass through a shuffle buffer (a random row of the buffer leaves as each new
row enters, drawn from a seeded generator) and every epoch reads the files in a new seeded order. Memory is
the buffer, one read chunk and the open file: it does not grow with the corpus.

Everything the stream holds is its :meth:`~PackedStream.state`: epoch, file, byte offset, the ids read but
not yet in a row, the buffer and the generator. A checkpoint stores it, and a resumed run continues with the
very rows the uninterrupted run would have read. (``datasets``' own streaming restarts its shuffle buffer on
resume, so its order after a resume differs; this stream's does not.)
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from transformers import PreTrainedTokenizerBase

from ..errors import ConfigError, DataError

STREAM_SUFFIXES = (".txt", ".jsonl")
GLOB_CHARACTERS = frozenset("*?[")


def corpus_files(pattern: str | os.PathLike[str]) -> list[Path]:
    """The files of ``data.train_file``: the file itself, or every file a glob matches (sorted).

    Raises:
        DataError: nothing matches, a match is not a file, has another extension, or is empty.
    """
    name = os.fspath(pattern)
    is_glob = bool(GLOB_CHARACTERS & set(name))
    files = [Path(p) for p in sorted(glob.glob(name, recursive=True))] if is_glob else [Path(name)]
    if not files or not files[0].exists():
        raise DataError(f"{name}: {'no file matches' if is_glob else 'file not found'}")
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: not a file (data.train_file names files, or a glob of them)")
        if file.suffix not in STREAM_SUFFIXES:
            raise DataError(
                f"{file}: extension {file.suffix or '(none)'} cannot be streamed; allowed: "
                f"{', '.join(STREAM_SUFFIXES)}"
            )
        if file.stat().st_size == 0:
            raise DataError(f"{file}: empty file")
    return files


class LineReader:
    """Texts of one corpus file from a byte offset on, a chunk of lines at a time."""

    def __init__(self, path: Path, field: str | None) -> None:
        if path.suffix == ".txt" and field is not None:
            raise ConfigError(f"{path}: data.field does not apply to a .txt file (one text per line)")
        self.path, self.field = path, field
        self._handle: BinaryIO | None = None

    def read(self, offset: int, max_lines: int) -> tuple[list[str], int, bool]:
        """Up to ``max_lines`` non-blank texts from ``offset``: the texts, the offset after them, and whether
        the file ended.

        Raises:
            DataError: a line that is not UTF-8, not JSON, or has no text in ``field``, with its byte offset;
                the file gone or unreadable since the run started.
        """
        if self._handle is None:
            try:
                self._handle = self.path.open("rb")
            except OSError as exc:
                raise DataError(
                    f"{self.path}: can no longer be read ({exc.strerror}); was it moved or deleted during the run?"
                ) from None
        handle = self._handle
        handle.seek(offset)
        texts: list[str] = []
        for _ in range(max_lines):
            where = handle.tell()
            raw = handle.readline()
            if not raw:
                return texts, handle.tell(), True
            text = self._text(raw, where)
            if text:
                texts.append(text)
        return texts, handle.tell(), False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _text(self, raw: bytes, where: int) -> str:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 at byte {where + exc.start}") from None
        if self.path.suffix == ".txt":
            return line.strip()
        if not line.strip():
            return ""
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path}: the line at byte {where} is not JSON ({exc.msg})") from None
        field = self.field or "text"
        value = record.get(field) if isinstance(record, dict) else None
        if value is not None and not isinstance(value, str):
            raise DataError(f"{self.path}: field {field!r} at byte {where} is not text")
        if value is None and not (isinstance(record, dict) and field in record):
            found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(f"{self.path}: no field {field!r} at byte {where}; found: {found}")
        return (value or "").strip()


class PackedStream:
    """An endless stream of packed rows from many files (module doc); :meth:`next_batch` gives training
    batches in the layout of :func:`~diffusionbert.data.batches.collate`."""

    def __init__(
        self,
        files: list[Path],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        *,
        field: str | None = None,
        seed: int = 0,
        shuffle_rows: int = 1024,
        read_lines: int = 256,
    ) -> None:
        if max_length < 2 or shuffle_rows < 1 or read_lines < 1:
            raise ConfigError(
                f"max_length={max_length}, shuffle_rows={shuffle_rows}, read_lines={read_lines}; allowed: "
                "max_length >= 2 and at least one row and one line"
            )
        self.files, self.tokenizer, self.max_length = files, tokenizer, max_length
        self.field, self.seed, self.shuffle_rows, self.read_lines = field, seed, shuffle_rows, read_lines
        self.epoch, self.file, self.offset = 0, 0, 0
        self.carry: list[int] = []
        self.buffer: list[list[int]] = []
        self.generator = torch.Generator().manual_seed(seed)
        self._order = self._epoch_order()
        self._readers: dict[int, LineReader] = {}
        self._tokens_this_epoch = 0

    # ----------------------------------------------------------------------------------------- reading

    def _epoch_order(self) -> list[int]:
        """This epoch's order of the files: seeded by the run's seed and the epoch."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.files), generator=generator).tolist()

    def _read_chunk(self) -> None:
        """Read the next chunk of lines into ``carry``, moving on to the next file (and epoch) at an end."""
        index = self._order[self.file]
        reader = self._readers.get(index)
        if reader is None:
            reader = self._readers[index] = LineReader(self.files[index], self.field)
        texts, self.offset, ended = reader.read(self.offset, self.read_lines)
        if texts:
            cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
            for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]:
                self.carry.extend([cls_id, *ids, sep_id])
                self._tokens_this_epoch += len(ids) + 2
        if not ended:
            return
        reader.close()
        del self._readers[index]
        self.file, self.offset = self.file + 1, 0
        if self.file == len(self._order):
            if self._tokens_this_epoch == 0:
                raise DataError(f"{self.files[0].parent}: the corpus files hold no text")
            self.epoch, self.file, self._tokens_this_epoch = self.epoch + 1, 0, 0
            self._order = self._epoch_order()

    def _next_packed(self) -> list[int]:
        """The next ``max_length`` ids of the corpus, in reading order."""
        while len(self.carry) < self.max_length:
            self._read_chunk()
        row, self.carry = self.carry[: self.max_length], self.carry[self.max_length :]
        return row

    def next_row(self) -> list[int]:
        """The next row: a random one of the shuffle buffer, replaced by the next packed row."""
        while len(self.buffer) < self.shuffle_rows:
            self.buffer.append(self._next_packed())
        pick = int(torch.randint(len(self.buffer), (1,), generator=self.generator))
        row, self.buffer[pick] = self.buffer[pick], self._next_packed()
        return row

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` rows as a training batch: every position real and noisable but the ``[CLS]`` that
        start texts (given, as in the packed layout), no words counted."""
        before = self._position()
        try:
            ids = torch.tensor([self.next_row() for _ in range(batch_size)], dtype=torch.long)
        except DataError:
            self._restore(before)  # the batch is not taken: a checkpoint written now resumes at its start
            raise
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "noise_mask": ids != self.tokenizer.cls_token_id,
            "n_words": torch.full((batch_size,), -1, dtype=torch.long),
        }

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Training batches, forever."""
        while True:
            yield self.next_batch(batch_size)

    # ------------------------------------------------------------------------------------------- state

    def _position(self) -> tuple[Any, ...]:
        """A cheap copy of where the stream stands, for :meth:`_restore` (rows are never changed in place)."""
        return (
            self.epoch,
            self.file,
            self.offset,
            self._tokens_this_epoch,
            list(self.carry),
            list(self.buffer),
            self.generator.get_state(),
        )

    def _restore(self, position: tuple[Any, ...]) -> None:
        """Go back to a :meth:`_position` of this stream (after a batch that could not be read whole)."""
        self.epoch, self.file, self.offset, self._tokens_this_epoch, self.carry, self.buffer, rng = position
        self.generator.set_state(rng)
        self._order = self._epoch_order()

    def state(self) -> dict[str, Any]:
        """Where the stream stands, for a checkpoint (tensors and plain values only)."""
        rows = torch.tensor(self.buffer, dtype=torch.int32).reshape(len(self.buffer), self.max_length)
        return {
            "epoch": self.epoch,
            "file": self.file,
            "offset": self.offset,
            "tokens_this_epoch": self._tokens_this_epoch,
            "carry": torch.tensor(self.carry, dtype=torch.int32),
            "buffer": rows,
            "generator": self.generator.get_state(),
            "files": [str(path) for path in self.files],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of a stream over the same files.

        Raises:
            DataError: the corpus files are not those the state was taken over.
        """
        if state["files"] != [str(path) for path in self.files]:
            raise DataError(
                f"the checkpoint's stream read {len(state['files'])} file(s) ({state['files'][0]}, …), but "
                f"data.train_file now gives {len(self.files)} ({self.files[0]}, …); allowed: the same files"
            )
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
        self.epoch, self.file, self.offset = int(state["epoch"]), int(state["file"]), int(state["offset"])
        self._tokens_this_epoch = int(state["tokens_this_epoch"])
        self.carry = state["carry"].tolist()
        self.buffer = state["buffer"].tolist()
        self.generator.set_state(state["generator"])
        self._order = self._epoch_order()
