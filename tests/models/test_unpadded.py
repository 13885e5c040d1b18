"""Tests of the real-token encoder pass and the 16-bit dropout: same numbers as the backbone's own forward."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from diffusionbert.models import TIME_CONDITIONINGS, DiffusionBertForMaskedLM
from diffusionbert.models.unpadded import FastDropout, fast_dropout, has_bert_layers, use_fast_dropout
from diffusionbert.testing import tiny_model

BERT_LAYOUT = ("bert", "roberta", "electra")


def _batch(model: DiffusionBertForMaskedLM, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three rows of different lengths (padding in two), about half the real tokens selected."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, model.config.backbone_config.vocab_size, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 4:] = 0
    positions = (torch.rand(input_ids.shape, generator=generator) < 0.5) & attention_mask.bool()
    positions[:, 1] = True  # every row has one
    t = torch.rand(3, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "t": t, "positions": positions}


def _model(model_type: str, time_conditioning: str) -> DiffusionBertForMaskedLM:
    model = tiny_model(time_conditioning, model_type=model_type)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # time modules start at zero: move them so they matter
        for name, param in model.named_parameters():
            if not name.startswith("backbone."):
                param.add_(0.5 * torch.randn(param.shape, generator=generator))
    return model


def _backbone_forward(model: DiffusionBertForMaskedLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits of the backbone's own (padded) forward: the reference."""
    model._bert_layers = False
    try:
        return model(**batch).logits
    finally:
        model._bert_layers = True


@pytest.mark.parametrize("time_conditioning", TIME_CONDITIONINGS)
@pytest.mark.parametrize("model_type", BERT_LAYOUT)
def test_real_token_pass_matches_the_backbone_forward(model_type: str, time_conditioning: str) -> None:
    model = _model(model_type, time_conditioning).eval()
    assert model._bert_layers
    batch = _batch(model)
    fast, reference = model(**batch).logits, _backbone_forward(model, batch)
    assert fast.shape == (int(batch["positions"].sum()), model.config.backbone_config.vocab_size)
    assert torch.equal(torch.isinf(fast), torch.isinf(reference))
    finite = torch.isfinite(reference)
    torch.testing.assert_close(fast[finite], reference[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("time_conditioning", TIME_CONDITIONINGS)
def test_real_token_pass_gives_the_backbone_gradients(time_conditioning: str) -> None:
    """Without dropout, loss and every parameter's gradient agree with the padded forward's."""
    model = _model("bert", time_conditioning).train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    batch = _batch(model, seed=1)
    targets = torch.randint(5, model.config.backbone_config.vocab_size, (int(batch["positions"].sum()),))

    def gradients(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(logits, targets).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast, reference = gradients(model(**batch).logits), gradients(_backbone_forward(model, batch))
    assert fast.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_backbones_without_bert_layout_use_their_own_forward() -> None:
    for model_type in ("distilbert", "albert"):
        model = tiny_model(model_type=model_type)
        assert not has_bert_layers(model.backbone.base_model)
        assert not model._bert_layers
    for model_type in BERT_LAYOUT:
        assert has_bert_layers(tiny_model(model_type=model_type).backbone.base_model)


def test_positions_on_padding_fall_back_to_the_padded_forward() -> None:
    model = _model("bert", "none").eval()
    batch = _batch(model)
    batch["positions"][2, 7] = True  # a padding position: only the padded forward has a row for it
    assert not model._runs_real_tokens_only(batch["positions"], batch["attention_mask"])
    torch.testing.assert_close(model(**batch).logits, _backbone_forward(model, batch))


def test_gradient_checkpointing_keeps_the_backbone_forward() -> None:
    """Checkpointing lives in the backbone's layer calls, which the real-token pass does not make."""
    model = _model("bert", "none")
    batch = _batch(model)
    assert model._runs_real_tokens_only(batch["positions"], batch["attention_mask"])
    for layer in model.backbone.base_model.encoder.layer:
        layer.gradient_checkpointing = True  # what the backbone's checkpointing switch sets
    assert not model._runs_real_tokens_only(batch["positions"], batch["attention_mask"])


def test_fast_dropout_drops_the_rounded_rate_and_stays_unbiased() -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    out = fast_dropout(x, 0.1)
    rate = 6554 / 65536  # 0.1 rounded to a multiple of 2^-16
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / x.numel())
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - rate)))
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # the gradient passes through the same mask and scale


def test_fast_dropout_masks_follow_the_global_seed_and_differ_between_calls() -> None:
    x = torch.randn(7, 33)  # an odd size: not a multiple of the four masks one draw makes
    torch.manual_seed(5)
    first, second = fast_dropout(x, 0.5), fast_dropout(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(fast_dropout(x, 0.5), first)
    assert not torch.equal(first == 0, second == 0)


def test_fast_dropout_module_is_identity_in_eval_and_at_zero_rate() -> None:
    x = torch.randn(4, 8)
    module = FastDropout(0.3).eval()
    assert torch.equal(module(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert (FastDropout(0.3).train()(torch.ones(10_000)) == 0).any()


def test_use_fast_dropout_replaces_every_dropout_keeping_rates_and_state_dict() -> None:
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.2,
        attention_probs_dropout_prob=0.3,
    )
    backbone = BertForMaskedLM(config)
    keys = list(backbone.state_dict())
    rates = [m.p for m in backbone.modules() if isinstance(m, nn.Dropout)]
    use_fast_dropout(backbone)
    assert [type(m) for m in backbone.modules() if isinstance(m, nn.Dropout)] == [FastDropout] * len(rates)
    assert [m.p for m in backbone.modules() if isinstance(m, nn.Dropout)] == rates
    assert sorted(rates) == [0.2] * 5 + [0.3] * 2
    assert list(backbone.state_dict()) == keys
    assert all(type(m) is FastDropout for m in tiny_model().modules() if isinstance(m, nn.Dropout))


def test_training_mode_attention_dropout_is_random_and_seeded() -> None:
    model = _model("bert", "none").train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model.backbone.base_model.encoder.layer[0].attention.self.dropout.p = 0.5  # attention dropout only
    batch = _batch(model)
    torch.manual_seed(0)
    first = model(**batch).logits
    torch.manual_seed(0)
    assert torch.equal(model(**batch).logits, first)
    assert not torch.equal(model(**batch).logits, first)
    model.eval()
    torch.testing.assert_close(model(**batch).logits, _backbone_forward(model, batch))
