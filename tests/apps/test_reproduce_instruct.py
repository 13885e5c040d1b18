"""``make reproduce-instruct`` at tiny scale: the real plan's models and decoders, both stages, on a tiny
backbone, tiny texts and tiny instructions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from diffusionbert.apps.plans import DISCUSSION_START
from diffusionbert.apps.reproduce_instruct import load_plan, reproduce_instruct
from diffusionbert.checkpoint import load_model_dir
from diffusionbert.errors import ConfigError

PLAN = Path(__file__).resolve().parents[2] / "configs" / "reproduce-instruct.yaml"
RECORDS = [
    {"instruction": "describe the cat", "output": "the cat sat on the mat"},
    {"instruction": "describe the dog", "input": "a big dog", "output": "the big dog ran to the house"},
    {"instruction": "where is the mat", "output": "the red mat"},
    {"instruction": "describe a house", "output": "a small green house"},
]


@pytest.fixture()
def tiny_plan(tiny_config, tmp_path) -> Path:
    """configs/reproduce-instruct.yaml with every model and decoder, on the tiny backbone, 2 steps a stage."""
    data = tmp_path / "instructions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS * 4), encoding="utf-8")
    stage1, _ = tiny_config()
    chat = yaml.safe_load(stage1.read_text())
    chat["data"] = {
        "train_file": str(data),
        "format": "chat",
        "max_length": 40,
        "target_window": 16,
        "cache_dir": chat["data"]["cache_dir"],
    }
    stage2 = tmp_path / "chat.yaml"
    stage2.write_text(yaml.safe_dump(chat))
    plan = yaml.safe_load(PLAN.read_text().replace("diffusion.block_size=16", "diffusion.block_size=8"))
    # a model instruction-tuned straight from the backbone, beside the plan's two-stage ones
    plan["models"].append({**plan["models"][0], "name": "direct", "label": "no stage 1", "adapted": False})
    plan["decoders"].append({**plan["decoders"][0], "name": "direct-decoder", "model": "direct"})
    short = ["training.max_steps=2", "training.save_every=0", "training.eval_every=0"]
    plan |= {
        "output_dir": str(tmp_path / "models"),
        "results": str(tmp_path / "docs" / "results-instruct.md"),
        "stage1": {"base": str(stage1), "common": short},
        "stage2": {"base": str(stage2), "common": short},
        "protocol": {"test_file": str(data), "max_answers": 3, "batch_size": 4},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, allow_unicode=True))
    return path


def test_both_stages_train_and_every_model_and_decoder_is_a_row(tiny_plan, capsys) -> None:
    page = reproduce_instruct(tiny_plan, progress=False)
    plan = load_plan(tiny_plan)
    text = page.read_text()
    assert {m.name for m in plan.models} >= {"mdlm", "ar"} and any(not m.adapted for m in plan.models)
    assert any(d.block_length for d in plan.decoders)
    root = Path(plan.output_dir)
    for model in plan.models:
        assert f"| **{model.label}** (`{model.name}`) | 16 |" in text  # every test answer scored
        final = load_model_dir(root / model.name / "stage2" / "final")
        assert final.chat and final.tokenizer.chat_template
        assert (root / model.name / "stage1" / "final").is_dir() == model.adapted
        started = json.loads((root / model.name / "stage2" / "final" / "diffusion.json").read_text())
        assert started["model"]["init_from"] == (
            str(root / model.name / "stage1" / "final") if model.adapted else None
        )
    for decoder in plan.decoders:
        assert f"| **{decoder.label}** | `{decoder.model}` |" in text
        stored = json.loads((root / "decoders" / f"{decoder.name}.json").read_text())
        assert len(stored["answers"]) == 3 and all(n >= 1 for n in stored["nfe"])
        assert stored["references"] == [r["output"] for r in RECORDS[:3]]
    assert "paired standard errors" in text and "**Prompt 1.**" in text
    page.write_text(text.replace(DISCUSSION_START + "\n", DISCUSSION_START + "\nOur reading.\n"))
    capsys.readouterr()
    reproduce_instruct(tiny_plan, progress=False)
    out = capsys.readouterr().out
    stages = sum(2 if m.adapted else 1 for m in plan.models)
    assert out.count("reusing the finished run") == stages
    assert "Our reading." in page.read_text()

    # make bench's chat timing: each trained model's first decoder, the same prompts (bookkeeping only)
    from diffusionbert.apps.bench_decoding import bench_chat, chat_report

    timings = bench_chat(plan, prompts=2)
    firsts = [next(d for d in plan.decoders if d.model == m.name) for m in plan.models]
    assert [t.label for t in timings] == [d.label for d in firsts]
    assert all(t.seconds_per_answer > 0 and t.mean_nfe >= 1 for t in timings)
    baseline = next(d.label for d in plan.decoders if d.model == plan.baseline)
    section = chat_report(timings, baseline, "settings")
    assert f"| {baseline} | " in section and "| 1.00× |" in section
    isolated = load_model_dir(root / "mdlm-isolated" / "stage2" / "final")
    assert isolated.model_cfg.source_attention == "isolated"  # stage 2 isolated its source
    assert isolated.model.config.source_attention == "isolated"


def test_a_bad_plan_is_a_one_line_error(tiny_plan) -> None:
    plan = yaml.safe_load(tiny_plan.read_text())
    plan["decoders"][0]["model"] = "nobody"
    tiny_plan.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match="model 'nobody' is not in the plan"):
        load_plan(tiny_plan)
    plan["decoders"][0] |= {"model": "mdlm", "end": "later"}
    tiny_plan.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match="end='later' is not valid"):
        load_plan(tiny_plan)
