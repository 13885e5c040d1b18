"""ReMDM (``remdm``): its chain against enumeration, the forward marginal it keeps, its options and errors.

The enumeration is ReMDM's own reverse chain on the toy problem of ``toy.py``: per position, a masked token is
revealed with probability r = (α_s − (1 − σ)·α_t)/(1 − α_t) as v ∝ p_θ(v | x_t), a revealed one returns to
[MASK] with probability σ, and a state with nothing masked is final (the loop stops it). Tolerances as in
``test_samplers.py`` (chi-square p > 1e-3, total variation < 0.03 for 20k samples); seeds are fixed.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_samplers import exact_probs, fit, run_toy

from diffusionbert.diffusion.objectives import ContinuousObjective, DiffusionBertObjective, Objective
from diffusionbert.diffusion.schedules import CosineSchedule, LinearSchedule
from diffusionbert.diffusion.token_info import spindle_from_counts
from diffusionbert.errors import ConfigError
from diffusionbert.sampling.samplers import RemaskingSampler, build_sampler
from diffusionbert.sampling.step import StepInput
from toy import COUNTS, LENGTH, MASK, VOCAB, ToyDenoiser

STEPS = 4


def remdm_marginals(sampler: RemaskingSampler, toy: ToyDenoiser, steps: int) -> torch.Tensor:
    """p(x_0) of the ReMDM chain over the V^L sequences (base-V codes), by enumerating every state."""
    dist = {(MASK,) * LENGTH: 1.0}
    for index, (t, s) in enumerate(sampler.timesteps(steps)):
        last = index == steps - 1
        reveal = 1.0 if last else sampler.reveal_probability(t, s)
        sigma = 0.0 if last else sampler.remask_probability(t, s)
        nxt: dict[tuple[int, ...], float] = {}
        for state, p in dist.items():
            if MASK not in state:  # nothing masked: the loop has stopped this row
                nxt[state] = nxt.get(state, 0.0) + p
                continue
            time = torch.tensor([sampler.time_input(t)])
            probs = torch.softmax(toy.logits(torch.tensor(state)[None], time)[0], dim=-1)
            options = []
            for i, token in enumerate(state):
                if token == MASK:
                    options.append(
                        [(MASK, 1.0 - reveal)] + [(v, reveal * probs[i, v].item()) for v in range(VOCAB)]
                    )
                else:
                    options.append([(token, 1.0 - sigma), (MASK, sigma)])
            for choice in itertools.product(*options):
                q = math.prod(w for _, w in choice)
                if q > 0.0:
                    key = tuple(v for v, _ in choice)
                    nxt[key] = nxt.get(key, 0.0) + p * q
        dist = nxt
    out = torch.zeros(VOCAB**LENGTH, dtype=torch.float64)
    for state, p in dist.items():
        assert MASK not in state
        out[sum(v * VOCAB ** (LENGTH - 1 - i) for i, v in enumerate(state))] += p
    return out


@pytest.mark.parametrize(
    ("objective", "options"),
    [
        (DiffusionBertObjective(MASK, LinearSchedule(), STEPS), {"eta": 0.5, "strategy": "rescale"}),
        (ContinuousObjective(MASK, CosineSchedule()), {"eta": 0.3, "strategy": "cap"}),
    ],
    ids=["discrete-rescale", "continuous-cosine-cap"],
)
def test_remdm_samples_its_enumerated_chain(objective: Objective, options: dict):
    toy = ToyDenoiser(seed=3, time_dependent=True)
    sampler = build_sampler("remdm", objective, **options)
    assert isinstance(sampler, RemaskingSampler)
    exact = remdm_marginals(sampler, toy, STEPS)
    assert math.isclose(float(exact.sum()), 1.0, rel_tol=1e-9)
    p_value, tv = fit(run_toy(sampler, toy, STEPS).tokens, exact)
    assert p_value > 1e-3 and tv < 0.03
    # re-masking changes the law: the same chain with σ = 0 is measurably another distribution
    plain = remdm_marginals(build_sampler("remdm", objective, eta=0.0), toy, STEPS)
    assert 0.5 * float((plain - exact).abs().sum()) > 0.05


def test_remdm_with_eta_zero_is_the_ancestral_chain():
    toy = ToyDenoiser(seed=1, time_dependent=True)
    objective = DiffusionBertObjective(MASK, LinearSchedule(), STEPS)
    exact = exact_probs(objective, toy)
    enumerated = remdm_marginals(build_sampler("remdm", objective, eta=0.0), toy, STEPS)
    assert torch.allclose(enumerated, exact, atol=1e-12)


@pytest.mark.parametrize("strategy", ["cap", "rescale"])
@pytest.mark.parametrize(("t", "s"), [(0.9, 0.6), (0.5, 0.45), (0.2, 0.0)])
def test_a_remdm_step_from_the_forward_marginal_keeps_it(strategy: str, t: float, s: float):
    """With the exact x_0 as the prediction and x_t ~ q(x_t | x_0), a position is masked at s with probability
    1 − α_s, for every σ the strategy picks (ReMDM's design); revealed tokens are x_0's."""
    objective = ContinuousObjective(MASK, CosineSchedule())
    sampler = RemaskingSampler(objective, eta=0.4, strategy=strategy)
    rows, length = 4000, 8
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, VOCAB, (rows, length), generator=gen)
    alpha = objective.schedule.alpha
    alpha_t, alpha_s = (float(alpha(torch.tensor(v, dtype=torch.float64))) for v in (t, s))
    masked = torch.rand(rows, length, generator=gen, dtype=torch.float64) >= alpha_t
    masked[:, 0] = True  # every row still decoding (a masked-free row would be left alone)
    x_t = x0.masked_fill(masked, MASK)
    logits = torch.full((int(masked.sum()), VOCAB + 1), -30.0, dtype=torch.float64)
    logits[torch.arange(len(logits)), x0[masked]] = 0.0
    logits[:, MASK] = float("-inf")
    everywhere = torch.ones(rows, length, dtype=torch.bool)
    inp = StepInput(
        logits, x_t, masked, everywhere, everywhere, torch.zeros(rows, length, dtype=torch.float64),
        t, s, 0 if s > 0 else 1, 2,
    )  # fmt: skip
    x_s = sampler.step(inp, torch.Generator().manual_seed(1)).x_s
    now = x_s == MASK
    assert bool((x_s[~now] == x0[~now]).all())
    free = torch.ones_like(masked)
    free[:, 0] = False  # position 0 was forced masked: measure the others
    fraction = float(now[free].double().mean())
    assert abs(fraction - (1.0 - alpha_s)) < 5 * math.sqrt(alpha_s * (1 - alpha_s) / int(free.sum())) + 1e-12
    remasked = float((now & ~masked)[free].sum() / (~masked)[free].sum())
    sigma = sampler.remask_probability(t, s) if s > 0 else 0.0
    assert abs(remasked - sigma) < 5 * math.sqrt(max(sigma * (1 - sigma), 1e-4) / int((~masked)[free].sum()))
    if s > 0 and t - s > 0.2:
        assert sigma == pytest.approx(0.4 if strategy == "cap" else 0.4 * min(1.0, (1 - alpha_s) / alpha_t))


def test_remdm_options_and_spindle_are_one_line_errors():
    objective = DiffusionBertObjective(MASK, LinearSchedule(), STEPS)
    with pytest.raises(ConfigError, match=r"^eta=1.5 is not valid; allowed: 0 <= eta <= 1$"):
        build_sampler("remdm", objective, eta=1.5)
    with pytest.raises(ConfigError, match="remasking strategy"):
        build_sampler("remdm", objective, strategy="loop")
    spindle = DiffusionBertObjective(MASK, spindle_from_counts(LinearSchedule(), COUNTS, "reference", 0.3), 8)
    with pytest.raises(ConfigError, match="needs a token-independent schedule"):
        build_sampler("remdm", spindle)
    assert RemaskingSampler.unsuitable(spindle) is not None
    assert RemaskingSampler.unsuitable(objective) is None
