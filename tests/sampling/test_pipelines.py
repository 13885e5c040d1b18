"""The pipeline on a tiny random model: layouts and conditioning, the [SEP] cut, batching, caching, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusionbert.checkpoint import save_model_dir
from diffusionbert.config import Config, DiffusionConfig, ModelConfig
from diffusionbert.diffusion.schedules import LinearSchedule
from diffusionbert.errors import CheckpointError, ConfigError
from diffusionbert.methods import build_objective
from diffusionbert.sampling import SAMPLERS, DiffusionPipeline
from diffusionbert.sampling.pipelines import guided_logits
from diffusionbert.testing import build_tiny_tokenizer, tiny_model

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "to", "house", "big", "small", "red"]
T = 64


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(WORDS)


def make_pipeline(tokenizer, time_conditioning: str = "none", **kwargs) -> DiffusionPipeline:
    model = tiny_model(time_conditioning, tokenizer=tokenizer)
    objective = build_objective("diffusionbert", tokenizer.mask_token_id, LinearSchedule(), num_steps=T)
    return DiffusionPipeline(model, tokenizer, objective, **kwargs)


@pytest.fixture(scope="module")
def pipe(tokenizer) -> DiffusionPipeline:
    return make_pipeline(tokenizer)


@pytest.fixture(scope="module")
def timed_pipe(tokenizer) -> DiffusionPipeline:
    return make_pipeline(tokenizer, "layerwise")


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_cut(pipe: DiffusionPipeline, out, text_start: int) -> None:
    """Each text is the decoded tokens before the first generated [SEP], and its length is reported."""
    sep = pipe.tokenizer.sep_token_id
    for row, length, text in zip(out.token_ids.tolist(), out.lengths, out.texts, strict=True):
        body = row[text_start:]
        assert length == (body.index(sep) if sep in body else len(body))
        assert text == pipe.tokenizer.decode(body[:length], skip_special_tokens=True)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_unconditional_layout_cut_and_seeds(pipe: DiffusionPipeline, sampler: str):
    out = pipe(num_samples=6, length=12, steps=8, sampler=sampler, seed=3)
    assert out.token_ids.shape == (6, 13) and len(out.texts) == len(out.lengths) == len(out.nfe) == 6
    tok = pipe.tokenizer
    assert bool((out.token_ids[:, 0] == tok.cls_token_id).all())
    generated = out.token_ids[:, 1:]
    forbidden = torch.tensor([tok.mask_token_id, tok.pad_token_id, tok.cls_token_id])
    assert not bool(torch.isin(generated, forbidden).any())
    check_cut(pipe, out, text_start=1)
    again = pipe(num_samples=6, length=12, steps=8, sampler=sampler, seed=3)
    assert torch.equal(out.token_ids, again.token_ids)
    assert not torch.equal(
        out.token_ids, pipe(num_samples=6, length=12, steps=8, sampler=sampler, seed=4).token_ids
    )


def test_a_generated_sep_ends_the_text(tokenizer):
    pipe = make_pipeline(tokenizer)
    with torch.no_grad():
        pipe.model.backbone.cls.predictions.bias[tokenizer.sep_token_id] += 100.0  # always predict [SEP]
    out = pipe(num_samples=3, length=8, steps=4, prompt="the cat")
    assert out.texts == ["the cat"] * 3 and out.lengths == [2] * 3
    out = pipe(num_samples=2, length=8, steps=4, source="a dog ran")
    assert out.texts == [""] * 2 and out.lengths == [0] * 2


def test_prompt_tokens_are_kept_and_count_toward_the_length(pipe: DiffusionPipeline):
    prompt = ids(pipe.tokenizer, "the big cat")
    out = pipe(num_samples=4, length=10, steps=5, prompt="the big cat", batch_size=3)
    assert out.token_ids.shape == (4, 11)
    assert bool((out.token_ids[:, 1:4] == torch.tensor(prompt)).all())
    assert all(text.startswith("the big cat") for text in out.texts)
    check_cut(pipe, out, text_start=1)
    full = pipe(num_samples=2, length=3, steps=2, prompt="the big cat")  # nothing left to generate
    assert full.texts == ["the big cat"] * 2 and full.nfe == [0, 0]


def test_infill_generates_only_the_placeholders(pipe: DiffusionPipeline):
    template = "the [MASK] sat on [MASK] big [MASK]"
    tokens = torch.tensor(ids(pipe.tokenizer, template))
    out = pipe(num_samples=5, length=99, steps=4, sampler="confidence", infill=template)
    assert out.token_ids.shape == (5, len(tokens) + 1)  # the template fixes the length
    body = out.token_ids[:, 1:]
    given = tokens != pipe.tokenizer.mask_token_id
    assert bool((body[:, given] == tokens[given]).all())
    assert not bool((body == pipe.tokenizer.mask_token_id).any())
    with pytest.raises(ConfigError, match="no \\[MASK\\] placeholder"):
        pipe(num_samples=1, length=4, steps=2, infill="the cat")


def test_source_is_kept_and_only_the_target_is_generated(pipe: DiffusionPipeline):
    source = ids(pipe.tokenizer, "a red dog ran")
    tok = pipe.tokenizer
    out = pipe(num_samples=4, length=6, steps=3, source="a red dog ran", return_trajectory=True)
    start = len(source) + 2
    assert out.token_ids.shape == (4, start + 6)
    expected = torch.tensor([tok.cls_token_id, *source, tok.sep_token_id])
    assert bool((out.token_ids[:, :start] == expected).all())
    assert bool((out.trajectories[:, :, :start] == expected).all())  # never masked, at any step
    assert bool((out.trajectories[:, 0, start:] == tok.mask_token_id).all())
    check_cut(pipe, out, text_start=start)


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_batch_size_does_not_change_the_samples(pipe: DiffusionPipeline, sampler: str):
    whole = pipe(num_samples=5, length=10, steps=6, sampler=sampler, seed=7, batch_size=5)
    split = pipe(num_samples=5, length=10, steps=6, sampler=sampler, seed=7, batch_size=2)
    assert torch.equal(whole.token_ids, split.token_ids) and whole.nfe == split.nfe


def test_cache_gives_identical_samples_with_at_most_one_call_per_token(tokenizer, pipe: DiffusionPipeline):
    uncached = make_pipeline(tokenizer, use_cache=False)
    length, steps = 10, 32
    reference = uncached(num_samples=6, length=length, steps=steps, sampler="ancestral", seed=1)
    cached = pipe(num_samples=6, length=length, steps=steps, sampler="cached", seed=1)
    assert torch.equal(reference.token_ids, cached.token_ids)
    assert max(cached.nfe) <= length < min(reference.nfe)


def test_time_conditioned_model_is_called_every_step(timed_pipe: DiffusionPipeline):
    out = timed_pipe(num_samples=4, length=24, steps=4, return_trajectory=True)
    assert out.nfe == [4] * 4  # (a row ends early only when all 24 tokens are out before the last step)
    masks = (out.trajectories == timed_pipe.tokenizer.mask_token_id).sum(-1)
    assert bool((masks[:, 0] == 24).all() and (masks[:, -1] == 0).all())
    assert bool((masks[:, 1:] <= masks[:, :-1]).all())


def test_sampler_options_and_progress_bar(pipe: DiffusionPipeline):
    request = {"num_samples": 2, "length": 6, "steps": 6, "sampler": "threshold", "temperature": 0.0}
    out = pipe(**request, sampler_options={"threshold": 0.5}, progress=True)
    assert len(out.texts) == 2
    strict = pipe(**request, sampler_options={"threshold": 1.0})  # one token per step: the slowest
    assert sum(strict.nfe) >= sum(out.nfe)
    for options, message in (
        ({"threshold": 0.0}, r"threshold=0\.0 is not valid"),
        ({"thresold": 0.5}, "has no option 'thresold'; allowed: temperature, threshold, top_k, top_p"),
        ({"threshold": "high"}, "options .* are not valid"),
        ({"temperature": 0.5}, "sampler_options names temperature"),
    ):
        with pytest.raises(ConfigError, match=message):
            pipe(**request, sampler_options=options)


def one_line_error(error: type[Exception], match: str, call) -> None:
    with pytest.raises(error, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_bad_inputs_are_one_line_config_errors(pipe: DiffusionPipeline, timed_pipe: DiffusionPipeline):
    one_line_error(
        ConfigError,
        "prompt has 3 tokens but length=2",
        lambda: pipe(num_samples=2, length=2, steps=4, prompt="the big cat"),
    )
    one_line_error(
        ConfigError,
        "sampler='greedy'.*allowed: ancestral, cached",
        lambda: pipe(num_samples=2, length=8, steps=4, sampler="greedy"),
    )
    one_line_error(
        ConfigError,
        "steps=0 is not valid; allowed: steps >= 1",
        lambda: pipe(num_samples=2, length=8, steps=0),
    )
    one_line_error(
        ConfigError, "steps=65 .*1 <= steps <= 64", lambda: pipe(num_samples=2, length=8, steps=65)
    )
    one_line_error(
        ConfigError,
        "time_conditioning='layerwise'",
        lambda: timed_pipe(num_samples=2, length=8, steps=4, sampler="cached"),
    )
    one_line_error(
        ConfigError,
        "prompt and source",
        lambda: pipe(num_samples=2, length=8, steps=4, prompt="a", source="b"),
    )
    one_line_error(ConfigError, "num_samples=0", lambda: pipe(num_samples=0, length=8, steps=4))
    one_line_error(ConfigError, "length=0", lambda: pipe(num_samples=2, length=0, steps=4))


def test_from_pretrained_loads_a_spindle_checkpoint(tmp_path: Path, tokenizer):
    model = tiny_model("prefix_token", tokenizer=tokenizer)
    counts = torch.arange(len(tokenizer)) + 1
    diffusion = DiffusionConfig(schedule="spindle", num_steps=32)
    cfg = Config(model=ModelConfig(time_conditioning="prefix_token"), diffusion=diffusion)
    save_model_dir(tmp_path, model, tokenizer, cfg, counts)
    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert pipe.objective.num_steps == 32
    out = pipe(num_samples=3, length=16, steps=4)  # a time-conditioned model is called at every step
    assert out.nfe == [4] * 3 and not (out.token_ids == tokenizer.mask_token_id).any()


def test_missing_or_corrupt_checkpoint_is_a_one_line_checkpoint_error(tmp_path: Path):
    one_line_error(CheckpointError, "not found", lambda: DiffusionPipeline.from_pretrained(tmp_path / "none"))
    (tmp_path / "diffusion.json").write_text("{not json")
    one_line_error(CheckpointError, "corrupt", lambda: DiffusionPipeline.from_pretrained(tmp_path))
    (tmp_path / "diffusion.json").write_text('{"model": {}, "diffusion": {"schedule": "linear"}}')
    (tmp_path / "config.json").write_text("garbage")
    one_line_error(
        CheckpointError, "config.json is corrupt", lambda: DiffusionPipeline.from_pretrained(tmp_path)
    )
    (tmp_path / "config.json").write_text('{"model_type": "diffusion-lm"}')
    one_line_error(
        CheckpointError,
        "holds a 'diffusion-lm' model, but its diffusion.json names objective 'diffusionbert'",
        lambda: DiffusionPipeline.from_pretrained(tmp_path),
    )
    (tmp_path / "config.json").write_text('{"model_type": "diffusionbert"}')
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    one_line_error(
        CheckpointError, "could not be loaded", lambda: DiffusionPipeline.from_pretrained(tmp_path)
    )


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_a_list_of_sources_is_decoded_in_one_padded_batch(pipe: DiffusionPipeline, sampler: str):
    """Sources of different lengths share batches (right-padded, masked from attention): each row keeps its
    own source and template, and the first source's rows equal decoding it alone with the same seeds."""
    tok = pipe.tokenizer
    sources = ["a dog", "the big red cat sat on a mat"]
    out = pipe(num_samples=3, length=6, steps=4, sampler=sampler, source=sources, batch_size=4, seed=5)
    assert len(out.texts) == 6
    for row, source in zip(out.token_ids, [s for s in sources for _ in range(3)], strict=True):
        given = [tok.cls_token_id, *ids(tok, source), tok.sep_token_id]
        assert row[: len(given)].tolist() == given
        target = row[len(given) : len(given) + 6]
        assert not bool((target == tok.pad_token_id).any()) and not bool((target == tok.mask_token_id).any())
        assert bool((row[len(given) + 6 :] == tok.pad_token_id).all())  # padding after a short template
    alone = pipe(num_samples=3, length=6, steps=4, sampler=sampler, source=[sources[0]], seed=5)
    width = alone.token_ids.shape[1]
    assert torch.equal(out.token_ids[:3, :width], alone.token_ids) and out.texts[:3] == alone.texts
    again = pipe(num_samples=3, length=6, steps=4, sampler=sampler, source=sources, batch_size=1, seed=5)
    assert torch.equal(again.token_ids, out.token_ids)


def test_bad_source_lists_are_one_line_errors(pipe: DiffusionPipeline):
    one_line_error(
        ConfigError,
        "a source in the list is empty",
        lambda: pipe(num_samples=1, length=4, steps=2, source=["a", " "]),
    )
    one_line_error(
        ConfigError,
        "a source in the list is empty",
        lambda: pipe(num_samples=1, length=4, steps=2, source=[]),
    )
    long_source = " ".join(["cat"] * 70)
    one_line_error(
        ConfigError,
        "more than the model's",
        lambda: pipe(num_samples=1, length=4, steps=2, source=long_source),
    )


def test_a_text_beyond_the_models_window_is_a_one_line_error_before_any_call(
    pipe: DiffusionPipeline, monkeypatch
):
    window = pipe.model.max_input_length
    monkeypatch.setattr(pipe.model, "forward", None)  # a network call would fail otherwise
    one_line_error(
        ConfigError, f"length <= {window - 1}", lambda: pipe(num_samples=1, length=window, steps=2)
    )
    template = " ".join(["[MASK]"] * window)
    one_line_error(
        ConfigError,
        f"a template of at most {window - 1} tokens",
        lambda: pipe(num_samples=1, length=4, steps=2, infill=template),
    )


def test_guided_logits_sharpen_towards_the_source_and_keep_forbidden_tokens():
    conditional = torch.tensor([[0.0, 1.0, float("-inf")]])
    unconditional = torch.tensor([[1.0, 0.0, float("-inf")]])
    assert guided_logits(conditional, unconditional, 2.0).tolist() == [[-2.0, 3.0, float("-inf")]]
    assert torch.equal(guided_logits(conditional, unconditional, 0.0), conditional)


def test_guidance_contrasts_the_source_with_a_hidden_one(tokenizer):
    pipe = make_pipeline(tokenizer, source_dropout=0.1)
    request = {"num_samples": 4, "length": 6, "steps": 4, "source": ["a red dog ran", "the cat"], "seed": 2}
    plain = pipe(**request)
    assert torch.equal(pipe(**request, guidance=0.0).token_ids, plain.token_ids)
    guided = pipe(**request, guidance=2000.0)  # the random tiny model barely attends to its source
    assert not torch.equal(guided.token_ids, plain.token_ids)
    assert torch.equal(guided.token_ids[:, :6], plain.token_ids[:, :6])  # [CLS] and the sources are kept
    one_line_error(ConfigError, "guidance=-1.0 is not valid", lambda: pipe(**request, guidance=-1.0))
    one_line_error(
        ConfigError,
        "allowed: guidance with source=",
        lambda: pipe(num_samples=2, length=6, steps=4, guidance=1.0),
    )
    no_dropout = make_pipeline(tokenizer)
    one_line_error(
        ConfigError,
        "needs a model trained with training.source_dropout > 0",
        lambda: no_dropout(**request, guidance=1.0),
    )
