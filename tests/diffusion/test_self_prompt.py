"""Diffusion-NAT's self-prompting: the prompted layout by hand, the two training passes, the sampling loop
feeding back its previous estimate, and a tiny self-prompting model trained, saved, sampled and scored."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from diffusionbert.config import load_config
from diffusionbert.diffusion.objectives import Corrupted, MaskedLMObjective
from diffusionbert.diffusion.self_prompt import SelfPrompt, insert_before_span
from diffusionbert.errors import ConfigError
from diffusionbert.methods import check_config
from diffusionbert.sampling.loop import denoise
from diffusionbert.sampling.samplers import build_sampler
from diffusionbert.training.step import denoiser_terms

MASK, SEP, PAD, V = 9, 8, 0, 10
LAYOUT = SelfPrompt(MASK, SEP, PAD)


def test_the_prompt_and_a_separator_go_before_each_rows_span_by_hand():
    x_t = torch.tensor([[1, 2, 8, 3, 9, 8, 0], [1, 4, 5, 8, 9, 9, 8]])  # [CLS] src [SEP] target [SEP] pad
    span = torch.tensor([[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    prompt = torch.tensor([[0, 0, 0, 3, 7, 8, 0], [0, 0, 0, 0, 6, 7, 8]])
    masked = x_t == MASK
    ids, positions, attention = LAYOUT.inputs(x_t, span, prompt, masked, (x_t != PAD).long())
    assert ids.tolist() == [
        [1, 2, 8, 3, 7, 8, 8, 3, 9, 8, 0],
        [1, 4, 5, 8, 6, 7, 8, 8, 9, 9, 8],
    ]
    assert positions.nonzero().tolist() == [[0, 8], [1, 8], [1, 9]]  # x_t's masks, moved past the prompt
    assert attention.tolist() == [[1] * 10 + [0], [1] * 11]
    assert insert_before_span(masked, span, torch.zeros_like(masked), False, False).sum() == masked.sum()
    with pytest.raises(ConfigError, match="one contiguous span"):
        insert_before_span(x_t, torch.tensor([[0, 1, 0, 1, 0, 0, 0]] * 2, dtype=torch.bool), x_t, SEP, PAD)
    with pytest.raises(ConfigError, match="noisable position in every row"):
        insert_before_span(x_t, torch.zeros_like(span), x_t, SEP, PAD)


class _Spy(torch.nn.Module):
    """A 'denoiser' whose logits favour token (position + 1) % 5 + 1 and that records every call."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls: list[tuple[Tensor, Tensor, bool]] = []

    def logits_at(self, ids: Tensor, positions: Tensor) -> Tensor:
        favourite = (positions.nonzero()[:, 1] + 1) % 5 + 1
        return self.scale * torch.nn.functional.one_hot(favourite, V).float() * 5.0

    def forward(self, input_ids, attention_mask=None, t=None, positions=None):
        self.calls.append((input_ids.clone(), positions.clone(), torch.is_grad_enabled()))
        return type("Out", (), {"logits": self.logits_at(input_ids, positions)})()


def test_training_shows_chosen_rows_their_own_gradient_free_estimate_and_scores_only_the_second_pass():
    x0 = torch.tensor([[1, 2, 8, 3, 4, 8], [1, 5, 8, 6, 7, 8]])
    noise = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2, dtype=torch.bool)
    masked = torch.tensor([[0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    corrupted = Corrupted(x0.masked_fill(masked, MASK), noise, masked, torch.zeros(2), weight=torch.ones(2))
    model = _Spy()
    terms = denoiser_terms(
        model,
        MaskedLMObjective(MASK),
        x0,
        torch.ones_like(x0),
        corrupted,
        LAYOUT,
        torch.tensor([True, False]),
    )
    (first, first_positions, first_grad), (second, _, second_grad) = model.calls
    assert not first_grad and second_grad
    assert first[:, 3:6].tolist() == [[MASK] * 3] * 2  # the empty prompt
    estimate = (first_positions.nonzero()[:, 1] + 1) % 5 + 1
    assert second[0, 3:6].tolist() == [estimate[0].item(), 4, estimate[1].item()]  # x_t where revealed
    assert second[1, 3:6].tolist() == [MASK] * 3  # a row not chosen keeps the empty prompt
    terms.loss.backward()
    assert model.scale.grad is not None


def test_the_sampling_loop_feeds_back_the_previous_steps_estimate():
    model = _Spy()

    def call(ids: Tensor, time: Tensor, positions: Tensor) -> Tensor:
        return model(ids, positions=positions).logits.double()

    x = torch.tensor([[1, 2, 8, MASK, MASK, MASK, MASK]])
    generated = torch.tensor([[0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    objective = MaskedLMObjective(MASK)
    sampler = build_sampler("confidence", objective)
    result = denoise(
        call, x, sampler, sampler.timesteps(4), torch.Generator().manual_seed(0), generated=generated,
        self_prompt=LAYOUT,
    )  # fmt: skip
    assert len(model.calls) == 4 and int(result.nfe) == 4
    first = model.calls[0][0]
    assert first[0, 3:7].tolist() == [MASK] * 4 and first[0, 7] == SEP
    for (_, before_positions, _), (after, _, _) in zip(model.calls, model.calls[1:], strict=False):
        favourite = ((before_positions[0].nonzero()[:, 0] + 1) % 5 + 1).tolist()
        prompt_of = {
            int(p) - 5: f for p, f in zip(before_positions[0].nonzero()[:, 0], favourite, strict=True)
        }
        state = after[0, 8:12]  # x_t of this call (moved past the 4-token prompt and its [SEP])
        for col, token in enumerate(after[0, 3:7].tolist()):
            expected = prompt_of.get(col + 3) if state[col] == MASK else int(state[col])
            assert token == expected
    with pytest.raises(ConfigError, match="cannot reuse logits"):
        denoise(call, x, sampler, sampler.timesteps(4), torch.Generator(), generated=generated, cache=True,
                self_prompt=LAYOUT)  # fmt: skip


def test_a_self_prompting_model_trains_is_recorded_and_generates(tiny_config, pairs_data, tmp_path):
    from diffusionbert.evaluation import SourceFile, generate_file
    from diffusionbert.training import train

    data = tmp_path / "pairs.jsonl"
    rows = [{"mr": f"name[{n}]", "ref": f"{n} is a pub"} for n in ("a", "b", "c")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    pairs = pairs_data(data, valid=True, max_length=24)
    path, out = tiny_config(
        data=pairs,
        diffusion={"schedule": "linear", "num_steps": 32},
        training={"max_steps": 2, "save_every": 0, "eval_every": 2, "self_prompt": 0.5},
    )
    train(load_config(path), progress=False)
    recorded = json.loads((out / "final" / "diffusion.json").read_text())["data"]
    assert recorded["self_prompt"] == 0.5
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("valid_nats_per_token" in r for r in logged)  # the bound runs with the empty prompt
    result = generate_file(
        out / "final", SourceFile(data, "mr", "ref"), sampler="confidence", steps=4, length=6
    )
    assert len(result.generations) == 3 and all(g.nfe == 4 for g in result.generations)  # no logits reuse
    for bad, message in (
        ({"self_prompt": 1.0}, r"training.self_prompt=1.0 is not valid"),
        ({"self_prompt": 0.5, "objective": "ar"}, "contradicts diffusion.objective='ar'"),
    ):
        objective = bad.pop("objective", None)
        path, _ = tiny_config(
            data=pairs,
            diffusion={"objective": objective} if objective else {},
            training={"max_steps": 1, **bad},
        )
        with pytest.raises(ConfigError, match=message):
            check_config(load_config(path))  # what the trainer does first
