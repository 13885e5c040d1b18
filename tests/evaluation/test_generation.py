"""Conditional generation over a file: ``generate`` on a pair-trained model, MBR, scores and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from diffusionbert.cli.main import main
from diffusionbert.config import load_config
from diffusionbert.errors import ConfigError
from diffusionbert.evaluation import SourceFile, generate_file
from diffusionbert.evaluation.conditional import mbr_select
from diffusionbert.models.loading import load_tokenizer
from diffusionbert.training import train
from e2e_pairs import MRS, REFS


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory, tiny_backbone) -> tuple[Path, Path]:
    """A tiny model trained 2 steps on (MR, reference) pairs, and the pair file (an MR once per reference)."""
    base = tmp_path_factory.mktemp("pairs")
    data = base / "pairs.jsonl"
    rows = [{"mr": mr, "ref": ref} for mr, refs in REFS.items() for ref in refs]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4), encoding="utf-8")
    cfg = {
        "model": {"backbone": str(tiny_backbone)},
        "diffusion": {"objective": "diffusionbert", "schedule": "linear", "num_steps": 32},
        "data": {"train_file": str(data), "source_field": "mr", "field": "ref", "max_length": 32},
        "training": {"output_dir": str(base / "run"), "batch_size": 4, "max_steps": 2, "save_every": 0},
    }
    (base / "config.yaml").write_text(yaml.safe_dump(cfg))
    train(load_config(base / "config.yaml"), progress=False)
    return base / "run" / "final", data


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([*args, "--no-progress"])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_writes_one_record_per_distinct_source_and_scores_them(pair_model, tmp_path, capsys):
    final, data = pair_model
    out, scores = tmp_path / "out.jsonl", tmp_path / "scores.json"
    common = ["generate", "--checkpoint", str(final), "--data", str(data), "--source-field", "mr"]
    code, stdout, err = _cli(
        capsys,
        *common,
        "--field",
        "ref",
        "--task",
        "e2e",
        "--samples-per-source",
        "3",
        "--mbr",
        "--length",
        "8",
        "--steps",
        "4",
        "--out",
        str(out),
        "--scores-out",
        str(scores),
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in records] == MRS  # each MR once, in file order
    for record in records:
        assert len(record["candidates"]) == 3 and record["text"] in record["candidates"]
        assert record["text"] == record["candidates"][mbr_select(record["candidates"])]
        assert 0 < record["nfe"] <= 4
    written = json.loads(scores.read_text())
    assert written["sources"] == 3 and 0.0 <= written["ser"] <= 1.0 and 0.0 <= written["self_bleu"] <= 1.0
    assert "nrefs:var" in written["bleu_signature"] and "BLEU" in stdout and "SER" in stdout
    # one sample per source, no references: the texts only, printed source by source
    code, stdout, err = _cli(capsys, *common, "--length", "8", "--steps", "4", "--max-sources", "2")
    assert code == 0, err
    assert [line.split("\t")[0] for line in stdout.splitlines()] == MRS[:2]


def test_mbr_keeps_the_consensus_sample():
    candidates = ["a dog ran", "the cat sat on the mat", "the cat sat on a mat", "the cat sat on the mat ."]
    assert mbr_select(candidates) in (1, 3)
    assert mbr_select(["", "the cat", "the cat"]) == 1  # an empty text is worth nothing; ties: the first
    with pytest.raises(ConfigError):
        mbr_select([])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source-field", "src"], "src"),
        (["--source-field", "mr", "--mbr"], "num_samples >= 2 with mbr"),
        (["--source-field", "mr", "--samples-per-source", "0"], "num_samples=0 is not valid"),
        (["--source-field", "mr", "--task", "e2e"], "the e2e task scores against references"),
        (["--source-field", "mr", "--scores-out", "x.json"], "--scores-out needs references"),
        (["--source-field", "mr", "--length", "60", "--steps", "4"], "more than the model's"),
    ],
)
def test_bad_generate_requests_are_one_line(pair_model, capsys, extra, message):
    final, data = pair_model
    code, _, err = _cli(capsys, "generate", "--checkpoint", str(final), "--data", str(data), *extra)
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert message in err


def test_generate_refuses_a_model_trained_on_plain_texts(tiny_config, capsys, tmp_path):
    path, out = tiny_config(training={"max_steps": 1, "save_every": 0, "eval_every": 0})
    train(load_config(path), progress=False)
    data = tmp_path / "mrs.jsonl"
    data.write_text(json.dumps({"mr": MRS[0]}) + "\n")
    code, _, err = _cli(
        capsys, "generate", "--checkpoint", str(out / "final"), "--data", str(data), "--source-field", "mr"
    )
    assert code == 2 and "trained on plain texts" in err and err.strip().count("\n") == 0


def _window_model(tiny_config, pairs_data, data: Path, source_dropout: float = 0.0) -> Path:
    """A tiny pair model trained one step with a target window of 5; its run directory."""
    path, out = tiny_config(
        data=pairs_data(data, target_window=5),
        diffusion={"schedule": "linear", "num_steps": 32},
        training={"max_steps": 1, "save_every": 0, "eval_every": 0, "source_dropout": source_dropout},
    )
    train(load_config(path), progress=False)
    return out


def test_a_target_window_is_recorded_and_sets_the_generated_length(
    pair_model, tiny_config, tmp_path, capsys, pairs_data
):
    _, data = pair_model
    out = _window_model(tiny_config, pairs_data, data)
    recorded = json.loads((out / "final" / "diffusion.json").read_text())["data"]
    assert recorded["target_window"] == 5 and recorded["pairs"] is True
    result = generate_file(out / "final", SourceFile(data, "mr"), steps=4, num_samples=2)
    tokenizer = load_tokenizer(out / "final")
    for generation in result.generations:
        for text in generation.candidates:
            assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 5  # the window, not 32
    samples = tmp_path / "samples.jsonl"
    code, _, err = _cli(
        capsys,
        "sample",
        "--checkpoint",
        str(out / "final"),
        "--source",
        MRS[0],
        "--steps",
        "4",
        "--out",
        str(samples),
    )
    assert code == 0, err
    assert all(json.loads(line)["length"] <= 5 for line in samples.read_text().splitlines())
    for bad, message in (
        ({"source_field": None, "target_window": 5}, "data.target_window needs source/target pairs"),
        ({"source_field": "mr", "target_window": 40}, "data.target_window=40 is not valid"),
    ):
        path, _ = tiny_config(data={"train_file": str(data), "field": "ref", "max_length": 32, **bad})
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_a_window_model_decodes_the_length_it_predicts_from_each_source(
    pair_model, tiny_config, pairs_data, monkeypatch, capsys
):
    """``end="predicted"`` (the default where it applies): one call on the all-[MASK] window reads
    p(x_i = [SEP]) as the length's distribution function (running maximum) and the text is decoded in its
    median length, never as [SEP]; without a source too (a source-dropout model: after its hidden source),
    also after a prompt.

    The denoiser is wrapped to put p([SEP]) = 0.1 before a length L that depends on the source, 0.6 at L
    and 0.2 after it: the running maximum makes L the median, while the raw probabilities stay under 1/2
    after L (so a reading without the maximum would give the whole window)."""
    from diffusionbert.sampling import load_pipeline

    final, data = pair_model
    out = _window_model(tiny_config, pairs_data, data, source_dropout=0.5)
    pipe = load_pipeline(out / "final")
    sep, mask = pipe.tokenizer.sep_token_id, pipe.tokenizer.mask_token_id
    real = pipe.model.forward

    def length_of(source_tokens: torch.Tensor) -> torch.Tensor:
        return 1 + source_tokens % 3

    def forward(input_ids, attention_mask=None, t=None, positions=None):
        output = real(input_ids, attention_mask=attention_mask, t=t, positions=positions)
        rows, columns = positions.nonzero().unbind(-1)
        window_start = (input_ids == sep).long().argmax(-1) + 1  # after the (hidden) source's [SEP]
        index = columns - window_start[rows]
        target = length_of(window_start - 2)[rows]
        p = torch.where(index < target, 0.1, torch.where(index == target, 0.6, 0.2))
        others = output.logits.clone()
        others[:, sep] = float("-inf")
        output.logits[:, sep] = torch.log(p / (1 - p)) + others.logsumexp(-1)
        return output

    monkeypatch.setattr(pipe.model, "forward", forward)
    result = pipe(num_samples=2, length=5, steps=4, sampler="confidence", source=MRS, end="predicted")
    source_tokens = torch.tensor(
        [len(pipe.tokenizer(mr, add_special_tokens=False)["input_ids"]) for mr in MRS]
    )
    expected = length_of(source_tokens).repeat_interleave(2).tolist()
    assert expected != [4] * 6 and result.lengths == expected
    for row, length, nfe in zip(result.token_ids.tolist(), result.lengths, result.nfe, strict=True):
        text = row[row.index(sep) + 1 :][:5]
        assert sep not in text[:length] and mask not in text
        assert text[length:] == [sep] * (5 - length)  # the rest of the window: given [SEP] filler
        assert 2 <= nfe <= 5  # the length call, then at most one call per step
    default = pipe(
        num_samples=2, length=5, steps=4, sampler="confidence", source=MRS
    )  # the predicted end, where it applies
    assert torch.equal(default.token_ids, result.token_ids)
    hidden = int(length_of(torch.tensor(pipe.source_length)))  # the hidden source has source_length tokens
    unconditional = pipe(num_samples=2, length=5, steps=4, sampler="confidence")
    assert unconditional.lengths == [hidden] * 2 and all(n >= 2 for n in unconditional.nfe)
    prompted = pipe(
        num_samples=2, length=5, steps=4, sampler="confidence", prompt="the"
    )  # a prompt is part of the window
    assert prompted.lengths == [max(hidden, 2)] * 2 and all(t.startswith("the") for t in prompted.texts)
    monkeypatch.undo()
    assert (
        pipe(num_samples=1, length=6, steps=4, source=MRS[0]).lengths[0] <= 6
    )  # another window: a generated [SEP] ends it

    for call, message in (
        (lambda: pipe(num_samples=1, length=6, steps=4, source=MRS[0], end="predicted"), "allowed: length=5"),
        (
            lambda: pipe(num_samples=1, length=5, steps=4, infill="a [MASK] pub", end="predicted"),
            "with infill=",
        ),
        (lambda: pipe(num_samples=1, length=5, steps=4, source=MRS[0], end="eos"), "end='eos' is not valid"),
        (
            lambda: load_pipeline(final)(length=5, steps=4, source=MRS[0], end="predicted"),
            "data.target_window",
        ),
    ):
        with pytest.raises(ConfigError, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)
    common = ["generate", "--checkpoint", str(out / "final"), "--data", str(data), "--source-field", "mr"]
    written = out / "generated.jsonl"
    options = ["--steps", "4", "--sampler", "confidence", "--end", "predicted", "--out", str(written)]
    code, _, err = _cli(capsys, *common, *options)
    assert code == 0, err
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r["source"] for r in records] == MRS and all(r["nfe"] >= 2 for r in records)
    code, _, err = _cli(capsys, *common[:2], str(final), *common[3:], "--end", "predicted")
    assert code == 2 and "data.target_window" in err and err.strip().count("\n") == 0


def test_a_length_beam_keeps_the_length_whose_tokens_the_model_scores_highest(
    pair_model, tiny_config, pairs_data, monkeypatch, capsys
):
    """Mask-Predict's length beam on a hand-built denoiser: the length call puts p([SEP]) = 0.1, 0.6, 0.2,
    0.2 on window positions 0-3 (F = 0.1, 0.6, 0.6, 0.6, 1: median 1, then 4 the most probable), and while
    decoding the denoiser is sure of its tokens (one logit 30 above the rest) only when the text is 4 long.
    A beam of one decodes the median; a beam of two keeps length 4, at the calls of both candidates plus
    the length call; the same seed gives the same texts, and every misuse is one line."""
    from diffusionbert.sampling import load_pipeline

    _, data = pair_model
    out = _window_model(tiny_config, pairs_data, data)
    pipe = load_pipeline(out / "final")
    sep, window = pipe.tokenizer.sep_token_id, 5
    real = pipe.model.forward

    def forward(input_ids, attention_mask=None, t=None, positions=None):
        output = real(input_ids, attention_mask=attention_mask, t=t, positions=positions)
        rows, columns = positions.nonzero().unbind(-1)
        columns_all = torch.arange(input_ids.shape[1])
        window_start = (input_ids == sep).long().argmax(-1) + 1  # after the source's [SEP]
        filler = (input_ids == sep) & (columns_all >= window_start[:, None])
        text_length = torch.where(filler.any(-1), filler.long().argmax(-1) - window_start, window)
        logits = output.logits
        length_call = text_length[rows] == window
        index = columns - window_start[rows]
        p = torch.where(index == 0, 0.1, torch.where(index == 1, 0.6, 0.2)).to(logits.dtype)
        others = logits.clone()
        others[:, sep] = float("-inf")
        logits[length_call, sep] = (torch.log(p / (1 - p)) + others.logsumexp(-1))[length_call]
        sure = text_length[rows] == 4
        best = others.argmax(-1)  # a token it may write (never [SEP] or a forbidden id)
        logits[sure, best[sure]] = logits[sure].max(-1).values + 30.0
        return output

    monkeypatch.setattr(pipe.model, "forward", forward)
    options = {"length": window, "steps": 4, "sampler": "confidence", "source": MRS, "end": "predicted"}
    single = pipe(num_samples=2, **options)
    assert single.lengths == [1] * 6 and single.scores is not None
    beam = pipe(num_samples=2, length_beam=2, **options)
    assert beam.lengths == [4] * 6 and beam.nfe == [1 + 1 + 4] * 6  # length call, length 1, length 4
    assert beam.scores is not None and all(s > -1e-3 for s in beam.scores)  # the sure candidate's score
    assert all(s < -1.0 for s in single.scores)  # the real model is unsure of the median's token
    assert torch.equal(pipe(num_samples=2, length_beam=2, **options).token_ids, beam.token_ids)
    for call, message in (
        (lambda: pipe(length_beam=5, **options), r"length_beam=5 but a window of 5 positions holds 4"),
        (
            lambda: pipe(length_beam=2, **{**options, "end": "generated"}),
            'allowed: length_beam > 1 with end="predicted"',
        ),
        (lambda: pipe(length_beam=0, **options), r"length_beam=0 is not valid; allowed: length_beam >= 1"),
    ):
        with pytest.raises(ConfigError, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)


def test_source_dropout_hides_whole_sources_in_training_and_enables_guidance(
    pair_model, tiny_config, monkeypatch, capsys, pairs_data
):
    from diffusionbert.training import trainer as trainer_module

    _, data = pair_model
    seen = []
    real_terms = trainer_module.denoiser_terms

    def spy(model, objective, x0, attention_mask, corrupted, *rest):
        seen.append((x0.clone(), corrupted.x_t.clone()))
        return real_terms(model, objective, x0, attention_mask, corrupted, *rest)

    monkeypatch.setattr(trainer_module, "denoiser_terms", spy)
    path, out = tiny_config(
        data=pairs_data(data, max_length=32),
        diffusion={"schedule": "linear", "num_steps": 32},
        training={"max_steps": 3, "save_every": 0, "eval_every": 0, "source_dropout": 0.5},
    )
    train(load_config(path), progress=False)
    tokenizer = load_tokenizer(out / "final")
    hidden, shown = 0, 0
    for x0, x_t in (pair for batch in seen for pair in zip(*batch, strict=True)):
        sep = int((x0 == tokenizer.sep_token_id).nonzero()[0])
        source = x_t[1:sep]
        if bool((source == tokenizer.mask_token_id).all()):
            hidden += 1
        else:
            assert torch.equal(source, x0[1:sep])  # a source is hidden whole or not at all
            shown += 1
    assert hidden and shown  # 12 rows at probability 0.5
    assert json.loads((out / "final" / "diffusion.json").read_text())["data"]["source_dropout"] == 0.5
    common = ["generate", "--checkpoint", str(out / "final"), "--data", str(data), "--source-field", "mr"]
    code, stdout, err = _cli(capsys, *common, "--steps", "4", "--length", "6", "--guidance", "2")
    assert code == 0 and len(stdout.splitlines()) == 3, err
    final, _ = pair_model
    code, _, err = _cli(
        capsys,
        "generate",
        "--checkpoint",
        str(final),
        "--data",
        str(data),
        "--source-field",
        "mr",
        "--guidance",
        "2",
        "--steps",
        "4",
    )
    assert code == 2 and "training.source_dropout > 0" in err and err.strip().count("\n") == 0


def test_a_source_dropout_model_generates_without_a_source_after_a_hidden_one(
    pair_model, tiny_config, pairs_data
):
    """Without a source, a pair model trained with source dropout reads [MASK] × its mean training source
    length and [SEP] (the input source dropout trained), also for prompts and infills; a pair model without
    source dropout refuses, as it never saw a text without its source."""
    from diffusionbert.sampling import load_pipeline

    final, data = pair_model
    path, out = tiny_config(
        data=pairs_data(data, max_length=32),
        diffusion={"schedule": "linear", "num_steps": 32},
        training={"max_steps": 1, "save_every": 0, "eval_every": 0, "source_dropout": 0.5},
    )
    train(load_config(path), progress=False)
    tokenizer = load_tokenizer(out / "final")
    sources = [
        tokenizer(mr, add_special_tokens=False)["input_ids"] for mr, refs in REFS.items() for _ in refs
    ]
    expected = round(sum(len(s) + 2 for s in sources) / len(sources)) - 2
    assert json.loads((out / "final" / "diffusion.json").read_text())["data"]["source_length"] == expected
    pipe = load_pipeline(out / "final")
    mask, sep = tokenizer.mask_token_id, tokenizer.sep_token_id
    hidden = [tokenizer.cls_token_id, *[mask] * expected, sep]
    for request in ({}, {"prompt": "the big"}, {"infill": "the [MASK] and a [MASK]"}):
        out_ = pipe(num_samples=2, length=6, steps=4, **request)
        for row, length in zip(out_.token_ids.tolist(), out_.lengths, strict=True):
            assert row[: len(hidden)] == hidden and mask not in row[len(hidden) :]
            assert length <= 6
        if "prompt" in request:
            assert all(text.startswith("the big") for text in out_.texts)
    with pytest.raises(ConfigError, match="only generates from a source"):
        load_pipeline(final)(length=6, steps=4)


def test_an_autoregressive_model_trained_on_pairs_decodes_a_file_greedy_beam_and_sampled(
    pair_model, tiny_config, capsys, pairs_data
):
    """The AR baseline trains on the same pairs (the target scored after [CLS] source [SEP]) and ``generate``
    decodes every source with each left-to-right decoder, batched across sources."""
    from diffusionbert.sampling import load_pipeline

    _, data = pair_model
    path, out = tiny_config(
        data=pairs_data(data, max_length=32),
        diffusion={"objective": "ar", "schedule": None},
        training={"max_steps": 2, "save_every": 0, "eval_every": 0},
    )
    train(load_config(path), progress=False)
    final = out / "final"
    pipe = load_pipeline(final)
    alone = [pipe(num_samples=1, length=8, sampler="greedy", source=mr).texts[0] for mr in MRS]
    for sampler, batch in (("greedy", 2), ("beam:3", 4), ("autoregressive", 2)):
        result = generate_file(
            final, SourceFile(data, "mr", "ref"), sampler=sampler, length=8, batch_size=batch
        )
        assert [g.source for g in result.generations] == MRS and result.scores is not None
        assert all(1 <= g.nfe <= 8 for g in result.generations)
        if sampler == "greedy":  # batched, left-padded sources decode as each alone
            assert [g.text for g in result.generations] == alone
    code, _, err = _cli(
        capsys,
        "generate",
        "--checkpoint",
        str(final),
        "--data",
        str(data),
        "--source-field",
        "mr",
        "--sampler",
        "confidence",
    )
    assert code == 2 and "does not apply to an autoregressive model" in err
    with pytest.raises(ConfigError, match="only decodes after a source"):
        pipe(num_samples=1, length=8)


def test_evaluate_scores_a_pair_model_on_pairs_and_refuses_the_wrong_layout(pair_model, tiny_config, capsys):
    """The bound of a pair model is that of each target given its source; asking for it without the source
    column (or with one for a model of plain texts) is a one-line error."""
    final, data = pair_model
    common = ["evaluate", "--checkpoint", str(final), "--data", str(data), "--field", "ref"]
    code, stdout, err = _cli(capsys, *common, "--source-field", "mr")
    assert code == 0 and "nats" in stdout, err
    code, _, err = _cli(capsys, *common)
    assert code == 2 and "trained on source/target pairs" in err and err.strip().count("\n") == 0
    path, out = tiny_config(training={"max_steps": 1, "save_every": 0, "eval_every": 0})
    train(load_config(path), progress=False)
    code, _, err = _cli(
        capsys, "evaluate", "--checkpoint", str(out / "final"), "--data", str(data), "--field", "ref",
        "--source-field", "mr",
    )  # fmt: skip
    assert code == 2 and "trained on plain texts" in err
