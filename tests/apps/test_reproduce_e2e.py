"""``make reproduce-e2e`` at tiny scale: the real plan's models and decoders on a tiny backbone and pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from diffusionbert.apps.plans import DISCUSSION_START
from diffusionbert.apps.reproduce_e2e import load_plan, reproduce_e2e
from diffusionbert.errors import ConfigError

PLAN = Path(__file__).resolve().parents[2] / "configs" / "reproduce-e2e.yaml"
PAIRS = {
    "name[The Eagle], eatType[pub]": ["the eagle is a pub", "a pub called the eagle"],
    "name[Blue Spice], area[riverside]": ["blue spice is by the river"],
    "name[The Mill], food[French]": ["the mill serves french food"],
}


@pytest.fixture()
def tiny_plan(tiny_config, pairs_data, tmp_path) -> Path:
    """configs/reproduce-e2e.yaml with every model and decoder kept, on the tiny backbone, 2 steps each."""
    data = tmp_path / "pairs.jsonl"
    rows = [{"mr": mr, "ref": ref} for mr, refs in PAIRS.items() for ref in refs]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4), encoding="utf-8")
    train = tmp_path / "train.jsonl"  # more distinct MRs: a distilled file has one row per MR, a batch 8
    extra = [
        {"mr": f"name[The Eagle], priceRange[{p}]", "ref": f"the eagle is {p}"} for p in ("cheap", "high")
    ]
    extra += [
        {"mr": f"name[The Mill], area[{a}]", "ref": f"the mill is in the {a}"}
        for a in ("riverside", "city centre")
    ]
    extra += [
        {"mr": f"name[Blue Spice], food[{f}]", "ref": f"blue spice serves {f} food"}
        for f in ("french", "english", "fast")
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows * 4 + extra), encoding="utf-8")
    base, _ = tiny_config(
        data=pairs_data(train, max_length=32),
        diffusion={"objective": "diffusionbert", "schedule": "spindle", "num_steps": 2048},
    )
    text = PLAN.read_text().replace("data.target_window=32", "data.target_window=8")
    text = text.replace("data/e2e-distilled/train.csv", str(tmp_path / "distilled.csv"))
    plan = yaml.safe_load(text.replace("diffusion.block_size=16", "diffusion.block_size=8"))
    plan |= {
        "base": str(base),
        "output_dir": str(tmp_path / "models"),
        "results": str(tmp_path / "docs" / "results-e2e.md"),
        "curve_plot": str(tmp_path / "docs" / "e2e-steps.png"),
        "common": ["training.max_steps=2", "training.save_every=0", "training.eval_every=0"],
        "protocol": {"test_file": str(data), "length": 8, "batch_size": 4},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, allow_unicode=True))
    return path


def test_every_decoder_is_a_scored_row_beside_the_anchors_and_reruns_from_cache(tiny_plan, capsys):
    from diffusionbert.apps.reproduce_e2e import is_left_to_right, stored_result

    page = reproduce_e2e(tiny_plan, progress=False)
    plan = load_plan(tiny_plan)
    text = page.read_text()
    assert len(plan.models) >= 8 and len(plan.decoders) >= 15
    assert any(d.end == "predicted" for d in plan.decoders)
    for decoder in plan.decoders:
        assert f"| **{decoder.label}** | `{decoder.model}` |" in text
        stored = json.loads((Path(plan.output_dir) / "decoders" / f"{decoder.name}.json").read_text())
        assert [g["source"] for g in stored["generations"]] == list(PAIRS)
        assert all(g["nfe"] >= 1 for g in stored["generations"])
        scores = stored_result(plan, decoder).scores
        assert scores.sources == 3 and 0 <= scores.ser <= 1
        assert (scores.self_bleu is None) == (decoder.samples == 1)
    assert "| 65.93 | 8.61 | 68.50 | 2.23 |" in text  # TGen beside ours
    assert "comparable quality" in text and "more diverse" in text and "nrefs:var" in text
    assert "![BLEU and SER against network calls](e2e-steps.png)" in text and Path(plan.curve_plot).is_file()
    for curve in plan.curves:
        assert all(f"| {curve.label} | {plan.decoder(name).label} |" in text for name in curve.decoders)
    # the distillation: the AR teacher's text for each distinct training MR, the students trained on it
    (distillation,) = plan.distillations
    distilled = Path(distillation.out).read_text(encoding="utf-8").splitlines()
    assert distilled[0] == "mr,ref" and len(distilled) - 1 >= len(PAIRS)
    students = plan.students()
    assert students and distillation.teacher not in students
    for name in students:
        run_config = yaml.safe_load((Path(plan.output_dir) / name / "config.yaml").read_text())
        assert run_config["data"]["train_file"] == distillation.out
    assert f"- `{distillation.out}` (`{distillation.name}`): the `ar` model" in text
    page.write_text(text.replace(DISCUSSION_START + "\n", DISCUSSION_START + "\nOur reading.\n"))
    capsys.readouterr()
    reproduce_e2e(tiny_plan, progress=False)
    out = capsys.readouterr().out
    assert out.count("reusing the finished run") == len(plan.models)
    assert "reusing the distilled file" in out
    assert "Our reading." in page.read_text()

    # stored texts are scored afresh: a metric change needs no decoding (here: texts set to references)
    path = Path(plan.output_dir) / "decoders" / "ar-greedy.json"
    stored = json.loads(path.read_text())
    for generation, references in zip(stored["generations"], PAIRS.values(), strict=True):
        generation["text"] = references[0]
    path.write_text(json.dumps(stored))
    rescored = stored_result(plan, plan.decoder("ar-greedy")).scores
    assert rescored.bleu == pytest.approx(100.0) and rescored.ser == 0.0

    # make bench's speed-at-quality rows: the best AR row, and a diffusion row (bookkeeping, not timings)
    from diffusionbert.apps.bench import bench_conditional, conditional_report, speed_at_quality_rows

    rows = speed_at_quality_rows(plan)
    assert all(is_left_to_right(plan, d) for d in rows.ar) and "greedy" in {d.sampler for d in rows.ar}
    assert not any(is_left_to_right(plan, d) for d in rows.diffusion)
    ar_rows = [d for d in plan.decoders if is_left_to_right(plan, d)]
    assert stored_result(plan, rows.best_ar).scores.bleu == max(
        stored_result(plan, d).scores.bleu for d in ar_rows
    )
    cached_models = {m.name for m in plan.models if "model.source_attention=isolated" in m.overrides}
    assert {d.model for d in rows.diffusion} >= cached_models  # every cached model has its row
    assert len({d.model for d in rows.diffusion}) == len(rows.diffusion)  # one row per model
    timings = bench_conditional(plan, rows.all[:1] + rows.ar, sources=2)
    assert [(t.label, t.batch) for t in timings] == [
        (r.label, b) for r in rows.all[:1] + rows.ar for b in (1, 2)
    ]
    section = conditional_report(timings, type(rows)(rows.ar, rows.diffusion[:1]), "settings")
    assert "÷ AR tokens/s, batch 1 | ÷ AR tokens/s, batch 2 | goal |" in section
    assert f"| {rows.diffusion[0].label} | " in section


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"decoders": [{"name": "x", "model": "nope", "label": "x", "sampler": "greedy"}]}, "model 'nope'"),
        ({"diverse_baseline": "ar-greedy"}, "samples >= 2"),
        ({"protocol": {"test_file": "missing.csv"}}, "not found"),
        ({"models": []}, "names must be present"),
        ({"distillations": [{"name": "d", "teacher": "nope", "out": "x.csv"}]}, "model 'nope'"),
        (
            {"decoders": [{"name": "x", "model": "ar", "label": "x", "sampler": "greedy", "end": "eos"}]},
            "end='eos'",
        ),
        (
            {"decoders": [{"name": "x", "model": "ar", "label": "x", "sampler": "greedy", "beams": 2}]},
            "no key",
        ),
    ],
)
def test_bad_plans_are_one_line_errors(tiny_plan, patch, message):
    raw = yaml.safe_load(tiny_plan.read_text()) | patch
    tiny_plan.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message) as raised:
        reproduce_e2e(tiny_plan, progress=False, train_only=True)
    assert "\n" not in str(raised.value)


def test_the_distilled_plan_is_the_whole_plans_rows_so_either_reuses_the_others_work():
    """make reproduce-e2e-distilled trains and decodes in the whole plan's folder: each of its models (and
    each decoder sharing a name) must be the whole plan's, with the same base, budget and protocol."""
    whole = load_plan(PLAN)
    part = load_plan(PLAN.with_name("reproduce-e2e-distilled.yaml"))
    assert (part.base, part.common, part.protocol, part.output_dir) == (
        whole.base, whole.common, whole.protocol, whole.output_dir
    )  # fmt: skip
    assert all(model == whole.model(model.name) for model in part.models)
    names = {d.name for d in whole.decoders}
    shared = [d for d in part.decoders if d.name in names]
    assert len(shared) >= 8 and all(d == whole.decoder(d.name) for d in shared)


def test_named_models_train_alone_in_the_plans_folders_and_decode_nothing(tiny_plan, capsys):
    """``reproduce-e2e --models`` (how ``make lm-eval`` gets its models): only those train, in the folders the
    whole plan reuses; nothing is decoded, no page written; an unknown name is a one-line error."""
    from diffusionbert.cli.main import main

    assert main(["reproduce-e2e", "--plan", str(tiny_plan), "--models", "ar,radd", "--no-progress"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("trained ar, radd")
    plan = load_plan(tiny_plan)
    trained = sorted(p.parents[1].name for p in Path(plan.output_dir).glob("*/final/model.safetensors"))
    assert trained == ["ar", "radd"]
    assert not Path(plan.results).exists() and not (Path(plan.output_dir) / "decoders").exists()
    assert main(["reproduce-e2e", "--plan", str(tiny_plan), "--models", "ar,nope", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model 'nope' is not in the plan" in err and "\n" not in err
