"""Streaming corpora (``data.streaming``): many files packed on the fly, an exact resume position, counts in
one pass, memory that does not grow with the corpus, and training that resumes bit for bit."""

from __future__ import annotations

import json
import random
import re
import tracemalloc
from pathlib import Path

import pytest
import torch

from conftest import WORDS
from diffusionbert.config import load_config
from diffusionbert.data import PackedStream, cached_stream_counts, cached_token_counts, corpus_files
from diffusionbert.errors import ConfigError, DataError
from diffusionbert.testing import build_tiny_tokenizer
from diffusionbert.training import train
from diffusionbert.training.trainer import Trainer
from diffusionbert.utils.io import load_state, save_state


def _corpus(directory: Path, files: int, lines: int, seed: int = 0) -> Path:
    """``files`` text files of ``lines`` random tiny-grammar lines each (a blank line now and then)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        rows = [
            " ".join(rng.choices(WORDS, k=rng.randint(1, 9))) if rng.random() > 0.05 else ""
            for _ in range(lines)
        ]
        (directory / f"part-{index:03d}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(WORDS)


def _packed_in_order(files: list[Path], tokenizer, max_length: int) -> list[list[int]]:
    """The rows of reading ``files`` in this order: ``[CLS] text [SEP]`` concatenated and cut."""
    flat: list[int] = []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                flat += [
                    tokenizer.cls_token_id,
                    *tokenizer(line.strip(), add_special_tokens=False)["input_ids"],
                ]
                flat.append(tokenizer.sep_token_id)
    return [flat[i : i + max_length] for i in range(0, len(flat) - max_length + 1, max_length)]


def test_without_shuffling_the_rows_are_the_files_packed_in_the_epochs_order(tmp_path, tokenizer) -> None:
    files = corpus_files(str(_corpus(tmp_path / "c", 3, 40) / "part-*.txt"))
    assert [f.name for f in files] == ["part-000.txt", "part-001.txt", "part-002.txt"]
    stream = PackedStream(files, tokenizer, 12, seed=5, shuffle_rows=1, read_lines=7)
    order = [files[i] for i in stream._epoch_order()]
    expected = _packed_in_order(order, tokenizer, 12)
    rows = [stream.next_row() for _ in range(len(expected) - 1)]  # a buffer of one delays each row by one
    assert rows == expected[: len(rows)]
    assert all(len(row) == 12 for row in rows)


def test_a_resumed_stream_reads_exactly_what_the_uninterrupted_one_reads(tmp_path, tokenizer) -> None:
    """Snapshots taken anywhere (inside a file, across files and epochs, with a full shuffle buffer) and stored
    like a checkpoint continue with the same rows."""
    files = corpus_files(str(_corpus(tmp_path / "c", 4, 25) / "*.txt"))
    whole = PackedStream(files, tokenizer, 10, seed=1, shuffle_rows=16, read_lines=5)
    reference = [whole.next_row() for _ in range(400)]  # several epochs of this small corpus
    assert whole.epoch >= 2
    assert reference[:50] != sorted(reference[:50])  # shuffled
    for stop in (1, 37, 160, 333):
        first = PackedStream(files, tokenizer, 10, seed=1, shuffle_rows=16, read_lines=5)
        head = [first.next_row() for _ in range(stop)]
        save_state(tmp_path, f"stream-{stop}", first.state())
        resumed = PackedStream(files, tokenizer, 10, seed=1, shuffle_rows=16, read_lines=5)
        resumed.load_state(load_state(tmp_path, f"stream-{stop}"))
        assert head + [resumed.next_row() for _ in range(400 - stop)] == reference


def test_a_state_of_other_files_is_refused(tmp_path, tokenizer) -> None:
    files = corpus_files(str(_corpus(tmp_path / "c", 2, 10) / "*.txt"))
    state = PackedStream(files, tokenizer, 8).state()
    with pytest.raises(DataError, match="the checkpoint's stream read 2 file"):
        PackedStream(files[:1], tokenizer, 8).load_state(state)


def test_stream_counts_follow_the_file_counts_rule_and_are_cached(tmp_path, tokenizer) -> None:
    corpus = _corpus(tmp_path / "c", 1, 60)
    file = corpus / "part-000.txt"
    streamed = cached_stream_counts([file], tokenizer, None, tmp_path / "cache")
    assert torch.equal(streamed, cached_token_counts(file, tokenizer, None, tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("token_counts-*.safetensors"))) == 2
    again = cached_stream_counts([file], tokenizer, None, tmp_path / "cache")
    assert torch.equal(again, streamed)


@pytest.mark.parametrize(
    ("write", "pattern", "message"),
    [
        (None, "none-*.txt", "no file matches"),
        ({"a.csv": "text\nhi\n"}, "*.csv", "extension .csv cannot be streamed"),
        ({"a.txt": ""}, "*.txt", "a.txt: empty file"),
        ({"a.txt": b"the cat\n\xff\xfe\n"}, "*.txt", "not UTF-8 at byte 8"),
        ({"a.jsonl": '{"text": "the cat"}\n{"ref": "a dog"}\n'}, "*.jsonl", "no field 'text' at byte 20"),
        ({"a.jsonl": "not json\n"}, "*.jsonl", "the line at byte 0 is not JSON"),
    ],
)
def test_bad_corpus_files_are_one_line_errors(tmp_path, tokenizer, write, pattern, message) -> None:
    for name, content in (write or {}).items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(DataError, match=message):
        files = corpus_files(str(tmp_path / pattern))
        stream = PackedStream(files, tokenizer, 4, shuffle_rows=1)
        for _ in range(4):
            stream.next_row()


def _hide(files: list[Path]) -> None:
    for file in files:
        file.rename(file.with_suffix(".gone"))


def _unhide(files: list[Path]) -> None:
    for file in files:
        file.with_suffix(".gone").rename(file)


def test_a_batch_that_cannot_be_read_whole_is_not_taken(tmp_path, tokenizer) -> None:
    """Files moved away while a stream reads: the file being read ends through its open handle, the next
    one is a one-line error, and the stream stands where the failed batch began; once the files are back it
    goes on exactly as a stream that never failed."""
    files = corpus_files(str(_corpus(tmp_path, 3, 40) / "*.txt"))
    failing, steady = (PackedStream(files, tokenizer, 8, shuffle_rows=4, seed=3) for _ in range(2))
    for _ in range(2):
        assert torch.equal(failing.next_batch(4)["input_ids"], steady.next_batch(4)["input_ids"])
    _hide(files)
    with pytest.raises(
        DataError, match=r"part-00\d\.txt: can no longer be read \(No such file or directory\); was"
    ):
        for _ in range(100):
            failing.next_batch(4)
            steady.next_batch(4)
    _unhide(files)
    for _ in range(20):
        assert torch.equal(failing.next_batch(4)["input_ids"], steady.next_batch(4)["input_ids"])


def test_reading_a_ten_times_larger_corpus_takes_no_more_memory(tmp_path, tokenizer) -> None:
    """The peak of Python allocations while reading a whole epoch stays flat as the corpus grows 10×."""
    peaks = []
    for size in (1, 10):
        files = corpus_files(str(_corpus(tmp_path / f"c{size}", size, 2000, seed=size) / "*.txt"))
        stream = PackedStream(files, tokenizer, 32, shuffle_rows=64)
        tracemalloc.start()
        while stream.epoch == 0:
            stream.next_row()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks


def test_streaming_options_are_checked(tiny_config) -> None:
    path, _ = tiny_config(data={"streaming": True})
    with pytest.raises(ConfigError, match=r"data\.layout=sentence does not apply"):
        load_config(path)
    path, _ = tiny_config(data={"train_file": "corpus/*.txt"})
    with pytest.raises(ConfigError, match=r"is a glob; allowed: a glob with data\.streaming=true"):
        load_config(path)


def test_a_streamed_run_trains_on_a_glob_and_resumes_bit_for_bit(tiny_config, tmp_path) -> None:
    corpus = _corpus(tmp_path / "corpus", 3, 30)
    data = {
        "train_file": str(corpus / "part-*.txt"),
        "streaming": True,
        "layout": "packed",
        "shuffle_rows": 8,
    }
    training = {"max_steps": 6, "save_every": 3, "eval_every": 0, "lr_decay": "constant"}
    path, _ = tiny_config(data=data, training=training)
    whole = train(load_config(path, [f"training.output_dir={tmp_path / 'whole'}"]), progress=False)
    parts = [f"training.output_dir={tmp_path / 'parts'}"]
    train(load_config(path, [*parts, "training.max_steps=3"]), progress=False)
    train(load_config(path, parts), resume=True, progress=False)

    def losses(run: Path) -> dict[int, float]:
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if "loss" in r}

    assert sorted(losses(whole.output_dir)) == list(range(1, 7))
    assert losses(tmp_path / "parts") == losses(whole.output_dir)  # the same batches after the resume
    stream = load_state(tmp_path / "parts" / "checkpoints" / "step-0000006", "stream")
    assert stream["files"] == [str(corpus / f"part-{i:03d}.txt") for i in range(3)]


def test_a_corpus_file_gone_mid_run_stops_it_with_a_checkpoint_to_resume_from(
    tiny_config, tmp_path, monkeypatch
) -> None:
    corpus = _corpus(tmp_path / "corpus", 3, 10)
    files = sorted(corpus.glob("*.txt"))
    data = {"train_file": str(corpus / "*.txt"), "streaming": True, "layout": "packed", "shuffle_rows": 2}
    training = {"max_steps": 30, "save_every": 0, "eval_every": 0, "lr_decay": "constant"}
    path, _ = tiny_config(data=data, training=training)
    whole = train(load_config(path, [f"training.output_dir={tmp_path / 'whole'}"]), progress=False)

    real_step = Trainer.train_step

    def step_then_hide(trainer: Trainer, batch: dict[str, torch.Tensor]):
        if trainer.state.step == 2:
            _hide(files)
        return real_step(trainer, batch)

    monkeypatch.setattr(Trainer, "train_step", step_then_hide)
    parts = load_config(path, [f"training.output_dir={tmp_path / 'parts'}"])
    with pytest.raises(
        DataError, match=r"can no longer be read .*; a checkpoint at step (\d+) holds the run"
    ) as err:
        train(parts, progress=False)
    assert "\n" not in str(err.value)
    stopped = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    assert 2 < stopped < 30
    assert [c.name for c in (tmp_path / "parts" / "checkpoints").iterdir()] == [f"step-{stopped:07d}"]
    monkeypatch.undo()
    _unhide(files)
    train(parts, resume=True, progress=False)

    def losses(run: Path) -> dict[int, float]:
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if "loss" in r}

    assert losses(tmp_path / "parts") == losses(whole.output_dir)


def test_packed_rows_keep_their_text_starts_visible_and_train(tiny_config, tmp_path) -> None:
    """The ``[CLS]`` that starts each text inside a packed row is given, never noised (the denoiser puts no
    mass on it, so a masked ``[CLS]`` would make the loss infinite), in memory and streamed alike."""
    path, out = tiny_config(
        data={"layout": "packed"}, training={"max_steps": 3, "save_every": 0, "eval_every": 0}
    )
    result = train(load_config(path), progress=False)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert result.steps == 3 and not any("skipped_nonfinite" in r for r in records)
    tokenizer = build_tiny_tokenizer(WORDS)
    files = corpus_files(str(_corpus(tmp_path / "c", 1, 30) / "*.txt"))
    batch = PackedStream(files, tokenizer, 16, shuffle_rows=1).next_batch(4)
    starts = batch["input_ids"] == tokenizer.cls_token_id
    assert starts.any() and not (batch["noise_mask"] & starts).any() and batch["noise_mask"][~starts].all()
