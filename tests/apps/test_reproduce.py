"""``make reproduce`` at tiny scale: the real plan's rows, claims and page, on a tiny model and tiny text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from diffusionbert.apps.plans import DISCUSSION_END, DISCUSSION_START
from diffusionbert.apps.reproduce import load_plan, reproduce
from diffusionbert.errors import ConfigError

PLAN = Path(__file__).resolve().parents[2] / "configs" / "reproduce.yaml"


@pytest.fixture()
def tiny_plan(tiny_config, tiny_texts, tmp_path) -> Path:
    """configs/reproduce.yaml with its rows, claims and judge kept, on the tiny backbone and a few steps."""
    base, _ = tiny_config()
    plan = yaml.safe_load(PLAN.read_text().replace("diffusion.block_size=16", "diffusion.block_size=8"))
    plan |= {
        "base": str(base),
        "output_dir": str(tmp_path / "rows"),
        "results": str(tmp_path / "docs" / "results.md"),
        "common": ["training.max_steps=2", "training.eval_every=1", "training.save_every=0"],
        "protocol": {
            "test_file": str(tiny_texts["valid"]),
            "max_examples": 8,
            "num_samples": 3,
            "length": 8,
            "steps": 4,
            "top_k": 3,
            "batch_size": 4,
        },
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_quick_reproduction_writes_every_row_claim_and_plot_and_reruns_from_cache(tiny_plan, capsys):
    page = reproduce(tiny_plan, progress=False)
    plan = load_plan(tiny_plan)
    text = page.read_text()
    assert len(plan.rows) == 16 and len(plan.claims) >= 8
    for row in plan.rows:
        assert f"| **{row.label}** |" in text
        stored = json.loads((Path(plan.output_dir) / row.name / "evaluation.json").read_text())
        assert stored["result"]["steps"] == 2 and len(stored["result"]["samples"]) == 3
        batches = json.loads((Path(plan.output_dir) / row.name / "batch_bounds.json").read_text())
        assert len(batches["batch_nats_per_token"]) == 2  # 8 test sentences in batches of 4
    for claim in plan.claims:
        assert f"| {claim.text} |" in text
    assert (page.parent / "convergence.png").stat().st_size > 0
    assert "| 63.78 | 0.4358 | 0.2151 |" in text  # the paper's numbers sit next to ours
    ar = json.loads((Path(plan.output_dir) / "ar" / "evaluation.json").read_text())["result"]
    assert ar["sampler"] == "autoregressive"
    for name, top_k in (("spindle", 3), ("diffusion-lm", 0), ("plaid", 0)):  # a row may turn top-k off
        assert (
            json.loads((Path(plan.output_dir) / name / "evaluation.json").read_text())["key"]["top_k"]
            == top_k
        )
    assert (
        "`diffusion-lm`: `diffusion.objective=diffusion_lm`, `diffusion.schedule=sqrt`; sampled with top-k off"
        in text
    )

    # A hand-written discussion survives regeneration; nothing is trained or evaluated again.
    page.write_text(text.replace(DISCUSSION_START + "\n", DISCUSSION_START + "\nOur reading.\n"))
    capsys.readouterr()
    reproduce(tiny_plan, progress=False)
    out = capsys.readouterr().out
    assert out.count("reusing the finished run") == len(plan.rows)
    again = page.read_text()
    assert "Our reading." in again[again.index(DISCUSSION_START) : again.index(DISCUSSION_END)]

    # A changed protocol invalidates the stored evaluations (not the trained rows).
    raw = yaml.safe_load(tiny_plan.read_text())
    raw["protocol"]["num_samples"] = 2
    tiny_plan.write_text(yaml.safe_dump(raw))
    reproduce(tiny_plan, progress=False)
    stored = json.loads((Path(plan.output_dir) / "spindle" / "evaluation.json").read_text())
    assert len(stored["result"]["samples"]) == 2


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"judge": "gpt"}, "row 'gpt' is not in the plan"),
        ({"protocol": {"test_file": "x.txt", "samples": 3}}, "protocol has no key 'samples'"),
        ({"rows": []}, "has no rows"),
        ({"convergence": ["spindle"]}, "convergence needs at least two rows"),
        (
            {"claims": [{"text": "c", "better": "spindle", "worse": "linear", "metric": "bleu4"}]},
            "metric 'bleu4'",
        ),
    ],
)
def test_bad_plans_are_rejected_with_one_line_errors(tmp_path, patch, message):
    plan = yaml.safe_load(PLAN.read_text()) | patch
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match=message):
        load_plan(path)


def test_duplicate_row_names_are_rejected(tmp_path):
    plan = yaml.safe_load(PLAN.read_text())
    plan["rows"].append(dict(plan["rows"][0]))
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match="repeats a row name"):
        load_plan(path)


def test_claims_compare_in_the_metric_direction_and_judge_bounds_by_paired_batches():
    from dataclasses import replace

    from diffusionbert.apps.plans import paired_gap
    from diffusionbert.apps.reproduce import RowResult, claim_verdicts

    plan = load_plan(PLAN)
    base = RowResult(5.0, 0.1, 100.0, 0.3, 0.2, 50.0, 5.0, 20.0, 400, 10.0, 5.0, "cached", 128, ())
    results = {row.name: base for row in plan.rows}
    results["spindle"] = replace(base, ppl_word=80.0, bleu=0.2)  # lower PPL (better), lower BLEU (worse)
    results["prefix"] = replace(base, ppl_word=99.0)
    hard_and_easy = (6.0, 4.0, 6.0, 4.0)  # sentence difficulty varies a lot from batch to batch
    batches = {row.name: hard_and_easy for row in plan.rows}
    batches["spindle"] = (5.9, 3.8, 5.8, 3.9)  # better on every batch, by 0.15 ± 0.05
    batches["prefix"] = (5.99, 4.02, 5.98, 4.0)
    verdicts = {v.claim.text: v for v in claim_verdicts(plan, results, batches)}
    spindle = verdicts["spindle beats linear (time-agnostic)"]
    gap = 0.15 / (torch.tensor([0.1, 0.2, 0.2, 0.1], dtype=torch.float64).std().item() / 2)
    assert (
        spindle.agrees
        and spindle.gap_in_stderr == pytest.approx(gap)
        and spindle.text == f"yes ({gap:.1f} s.e.)"
    )
    bleu = verdicts["DiffusionBERT has higher BLEU than BERT-Mouth"]
    assert not bleu.agrees and bleu.gap_in_stderr is None and bleu.text == "**no**"
    prefix = verdicts["time-agnostic beats a prefix time token"]
    assert not prefix.agrees and prefix.text.startswith("**no**, within noise")
    with pytest.raises(ConfigError, match="at least two batches"):
        paired_gap((1.0,), (2.0,))
