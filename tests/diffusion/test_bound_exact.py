"""The discrete-T bound, checked by brute-force enumeration on a tiny vocabulary and length.

For a fixed toy denoiser and every clean sequence x_0 we compute, exactly:
- the objective's NELBO estimate averaged over every step and every x_t (what training estimates);
- the ELBO E_q[log q(x_{1:T} | x_0) − log p_θ(x_{0:T})] over every forward trajectory (the definition);
- −log p_θ(x_0) of the generative process the sampler runs, by dynamic programming over all states.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusionbert.diffusion.losses import d3pm_hybrid_loss
from diffusionbert.diffusion.objectives import (
    AnyOrderObjective,
    ContinuousObjective,
    DiffusionBertObjective,
    DiscreteObjective,
)
from diffusionbert.diffusion.schedules import CosineSchedule, LinearSchedule
from diffusionbert.diffusion.token_info import spindle_from_counts
from toy import (
    COUNTS,
    LENGTH,
    MASK,
    NOISE,
    ReverseChain,
    ToyDenoiser,
    all_mask_patterns,
    all_sequences,
    exact_continuous_nelbo,
)


def objective_bound(obj: DiscreteObjective, model: ToyDenoiser, x0: torch.Tensor) -> float:
    """E over k ~ U{1..T} and x_t ~ q(x_t | x_0) of the objective's NELBO estimate, summed exactly."""
    total = 0.0
    for k in range(1, obj.num_steps + 1):
        for pattern in all_mask_patterns():
            step = torch.tensor([k])
            _, alpha_t = obj.alphas(x0[None], NOISE, step)
            q = torch.where(pattern, 1.0 - alpha_t[0], alpha_t[0]).prod().item()
            if q == 0.0:
                continue
            x_t = torch.where(pattern, MASK, x0)[None]
            corrupted = obj.corrupted_at(x0[None], NOISE, step, x_t)
            logits = model.logits(x_t, corrupted.time)[corrupted.masked]
            total += q * obj.loss(logits, x0[None], corrupted).nll.item() / obj.num_steps
    return total


SCHEDULES = {
    "linear": lambda: LinearSchedule(),
    "cosine": lambda: CosineSchedule(),
    "spindle-reference-sentence": lambda: spindle_from_counts(LinearSchedule(), COUNTS, "reference", 0.3),
    "spindle-paper-sentence": lambda: spindle_from_counts(LinearSchedule(), COUNTS, "paper", 0.3),
    "spindle-paper-corpus": lambda: spindle_from_counts(
        LinearSchedule(), COUNTS, "paper", 0.2, centering="corpus"
    ),
}


@pytest.mark.parametrize("time_dependent", [False, True], ids=["time-agnostic", "time-conditioned"])
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_discrete_bound_is_exact_and_bounds_the_generative_nll(schedule_name: str, time_dependent: bool):
    obj = DiffusionBertObjective(MASK, SCHEDULES[schedule_name](), num_steps=4, hybrid_weight=0.0)
    model = ToyDenoiser(seed=1, time_dependent=time_dependent)
    chain = ReverseChain(obj, model)
    marginals = chain.marginals()
    assert sum(marginals.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(MASK not in state for state in marginals)  # the chain ends fully unmasked
    for x0 in all_sequences():
        bound = objective_bound(obj, model, x0)
        assert bound == pytest.approx(chain.brute_force_elbo(x0), rel=1e-9, abs=1e-12)
        nll = -math.log(marginals[tuple(x0.tolist())])
        assert bound >= nll - 1e-12


def test_discrete_bound_approaches_continuous_nelbo_as_T_grows():
    model = ToyDenoiser(seed=2)
    x0 = torch.tensor([1, 0, 2])
    exact = exact_continuous_nelbo(model, x0)
    gaps = []
    for T in (2, 16, 256):
        obj = DiffusionBertObjective(MASK, LinearSchedule(), num_steps=T, hybrid_weight=0.0)
        gaps.append(abs(objective_bound(obj, model, x0) - exact))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-2 * exact


def test_continuous_objective_monte_carlo_matches_exact_nelbo():
    model = ToyDenoiser(seed=3)
    x0 = torch.tensor([2, 2, 0])
    exact = exact_continuous_nelbo(model, x0)
    obj = ContinuousObjective(MASK, LinearSchedule())
    gen = torch.Generator().manual_seed(0)
    batch = 4096
    x0b = x0.expand(batch, LENGTH)
    noise = torch.ones(batch, LENGTH, dtype=torch.bool)
    estimates = []
    for _ in range(8):
        corrupted = obj.corrupt(x0b, noise, gen)
        logits = model.logits(corrupted.x_t, corrupted.time)[corrupted.masked]
        estimates.append(obj.loss(logits, x0b, corrupted).nll.item() / batch)
    mean = sum(estimates) / len(estimates)
    se = torch.tensor(estimates).std().item() / math.sqrt(len(estimates))
    assert abs(mean - exact) < 4 * se + 1e-3 * exact


@pytest.mark.parametrize("family", ["spindle", "radd"])
def test_stratified_draws_are_unbiased_and_vary_less_than_independent_ones(family: str):
    """The bound of a batch of copies of x_0 with ``corrupt_stratified`` averages to the exact bound (T-step:
    the enumeration above; RADD: the continuous NELBO it equals). For the T-step chain it varies much less
    than with ``corrupt``'s independent steps; for RADD on 3 tokens the mask count is not what varies (which
    tokens are masked is), and the two variances are within a few per cent."""
    model = ToyDenoiser(seed=5)
    x0 = torch.tensor([1, 2, 0])
    if family == "spindle":
        obj = DiffusionBertObjective(
            MASK, SCHEDULES["spindle-paper-sentence"](), num_steps=4, hybrid_weight=0.0
        )
        exact = objective_bound(obj, model, x0)
    else:
        obj = AnyOrderObjective(MASK)
        exact = exact_continuous_nelbo(model, x0)
    copies = 12
    x0b, noise = x0.expand(copies, LENGTH), torch.ones(copies, LENGTH, dtype=torch.bool)

    def estimates(corrupt) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        values = []
        for _ in range(400):
            corrupted = corrupt(x0b, noise, gen)
            logits = model.logits(corrupted.x_t, corrupted.time)[corrupted.masked]
            values.append(obj.loss(logits, x0b, corrupted).nll.item() / copies)
        return torch.tensor(values, dtype=torch.float64)

    stratified, independent = estimates(obj.corrupt_stratified), estimates(obj.corrupt)
    se = stratified.std().item() / math.sqrt(len(stratified))
    assert abs(stratified.mean().item() - exact) < 4 * se + 1e-9
    ratio = stratified.var().item() / independent.var().item()
    assert ratio < (0.7 if family == "spindle" else 1.05)


class PeekingObjective(DiffusionBertObjective):
    """The reference code's trap: a reverse step that uses x_0's own α (sentence mean included)."""

    def loss(self, logits, x0, corrupted):
        log_p = torch.log_softmax(logits, dim=-1)
        targets, u_q, _, _ = self._posterior_terms(log_p, x0, corrupted)
        rows = torch.arange(targets.shape[0])
        return d3pm_hybrid_loss(log_p, targets, u_q, u_q[:, None], rows, self.num_steps, 0.0)


def test_a_reverse_step_that_peeks_at_x0_is_not_the_bound_of_the_sampled_chain():
    spindle = SCHEDULES["spindle-reference-sentence"]()
    honest = DiffusionBertObjective(MASK, spindle, num_steps=4, hybrid_weight=0.0)
    peeking = PeekingObjective(MASK, spindle, num_steps=4, hybrid_weight=0.0)
    model = ToyDenoiser(seed=1)
    chain = ReverseChain(honest, model)  # the chain the sampler runs
    marginals = chain.marginals()
    gaps = []
    for x0 in all_sequences():
        elbo = chain.brute_force_elbo(x0)
        assert objective_bound(honest, model, x0) == pytest.approx(elbo, rel=1e-9)
        gaps.append(objective_bound(peeking, model, x0) - elbo)
        nll = -math.log(marginals[tuple(x0.tolist())])
        assert objective_bound(honest, model, x0) >= nll - 1e-12
    assert max(abs(g) for g in gaps) > 1e-3
