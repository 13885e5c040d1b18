"""The method registry: what each entry means, its checks, and a new family added with one entry."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from diffusionbert.checkpoint import load_model_dir
from diffusionbert.cli import main
from diffusionbert.config import load_config
from diffusionbert.diffusion.objectives import ContinuousObjective
from diffusionbert.errors import ConfigError
from diffusionbert.methods import (
    BASE_SCHEDULE_NAMES,
    DENOISE,
    GAUSSIAN,
    LEFT_TO_RIGHT,
    METHODS,
    Method,
    check_config,
    get_method,
    register,
)
from diffusionbert.models import CausalLMForComparison, DiffusionBertForMaskedLM, EmbeddingDiffusionLM


class IIDTimeObjective(ContinuousObjective):
    """The MDLM NELBO with t drawn independently per row (no antithetic grid): a new family for the test."""

    name: ClassVar[str] = "iid-time"

    def times(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return 1.0 - torch.rand(batch, generator=generator, dtype=torch.float64, device=device)


IID_TIME = Method(
    name="iid-time",
    summary="MDLM with i.i.d. times",
    model=DiffusionBertForMaskedLM,
    objective=lambda mask_id, schedule, cfg: IIDTimeObjective(mask_id, schedule),
    schedules=BASE_SCHEDULE_NAMES,
    default_schedule="cosine",
)


def test_every_method_names_its_model_and_sampling_kind():
    assert set(METHODS) >= {
        "diffusionbert",
        "rdm",
        "mdlm",
        "md4",
        "sedd",
        "radd",
        "mlm",
        "ar",
        "diffusion_lm",
    }
    for method in METHODS.values():
        models = {
            DENOISE: DiffusionBertForMaskedLM,
            LEFT_TO_RIGHT: CausalLMForComparison,
            GAUSSIAN: EmbeddingDiffusionLM,
        }
        assert method.model is models[method.sampling]
    assert get_method("ar").exact_likelihood and not get_method("mdlm").exact_likelihood


def test_check_config_fills_the_method_default_schedule(tiny_config):
    path, _ = tiny_config(diffusion={"objective": "md4", "schedule": None})
    assert load_config(path).diffusion.schedule is None
    assert check_config(load_config(path)).diffusion.schedule == "cosine"
    path, _ = tiny_config(diffusion={"objective": "diffusionbert", "schedule": None})
    assert check_config(load_config(path)).diffusion.schedule == "spindle"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["diffusion.objective=mdml"], r"diffusion.objective='mdml' is not valid \(did you mean 'mdlm'\?\)"),
        (
            ["diffusion.objective=rdm", "diffusion.schedule=spindle"],
            "diffusion.schedule='spindle' contradicts",
        ),
        (
            ["diffusion.schedule=cosin"],
            r"diffusion.schedule='cosin' is not valid \(did you mean 'cosine'\?\)",
        ),
        (["model.time_conditioning=layers"], "model.time_conditioning='layers' is not valid"),
        (["diffusion.spindle_form=papers"], "diffusion.spindle_form='papers' is not valid"),
    ],
)
def test_check_config_names_the_key_and_what_is_allowed(tiny_config, overrides, message):
    path, _ = tiny_config()
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(path, overrides))


def test_a_name_is_registered_once_and_a_method_checks_its_own_options():
    with pytest.raises(ConfigError, match="'mdlm' is already registered"):
        register(METHODS["mdlm"])
    with pytest.raises(ConfigError, match="default_schedule='spindle' is not one of its schedules"):
        Method("x", "x", DiffusionBertForMaskedLM, IID_TIME.objective, BASE_SCHEDULE_NAMES, "spindle")
    with pytest.raises(ConfigError, match=r"time_conditionings=.* is not valid"):
        Method("x", "x", DiffusionBertForMaskedLM, IID_TIME.objective, time_conditionings=("hourly",))


def test_a_new_family_is_one_registry_entry_trained_sampled_and_evaluated_by_the_cli(
    tiny_config, tiny_texts, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(METHODS, IID_TIME.name, IID_TIME)
    path, out = tiny_config(diffusion={"objective": "iid-time", "schedule": None}, training={"max_steps": 4})
    assert main(["--no-progress", "train", "--config", str(path)]) == 0
    assert "trained 4 steps" in capsys.readouterr().out
    loaded = load_model_dir(out / "final")
    assert loaded.method is IID_TIME and loaded.diffusion_cfg.schedule == "cosine"

    samples = tmp_path / "samples.jsonl"
    args = [
        "sample",
        "--checkpoint",
        str(out / "final"),
        "--num-samples",
        "3",
        "--length",
        "6",
        "--steps",
        "8",
    ]
    assert main([*args, "--sampler", "cached", "--out", str(samples), "--no-progress"]) == 0
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(records) == 3 and all(1 <= r["nfe"] <= 7 for r in records)

    report = tmp_path / "eval.json"
    evaluate = ["evaluate", "--checkpoint", str(out / "final"), "--data", str(tiny_texts["valid"])]
    assert main([*evaluate, "--metrics", "bound,dist", "--num-samples", "3", "--steps", "4", "--length", "6",
                 "--out", str(report), "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "iid-time NELBO" in printed
    result = json.loads(report.read_text())
    assert result["objective"] == "iid-time" and 0 < result["bound"]["nats_per_token"] < 10
    assert len(result["samples"]["texts"]) == 3


def test_an_unregistered_method_in_a_checkpoint_is_a_one_line_error(tiny_config, monkeypatch, capsys):
    monkeypatch.setitem(METHODS, IID_TIME.name, IID_TIME)
    path, out = tiny_config(diffusion={"objective": "iid-time", "schedule": None}, training={"max_steps": 1})
    assert main(["--no-progress", "train", "--config", str(path)]) == 0
    monkeypatch.delitem(METHODS, IID_TIME.name)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out / "final"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint file ") and "\n" not in err
    assert "diffusion.json: diffusion.objective='iid-time' is not valid; allowed: " in err


@pytest.mark.parametrize(
    ("objective", "sampling", "message"),
    [
        ("ar", {"sampler": "confidence"}, "sampler='confidence' does not apply to an autoregressive model"),
        ("ar", {"guidance": 1.0}, "guidance does not apply to an autoregressive model"),
        ("diffusionbert", {"sampler": "beam:4"}, "sampler='beam:4' is not valid"),
    ],
)
def test_a_default_decoding_the_model_could_not_use_stops_training_before_it_starts(
    tiny_config, capsys, objective: str, sampling: dict, message: str
):
    """A run's ``sampling:`` is saved as the model's default decoding: one no command could load (an AR run
    of a config written for diffusion) is one line before any training, in train and in a plan."""
    from diffusionbert.apps.plans import train_named
    from diffusionbert.config import load_config
    from diffusionbert.errors import ConfigError

    path, out = tiny_config(diffusion={"objective": objective}, training={"max_steps": 1}, sampling=sampling)
    capsys.readouterr()
    assert main(["--no-progress", "train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sampling (the model's default decoding): ") and "\n" not in err
    assert message in err and not out.exists()
    with pytest.raises(ConfigError, match=r"^run 'ar-row': sampling \(the model's default decoding\)"):
        train_named([("ar-row", "AR", load_config(path))], progress=False)
    assert not out.exists()


def test_a_reused_run_takes_the_configs_decoding_without_training(tiny_config, capsys):
    """Decoding settings may change without training: reusing a finished run rewrites its decoding.json
    (atomically) to the config's ``sampling:``, and leaves it alone when it already matches."""
    import json

    from diffusionbert.config import load_config
    from diffusionbert.training import train_or_reuse

    path, out = tiny_config(training={"max_steps": 1}, sampling={"sampler": "confidence", "steps": 8})
    assert train_or_reuse(load_config(path), progress=False)
    saved = out / "final" / "decoding.json"
    assert json.loads(saved.read_text())["steps"] == 8
    weights = (out / "final" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert not train_or_reuse(
        load_config(path, ["sampling.steps=4", "sampling.sampler=gibbs"]), progress=False
    )
    assert "its default decoding is now the config's sampling section" in capsys.readouterr().out
    assert json.loads(saved.read_text())["steps"] == 4 and json.loads(saved.read_text())["sampler"] == "gibbs"
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == weights
    before = saved.stat().st_mtime_ns
    assert not train_or_reuse(
        load_config(path, ["sampling.steps=4", "sampling.sampler=gibbs"]), progress=False
    )
    assert saved.stat().st_mtime_ns == before and "default decoding" not in capsys.readouterr().out
