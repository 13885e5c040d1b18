"""Diffusion-LM (Gaussian diffusion of embeddings): its bound against the simulated chain and an importance-
sampled NLL, its sampler against the model's word probabilities, and the family end to end."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusionbert.checkpoint import load_model_dir
from diffusionbert.cli import main
from diffusionbert.config import load_config
from diffusionbert.diffusion import plaid as plaid_module
from diffusionbert.diffusion.embedding import DiffusionLMObjective
from diffusionbert.diffusion.gaussian import (
    LearnedSchedule,
    SqrtSchedule,
    alpha_sigma,
    diffuse,
    gaussian_log_likelihood,
    posterior,
)
from diffusionbert.diffusion.plaid import PlaidObjective
from diffusionbert.errors import ConfigError
from diffusionbert.methods import check_config
from diffusionbert.sampling import load_pipeline
from diffusionbert.sampling.embedding_loop import denoise_embeddings

STEPS = 64  # fine enough that q(z | w) mixed over words is an accurate importance-sampling proposal
POINTS = torch.tensor([[1.5, 0.0], [-1.0, 1.0], [-0.5, -1.5]], dtype=torch.float64)  # E: 3 words, D = 2
MASK = 3  # ids: the 3 words, then [MASK] (never an embedding the toy rounds to)


class ToyDenoiser(torch.nn.Module):
    """A fixed network on three 2-D word embeddings whose x̂ is ``shrink`` times the Bayes-optimal x̂ for
    uniformly drawn words (the posterior mean of E_w given z_t): near-optimal, so that importance sampling
    with q as proposal is accurate, and imperfect (shrink < 1), so that the bound is strictly loose."""

    def __init__(self, shrink: float = 0.9) -> None:
        super().__init__()
        self.table = torch.cat([POINTS, torch.zeros(1, 2, dtype=torch.float64)])
        self.shrink = shrink
        self.schedule = SqrtSchedule()
        self.config = SimpleNamespace(self_conditioning=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]

    def rounding_logits(self, z: torch.Tensor) -> torch.Tensor:
        logits = z @ self.table.T
        logits[..., MASK] = float("-inf")
        return logits

    def forward(self, latents, attention_mask=None, t=None, positions=None, self_condition=None):
        gamma = self.schedule(t.to(torch.float64)).view(-1, 1, 1, 1)
        alpha, sigma = alpha_sigma(gamma)
        z = latents.to(torch.float64)
        log_weights = gaussian_log_likelihood(z.unsqueeze(-2), alpha * POINTS, sigma**2)
        x_hat = self.shrink * (log_weights.softmax(-1).unsqueeze(-1) * POINTS).sum(-2)
        out = (alpha[..., 0] * z - x_hat) / sigma[..., 0]  # the f whose clean_estimate is x̂
        return SimpleNamespace(prediction=out[positions] if positions is not None else out)


def objective(steps: int = STEPS) -> DiffusionLMObjective:
    return DiffusionLMObjective(MASK, SqrtSchedule(), steps, embedding_dim=2)


def simulate(obj: DiffusionLMObjective, model: ToyDenoiser, words: torch.Tensor, seed: int):
    """Chains z_0 → z_{1/T} → … → z_1 drawn forward from q(· | E_w) for each of ``words`` [n]. Returns per
    chain [n]: log q(z | w), log q_mix(z) (the proposal mixing the three words alike), log p(z) (the model's
    prior and reverse steps p(z_s | z_t) = q(z_s | z_t, x̂)) and the rounding log p(v | z_0) [n, 3]."""
    n, steps = len(words), obj.num_steps
    gen = torch.Generator().manual_seed(seed)
    grid = torch.arange(steps + 1, dtype=torch.float64) / steps
    gammas = obj.gamma(model, grid)
    alpha0, sigma0 = alpha_sigma(gammas[0])
    z = [diffuse(POINTS[words], gammas[0], torch.randn(n, 2, generator=gen, dtype=torch.float64))]
    start = gaussian_log_likelihood(z[0][:, None], alpha0 * POINTS, sigma0**2)  # log q(z_0 | v) [n, 3]
    log_forward = torch.zeros(n, dtype=torch.float64)
    for k in range(1, steps + 1):  # q(z_t | z_s) = N(α_{t|s} z_s, σ_{t|s}²)
        (a_s, s_s), (a_t, s_t) = alpha_sigma(gammas[k - 1]), alpha_sigma(gammas[k])
        a_ts, var_ts = a_t / a_s, s_t**2 - (a_t / a_s) ** 2 * s_s**2
        z.append(a_ts * z[-1] + var_ts.sqrt() * torch.randn(n, 2, generator=gen, dtype=torch.float64))
        log_forward = log_forward + gaussian_log_likelihood(z[k], a_ts * z[k - 1], var_ts)
    log_q = start.gather(1, words[:, None])[:, 0] + log_forward
    log_q_mix = torch.logsumexp(start, -1) - math.log(3) + log_forward
    one = torch.tensor(1.0, dtype=torch.float64)
    log_p = gaussian_log_likelihood(z[-1], torch.zeros(2, dtype=torch.float64), one)
    for k in range(steps, 0, -1):
        output = model(z[k][:, None], t=torch.full((n,), float(grid[k]))).prediction[:, 0]
        mean, variance = posterior(
            z[k], obj.clean_estimate(model, output, z[k], gammas[k]), gammas[k - 1], gammas[k]
        )
        log_p = log_p + gaussian_log_likelihood(z[k - 1], mean, variance)
    log_round = torch.log_softmax(model.rounding_logits(z[0]), -1)[:, :3]
    return log_q, log_q_mix, log_p, log_round


def bound_draws(
    obj: DiffusionLMObjective, model: ToyDenoiser, word: int, chunks: int, rows: int
) -> torch.Tensor:
    """The objective's NELBO estimate per row [chunks] (each the mean over ``rows`` one-position sentences)."""
    gen = torch.Generator().manual_seed(7)
    x0 = torch.full((rows, 1), word)
    noise_mask = torch.ones(rows, 1, dtype=torch.bool)
    out = []
    for _ in range(chunks):
        corrupted = obj.corrupt(x0, noise_mask, gen)
        corrupted = type(corrupted)(**{**corrupted.__dict__, "noise": corrupted.noise.double()})
        out.append(float(obj.terms(model, x0, noise_mask.long(), corrupted).nll) / rows)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("word", [0, 1, 2])
def test_bound_estimate_equals_the_elbo_of_the_simulated_chain(word: int):
    """The analytic decomposition (T × one step's KL + prior KL + rounding) has the expectation of
    log q(z | w) − log p(w, z) over whole chains drawn from q (T = 4: the one-step estimate's variance grows
    with T)."""
    obj, model = objective(steps=4), ToyDenoiser()
    ours = bound_draws(obj, model, word, chunks=100, rows=400)
    log_q, _, log_p, log_round = simulate(obj, model, torch.full((40_000,), word), seed=1)
    chain = log_q - log_p - log_round[:, word]
    error = math.sqrt(ours.var() / len(ours) + chain.var() / len(chain))
    assert abs(float(ours.mean() - chain.mean())) < 4 * error
    assert error < 0.05 * abs(float(chain.mean()))  # the check has the power to see a wrong term


def importance_nll(obj: DiffusionLMObjective, model: ToyDenoiser) -> tuple[torch.Tensor, torch.Tensor]:
    """−log p(w) of each word [3] by importance sampling, and its delta-method standard error [3]. The
    proposal mixes q(z | v) over the three words: q(z | w) alone never reaches the chains that end near
    another word's embedding yet round to w, and would miss their share of p(w)."""
    _, log_q_mix, log_p, log_round = simulate(obj, model, torch.arange(120_000) % 3, seed=2)
    ratio = log_p[:, None] + log_round - log_q_mix[:, None]  # [n, 3]
    top = ratio.max(0).values
    weights = (ratio - top).exp()
    mean = weights.mean(0)
    return -(top + mean.log()), weights.std(0) / math.sqrt(len(weights)) / mean


@pytest.mark.parametrize("word", [0, 1, 2])
def test_bound_is_at_least_the_importance_sampled_nll(word: int):
    obj, model = objective(), ToyDenoiser()
    bound = bound_draws(obj, model, word, chunks=50, rows=400)
    nll, error = importance_nll(obj, model)
    assert float(error[word]) < 0.05 and abs(float((-nll).exp().sum()) - 1.0) < 0.03  # p(w) sums to one
    margin = 3 * (float(error[word]) + float(bound.std() / math.sqrt(len(bound))))
    assert float(bound.mean()) > float(nll[word]) - margin


def test_ancestral_sampler_draws_words_with_the_models_probabilities():
    """Without clamping the loop runs the model's own chain, so its words follow p(w) = e^{−NLL(w)}."""
    obj, model = objective(), ToyDenoiser()
    nll, error = importance_nll(obj, model)
    probs = (-nll).exp()
    n = 20_000
    ids = torch.full((n, 1), MASK)
    generated = torch.ones(n, 1, dtype=torch.bool)
    result = denoise_embeddings(
        model, obj, ids, generated, STEPS, torch.Generator().manual_seed(0), clamp=False, mask_id=MASK
    )
    counts = torch.bincount(result.tokens[:, 0], minlength=4).double()
    assert counts[MASK] == 0 and bool((result.nfe == STEPS).all())
    frequencies = counts[:3] / n
    spread = (frequencies * (1 - frequencies) / n + (probs * error) ** 2).sqrt()
    assert bool(((frequencies - probs).abs() < 4 * spread).all()), (frequencies, probs)


def test_clamping_maps_to_the_most_likely_words_embedding_and_the_loop_keeps_given_tokens():
    model = ToyDenoiser()
    x_hat = torch.tensor([[1.0, 0.1], [-0.2, -2.0]], dtype=torch.float64)
    assert torch.equal(objective().clamp(model, x_hat), POINTS[[0, 2]])
    ids = torch.tensor([[1, MASK, MASK, 2]] * 3)
    generated = ids == MASK
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    result = denoise_embeddings(
        model, objective(), ids, generated, 2, gens, mask_id=MASK, return_trajectory=True
    )
    assert torch.equal(result.tokens[:, [0, 3]], ids[:, [0, 3]]) and bool((result.tokens < MASK).all())
    assert result.trajectory.shape == (3, 3, 4) and bool((result.trajectory[:, 0][generated] == MASK).all())
    alone = denoise_embeddings(
        model, objective(), ids[1:2], generated[1:2], 2, [torch.Generator().manual_seed(1)], mask_id=MASK
    )
    assert torch.equal(alone.tokens[0], result.tokens[1])  # a row's draws do not depend on its batch


def test_clean_estimate_is_exact_for_the_v_target_and_tends_to_z_at_low_noise():
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    gamma = torch.tensor([[1.3]])
    alpha, sigma = alpha_sigma(gamma)
    z = alpha * x + sigma * eps
    assert torch.allclose(objective().clean_estimate(None, alpha * eps - sigma * x, z, gamma), x, atol=1e-6)
    low = torch.tensor([[-12.0]])
    assert torch.allclose(objective().clean_estimate(None, torch.randn(5, 3), x, low), x, atol=1e-2)


# ---------------------------------------------------------------------------------------------------------
# The family end to end: CLI, resume, two processes, bad input

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
FAMILY = {"objective": "diffusion_lm", "schedule": "sqrt", "num_steps": 64, "embedding_dim": 8}
FAMILIES = {
    "diffusion_lm": FAMILY,
    "plaid": {"objective": "plaid", "schedule": "learned", "embedding_dim": 8},
}


def cli(*args: str) -> int:
    """The command line in this process (its exit code): the same code path, without a new interpreter."""
    return main(["--no-progress", *args])


def losses(run: Path) -> dict[int, float]:
    return {
        r["step"]: r["loss"]
        for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
        if "loss" in r
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_gaussian_family_trains_samples_and_evaluates_from_the_cli(
    family, tiny_config, tiny_texts, tmp_path
):
    path, out = tiny_config(diffusion=FAMILIES[family], training={"max_steps": 4, "save_every": 0})
    assert cli("train", "--config", str(path)) == 0
    loaded = load_model_dir(out)
    assert loaded.method.name == family and loaded.model.token_embedding.weight.shape[1] == 8
    samples = tmp_path / "samples.jsonl"
    for extra in ([], ["--prompt", "the big cat", "--sampler", "ancestral"]):
        args = ["--num-samples", "3", "--length", "8", "--steps", "16", "--trajectory", "--out", str(samples)]
        assert cli("sample", "--checkpoint", str(out), *args, *extra) == 0
        records = [json.loads(line) for line in samples.read_text().splitlines()]
        assert len(records) == 3 and all(r["nfe"] == 16 and len(r["trajectory"]) == 17 for r in records)
        if extra:
            assert all(r["text"].startswith("the big cat") for r in records)
    report = tmp_path / "eval.json"
    assert cli(
        "evaluate", "--checkpoint", str(out), "--data", str(tiny_texts["valid"]), "--num-samples", "2",
        "--steps", "8", "--length", "8", "--metrics", "bound,self-bleu", "--out", str(report),
    ) == 0  # fmt: skip
    written = json.loads(report.read_text())
    bound = written["bound"]
    assert math.isfinite(bound["nats_per_token"]) and bound["nats_per_token"] > 0 and bound["n_words"] > 0
    assert written["samples"]["sampler"] == {"diffusion_lm": "clamped", "plaid": "ancestral"}[family]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_gaussian_family_resumes_exactly(family, tiny_config):
    path, out = tiny_config(
        diffusion=FAMILIES[family],
        training={"max_steps": 6, "save_every": 2, "eval_every": 0, "lr_decay": "constant"},
    )  # a constant LR: stopping at 3 and resuming to 6 changes nothing else
    assert cli("train", "--config", str(path), "--output-dir", f"{out}-whole") == 0
    assert cli("train", "--config", str(path), "--max-steps", "3") == 0
    assert cli("train", "--config", str(path), "--resume") == 0
    assert losses(out) == losses(Path(f"{out}-whole")) and sorted(losses(out)) == list(range(1, 7))
    a = load_file(str(out / "final" / "model.safetensors"))
    b = load_file(str(Path(f"{out}-whole") / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_gaussian_family_two_processes_train_like_one(family, tiny_config):
    path, out = tiny_config(
        diffusion=FAMILIES[family], training={"max_steps": 4, "save_every": 0, "eval_every": 0}
    )
    assert cli("train", "--config", str(path)) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
        "-m", "diffusionbert.cli", "train", "--config", str(path), "--output-dir", f"{out}-two", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = losses(out), losses(Path(f"{out}-two"))
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "diffusion.schedule=spindle",
            "diffusion.schedule='spindle' contradicts diffusion.objective='diffusion_lm'",
        ),
        (
            "diffusion.schedule=cosine",
            "diffusion.schedule='cosine' contradicts diffusion.objective='diffusion_lm'",
        ),
        ("model.time_conditioning=layerwise", "model.time_conditioning='layerwise' contradicts"),
        ("diffusion.embedding_dim=0", "diffusion.embedding_dim=0 is not valid"),
        ("diffusion.embedding_dim=4096", "diffusion.embedding_dim=4096 is larger than the backbone"),
        (
            "training.self_prompt=0.5",
            "training.self_prompt=0.5 contradicts diffusion.objective='diffusion_lm'",
        ),
        (
            "training.distributed=fsdp",
            "training.distributed='fsdp' is not implemented for diffusion.objective='diffusion_lm'",
        ),
        (
            "diffusion.objective=plaid diffusion.schedule=spindle",
            "diffusion.schedule='spindle' contradicts diffusion.objective='plaid'",
        ),
        (
            "diffusion.objective=plaid diffusion.schedule=sqrt",
            "diffusion.schedule='sqrt' contradicts diffusion.objective='plaid'",
        ),
        (
            "diffusion.objective=plaid model.time_conditioning=prefix_token",
            "model.time_conditioning='prefix_token' contradicts diffusion.objective='plaid'",
        ),
        ("diffusion.objective=mdlm diffusion.schedule=learned", "diffusion.schedule='learned' contradicts"),
    ],
)
def test_options_of_other_families_are_one_line_errors_and_write_nothing(
    tiny_config, capsys, override, message
):
    path, out = tiny_config(diffusion=FAMILY, training={"max_steps": 2, "save_every": 0})
    assert main(["--no-progress", "train", "--config", str(path), *override.split()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.strip().count("\n") == 0
    assert not (out / "final").exists() and not (out / "checkpoints").exists()


def test_a_sampling_option_the_family_cannot_use_is_a_one_line_error(tiny_config, capsys):
    path, out = tiny_config(diffusion=FAMILY, training={"max_steps": 1, "save_every": 0})
    assert main(["--no-progress", "train", "--config", str(path)]) == 0
    for args, message in (
        (["--temperature", "0.5"], "temperature/top_k/top_p does not apply to a Gaussian"),
        (["--sampler", "cached"], "sampler='cached' is not valid"),
        (["--steps", "65"], "steps=65 is not valid"),
        (["--end", "predicted"], "end='predicted' does not apply to a Gaussian"),
    ):
        capsys.readouterr()
        sample = ["sample", "--checkpoint", str(out), "--num-samples", "1", "--length", "4", "--no-progress"]
        assert main([*sample, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err


def test_source_dropout_contradicts_a_gaussian_family(tiny_config):
    """Source dropout shows a pair's source as [MASK]s; an embedding-diffusion model never reads [MASK]."""
    path, _ = tiny_config(diffusion=FAMILY)
    cfg = load_config(path, ["data.source_field=mr", "training.source_dropout=0.5"])
    with pytest.raises(ConfigError, match=r"training\.source_dropout=0\.5 contradicts diffusion\.objective"):
        check_config(cfg)


# ---------------------------------------------------------------------------------------------------------
# Plaid: the continuous-time bound with a learned schedule, categorical x̂, the output prior


class PlaidToy(torch.nn.Module):
    """Plaid's network reduced to its output prior: zero logits, so x̂ = Σ_w softmax(log N(z_t; α E_w, σ²)) E_w,
    the Bayes-optimal denoiser of uniformly drawn words; a learned schedule; self-conditioning (unused)."""

    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = torch.nn.Embedding.from_pretrained(
            torch.cat([POINTS, torch.zeros(1, 2, dtype=torch.float64)]).float(), freeze=False
        )
        self.noise_schedule = LearnedSchedule(gamma_0=-8.0, gamma_1=6.0, hidden=16)
        self.config = SimpleNamespace(self_conditioning=True)
        self.seen: list[torch.Tensor | None] = []

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids)

    def likelihood_logits(self, z, alpha, variance):
        table = self.token_embedding.weight
        logits = (alpha / variance) * (z @ table.T) - (alpha**2 / (2 * variance)) * table.pow(2).sum(-1)
        logits[..., MASK] = float("-inf")
        return logits

    def forward(self, latents, attention_mask=None, t=None, positions=None, self_condition=None):
        self.seen.append(None if self_condition is None else self_condition.clone())
        n = int(positions.sum())
        return SimpleNamespace(prediction=torch.zeros(n, 4, dtype=latents.dtype))


def plaid_bound(model: PlaidToy, rows: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plaid's NELBO per one-word sentence of uniformly drawn words (nats) [rows/100 chunks], and the sum."""
    obj = PlaidObjective(MASK, embedding_dim=2)
    gen = torch.Generator().manual_seed(seed)
    x0 = (torch.arange(rows) % 3)[:, None]
    mask = torch.ones(rows, 1, dtype=torch.bool)
    chunks = []
    total = torch.zeros(())
    for part in range(0, rows, 100):
        corrupted = obj.corrupt(x0[part : part + 100], mask[part : part + 100], gen)
        terms = obj.terms(model, x0[part : part + 100], mask[part : part + 100].long(), corrupted)
        total = total + terms.nll
        chunks.append(float(terms.nll.detach()) / 100)
    return torch.tensor(chunks, dtype=torch.float64), total


def test_plaid_bound_of_the_bayes_optimal_denoiser_is_just_above_the_entropy():
    """Uniform words have entropy log 3; with x̂ the exact posterior mean the continuous-time bound equals
    log 3 plus the rounding and prior terms' slack (I-MMSE), so it lies in [log 3, log 3 + 0.1]."""
    model = PlaidToy().eval()
    chunks, _ = plaid_bound(model, rows=30_000)
    error = float(chunks.std() / math.sqrt(len(chunks)))
    assert error < 0.03
    assert math.log(3) - 3 * error < float(chunks.mean()) < math.log(3) + 0.1 + 3 * error
    assert all(seen is not None for seen in model.seen[1::2])  # evaluation always feeds the first pass's x̂


def test_plaid_trains_its_schedules_end_points_and_keeps_it_monotone():
    model = PlaidToy().train()
    optimizer = torch.optim.SGD(model.noise_schedule.parameters(), lr=0.05)
    before = model.noise_schedule(torch.tensor([0.0, 1.0])).detach()
    for seed in range(20):
        optimizer.zero_grad()
        _, total = plaid_bound(model, rows=400, seed=seed)
        (total / 400).backward()
        optimizer.step()
    after = model.noise_schedule(torch.tensor([0.0, 1.0])).detach()
    assert not torch.allclose(before, after)  # the ends move with the bound's gradient
    grid = model.noise_schedule(torch.linspace(0, 1, 101)).detach()
    assert bool((grid.diff() > 0).all())


def test_plaid_sampling_feeds_back_the_previous_steps_estimate():
    model = PlaidToy().eval()
    ids = torch.full((5, 2), MASK)
    result = denoise_embeddings(
        model, PlaidObjective(MASK, embedding_dim=2), ids, ids == MASK, 8,
        torch.Generator().manual_seed(0), mask_id=MASK, clamp=False,
    )  # fmt: skip
    assert bool((result.tokens < MASK).all())
    assert torch.equal(model.seen[0], torch.zeros(5, 2, 2))  # no estimate before the first step
    assert all(bool(seen.abs().sum() > 0) for seen in model.seen[1:])


def test_a_nan_in_a_gaussian_bound_term_is_a_one_line_error_in_training_and_evaluation(
    tiny_config, tiny_texts, tmp_path, monkeypatch, capsys
):
    path, out = tiny_config(diffusion=FAMILIES["plaid"], training={"max_steps": 2, "save_every": 0})
    assert cli("train", "--config", str(path)) == 0
    final = tmp_path / "final"
    shutil.copytree(out / "final", final)
    weights = load_file(str(final / "model.safetensors"))
    weights["noise_schedule.gamma_0"] = torch.tensor(float("nan"))  # γ(0) NaN: the rounding term is NaN
    save_file(weights, str(final / "model.safetensors"), metadata={"format": "pt"})
    capsys.readouterr()
    assert cli("evaluate", "--checkpoint", str(final), "--data", str(tiny_texts["valid"])) == 2
    err = capsys.readouterr().err
    assert "is not finite (nan)" in err and err.strip().count("\n") == 0

    monkeypatch.setattr(plaid_module, "prior_kl", lambda x, gamma: torch.full(x.shape[:-1], float("nan")))
    diverging, _ = tiny_config(
        diffusion=FAMILIES["plaid"],
        training={"max_steps": 8, "save_every": 0, "output_dir": str(tmp_path / "d")},
    )
    assert cli("train", "--config", str(diverging)) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "no final/ was written" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "d" / "final").exists()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_gaussian_family_decodes_seq2seq_from_a_source(family, tiny_config, pairs_data, tmp_path):
    """Trained on (MR, text) pairs, the source stays clean embeddings (never noised, never scored), and
    `generate` decodes one text per MR after it."""
    data = tmp_path / "pairs.jsonl"
    rows = [{"mr": f"name[{name}], food[{food}]", "ref": f"{name} serves {food} food"} for name, food in (
        ("the mill", "french"), ("blue spice", "english"), ("the eagle", "italian"),
    )]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4), encoding="utf-8")
    path, out = tiny_config(
        diffusion=FAMILIES[family], data=pairs_data(data), training={"max_steps": 2, "save_every": 0}
    )
    assert cli("train", "--config", str(path)) == 0
    pipe = load_pipeline(out)
    result = pipe(num_samples=2, length=6, steps=4, source=[rows[0]["mr"], rows[1]["mr"]])
    assert len(result.texts) == 4 and all(n == 4 for n in result.nfe)
    source_ids = pipe.tokenizer(rows[1]["mr"], add_special_tokens=False)["input_ids"]
    assert result.token_ids[2, 1 : 1 + len(source_ids)].tolist() == source_ids  # the source is kept as given
    generated = tmp_path / "generated.jsonl"
    args = [
        "--data",
        str(data),
        "--source-field",
        "mr",
        "--length",
        "6",
        "--steps",
        "4",
        "--out",
        str(generated),
    ]
    assert cli("generate", "--checkpoint", str(out), *args) == 0
    records = [json.loads(line) for line in generated.read_text().splitlines()]
    assert [r["source"] for r in records] == [r["mr"] for r in rows] and all(r["nfe"] == 4 for r in records)
