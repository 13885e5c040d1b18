"""Tests of the autoregressive baseline: causal model, backbone loading, serialisation, AR objective."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, BertForMaskedLM

from diffusionbert.config import DecodingConfig
from diffusionbert.diffusion.autoregressive import AutoregressiveObjective
from diffusionbert.errors import CheckpointError, ConfigError
from diffusionbert.models import (
    CausalLMConfig,
    CausalLMForComparison,
    default_backbone_path,
    parameter_groups,
)
from diffusionbert.testing import build_tiny_tokenizer, tiny_causal_model
from diffusionbert.training import denoiser_terms, nll_bound

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away"]
HEAD_KEYS = {
    "backbone.cls.predictions.bias",
    "backbone.cls.predictions.transform.dense.weight",
    "backbone.cls.predictions.transform.dense.bias",
    "backbone.cls.predictions.transform.LayerNorm.weight",
    "backbone.cls.predictions.transform.LayerNorm.bias",
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread for the tiny models: on a busy 2-core machine, 2 OpenMP threads made ops ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A hand-made batch (V = 64): a padded sentence and a pair ``[CLS] source [SEP] target [SEP]``.

    Returns input_ids, attention_mask and noise_mask as the data collator builds them.
    """
    input_ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 20, 3, 21, 22, 3, 0]])
    attention_mask = (input_ids != 0).long()
    positions = torch.arange(input_ids.shape[1])
    noise_start = torch.tensor([[1], [3]])
    return input_ids, attention_mask, attention_mask.bool() & (positions >= noise_start)


def _allowed(model: CausalLMForComparison) -> list[int]:
    vocab = model.config.backbone_config.vocab_size
    return [i for i in range(vocab) if i not in model.config.forbidden_token_ids]


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_later_tokens_never_change_earlier_logits(model_type: str) -> None:
    model = tiny_causal_model(model_type=model_type).eval()
    input_ids, attention_mask, _ = _batch()
    changed = input_ids.clone()
    changed[:, 3] = 40
    allowed = _allowed(model)

    before = model(input_ids, attention_mask).logits[..., allowed]
    after = model(changed, attention_mask).logits[..., allowed]

    torch.testing.assert_close(after[:, :3], before[:, :3], rtol=0, atol=1e-6)
    assert (after[:, 3] - before[:, 3]).abs().max() > 1e-3


@pytest.mark.parametrize("model_type", ["bert", "roberta", "electra"])
def test_selected_positions_match_full_logits_and_t_is_ignored(model_type: str) -> None:
    model = tiny_causal_model(model_type=model_type).eval()
    input_ids, attention_mask, noise_mask = _batch()
    positions = AutoregressiveObjective(mask_id=4).corrupt(input_ids, noise_mask, torch.Generator()).masked

    full = model(input_ids, attention_mask).logits
    selected = model(input_ids, attention_mask, t=torch.tensor([0.3, 0.9]), positions=positions).logits

    assert full.shape == (2, 7, 64)
    assert selected.shape == (7, 64)
    torch.testing.assert_close(selected, full[positions], rtol=1e-5, atol=1e-5)
    assert torch.isneginf(full[..., [0, 2, 4]]).all()
    assert torch.isfinite(full[..., _allowed(model)]).all()


def test_head_is_applied_only_to_selected_rows() -> None:
    model = tiny_causal_model().eval()
    input_ids, attention_mask, noise_mask = _batch()
    seen: list[tuple[int, ...]] = []
    model.backbone.cls.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    model(input_ids, attention_mask, positions=noise_mask)
    assert seen == [(7, 32)]


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = tiny_causal_model().eval()
    model.config.new_parameter_names = ["backbone.cls.predictions.bias"]
    input_ids, attention_mask, _ = _batch()
    expected = model(input_ids, attention_mask).logits
    model.save_pretrained(tmp_path)

    for loader in (CausalLMForComparison, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is CausalLMForComparison
        assert loaded.config.backbone_config.is_decoder
        assert loaded.config.forbidden_token_ids == [0, 2, 4]
        assert loaded.newly_initialized_keys == ["backbone.cls.predictions.bias"]
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
        torch.testing.assert_close(loaded(input_ids, attention_mask).logits, expected, rtol=0, atol=0)


def test_from_backbone_on_packaged_minilm_encoder() -> None:
    path = default_backbone_path()
    model = CausalLMForComparison.from_backbone(path).eval()

    assert type(model.backbone).__name__ == "BertLMHeadModel"
    assert (model.config.mask_token_id, model.config.pad_token_id, model.config.cls_token_id) == (103, 0, 101)
    assert model.max_input_length == 512
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert set(model.newly_initialized_keys) == HEAD_KEYS
    with safe_open(str(path / "model.safetensors"), "pt") as checkpoint:
        key = "encoder.layer.5.output.dense.weight"
        torch.testing.assert_close(
            model.backbone.bert.get_parameter(key), checkpoint.get_tensor(key), rtol=0, atol=0
        )
    groups = {g["name"]: g for g in parameter_groups(model, base_lr=1e-5, head_lr=1e-3, weight_decay=0.1)}
    by_id = {id(p): name for name, p in model.named_parameters()}
    new = {by_id[id(p)] for p in groups["new_head"]["params"] + groups["new_head_no_decay"]["params"]}
    assert new == HEAD_KEYS and groups["new_head"]["lr"] == 1e-3 and "new" not in groups

    input_ids = torch.tensor([[101, 1996, 4937, 2938, 102]])
    logits = model(input_ids, positions=torch.tensor([[True, True, True, True, False]])).logits
    assert logits.shape == (4, 30522)
    assert torch.isneginf(logits[:, [0, 101, 103]]).all()
    assert torch.isfinite(logits[:, 999:]).all()


def test_from_backbone_keeps_an_existing_mlm_head(tmp_path: Path, save_tiny_bert) -> None:
    path = save_tiny_bert(tmp_path, WORDS, with_head=True)
    reference = BertForMaskedLM.from_pretrained(path).eval()
    model = CausalLMForComparison.from_backbone(path).eval()

    assert model.newly_initialized_keys == []
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    torch.testing.assert_close(
        model.backbone.cls.predictions.bias, reference.cls.predictions.bias, rtol=0, atol=0
    )
    # Position 0 attends only to itself, so it must equal the bidirectional MLM run on that token alone.
    input_ids = torch.tensor([[2, 5, 9, 12, 3]])
    expected = reference(input_ids[:, :1]).logits[0, 0]
    expected[model.config.forbidden_token_ids] = float("-inf")
    torch.testing.assert_close(model(input_ids).logits[0, 0], expected, rtol=1e-5, atol=1e-5)


def test_objective_scores_the_next_token_of_every_noisable_position() -> None:
    input_ids, _, noise_mask = _batch()
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    corrupted = AutoregressiveObjective(mask_id=4).corrupt(input_ids, noise_mask, generator)

    assert torch.equal(generator.get_state(), state)  # draws nothing
    assert torch.equal(corrupted.x_t, input_ids)
    assert torch.equal(corrupted.time, torch.zeros(2))
    assert corrupted.masked.tolist() == [
        [True, True, True, True, False, False, False],
        [False, False, True, True, True, False, False],
    ]
    assert int(corrupted.masked.sum()) == int(noise_mask.sum())  # same token count as the diffusion bounds

    logits = torch.randn(7, 64, generator=torch.Generator().manual_seed(6))
    logits[:, [0, 2, 4]] = float("-inf")
    targets = torch.tensor([10, 11, 12, 3, 21, 22, 3])  # sentence + [SEP]; pair target + [SEP]
    manual = -torch.log_softmax(logits, dim=-1)[torch.arange(7), targets].sum()
    terms = AutoregressiveObjective(mask_id=4).loss(logits, input_ids, corrupted)
    torch.testing.assert_close(terms.loss, manual)
    torch.testing.assert_close(terms.nll, manual)


def test_nll_is_the_exact_chain_rule_likelihood() -> None:
    tokenizer = build_tiny_tokenizer(WORDS)
    model = tiny_causal_model(tokenizer=tokenizer, seed=1).eval()
    encoded = tokenizer(["the cat sat on a mat"], return_tensors="pt")
    input_ids = encoded["input_ids"]
    noise_mask = torch.ones_like(input_ids, dtype=torch.bool)
    noise_mask[:, 0] = False

    log_product = 0.0
    with torch.no_grad():
        for i in range(1, input_ids.shape[1]):  # p(x_i | x_<i) from a run that only ever sees the prefix
            probs = model(input_ids[:, :i]).logits[0, -1].softmax(-1)
            log_product += float(probs[input_ids[0, i]].log())
    batch = {
        "input_ids": input_ids,
        "attention_mask": encoded["attention_mask"],
        "noise_mask": noise_mask,
        "n_words": torch.tensor([6]),
    }
    bound = nll_bound(model, AutoregressiveObjective(tokenizer.mask_token_id), [batch])

    assert bound.n_tokens == 7  # six words + [SEP]
    assert bound.total_nats == pytest.approx(-log_product, rel=1e-5)


def test_training_reduces_the_loss() -> None:
    tokenizer = build_tiny_tokenizer(WORDS)
    model = tiny_causal_model(tokenizer=tokenizer)
    objective = AutoregressiveObjective(tokenizer.mask_token_id)
    encoded = tokenizer(["the cat sat on the mat"] * 4, return_tensors="pt")
    x0, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    noise_mask = attention_mask.bool()
    noise_mask[:, 0] = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    losses = []
    for _ in range(20):
        corrupted = objective.corrupt(x0, noise_mask, generator)
        terms = denoiser_terms(model, objective, x0, attention_mask, corrupted)
        (terms.loss / noise_mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(terms.loss.detach()) / int(noise_mask.sum()))
    assert losses[-1] < 0.5 * losses[0]


def test_bad_inputs_are_rejected_with_one_line_errors(tmp_path: Path) -> None:
    model = tiny_causal_model()
    assert model.max_input_length == 64
    assert tiny_causal_model(model_type="roberta").max_input_length == 63  # positions start after pad id 0
    all_noisable = torch.ones(2, 5, dtype=torch.bool)  # the packed layout's noise_mask
    distilbert = CausalLMConfig(backbone_config={"model_type": "distilbert", "n_layers": 1})
    cases = [
        (ConfigError, r"input length 65 .*at most 64 tokens", lambda: model(torch.full((1, 65), 7))),
        (
            ConfigError,
            "positions has shape",
            lambda: model(torch.full((2, 5), 7), positions=torch.ones(2, 5, dtype=torch.long)),
        ),
        (
            ConfigError,
            r"noise_mask marks position 0 in 2 row\(s\).*layout='sentence'",
            lambda: AutoregressiveObjective(mask_id=4).corrupt(torch.full((2, 5), 7), all_noisable, None),
        ),
        (
            ConfigError,
            r"model_type='distilbert' has no causal-LM model; allowed: .*roberta",
            lambda: CausalLMForComparison(distilbert),
        ),
        (
            ConfigError,
            r"forbidden_token_ids contains 99.*vocab_size=64",
            lambda: CausalLMConfig(backbone_config=model.config.backbone_config, forbidden_token_ids=[99]),
        ),
        (CheckpointError, r"has no config\.json", lambda: CausalLMForComparison.from_backbone(tmp_path)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)
    model.save_pretrained(tmp_path)
    build_tiny_tokenizer(WORDS).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="already a trained 'diffusionbert-causal-lm' model"):
        CausalLMForComparison.from_backbone(tmp_path)


def test_left_to_right_sampling_draws_the_models_sequence_distribution() -> None:
    """Every outcome of length <= 2 (cut at the first [SEP]) has the chain-rule probability of the model."""
    from diffusionbert.sampling import generate_left_to_right
    from toy import chi_square_p_value

    tokenizer = build_tiny_tokenizer(["a", "b"])
    model = tiny_causal_model(tokenizer=tokenizer, seed=1).eval()
    sep, allowed = tokenizer.sep_token_id, _allowed(model)

    def next_probs(prefix: list[int]) -> torch.Tensor:
        ids = torch.tensor([[tokenizer.cls_token_id, *prefix]])
        last = torch.zeros_like(ids, dtype=torch.bool)
        last[0, -1] = True
        with torch.no_grad():
            return torch.softmax(model(ids, positions=last).logits[0].double(), -1)

    exact: dict[tuple[int, ...], float] = {(): next_probs([])[sep].item()}
    for v in allowed:
        if v == sep:
            continue
        p_v = next_probs([])[v].item()
        second = next_probs([v])
        exact[(v,)] = p_v * second[sep].item()
        exact |= {(v, w): p_v * second[w].item() for w in allowed if w != sep}
    assert sum(exact.values()) == pytest.approx(1.0)
    out = generate_left_to_right(
        model, tokenizer, DecodingConfig(length=2, num_samples=6000, batch_size=3000)
    )
    outcomes = list(exact)
    counts = torch.zeros(len(outcomes), dtype=torch.float64)
    for ids, length in zip(out.token_ids.tolist(), out.lengths, strict=True):
        counts[outcomes.index(tuple(ids[1 : 1 + length]))] += 1
    assert chi_square_p_value(counts, torch.tensor([exact[o] for o in outcomes])) > 1e-3
    assert out.nfe == [min(length + 1, 2) for length in out.lengths]  # [SEP] drawn or the length cap
    again = generate_left_to_right(model, tokenizer, DecodingConfig(length=2, num_samples=7, batch_size=2))
    assert again.texts == out.texts[:7]  # the draws of a sample do not depend on the batch
    with pytest.raises(ConfigError, match="length=64 is not valid"):
        generate_left_to_right(model, tokenizer, DecodingConfig(length=64))


def _full_next_log_p(model: CausalLMForComparison, ids: list[int]) -> torch.Tensor:
    """log p(next | ids) from one uncached forward over the unpadded sequence."""
    row = torch.tensor([ids])
    last = torch.zeros_like(row, dtype=torch.bool)
    last[0, -1] = True
    with torch.no_grad():
        return torch.log_softmax(model(row, positions=last).logits[0].float(), -1)


def test_the_key_value_cache_gives_the_uncached_distributions_for_left_padded_prefixes() -> None:
    from diffusionbert.sampling.left_to_right import _CachedRows

    model = tiny_causal_model(seed=3).eval()
    prefixes = [[2, 10, 11, 12, 3], [2, 20, 3], [2]]
    with torch.no_grad():
        rows = _CachedRows(model, prefixes, pad_id=0)
        for row, prefix in enumerate(prefixes):
            torch.testing.assert_close(rows.log_p[row], _full_next_log_p(model, prefix), atol=1e-5, rtol=0)
        rows.extend(torch.tensor([30, 31, 32]))
        grown = [[*prefix, token] for prefix, token in zip(prefixes, [30, 31, 32], strict=True)]
        rows.keep(torch.tensor([2, 0, 0]))  # drop a row, copy another (what beam search does)
        rows.extend(torch.tensor([40, 41, 42]))
        for row, (source, token) in enumerate(zip([2, 0, 0], [40, 41, 42], strict=True)):
            expected = _full_next_log_p(model, [*grown[source], token])
            torch.testing.assert_close(rows.log_p[row], expected, atol=1e-5, rtol=0)


def test_beam_search_finds_the_best_hypothesis_that_enumeration_finds() -> None:
    """With more beams than hypotheses, beam search is exhaustive: it must return the best length-normalised
    log-probability over every text of at most 3 tokens; one beam is greedy decoding."""
    import itertools

    from diffusionbert.sampling import generate_left_to_right

    tokenizer = build_tiny_tokenizer(["a", "b"])
    sep = tokenizer.sep_token_id
    for seed in range(3):
        model = tiny_causal_model(tokenizer=tokenizer, seed=seed).eval()
        words = [v for v in _allowed(model) if v != sep]
        best: tuple[float, list[int]] = (float("-inf"), [])
        for size in range(4):
            for text in itertools.product(words, repeat=size):
                log_p, prefix = 0.0, [tokenizer.cls_token_id]
                for token in [*text, sep][:3]:
                    log_p += float(_full_next_log_p(model, prefix)[token])
                    prefix.append(token)
                best = max(best, (log_p / len(prefix[1:]), list(prefix[1:])))
        out = generate_left_to_right(model, tokenizer, DecodingConfig("beam:200", length=3))
        found = out.token_ids[0, 1:].tolist()
        assert found[: len(best[1])] == best[1]
        greedy = generate_left_to_right(model, tokenizer, DecodingConfig("greedy", length=3))
        beam = generate_left_to_right(model, tokenizer, DecodingConfig("beam:1", length=3))
        assert beam.texts == greedy.texts
    for sampler, kwargs, message in [
        ("beam:0", {}, "no valid beam count"),
        ("beam", {"num_samples": 2}, "one text per source"),
        ("greedy", {"temperature": 0.5}, "with sampler 'autoregressive'"),
        ("ancestral", {}, "does not apply to an autoregressive model"),
    ]:
        with pytest.raises(ConfigError, match=message):
            generate_left_to_right(model, tokenizer, DecodingConfig(sampler, length=3, **kwargs))
