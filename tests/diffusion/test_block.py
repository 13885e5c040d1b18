"""Block diffusion (BD3-LM): its bound by enumeration at both ends (one token per block: exactly the AR NLL of
the block-causal network; one block: exactly MDLM's bound of it), the x_t ⊕ x_0 training pass against the
block-causal decoding pass, and the run-time checks."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from diffusionbert.cli import main
from diffusionbert.config import load_config
from diffusionbert.diffusion.block import BlockDiffusionObjective, noisable_blocks
from diffusionbert.diffusion.objectives import ContinuousObjective, Corrupted
from diffusionbert.diffusion.schedules import get_schedule
from diffusionbert.errors import ConfigError
from diffusionbert.methods import check_config
from diffusionbert.models import DiffusionBertForMaskedLM
from diffusionbert.sampling import load_pipeline
from diffusionbert.testing import build_tiny_tokenizer, tiny_random

WORDS = ["a", "b", "c"]


def block_model(tokenizer, block_size: int, seed: int = 0) -> DiffusionBertForMaskedLM:
    sizes = {"intermediate_size": 64}
    return tiny_random(
        DiffusionBertForMaskedLM, tokenizer, 0, "bert", 64, seed, sizes, block_size=block_size
    ).eval()


def ce_of(
    objective: ContinuousObjective,
    model,
    x0: torch.Tensor,
    noise: torch.Tensor,
    x_t: torch.Tensor,
    clean: bool,
):
    """Σ −log p_θ(x_0^i | ·) over the masked positions of x_t: through the training pass (x_t ⊕ x_0) or the
    block-causal decoding pass on x_t alone (earlier blocks clean, as decoding leaves them)."""
    attention = torch.ones_like(x0)
    if clean:
        ones = torch.ones(x0.shape, dtype=torch.float64)  # t = 1: the NELBO weight 1/t is 1
        return float(objective.terms(model, x0, attention, objective.corrupted_at(x0, noise, ones, x_t)).nll)
    mdlm = ContinuousObjective(objective.mask_id, objective.schedule)
    masked = noise & (x_t == objective.mask_id)
    corrupted = Corrupted(x_t, noise, masked, torch.ones(1), weight=torch.ones(1, dtype=torch.float64))
    return float(mdlm.terms(model, x0, attention, corrupted).nll)


def exact_bound(objective, model, x0: torch.Tensor, block_size: int, clean: bool = True) -> float:
    """Σ over blocks and their mask patterns of ∫ w(t) P(pattern | t) dt · CE: with α = 1 − t the integral
    of (1/t) t^k (1 − t)^(n−k) is the Beta function B(k, n − k + 1)."""
    noise = torch.ones_like(x0, dtype=torch.bool)
    noise[:, 0] = False
    blocks = noisable_blocks(noise, block_size)[0]
    total = 0.0
    for b in range(int(blocks.max()) + 1):
        where = (blocks == b).nonzero()[:, 0].tolist()
        n = len(where)
        for k in range(1, n + 1):
            for chosen in itertools.combinations(where, k):
                x_t = x0.clone()
                x_t[0, list(chosen)] = objective.mask_id
                beta = math.gamma(k) * math.gamma(n - k + 1) / math.gamma(n + 1)
                total += beta * ce_of(objective, model, x0, noise, x_t, clean)
    return total


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(WORDS)


def texts(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(w) for w in WORDS]
    return [torch.tensor([[tokenizer.cls_token_id, *seq]]) for seq in itertools.product(ids, repeat=3)]


@torch.no_grad()
def test_with_one_token_per_block_the_bound_is_exactly_the_autoregressive_nll(tokenizer) -> None:
    model = block_model(tokenizer, 1)
    objective = BlockDiffusionObjective(tokenizer.mask_token_id, get_schedule("loglinear"), 1)
    total_p = 0.0
    for x0 in texts(tokenizer):
        nll = 0.0
        for i in range(1, 4):  # −log p(x_i | x_<i): position i masked, the later ones unseen
            x = x0.clone()
            x[0, i] = tokenizer.mask_token_id
            logits = model(x, positions=x == tokenizer.mask_token_id).logits
            nll -= float(torch.log_softmax(logits.double(), -1)[0, x0[0, i]])
        assert exact_bound(objective, model, x0, 1) == pytest.approx(nll, rel=1e-6)
        total_p += math.exp(-nll)
    # the block-causal model with one token per block is a proper left-to-right distribution over what it
    # can write (texts of 3 tokens of a, b, c, plus the tokens it gives the rest of its vocabulary)
    assert total_p <= 1.0 + 1e-6


@torch.no_grad()
def test_with_one_block_the_bound_is_exactly_mdlms(tokenizer) -> None:
    model = block_model(tokenizer, 3)
    objective = BlockDiffusionObjective(tokenizer.mask_token_id, get_schedule("loglinear"), 3)
    for x0 in texts(tokenizer)[::5]:
        training = exact_bound(objective, model, x0, 3)  # through the x_t ⊕ x_0 pass
        decoding = exact_bound(objective, model, x0, 3, clean=False)  # MDLM's, on the decoding pass
        assert training == pytest.approx(decoding, rel=1e-6)


@torch.no_grad()
def test_the_training_estimate_is_unbiased_for_the_exact_bound(tokenizer) -> None:
    model = block_model(tokenizer, 2, seed=3)
    objective = BlockDiffusionObjective(tokenizer.mask_token_id, get_schedule("loglinear"), 2)
    x0 = texts(tokenizer)[7]
    noise = torch.ones_like(x0, dtype=torch.bool)
    noise[:, 0] = False
    batch = x0.repeat(4000, 1)
    corrupted = objective.corrupt(batch, noise.repeat(4000, 1), torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(corrupted.x_t, torch.ones_like(batch), positions=corrupted.masked, clean=batch).logits
    ce = -torch.log_softmax(logits.double(), -1).gather(-1, batch[corrupted.masked][:, None])[:, 0]
    per_row = torch.zeros(4000, dtype=torch.float64).index_add_(
        0, corrupted.masked.nonzero()[:, 0], corrupted.weight[corrupted.masked] * ce
    )
    mean, stderr = float(per_row.mean()), float(per_row.std() / math.sqrt(4000))
    assert abs(mean - exact_bound(objective, model, x0, 2)) < 4 * stderr


def test_the_decoding_pass_reads_what_training_reads(tokenizer) -> None:
    """A block of x_t reads itself and the clean blocks before it in training; decoding leaves those blocks
    clean and the later ones unseen: the same logits, whatever the later blocks hold."""
    model = block_model(tokenizer, 2)
    x0 = torch.tensor([[tokenizer.cls_token_id, *[tokenizer.convert_tokens_to_ids(w) for w in "abcab"]]])
    x_t = x0.clone()
    x_t[0, 3] = tokenizer.mask_token_id  # block 1 (positions 3, 4) noisy; block 0 clean
    later = x_t.clone()
    later[0, 5] = tokenizer.mask_token_id  # a later block changed: unseen
    at = x_t == tokenizer.mask_token_id
    training = model(x_t, positions=at, clean=x0).logits
    for decoding in (model(x_t, positions=at).logits, model(later, positions=at).logits):
        finite = torch.isfinite(training)
        assert torch.allclose(training[finite], decoding[finite], atol=1e-5)


# ------------------------------------------------------------------------------------- runs and bad input


def bd3lm_config(tiny_config, **sections):
    base = {"diffusion": {"objective": "bd3lm", "schedule": None, "block_size": 4}}
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return tiny_config(**base)


def test_a_bd3lm_run_trains_evaluates_and_decodes_block_by_block_with_its_cache(
    tiny_config, tiny_texts
) -> None:
    path, out = bd3lm_config(tiny_config, training={"max_steps": 6, "save_every": 0})
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    saved = json.loads((out / "final" / "config.json").read_text())
    assert saved["block_size"] == 4
    pipe = load_pipeline(out / "final")
    assert pipe.cache == "prompt" and pipe.caches_prompt
    for sampler in ("confidence", "ancestral"):
        request = {"num_samples": 3, "length": 12, "steps": 3, "sampler": sampler, "seed": 1}
        cached, uncached = pipe(**request), pipe(**request, prompt_cache=False)
        assert torch.equal(cached.token_ids, uncached.token_ids) and cached.nfe == uncached.nfe
        prompted = pipe(**request, prompt="the big")
        assert all(text.startswith("the big") for text in prompted.texts)
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "final"),
                "--data",
                str(tiny_texts["valid"]),
                "--no-progress",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"diffusion": {"block_size": 16}},
            r"block_size=16 is larger than the window it cuts \(data.max_length - 1 = 15\)",
        ),
        (
            {"data": "window 6", "model": {"source_attention": "isolated"}},
            "block_size=4 does not divide data.target_window=6",
        ),
        ({"data": "window 8"}, "reads the source as its first, clean block"),
        ({"model": {"time_conditioning": "layerwise"}}, "model.time_conditioning='layerwise' contradicts"),
    ],
)
def test_blocks_that_do_not_fit_are_one_line_errors(tiny_config, pairs_data, tmp_path, sections, message):
    if "data" in sections:
        data = tmp_path / "pairs.jsonl"
        data.write_text(json.dumps({"mr": "the cat", "ref": "a cat"}) + "\n", encoding="utf-8")
        window = int(sections["data"].split()[1])
        sections = {**sections, "data": pairs_data(data, target_window=window)}
    path, _ = bd3lm_config(tiny_config, **sections)
    with pytest.raises(ConfigError, match=message) as err:
        check_config(load_config(path))
    assert "\n" not in str(err.value)


def test_a_block_length_other_than_the_trained_one_is_refused_by_the_cli(tiny_config, capsys) -> None:
    path, out = bd3lm_config(tiny_config, training={"max_steps": 1, "save_every": 0, "eval_every": 0})
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["sample", "--checkpoint", str(out / "final"), "--block-length", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "conflicts with the block_size=4" in err and err.count("\n") == 1
