"""The exact prompt cache: isolated source attention, the source's keys and values computed once, and every
decoder that reads them giving the uncached decoder's logits and texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import CHAT_WORDS, WORDS, chat_config, train_run
from diffusionbert.config import load_config
from diffusionbert.diffusion.schedules import LinearSchedule
from diffusionbert.errors import ConfigError
from diffusionbert.methods import build_objective, check_config
from diffusionbert.sampling import DiffusionPipeline, load_pipeline
from diffusionbert.sampling.cache import PrefixCache
from diffusionbert.testing import build_tiny_tokenizer, tiny_model

SOURCES = ["the big cat", "a dog ran to the red house", "green"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(WORDS)


def rows(tokenizer, answer: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] source [SEP] [MASK]… [PAD]…`` rows of :data:`SOURCES` (ragged sources, right-padded)."""
    encoded = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in SOURCES]
    width = max(len(e) for e in encoded) + 2 + answer
    ids = [
        [tokenizer.cls_token_id, *e, tokenizer.sep_token_id, *[tokenizer.mask_token_id] * answer]
        for e in encoded
    ]
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])
    return ids, ids == tokenizer.mask_token_id


def finite_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    same = torch.equal(torch.isfinite(a), torch.isfinite(b))
    finite = torch.isfinite(a)
    return same and torch.allclose(a[finite], b[finite], atol=1e-5, rtol=1e-5)


def test_an_isolated_source_does_not_read_its_answer_and_the_cache_gives_the_same_logits(tokenizer) -> None:
    model = tiny_model(tokenizer=tokenizer, source_attention="isolated").eval()
    ids, masked = rows(tokenizer)
    attention = (ids != tokenizer.pad_token_id).long()
    full = model(ids, attention, positions=masked).logits
    at_source = torch.zeros_like(masked)
    at_source[:, 1] = True
    changed = ids.masked_fill(masked, tokenizer.convert_tokens_to_ids("dog"))
    assert torch.equal(
        model(ids, attention, positions=at_source).logits,
        model(changed, attention, positions=at_source).logits,
    )
    answer = model(changed, attention, positions=masked).logits
    assert not finite_close(full, answer)  # the answer still reads the source and itself
    everywhere = model(ids, attention).logits[masked]  # the backbone's own forward, with a 4D mask
    assert finite_close(everywhere, full)
    cached = PrefixCache(model, tokenizer.pad_token_id)
    assert finite_close(cached(ids, torch.zeros(3), masked), full)
    assert len(cached.entries) == 3
    again = cached(ids[[2, 0]], torch.zeros(2), masked[[2, 0]])
    assert finite_close(again, model(ids[[2, 0]], attention[[2, 0]], positions=masked[[2, 0]]).logits)
    assert len(cached.entries) == 3  # nothing encoded twice
    full_attention = tiny_model(tokenizer=tokenizer).eval()
    with pytest.raises(ConfigError, match="encode_prefix needs isolated source attention or block diffusion"):
        full_attention.encode_prefix(ids[:, :4])


def pipeline(tokenizer, source_attention: str = "isolated", **settings) -> DiffusionPipeline:
    model = tiny_model(tokenizer=tokenizer, source_attention=source_attention)
    objective = build_objective("mdlm", tokenizer.mask_token_id, LinearSchedule())
    return DiffusionPipeline(model, tokenizer, objective, trained_on_pairs=True, **settings)


@pytest.mark.parametrize("sampler", ["ancestral", "cached", "confidence", "gibbs"])
@pytest.mark.parametrize(
    "options",
    [{}, {"guidance": 1.5}, {"block_length": 3}, {"num_samples": 3, "batch_size": 2}, {"temperature": 0.5}],
    ids=["plain", "guidance", "blocks", "samples", "sharpened"],
)
def test_cached_decoding_is_the_uncached_decoding(tokenizer, sampler, options) -> None:
    pipe = pipeline(tokenizer, source_dropout=0.3, source_length=3)
    assert pipe.caches_prompt
    request = {"source": SOURCES, "length": 8, "steps": 6, "sampler": sampler, "seed": 2, **options}
    uncached, cached = pipe(**request, prompt_cache=False), pipe(**request)
    assert torch.equal(uncached.token_ids, cached.token_ids) and uncached.nfe == cached.nfe
    if not options:  # a pair model writing without its source reads its hidden one, cached too
        alone = {"length": 6, "steps": 4, "sampler": sampler, "num_samples": 2}
        assert torch.equal(pipe(**alone, prompt_cache=False).token_ids, pipe(**alone).token_ids)


def test_a_predicted_end_is_decoded_the_same_with_the_cache(tokenizer) -> None:
    pipe = pipeline(tokenizer, target_window=6)
    request = {"source": SOURCES, "steps": 4, "sampler": "confidence", "end": "predicted"}
    assert torch.equal(pipe(**request, prompt_cache=False).token_ids, pipe(**request).token_ids)


def test_the_cache_asked_of_a_model_that_cannot_have_it_is_a_one_line_error(tokenizer) -> None:
    pipe = pipeline(tokenizer, "full")
    assert not pipe.caches_prompt
    pipe(source=SOURCES, length=4, steps=2)  # uncached: the model's own attention
    with pytest.raises(
        ConfigError, match=r"prompt_cache=True needs a model trained with model\.source_attention"
    ) as err:
        pipe(source=SOURCES, length=4, steps=2, prompt_cache=True)
    assert "\n" not in str(err.value) and "model.source_attention=full" in str(err.value)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"model": {"source_attention": "isolated"}}, "model.source_attention=isolated separates a source"),
        ({"model": {"source_attention": "sideways"}}, "model.source_attention='sideways' is not valid"),
        (
            {"model": {"source_attention": "isolated", "time_conditioning": "layerwise"}, "data": "pairs"},
            "makes them depend on the time",
        ),
        (
            {"model": {"source_attention": "isolated"}, "diffusion": {"objective": "ar"}, "data": "pairs"},
            "contradicts diffusion.objective='ar'",
        ),
    ],
)
def test_isolated_attention_where_it_cannot_apply_is_refused(
    tiny_config, pairs_data, tmp_path, sections, message
):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"mr": "the cat", "ref": "a cat"}) + "\n", encoding="utf-8")
    if sections.get("data") == "pairs":
        sections = {**sections, "data": pairs_data(data)}
    path, _ = tiny_config(**sections)
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(path))


@pytest.fixture(scope="module")
def isolated_chat_model(tmp_path_factory, chat_backbone, chat_data) -> Path:
    """The tiny chat model of conftest, trained with isolated source attention."""
    base = tmp_path_factory.mktemp("isolated-chat")
    train_run(chat_config(base, chat_backbone, chat_data, model={"source_attention": "isolated"}))
    return base / "run" / "final"


def test_an_isolated_chat_model_trains_saves_its_design_and_answers_the_same_cached(
    isolated_chat_model,
) -> None:
    saved = json.loads((isolated_chat_model / "diffusion.json").read_text())["model"]
    assert saved["source_attention"] == "isolated"
    pipe = load_pipeline(isolated_chat_model)
    assert pipe.caches_prompt and pipe.model.config.source_attention == "isolated"
    messages = [{"role": "user", "content": "describe the red cat"}]
    for sampler in ("confidence", "ancestral"):
        cached = pipe.chat(messages, steps=8, sampler=sampler, seed=4)
        uncached = pipe.chat(messages, steps=8, sampler=sampler, seed=4, prompt_cache=False)
        assert cached == uncached
    assert CHAT_WORDS  # the model's vocabulary is the chat one


def test_serve_says_which_cache_a_model_has_and_answers_like_the_pipeline(isolated_chat_model) -> None:
    from diffusionbert.apps.web import Request, describe, generate

    pipe = load_pipeline(isolated_chat_model)
    assert describe(pipe, "tiny")["cache"] == "prompt"
    messages = [{"role": "user", "content": "where is the dog"}]
    events = []
    generate(
        pipe,
        Request.parse({"mode": "chat", "messages": messages, "steps": 6}, pipe),
        lambda *e: events.append(e),
    )
    assert events[-1][1]["text"] == pipe.chat(messages, steps=6).text
