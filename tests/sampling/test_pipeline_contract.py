"""The contract every registered family's pipeline and every sampler it lists must pass.

A family is tested here by registering it: the pipeline of each entry of :data:`~diffusionbert.methods.METHODS`
is built from the tiny backbone and must

* run every sampler it lists, seeded (the same seed gives the same tokens, whatever the batch size);
* start from the model's saved decoding, which a call overrides option by option or replaces whole;
* accept every option it declares (:class:`~diffusionbert.sampling.pipelines.Supports`) and refuse every
  other one in one line that names the option and what is allowed;
* refuse a sampler it does not list, in one line, without building it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from diffusionbert.checkpoint import LoadedModel
from diffusionbert.config import DecodingConfig, config_from_dict
from diffusionbert.errors import ConfigError
from diffusionbert.methods import METHODS, build_model, check_config
from diffusionbert.sampling import pipeline_for
from diffusionbert.sampling.pipelines import Conditioning, Outputs, Pipeline

OWN_SCHEDULE = {"diffusionbert": "linear", "plaid": "learned"}
"""Families whose default schedule needs more than a bare model (spindle reads token counts)."""
OPTIONS = {
    "block_length": ("blocks", {"block_length": 2}),
    "guidance": ("guidance", {"guidance": 1.0}),
    "temperature/top_k/top_p": ("sharpening", {"temperature": 0.5}),
    "sampler_options": ("sampler_options", {"sampler_options": {"schedule": "linear"}}),
}
"""Each optional decoding option: the :class:`Supports` field that declares it and a value that asks for it."""


def family_model(name: str, backbone: Path) -> LoadedModel:
    """A freshly built (untrained) model of family ``name`` on the tiny backbone, as if loaded."""
    diffusion = {"objective": name, "num_steps": 16, "embedding_dim": 8}
    if name in OWN_SCHEDULE:
        diffusion["schedule"] = OWN_SCHEDULE[name]
    cfg = check_config(config_from_dict({"model": {"backbone": str(backbone)}, "diffusion": diffusion}))
    model, tokenizer = build_model(cfg)
    return LoadedModel(
        backbone, model, tokenizer, cfg.model, cfg.diffusion, None, trained_on_pairs=False, max_length=16
    )


def family_pipeline(name: str, backbone: Path, decoding: DecodingConfig | None = None) -> Pipeline:
    """The pipeline of :func:`family_model`, with ``decoding`` as the model's saved decoding."""
    loaded = family_model(name, backbone)
    return pipeline_for(loaded if decoding is None else dataclasses.replace(loaded, decoding=decoding), "cpu")


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_family_pipeline_keeps_the_contract(name: str, tiny_backbone: Path) -> None:
    pipe = family_pipeline(name, tiny_backbone)
    samplers = pipe.sampler_names()
    assert samplers[0] == pipe.default_sampler and len(set(samplers)) == len(samplers)
    for sampler in samplers:
        count = 1 if sampler.startswith("beam") else 3
        request = {"sampler": sampler, "steps": 4, "length": 6, "num_samples": count, "seed": 1}
        first = pipe(**request)
        assert len(first.texts) == count and all(n >= 1 for n in first.nfe), sampler
        assert torch.equal(pipe(**request, batch_size=1).token_ids, first.token_ids), sampler
        assert torch.equal(pipe(config=DecodingConfig(**request)).token_ids, first.token_ids), sampler

    with pytest.raises(ConfigError) as error:
        pipe(sampler="no-such-sampler", length=4)
    assert "no-such-sampler" in one_line(error) and "allowed" in one_line(error)

    supports = pipe.supports
    for option, (field, values) in OPTIONS.items():
        decoding = pipe.resolve(None, {"sampler": samplers[0], **values}, Conditioning(source="a"))
        refused = supports.refused(decoding, Conditioning(source="a"), Outputs())
        if getattr(supports, field):
            assert option not in refused, option
        else:
            with pytest.raises(ConfigError) as error:
                pipe(length=4, **values)
            assert f"{option} does not apply to {supports.description}; allowed:" in one_line(error)
    for output, declared in (("return_trajectory", supports.trajectories), ("on_step", supports.live)):
        asked = {"return_trajectory": True} if output == "return_trajectory" else {"on_step": lambda x: None}
        if declared:
            pipe(length=4, steps=2, **asked)
        else:
            with pytest.raises(ConfigError) as error:
                pipe(length=4, steps=2, **asked)
            assert f"{output} does not apply" in one_line(error)
    for conditioning in ("prompt", "infill"):
        if conditioning not in supports.conditions:
            with pytest.raises(ConfigError) as error:
                pipe(length=4, **{conditioning: "a [MASK]"})
            assert f"{conditioning} does not apply" in one_line(error)


@pytest.mark.parametrize("name", ["mdlm", "ar", "diffusion_lm"])
def test_the_saved_decoding_is_the_default_and_a_call_overrides_it(name: str, tiny_backbone: Path) -> None:
    loaded = family_model(name, tiny_backbone)
    reference = pipeline_for(loaded, "cpu")
    saved = DecodingConfig(reference.sampler_names()[1], steps=3, length=5, num_samples=2, seed=7)
    pipe = pipeline_for(dataclasses.replace(loaded, decoding=saved), "cpu")
    assert pipe.decoding == saved and pipe.default_sampler == saved.sampler
    assert pipe.sampler_names()[0] == saved.sampler  # the page and the CLI offer it first
    default = pipe()
    assert torch.equal(default.token_ids, reference(config=saved).token_ids)
    assert len(default.texts) == 2
    changed = pipe(seed=8)
    assert torch.equal(
        changed.token_ids, reference(config=DecodingConfig(**{**saved.to_dict(), "seed": 8})).token_ids
    )
    whole = DecodingConfig(reference.own_sampler, steps=2, length=4)
    assert torch.equal(pipe(config=whole).token_ids, reference(config=whole).token_ids)
    with pytest.raises(ConfigError, match="unknown DecodingConfig option 'stpes'; did you mean 'steps'"):
        pipe(stpes=3)


def test_a_saved_decoding_the_model_cannot_use_is_refused_when_loaded(tiny_backbone: Path) -> None:
    with pytest.raises(ConfigError, match=r"saved decoding \(decoding.json\) does not suit it: block_length"):
        family_pipeline("ar", tiny_backbone, DecodingConfig(block_length=4))


def test_a_saved_guidance_gives_way_without_a_source_but_an_asked_one_does_not(tiny_backbone: Path) -> None:
    pipe = family_pipeline("mdlm", tiny_backbone, DecodingConfig(guidance=1.0, steps=2, length=4))
    assert pipe().texts  # unconditional: the saved guidance does not apply
    with pytest.raises(ConfigError, match="guidance contrasts a source with none"):
        pipe(guidance=1.0)
