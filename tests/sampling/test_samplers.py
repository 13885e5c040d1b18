"""Samplers: exactness of the ancestral chain against enumeration, the cache, and the heuristic decoders' contracts.

Exactness runs the real loop (:func:`diffusionbert.sampling.loop.denoise`) on the toy denoiser of ``toy.py`` and
compares the empirical distribution of x_0 with p_θ(x_0) enumerated by ``ReverseChain`` (the generative
process whose bound ``test_bound_exact`` checks). Tolerances: a chi-square goodness-of-fit test with cells of
expected count < 5 pooled must give p > 1e-3, and the total-variation distance must be < 0.03 (about twice its
expected size for 27 cells and 20k samples). Seeds are fixed, so the outcomes are deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffusionbert.diffusion.objectives import (
    AnyOrderObjective,
    ContinuousObjective,
    DiffusionBertObjective,
    DiscreteObjective,
    MaskedLMObjective,
    MD4Objective,
    Objective,
)
from diffusionbert.diffusion.schedules import CosineSchedule, LinearSchedule
from diffusionbert.diffusion.token_info import spindle_from_counts
from diffusionbert.errors import ConfigError
from diffusionbert.sampling.draws import Sharpening
from diffusionbert.sampling.loop import DenoiseResult, denoise
from diffusionbert.sampling.samplers import (
    SAMPLERS,
    GibbsSampler,
    RoutingSampler,
    Sampler,
    build_sampler,
    planned_masked,
)
from diffusionbert.sampling.step import StepInput
from toy import COUNTS, LENGTH, MASK, VOCAB, ReverseChain, ToyDenoiser, chi_square_p_value

NUM_SAMPLES = 20_000

SCHEDULES = {
    "linear": LinearSchedule,
    "spindle-reference-sentence": lambda: spindle_from_counts(LinearSchedule(), COUNTS, "reference", 0.3),
    "spindle-paper-corpus": lambda: spindle_from_counts(
        LinearSchedule(), COUNTS, "paper", 0.2, centering="corpus"
    ),
}


def toy_denoiser(toy: ToyDenoiser):
    return lambda x, time, positions: toy.logits(x, time)[positions]


def run_toy(
    sampler: Sampler,
    toy: ToyDenoiser,
    steps: int,
    *,
    seed: int = 0,
    cache: bool = False,
    n: int = NUM_SAMPLES,
    batch: int = 1000,
) -> DenoiseResult:
    """``n`` samples from all-[MASK], in batches of ``batch`` rows drawing from one generator."""
    gen = torch.Generator().manual_seed(seed)
    results = [
        denoise(
            toy_denoiser(toy),
            torch.full((batch, LENGTH), MASK),
            sampler,
            sampler.timesteps(steps),
            gen,
            generated=torch.ones(batch, LENGTH, dtype=torch.bool),
            cache=cache,
        )
        for _ in range(n // batch)
    ]
    return DenoiseResult(torch.cat([r.tokens for r in results]), torch.cat([r.nfe for r in results]), None)


def exact_probs(obj: DiscreteObjective, toy: ToyDenoiser) -> torch.Tensor:
    """p_θ(x_0) over the V^L sequences, indexed by their base-V code."""
    marginals = ReverseChain(obj, toy).marginals()
    probs = torch.zeros(VOCAB**LENGTH, dtype=torch.float64)
    for state, p in marginals.items():
        probs[sum(v * VOCAB ** (LENGTH - 1 - i) for i, v in enumerate(state))] += p
    return probs


def fit(samples: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """(chi-square p-value with cells of expected count < 5 pooled, total-variation distance)."""
    assert bool((samples != MASK).all()), "every sample must end fully unmasked"
    codes = (samples * VOCAB ** torch.arange(LENGTH - 1, -1, -1)).sum(-1)
    counts = torch.bincount(codes, minlength=VOCAB**LENGTH).double()
    assert counts[probs == 0].sum() == 0, "a sequence of probability 0 was sampled"
    tv = 0.5 * (counts / counts.sum() - probs).abs().sum().item()
    return chi_square_p_value(counts, probs), tv


# ---------------------------------------------------------------------------------------------------------
# Ancestral exactness


@pytest.mark.parametrize(("num_steps", "steps"), [(4, 4), (8, 4)], ids=["every-step", "skip-2"])
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_ancestral_samples_the_enumerated_generative_process(schedule_name: str, num_steps: int, steps: int):
    """K = T walks the T-step chain; K = T/2 walks the chain on t = T − kT/K, i.e. the K-step chain."""
    toy = ToyDenoiser(seed=1, time_dependent=True)
    sampler = build_sampler("ancestral", DiffusionBertObjective(MASK, SCHEDULES[schedule_name](), num_steps))
    samples = run_toy(sampler, toy, steps).tokens
    exact = exact_probs(DiffusionBertObjective(MASK, SCHEDULES[schedule_name](), steps), toy)
    p_value, tv = fit(samples, exact)
    assert p_value > 1e-3 and tv < 0.03


@pytest.mark.parametrize(
    "objective",
    [
        ContinuousObjective(MASK, LinearSchedule()),
        MD4Objective(MASK, CosineSchedule()),
        AnyOrderObjective(MASK),
    ],
    ids=["mdlm-linear", "md4-cosine", "radd"],
)
def test_continuous_ancestral_is_the_discrete_chain_on_its_grid(objective: Objective):
    """On t_k = 1 − k/K a continuous objective's chain is the K-step discrete chain of the same α."""
    toy = ToyDenoiser(seed=4, time_dependent=not isinstance(objective, AnyOrderObjective))
    samples = run_toy(build_sampler("ancestral", objective), toy, 4).tokens
    schedule = CosineSchedule() if isinstance(objective, MD4Objective) else LinearSchedule()
    p_value, tv = fit(samples, exact_probs(DiffusionBertObjective(MASK, schedule, 4), toy))
    assert p_value > 1e-3 and tv < 0.03


def test_tweedie_of_a_normalised_network_samples_the_enumerated_chain():
    """With Σ_v e^{ℓ_v} = 1 SEDD's Tweedie step is the exact reverse step: the 4-step chain's p_θ(x_0)."""
    toy = ToyDenoiser(seed=4, time_dependent=True)
    normalised = lambda x, time, positions: torch.log_softmax(toy.logits(x, time), -1)[positions]  # noqa: E731
    sampler = build_sampler("tweedie", ContinuousObjective(MASK, LinearSchedule()))
    gen = torch.Generator().manual_seed(0)
    samples = torch.cat([
        denoise(
            normalised, torch.full((1000, LENGTH), MASK), sampler, sampler.timesteps(4), gen,
            generated=torch.ones(1000, LENGTH, dtype=torch.bool),
        ).tokens
        for _ in range(NUM_SAMPLES // 1000)
    ])  # fmt: skip
    p_value, tv = fit(samples, exact_probs(DiffusionBertObjective(MASK, LinearSchedule(), 4), toy))
    assert p_value > 1e-3 and tv < 0.03


@pytest.mark.parametrize("total", [0.5, 2.0, 4.0])
def test_tweedie_reveals_with_the_scores_total_times_u_and_draws_tokens_by_their_scores(total: float):
    """One step t = 6 → s = 4 of T = 8 (linear): u = (α_s − α_t)/(1 − α_t) = 0.25/0.75 = 1/3; a position is
    revealed with probability min(1, Z·u) and as token v ∝ e^{ℓ_v}; the last step reveals every position."""
    n, probs = 40_000, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    inp = all_masked_input((probs.log() + math.log(total)).expand(n, 3).tolist(), n, 0, 4)
    inp = dataclasses.replace(inp, t=6, s=4)
    sampler = build_sampler("tweedie", DiffusionBertObjective(3, LinearSchedule(), 8))
    x_s, _ = sampler.step(inp, torch.Generator().manual_seed(0))
    revealed = x_s[:, 0] != 3
    expected = min(1.0, total / 3.0)
    assert (
        abs(revealed.double().mean().item() - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-9
    )
    if revealed.any():
        counts = torch.bincount(x_s[revealed, 0], minlength=3).double()
        assert chi_square_p_value(counts, probs) > 1e-3
    last = dataclasses.replace(inp, t=2, s=0, index=3)
    x_s, _ = sampler.step(last, torch.Generator().manual_seed(0))
    assert bool((x_s != 3).all())


def test_tweedie_rejects_a_spindle_schedule():
    spindle = DiffusionBertObjective(MASK, SCHEDULES["spindle-reference-sentence"](), 8)
    with pytest.raises(ConfigError, match="sampler='tweedie' needs a token-independent schedule") as err:
        build_sampler("tweedie", spindle)
    assert "\n" not in str(err.value)


def test_the_fit_detects_a_changed_distribution():
    """Power check of the tolerance above: temperature 0.7 must be rejected."""
    toy = ToyDenoiser(seed=1, time_dependent=True)
    obj = DiffusionBertObjective(MASK, LinearSchedule(), 4)
    samples = run_toy(build_sampler("ancestral", obj, temperature=0.7), toy, 4).tokens
    p_value, _ = fit(samples, exact_probs(obj, toy))
    assert p_value < 1e-6


# ---------------------------------------------------------------------------------------------------------
# The cache


@pytest.mark.parametrize("schedule_name", ["linear", "spindle-reference-sentence"])
def test_cached_sampler_repeats_ancestral_draws_with_at_most_one_call_per_token(schedule_name: str):
    toy = ToyDenoiser(seed=2)  # time-agnostic
    obj = DiffusionBertObjective(MASK, SCHEDULES[schedule_name](), num_steps=16)
    plain = run_toy(build_sampler("ancestral", obj), toy, 16, n=4000, seed=3)
    cached = run_toy(build_sampler("cached", obj), toy, 16, n=4000, seed=3, cache=True)
    assert torch.equal(plain.tokens, cached.tokens)
    assert int(cached.nfe.max()) <= LENGTH < int(plain.nfe.max())
    p_value, tv = fit(cached.tokens, exact_probs(obj, toy))
    assert p_value > 1e-3 and tv < 0.03


@pytest.mark.parametrize(
    "objective", ["linear", "spindle-reference-sentence", "spindle-paper-corpus", "mdlm"]
)
def test_jumping_rows_on_their_own_clocks_repeats_the_stepping_loop_exactly(objective: str):
    """With one generator per row, the cached loop jumps each row to its next change and batches the calls of
    rows at different steps: same tokens and trajectories as stepping without a cache, fewer calls."""
    toy = ToyDenoiser(seed=4)
    if objective == "mdlm":
        obj = ContinuousObjective(MASK, LinearSchedule())
    else:
        obj = DiffusionBertObjective(MASK, SCHEDULES[objective](), num_steps=200)
    sampler = build_sampler("cached", obj)
    sampler.lookahead = 7  # windows end mid-walk: the rewinding of the generator is exercised
    batch, steps = 300, 150

    def run(cache: bool) -> DenoiseResult:
        calls.clear()
        return denoise(
            lambda x, time, positions: calls.append(x.shape[0]) or toy.logits(x, time)[positions],
            torch.full((batch, LENGTH), MASK),
            sampler,
            sampler.timesteps(steps),
            [torch.Generator().manual_seed(1000 + i) for i in range(batch)],
            generated=torch.ones(batch, LENGTH, dtype=torch.bool),
            cache=cache,
            return_trajectory=True,
        )

    calls: list[int] = []
    stepped = run(cache=False)
    stepped_calls = len(calls)
    jumped = run(cache=True)
    assert torch.equal(stepped.tokens, jumped.tokens) and torch.equal(stepped.trajectory, jumped.trajectory)
    assert int(jumped.nfe.max()) <= LENGTH < int(stepped.nfe.max())
    assert len(calls) <= LENGTH < stepped_calls and max(calls) > 1  # rows at different steps share calls


def test_jumping_samples_follow_the_exact_chain():
    toy = ToyDenoiser(seed=2)
    obj = DiffusionBertObjective(MASK, SCHEDULES["spindle-reference-sentence"](), num_steps=16)
    sampler = build_sampler("cached", obj)
    n = 8000
    result = denoise(
        toy_denoiser(toy),
        torch.full((n, LENGTH), MASK),
        sampler,
        sampler.timesteps(16),
        [torch.Generator().manual_seed(i) for i in range(n)],
        generated=torch.ones(n, LENGTH, dtype=torch.bool),
        cache=True,
    )
    p_value, tv = fit(result.tokens, exact_probs(obj, toy))
    assert p_value > 1e-3 and tv < 0.03


def test_the_loop_prepares_each_network_call_once():
    """What depends only on the logits is computed per call, for exactly the called positions."""
    toy = ToyDenoiser(seed=2)
    sampler = build_sampler(
        "cached", DiffusionBertObjective(MASK, SCHEDULES["spindle-reference-sentence"](), 16)
    )
    called, prepared = [], []
    prepare = sampler.prepare

    def spy(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        prepared.append(logits.shape[0])
        return prepare(logits)

    def denoiser(x: torch.Tensor, time: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        called.append(int(positions.sum()))
        return toy.logits(x, time)[positions]

    sampler.prepare = spy
    batch = 50
    result = denoise(
        denoiser,
        torch.full((batch, LENGTH), MASK),
        sampler,
        sampler.timesteps(16),
        torch.Generator().manual_seed(0),
        generated=torch.ones(batch, LENGTH, dtype=torch.bool),
        cache=True,
    )
    assert prepared == called and len(called) < 16 <= int(result.nfe.sum())


def test_cached_sampler_refuses_a_time_conditioned_model_without_being_built():
    objective = DiffusionBertObjective(MASK, LinearSchedule(), 8)
    assert SAMPLERS["cached"].unsuitable(objective, "none") is None
    reason = SAMPLERS["cached"].unsuitable(objective, "layerwise")
    assert reason is not None and "time_conditioning='layerwise'" in reason and "\n" not in reason
    assert SAMPLERS["ancestral"].unsuitable(objective, "layerwise") is None


# ---------------------------------------------------------------------------------------------------------
# Contracts of every sampler on a random denoiser

V, FORBIDDEN = 12, (0, 2, 4)  # ids that must never be drawn (pad, cls, mask)
RANDOM_MASK = 4


def random_denoiser(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def call(x: torch.Tensor, time: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = 3.0 * torch.randn(int(positions.sum()), V, generator=gen)
        logits[:, list(FORBIDDEN)] = float("-inf")
        return logits

    return call


def run_random(sampler: Sampler, steps: int, seed: int = 0, batch: int = 6, length: int = 20):
    x = torch.full((batch, length), 7)
    generated = torch.zeros(batch, length, dtype=torch.bool)
    generated[:, 2:] = True  # positions 0-1 are given
    generators = [torch.Generator().manual_seed(seed * 100 + b) for b in range(batch)]
    result = denoise(
        random_denoiser(seed),
        x,
        sampler,
        sampler.timesteps(steps),
        generators,
        generated=generated,
        return_trajectory=True,
    )
    return result, generated


def objective() -> Objective:
    return DiffusionBertObjective(RANDOM_MASK, LinearSchedule(), num_steps=32)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_resolves_all_masks_never_draws_forbidden_ids_and_is_seeded(name: str):
    sampler = build_sampler(name, objective())
    result, generated = run_random(sampler, steps=8)
    tokens = result.tokens
    assert bool((tokens[~generated] == 7).all())  # given tokens kept
    assert not bool(torch.isin(tokens[generated], torch.tensor(FORBIDDEN)).any())
    assert torch.equal(tokens, run_random(sampler, steps=8)[0].tokens)
    assert not torch.equal(tokens, run_random(sampler, steps=8, seed=1)[0].tokens)
    if name not in ("gibbs", "routing", "remdm"):  # these re-mask by design; the rest keep revealed tokens
        traj = result.trajectory
        revealed = traj[:, :-1] != RANDOM_MASK
        assert torch.equal(traj[:, 1:][revealed], traj[:, :-1][revealed])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_all_random_draws_are_float64(name: str, monkeypatch: pytest.MonkeyPatch):
    dtypes = []
    uniform = torch.Tensor.uniform_

    def spy(self: torch.Tensor, *args, **kwargs):
        dtypes.append(self.dtype)
        return uniform(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "uniform_", spy)
    options = {"choice_temperature": 1.0} if name in ("confidence", "routing") else {}
    run_random(build_sampler(name, objective(), **options), steps=4)
    assert dtypes and set(dtypes) == {torch.float64}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_confidence_sampler_reveals_exactly_the_planned_counts(schedule: str):
    steps = 6
    result, generated = run_random(build_sampler("confidence", objective(), schedule=schedule), steps)
    masked_left = (result.trajectory == RANDOM_MASK).sum(-1)  # [B, K + 1]
    total = generated.sum(-1)
    planned = torch.stack([planned_masked(total, k, steps, schedule) for k in range(steps + 1)], dim=1)
    assert torch.equal(masked_left, planned)
    assert planned[0, 0] == 18 and planned[0, -1] == 0


def all_masked_input(rows: list[list[float]], batch: int, index: int, num_steps: int) -> StepInput:
    """A step on ``batch`` fully masked rows, from logits for tokens 0-2 per position plus [MASK] = 3 at −inf
    (as the model gives them)."""
    logits = torch.tensor(rows, dtype=torch.float64)
    logits = torch.cat([logits, torch.full((len(rows), 1), float("-inf"), dtype=torch.float64)], dim=-1)
    shape = (batch, len(rows) // batch)
    masked = torch.ones(shape, dtype=torch.bool)
    return StepInput(
        logits=logits,
        x_t=torch.full(shape, 3),
        masked=masked,
        generated=masked,
        noise_mask=masked,
        scores=torch.zeros(shape, dtype=torch.float64),
        t=8,
        s=6,
        index=index,
        num_steps=num_steps,
    )


def test_confidence_sampler_keeps_the_most_confident_candidates():
    inp = all_masked_input([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 0.0, 0.0], [2.0, 0.0, 0.0]], 1, 0, 4)
    for temperature in (1.0, 0.0):  # greedy candidates are still ranked by the model's probabilities
        sampler = build_sampler(
            "confidence",
            DiffusionBertObjective(3, LinearSchedule(), 8),
            schedule="linear",
            temperature=temperature,
        )
        x_s, _ = sampler.step(inp, torch.Generator().manual_seed(0))
        assert (x_s != 3).tolist() == [[False, False, True, False]]  # 4 positions, 4 steps: one, the surest


def threshold_input(index: int, num_steps: int = 4) -> StepInput:
    """Two rows of four masked positions; row 0 has max probabilities ≈ 0.95, 0.33, 0.92, 0.5."""
    ln = math.log
    row0 = [[ln(0.95), ln(0.05), -50.0], [0.0, 0.0, 0.0], [ln(0.92), ln(0.08), -50.0], [0.0, 0.0, -50.0]]
    row1 = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    return all_masked_input(row0 + row1, 2, index, num_steps)


def test_threshold_sampler_reveals_every_sure_position_and_at_least_one():
    obj = DiffusionBertObjective(3, LinearSchedule(), 8)
    greedy = build_sampler("threshold", obj, threshold=0.9, temperature=0.0)
    x_s, _ = greedy.step(threshold_input(0), torch.Generator().manual_seed(0))
    assert (x_s != 3).tolist() == [[True, False, True, False], [False, True, False, False]]
    assert x_s[0, 0] == 0 and x_s[0, 2] == 0 and x_s[1, 1] == 0
    sampled = build_sampler("threshold", obj, threshold=0.9)
    for seed in range(20):  # a drawn candidate is revealed when its probability is >= 0.9
        x_s, _ = sampled.step(threshold_input(0), torch.Generator().manual_seed(seed))
        revealed = x_s != 3
        assert bool(revealed.any(-1).all()) and not revealed[0, 1] and not revealed[0, 3]
    x_s, _ = sampled.step(threshold_input(3), torch.Generator().manual_seed(0))
    assert bool((x_s != 3).all())  # the last step reveals everything


def test_threshold_sampler_reveals_at_least_one_per_step_in_the_loop():
    result, _ = run_random(build_sampler("threshold", objective(), threshold=0.99), steps=8)
    left = (result.trajectory == RANDOM_MASK).sum(-1)
    assert bool((left[:, -1] == 0).all())
    active = left[:, :-1] > 0
    assert bool(((left[:, :-1] - left[:, 1:])[active] >= 1).all())


def test_gibbs_remasks_the_lowest_scores_with_mask_predict_counts():
    steps = 5
    result, _ = run_random(build_sampler("gibbs", objective()), steps)
    masked_left = (result.trajectory == RANDOM_MASK).sum(-1)
    expected = [18 * (steps - k) // steps for k in range(steps + 1)]  # Mask-Predict: n = N(K − k)/K
    assert masked_left[0].tolist() == expected

    sampler = GibbsSampler(DiffusionBertObjective(3, LinearSchedule(), 8))
    inp = all_masked_input([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [1.0, 0.0, 0.0]], 1, 0, 2)
    x_s, scores = sampler.step(inp, torch.Generator().manual_seed(0))
    remasked = x_s == 3
    assert int(remasked.sum()) == 2  # ⌊4 · (1 − 1/2)⌋
    assert bool(scores[remasked].max() <= scores[~remasked].min())


@pytest.mark.parametrize(
    "objective",
    [
        DiffusionBertObjective(RANDOM_MASK, LinearSchedule(), 32),
        ContinuousObjective(RANDOM_MASK, CosineSchedule()),
    ],
    ids=["discrete-linear", "continuous-cosine"],
)
def test_routing_keeps_the_schedules_expected_masked_count(objective: Objective):
    """RDM: after the step to s, ⌊N·(1 − α_s)⌋ positions stay masked, on the objective's own grid."""
    steps = 5
    sampler = build_sampler("routing", objective)
    result, _ = run_random(sampler, steps)
    masked_left = (result.trajectory == RANDOM_MASK).sum(-1)[0]
    alpha = objective.schedule.alpha
    grid = [s for _, s in sampler.timesteps(steps)]
    times = [g / 32 if isinstance(objective, DiscreteObjective) else g for g in grid]
    expected = [
        math.floor(18 * (1.0 - float(alpha(torch.tensor(t, dtype=torch.float64)))) + 1e-9) for t in times
    ]
    assert masked_left[1:].tolist() == expected
    gibbs = [18 * (steps - k) // steps for k in range(1, steps + 1)]
    assert expected != gibbs  # the count is the schedule's, not Mask-Predict's


def test_routing_sends_low_scores_back_to_noise_and_its_noise_anneals():
    inp = all_masked_input([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [1.0, 0.0, 0.0]], 1, 0, 2)
    sampler = RoutingSampler(DiffusionBertObjective(3, LinearSchedule(), 8))
    inp = dataclasses.replace(inp, t=8, s=4)
    x_s, scores = sampler.step(inp, torch.Generator().manual_seed(0))
    remasked = x_s == 3
    assert int(remasked.sum()) == 2  # ⌊4 · (1 − α_{4/8})⌋ = 2
    assert bool(scores[remasked].max() <= scores[~remasked].min())
    noisy = RoutingSampler(DiffusionBertObjective(3, LinearSchedule(), 8), choice_temperature=50.0)
    kept = {
        tuple((noisy.step(inp, torch.Generator().manual_seed(seed)).x_s == 3).tolist()[0])
        for seed in range(40)
    }
    assert len(kept) > 1  # stochastic routing: which positions stay varies with the draws
    last = dataclasses.replace(inp, index=1, t=4, s=0)  # noise scale 50 · (1 − 2/2) = 0 at the last step
    assert bool((noisy.step(last, torch.Generator().manual_seed(0)).x_s != 3).all())


# ---------------------------------------------------------------------------------------------------------
# Time grids, options and errors


def test_timesteps_walk_the_grid_from_fully_masked_to_clean():
    discrete = build_sampler("ancestral", DiffusionBertObjective(MASK, LinearSchedule(), 2048))
    pairs = discrete.timesteps(4)
    assert pairs == [(2048, 1536), (1536, 1024), (1024, 512), (512, 0)]
    assert discrete.time_input(1536) == 0.75
    assert len(discrete.timesteps(2048)) == 2048 and all(t - s == 1 for t, s in discrete.timesteps(2048))
    uneven = [t for t, _ in discrete.timesteps(3)] + [0]
    assert uneven == sorted(set(uneven), reverse=True) and uneven[0] == 2048
    continuous = build_sampler("ancestral", ContinuousObjective(MASK, LinearSchedule()))
    assert continuous.timesteps(4) == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    assert continuous.time_input(0.75) == 0.75
    assert len(continuous.timesteps(5000)) == 5000  # no T to exceed in continuous time


def test_each_objective_names_the_reverse_process_it_is_sampled_with():
    """The masked-LM baseline walks its linear schedule and RADD's time-agnostic model α_t = 1 − t; an
    objective without a reverse process (the AR baseline) is a one-line config error."""
    from diffusionbert.diffusion.autoregressive import AutoregressiveObjective

    for objective in (MaskedLMObjective(MASK), AnyOrderObjective(MASK)):
        process = objective.reverse_process()
        assert process.max_steps is None and process.masked_fraction(0.3) == pytest.approx(0.3)
    with pytest.raises(ConfigError, match=r"^objective='ar' has no reverse process to sample from$"):
        AutoregressiveObjective(MASK).reverse_process()


@pytest.mark.parametrize("steps", [0, -3, 2049])
def test_steps_out_of_range_is_a_one_line_config_error(steps: int):
    sampler = build_sampler("ancestral", DiffusionBertObjective(MASK, LinearSchedule(), 2048))
    with pytest.raises(ConfigError, match=rf"steps={steps} .*1 <= steps <= 2048") as err:
        sampler.timesteps(steps)
    assert "\n" not in str(err.value)


def test_build_sampler_rejects_unknown_names_and_options():
    obj = DiffusionBertObjective(MASK, LinearSchedule(), 8)
    with pytest.raises(
        ConfigError, match="ancestral, cached, confidence, gibbs, remdm, routing, threshold, tweedie"
    ) as err:
        build_sampler("ancestrl", obj)
    assert "did you mean 'ancestral'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no option 'threshold'"):
        build_sampler("ancestral", obj, threshold=0.5)
    with pytest.raises(ConfigError, match="top_p=0"):
        build_sampler("ancestral", obj, top_p=0)
    with pytest.raises(ConfigError, match="unmasking schedule='square'"):
        build_sampler("confidence", obj, schedule="square")


def test_sharpening_temperature_top_k_top_p():
    log_p = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]]).log_softmax(-1)
    assert Sharpening()(log_p) is log_p
    assert Sharpening(temperature=0)(log_p).exp().tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    assert (Sharpening(top_k=2)(log_p).exp() > 0).tolist() == [[True, True, False, False, False]]
    nucleus = Sharpening(top_p=0.8)(log_p).exp()  # p ≈ .64, .24, .09, .03: the first two reach 0.8
    assert (nucleus > 0).tolist() == [[True, True, False, False, False]]
    torch.testing.assert_close(nucleus[0, :2], log_p[0, :2].softmax(-1))
    hot = Sharpening(temperature=2.0)(log_p).exp()
    torch.testing.assert_close(hot, (log_p / 2).softmax(-1))
    assert hot[0, -1] == 0.0  # a forbidden id stays forbidden
