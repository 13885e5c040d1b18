"""Sequence-level distillation (``diffusionbert distill``): a teacher's text per distinct source, written as a
pair file a student trains on unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from diffusionbert.apps.distill import distill
from diffusionbert.cli.main import main
from diffusionbert.config import load_config
from diffusionbert.data import load_texts
from diffusionbert.errors import ConfigError
from diffusionbert.evaluation import SourceFile, generate_file
from diffusionbert.training import train
from e2e_pairs import MRS, REFS


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, make_tiny_config) -> tuple[Path, Path]:
    """A tiny AR model trained on (MR, reference) pairs, and its pair file (an MR once per reference)."""
    base = tmp_path_factory.mktemp("teacher")
    data = base / "pairs.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["mr", "ref"])
        writer.writerows([(mr, ref) for mr, refs in REFS.items() for ref in refs] * 4)
    pairs = {
        "train_file": str(data),
        "valid_file": None,
        "source_field": "mr",
        "field": "ref",
        "max_length": 32,
    }
    config, out = make_tiny_config(
        base,
        data=pairs,
        diffusion={"objective": "ar", "schedule": None},
        training={"max_steps": 3, "save_every": 0, "eval_every": 0},
    )
    train(load_config(config), progress=False)
    return out / "final", data


def _command(final: Path, data: Path) -> list[str]:
    """``diffusionbert distill`` with the teacher and its pair file, before ``--out`` and options."""
    return ["distill", "--teacher", str(final), "--data", str(data), "--source-field", "mr", "--no-progress"]


def test_an_ar_teacher_writes_its_beam_search_text_for_each_distinct_source(teacher, tmp_path) -> None:
    final, data = teacher
    result = distill(final, SourceFile(data, "mr"), tmp_path / "distilled.csv", length=8)
    beam = generate_file(final, SourceFile(data, "mr"), sampler="beam:4", length=8)
    with result.out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    expected = [[g.source, g.text.strip()] for g in beam.generations if g.text.strip()]
    assert rows == [["mr", "ref"], *expected]  # the input's columns, one row per distinct source, file order
    assert (result.sources, result.rows, result.empty) == (3, len(expected), 3 - len(expected))
    assert result.nfe > 0 and result.seconds > 0


def test_several_samples_give_a_row_per_distinct_text_and_jsonl_reads_back(teacher, tmp_path) -> None:
    final, data = teacher
    out = tmp_path / "distilled.jsonl"
    result = distill(final, SourceFile(data, "mr"), out, sampler="autoregressive", num_samples=4, length=8)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == result.rows and set(records[0]) == {"mr", "ref"}
    for mr in MRS:
        texts = [r["ref"] for r in records if r["mr"] == mr]
        assert len(texts) == len(set(texts)) <= 4 and all(texts)
    if result.rows:
        pairs = load_texts(out, "mr", target_field="ref")
        assert pairs.column_names == ["source", "target"] and len(pairs) == result.rows


def test_a_student_trains_on_the_distilled_file_by_changing_the_train_file(
    teacher, tmp_path, make_tiny_config
):
    final, data = teacher
    distilled = distill(final, SourceFile(data, "mr"), tmp_path / "distilled.csv", sampler="greedy", length=8)
    assert distilled.rows == 3  # greedy: one text a source
    pairs = {"train_file": str(distilled.out), "valid_file": None, "source_field": "mr", "field": "ref"}
    training = {"max_steps": 2, "save_every": 0, "batch_size": 2}
    config, _ = make_tiny_config(tmp_path, data=pairs, training=training)
    assert train(load_config(config), progress=False).steps == 2


def test_the_command_prints_what_it_did_and_refuses_bad_outputs(teacher, tmp_path, capsys) -> None:
    final, data = teacher
    common = _command(final, data)
    assert main([*common, "--out", str(tmp_path / "d.csv"), "--length", "8"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("distilled 3 sources into ") and line.endswith(str(tmp_path / "d.csv"))
    for out, message in (
        (tmp_path / "d.txt", "a distilled file is .csv or .jsonl"),
        (data, "is the --data file itself"),
    ):
        before = data.read_bytes()
        assert main([*common, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert data.read_bytes() == before
    with pytest.raises(ConfigError, match="the target column 'mr' is the source column"):
        distill(final, SourceFile(data, "mr"), tmp_path / "x.csv", target_field="mr")


def test_with_e2e_a_text_with_slot_errors_gives_way_to_the_reference_with_the_fewest(
    teacher, tmp_path, capsys
):
    """The tiny teacher's texts miss the MRs' slots; each gives way to the first reference with the fewest
    slot errors when that has fewer, and is kept otherwise (the check is done here independently)."""
    from diffusionbert.evaluation.slots import check_slots

    final, data = teacher
    result = distill(final, SourceFile(data, "mr"), tmp_path / "checked.csv", e2e=True, length=8)
    beam = {
        g.source: g.text.strip()
        for g in generate_file(final, SourceFile(data, "mr"), sampler="beam:4", length=8).generations
    }
    with result.out.open(newline="", encoding="utf-8") as fh:
        rows = dict(list(csv.reader(fh))[1:])
    replaced = 0
    for mr, refs in REFS.items():
        own = check_slots(mr, beam[mr]).errors
        counts = [check_slots(mr, ref).errors for ref in refs]
        expected = refs[counts.index(min(counts))] if min(counts) < own else beam[mr]
        replaced += expected != beam[mr]
        assert rows.get(mr) == (expected or None)
    assert replaced >= 1 and result.replaced == replaced  # the tiny teacher does miss slots
    assert rows[MRS[0]] == "the eagle is a pub"  # both references are right: the first
    common = _command(final, data)
    assert main([*common, "--out", str(tmp_path / "c.csv"), "--length", "8", "--task", "e2e"]) == 0
    assert f", {replaced} replaced by a reference with fewer slot errors" in capsys.readouterr().out
