"""Tests of the denoiser model: serialisation, selected-position logits, time conditioning, loading backbones."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForMaskedLM, BertForMaskedLM, PreTrainedTokenizerFast

from diffusionbert.errors import CheckpointError, ConfigError
from diffusionbert.models import (
    TIME_CONDITIONINGS,
    DiffusionBertConfig,
    DiffusionBertForMaskedLM,
    default_backbone_path,
    parameter_groups,
)
from diffusionbert.testing import build_tiny_tokenizer, tiny_model

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away"]


def _inputs(model: DiffusionBertForMaskedLM, batch: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    vocab = model.config.backbone_config.vocab_size
    input_ids = torch.randint(5, vocab, (batch, length), generator=generator)
    input_ids[:, 0] = model.config.cls_token_id
    input_ids[1, 3:6] = model.config.mask_token_id
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "t": torch.tensor([0.2, 0.7])}


def _nudge_time_modules(model: DiffusionBertForMaskedLM) -> None:
    """Move the time parameters away from their (partly zero) initialisation so they matter."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("backbone."):
                param.add_(0.5 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("time_conditioning", TIME_CONDITIONINGS)
def test_save_load_round_trip_gives_identical_logits(tmp_path: Path, time_conditioning: str) -> None:
    model = tiny_model(time_conditioning).eval()
    _nudge_time_modules(model)
    inputs = _inputs(model)
    expected = model(**inputs).logits
    model.save_pretrained(tmp_path)

    for loader in (DiffusionBertForMaskedLM, AutoModelForMaskedLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is DiffusionBertForMaskedLM
        assert loaded.config.time_conditioning == time_conditioning
        assert loaded.config.forbidden_token_ids == [0, 2, 4]
        assert loaded.newly_initialized_keys == model.newly_initialized_keys
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=0)


def test_config_round_trips_and_derives_forbidden_ids(tmp_path: Path) -> None:
    config = tiny_model("prefix_token").config
    config.save_pretrained(tmp_path)
    loaded = DiffusionBertConfig.from_pretrained(tmp_path)
    assert loaded.backbone_config.model_type == "bert"
    assert loaded.backbone_config.hidden_size == 32
    assert (loaded.mask_token_id, loaded.pad_token_id, loaded.cls_token_id) == (4, 0, 2)
    assert loaded.time_conditioning == "prefix_token"
    extra = DiffusionBertConfig(
        backbone_config=config.backbone_config, mask_token_id=4, forbidden_token_ids=[7]
    )
    assert extra.forbidden_token_ids == [0, 4, 7]  # pad comes from the backbone config


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "electra"])
@pytest.mark.parametrize("time_conditioning", TIME_CONDITIONINGS)
def test_selected_positions_match_full_logits(model_type: str, time_conditioning: str) -> None:
    model = tiny_model(time_conditioning, model_type=model_type).eval()
    _nudge_time_modules(model)
    inputs = _inputs(model)
    positions = inputs["input_ids"] == model.config.mask_token_id
    positions[0, 7] = True

    full = model(**inputs).logits
    selected = model(**inputs, positions=positions).logits

    assert full.shape == (2, 12, 64)
    assert selected.shape == (4, 64)
    torch.testing.assert_close(selected, full[positions], rtol=1e-5, atol=1e-5)
    forbidden = model.config.forbidden_token_ids
    assert torch.isneginf(full[..., forbidden]).all()
    allowed = [i for i in range(64) if i not in forbidden]
    assert torch.isfinite(full[..., allowed]).all()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_head_is_applied_only_to_selected_rows() -> None:
    model = tiny_model().eval()
    inputs = _inputs(model)
    seen: list[tuple[int, ...]] = []
    model.backbone.cls.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    model(**inputs, positions=inputs["input_ids"] == model.config.mask_token_id)
    assert seen == [(3, 32)]


@pytest.mark.parametrize("time_conditioning", ["prefix_token", "layerwise"])
def test_time_conditioning_depends_on_t(time_conditioning: str) -> None:
    model = tiny_model(time_conditioning).eval()
    _nudge_time_modules(model)
    inputs = _inputs(model)
    early = model(**{**inputs, "t": torch.tensor([0.1, 0.1])}).logits
    late = model(**{**inputs, "t": torch.tensor([0.9, 0.9])}).logits
    allowed = [i for i in range(64) if i not in model.config.forbidden_token_ids]
    assert (early - late)[..., allowed].abs().max() > 1e-5  # a random tiny BERT barely attends, hence small


def test_layerwise_at_init_equals_time_agnostic_model() -> None:
    plain = tiny_model("none").eval()
    layerwise = tiny_model("layerwise").eval()
    inputs = _inputs(plain)
    expected = plain(**inputs).logits
    torch.testing.assert_close(layerwise(**inputs).logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(layerwise(**{**inputs, "t": torch.tensor([0.9, 0.0])}).logits, expected)


def test_layerwise_hooks_follow_deepcopy_and_activation_checkpointing() -> None:
    model = tiny_model("layerwise")
    _nudge_time_modules(model)
    inputs = _inputs(model)
    model.eval()
    before = model(**inputs).logits

    ema = copy.deepcopy(model)
    with torch.no_grad():
        ema.layer_time_projections[0].weight.zero_()
    assert not torch.allclose(ema(**inputs).logits, before)
    torch.testing.assert_close(model(**inputs).logits, before, rtol=0, atol=0)

    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model(**inputs).logits.logsumexp(-1).sum().backward()
    plain_grad = model.layer_time_projections[1].weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.backbone.bert.encoder.layer[1].gradient_checkpointing
    model(**inputs).logits.logsumexp(-1).sum().backward()
    torch.testing.assert_close(model.layer_time_projections[1].weight.grad, plain_grad)
    assert plain_grad.abs().sum() > 0


def test_t_given_to_time_agnostic_model_is_ignored() -> None:
    model = tiny_model("none").eval()
    inputs = _inputs(model)
    without_t = {k: v for k, v in inputs.items() if k != "t"}
    torch.testing.assert_close(model(**inputs).logits, model(**without_t).logits, rtol=0, atol=0)


def test_from_backbone_on_default_minilm_encoder() -> None:
    path = default_backbone_path()
    model = DiffusionBertForMaskedLM.from_backbone(path, time_conditioning="layerwise").eval()

    assert model.config.backbone_config.hidden_size == 384
    assert (model.config.mask_token_id, model.config.pad_token_id, model.config.cls_token_id) == (103, 0, 101)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    new = set(model.newly_initialized_keys)
    assert "backbone.cls.predictions.transform.dense.weight" in new
    assert "layer_time_projections.0.weight" in new
    assert not any(key.startswith("backbone.bert.") for key in new)
    with safe_open(str(path / "model.safetensors"), "pt") as checkpoint:
        for key in ("encoder.layer.5.output.dense.weight", "embeddings.word_embeddings.weight"):
            torch.testing.assert_close(
                model.backbone.bert.get_parameter(key), checkpoint.get_tensor(key), rtol=0, atol=0
            )

    input_ids = torch.tensor([[101, 1996, 4937, 103, 2006, 1996, 13523, 1012, 102]])
    logits = model(input_ids, t=torch.tensor([0.5]), positions=input_ids == 103).logits
    assert logits.shape == (1, 30522)
    assert torch.isfinite(logits[:, 999:]).all()
    assert torch.isneginf(logits[:, [0, 101, 103]]).all()


def test_from_backbone_keeps_an_existing_mlm_head(tmp_path: Path, save_tiny_bert) -> None:
    path = save_tiny_bert(tmp_path, WORDS, with_head=True)
    reference = BertForMaskedLM.from_pretrained(path).eval()
    model = DiffusionBertForMaskedLM.from_backbone(path).eval()

    assert model.newly_initialized_keys == []
    torch.testing.assert_close(
        model.backbone.cls.predictions.bias, reference.cls.predictions.bias, rtol=0, atol=0
    )
    input_ids = torch.tensor([[2, 5, 9, 4, 12, 3]])
    expected = reference(input_ids).logits
    expected[..., model.config.forbidden_token_ids] = float("-inf")
    torch.testing.assert_close(model(input_ids).logits, expected)


def test_parameter_groups_give_only_a_new_head_the_head_lr(tmp_path: Path, save_tiny_bert) -> None:
    path = save_tiny_bert(tmp_path, WORDS, with_head=False)
    model = DiffusionBertForMaskedLM.from_backbone(path, "prefix_token")
    groups = {
        group["name"]: group
        for group in parameter_groups(model, base_lr=1e-5, head_lr=1e-3, weight_decay=0.1)
    }

    kinds = ("pretrained", "new_head", "new")
    assert set(groups) == {kind + suffix for kind in kinds for suffix in ("", "_no_decay")}
    by_id = {id(p): name for name, p in model.named_parameters()}
    grouped = [id(p) for group in groups.values() for p in group["params"]]
    assert sorted(grouped) == sorted(by_id)  # every parameter exactly once, tied decoder included once

    def names(kind: str) -> set[str]:
        return {by_id[id(p)] for p in groups[kind]["params"] + groups[f"{kind}_no_decay"]["params"]}

    assert names("new_head") | names("new") == set(model.newly_initialized_keys)
    assert "backbone.cls.predictions.transform.dense.weight" in names("new_head")
    assert "time_embedding.mlp.0.weight" in names("new")  # feeds the encoder: the encoder's rate
    assert groups["new_head"]["lr"] == 1e-3 and groups["pretrained"]["lr"] == groups["new"]["lr"] == 1e-5
    assert (
        groups["pretrained_no_decay"]["weight_decay"] == 0.0 and groups["pretrained"]["weight_decay"] == 0.1
    )
    assert all(p.ndim == 1 for p in groups["new_head_no_decay"]["params"])


def test_tiny_tokenizer_layout_and_tiny_model_from_it() -> None:
    tokenizer = build_tiny_tokenizer(WORDS)
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id] == [0, 1, 2]
    assert [tokenizer.sep_token_id, tokenizer.mask_token_id] == [3, 4]
    ids = tokenizer("The cat sat on a zebra")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3 and 1 in ids
    assert tokenizer.decode(ids[1:-2]) == "the cat sat on a"
    model = tiny_model(tokenizer=tokenizer)
    assert model.config.backbone_config.vocab_size == len(tokenizer) == 15


def test_unknown_time_conditioning_is_rejected() -> None:
    with pytest.raises(
        ConfigError, match=r"time_conditioning='layer_wise'.*did you mean 'layerwise'.*prefix_token"
    ):
        tiny_model("layer_wise")


def test_tokenizer_without_mask_token_is_rejected(tmp_path: Path, save_tiny_bert) -> None:
    path = save_tiny_bert(tmp_path, WORDS, with_head=False)
    no_mask = PreTrainedTokenizerFast(
        tokenizer_object=build_tiny_tokenizer(WORDS).backend_tokenizer, pad_token="[PAD]", cls_token="[CLS]"
    )
    with pytest.raises(ConfigError, match="has no mask token"):
        DiffusionBertForMaskedLM.from_backbone(path, tokenizer=no_mask)


@pytest.mark.parametrize(("time_conditioning", "maximum"), [("none", 64), ("prefix_token", 63)])
def test_too_long_input_is_rejected(time_conditioning: str, maximum: int) -> None:
    model = tiny_model(time_conditioning)
    assert model.max_input_length == maximum
    with pytest.raises(ConfigError, match=rf"input length {maximum + 1} .*at most {maximum} tokens"):
        model(torch.full((1, maximum + 1), 7), t=torch.tensor([0.5]))


def test_roberta_max_length_accounts_for_position_offset() -> None:
    assert tiny_model(model_type="roberta").max_input_length == 64 - 1  # positions start after pad id 0


def test_layerwise_without_accessible_layers_is_rejected() -> None:
    assert tiny_model("prefix_token", model_type="albert").max_input_length == 63  # ALBERT works otherwise
    with pytest.raises(
        ConfigError, match=r"time_conditioning='layerwise' needs .*accessible encoder layers.*none"
    ):
        tiny_model("layerwise", model_type="albert")


@pytest.mark.parametrize("time_conditioning", ["prefix_token", "layerwise"])
def test_missing_t_is_rejected(time_conditioning: str) -> None:
    model = tiny_model(time_conditioning)
    with pytest.raises(ConfigError, match=rf"t=None but time_conditioning='{time_conditioning}'"):
        model(torch.full((2, 5), 7))
    with pytest.raises(ConfigError, match=r"t=\(3,\).*shape \(2,\)"):
        model(torch.full((2, 5), 7), t=torch.rand(3))


def test_bad_positions_and_forbidden_ids_are_rejected() -> None:
    model = tiny_model()
    with pytest.raises(ConfigError, match="positions has shape"):
        model(torch.full((2, 5), 7), positions=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"forbidden_token_ids contains 99.*vocab_size=64"):
        DiffusionBertConfig(backbone_config=model.config.backbone_config, forbidden_token_ids=[99])


def test_from_backbone_rejects_non_backbone_directories(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        DiffusionBertForMaskedLM.from_backbone(tmp_path)
    tiny_model().save_pretrained(tmp_path)
    build_tiny_tokenizer(WORDS).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="is already a trained 'diffusionbert' model"):
        DiffusionBertForMaskedLM.from_backbone(tmp_path)


def test_backbone_without_masked_lm_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"backbone_config\.model_type='gpt2'"):
        DiffusionBertForMaskedLM(DiffusionBertConfig(backbone_config={"model_type": "gpt2", "n_layer": 1}))
