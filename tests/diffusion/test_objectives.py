import math

import pytest
import torch

from diffusionbert.diffusion.corruption import group_mass, unmask_probability
from diffusionbert.diffusion.objectives import (
    AnyOrderObjective,
    ContinuousObjective,
    DiffusionBertObjective,
    MaskedLMObjective,
    RDMObjective,
    SEDDObjective,
)
from diffusionbert.diffusion.schedules import CosineSchedule, LinearSchedule
from diffusionbert.diffusion.token_info import spindle_from_counts
from diffusionbert.errors import ConfigError
from diffusionbert.methods import DENOISE, METHODS, build_objective
from toy import LENGTH, MASK, ToyDenoiser, all_mask_patterns, exact_continuous_nelbo

COUNTS = torch.tensor([50, 5, 1, 0])


def _batch(batch=64, length=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 3, (batch, length), generator=gen)
    lengths = torch.randint(2, length + 1, (batch,), generator=gen)
    noise_mask = torch.arange(length) < lengths[:, None]
    noise_mask[:, 0] = False  # [CLS]
    return x0, noise_mask


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.sampling == DENOISE))
def test_corrupt_masks_only_noisable_positions_and_is_seeded(name):
    schedule = CosineSchedule() if name == "md4" else LinearSchedule()
    obj = build_objective(name, MASK, schedule, num_steps=16)
    x0, noise_mask = _batch()
    c = obj.corrupt(x0, noise_mask, torch.Generator().manual_seed(5))
    assert bool((c.masked <= noise_mask).all())
    assert bool((c.x_t[c.masked] == MASK).all()) and bool((c.x_t[~c.masked] == x0[~c.masked]).all())
    assert bool(((c.time >= 0) & (c.time <= 1)).all()) and c.time.shape == (x0.shape[0],)
    assert c.masked.any()
    again = obj.corrupt(x0, noise_mask, torch.Generator().manual_seed(5))
    assert torch.equal(c.x_t, again.x_t)
    logits = torch.randn(int(c.masked.sum()), MASK + 1, dtype=torch.float64)
    logits[:, MASK] = float("-inf")
    terms = obj.loss(logits, x0, c)
    assert torch.isfinite(terms.loss) and torch.isfinite(terms.nll) and terms.nll.item() > 0


def test_plain_mlm_masks_its_fixed_rate_and_is_bounded_as_the_linear_diffusion():
    obj = build_objective("mlm", MASK, CosineSchedule())  # the schedule argument is ignored
    x0, noise_mask = _batch(batch=2000, length=8)
    c = obj.corrupt(x0, noise_mask, torch.Generator().manual_seed(0))
    rate = c.masked.sum() / noise_mask.sum()
    assert rate.item() == pytest.approx(0.15, abs=0.01)
    logits = torch.randn(int(c.masked.sum()), MASK + 1, dtype=torch.float64)
    terms = obj.loss(logits, x0, c)
    expected = torch.nn.functional.cross_entropy(logits, x0[c.masked], reduction="sum")
    assert terms.loss.item() == pytest.approx(expected.item()) and terms.nll.item() == terms.loss.item()
    bound = obj.bound_objective
    assert type(bound) is ContinuousObjective and isinstance(bound.schedule, LinearSchedule)
    assert bound.bound_objective is bound
    with pytest.raises(ConfigError, match=r"mask_rate=0\.0 is not valid"):
        MaskedLMObjective(MASK, mask_rate=0.0)


def test_any_order_masks_exactly_k_with_weight_L_over_k():
    x0, noise_mask = _batch(batch=256)
    c = AnyOrderObjective(MASK).corrupt(x0, noise_mask, torch.Generator().manual_seed(0))
    k = c.masked.sum(-1)
    length = noise_mask.sum(-1)
    assert bool(((k >= 1) & (k <= length)).all())
    torch.testing.assert_close(c.weight, length.double() / k.double())
    assert set(k[length == 7].tolist()) == set(range(1, 8))  # every k is drawn


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.sampling == DENOISE))
def test_stratified_draws_cover_the_steps_or_mask_counts_of_copies_of_one_row_once_each(name):
    """A batch of copies drawn by ``corrupt_stratified`` spreads over the schedule: T copies of a T-step chain
    take each step k once, L copies of a RADD row mask each count k = 1..L once; a continuous-time family
    draws so in training too (its times one per stratum), and the others keep ``corrupt``'s own stream."""
    schedule = CosineSchedule() if name == "md4" else LinearSchedule()
    obj = build_objective(name, MASK, schedule, num_steps=16).bound_objective
    x0, noise_mask = _batch(batch=1, length=9)
    noise_mask[:] = True
    noise_mask[:, 0] = False  # L = 8 noisable tokens
    rows = 16 if isinstance(obj, DiffusionBertObjective | RDMObjective) else 8
    copies, mask = x0.expand(rows, -1), noise_mask.expand(rows, -1)
    c = obj.corrupt_stratified(copies, mask, torch.Generator().manual_seed(3))
    plain = obj.corrupt(copies, mask, torch.Generator().manual_seed(3))
    assert bool((c.masked <= mask).all()) and bool((c.x_t[c.masked] == MASK).all())
    if isinstance(obj, ContinuousObjective):
        assert torch.equal(plain.x_t, c.x_t) and torch.equal(plain.time, c.time)
        if type(obj) is ContinuousObjective:
            strata = (c.time.double() * rows).ceil().long()
            assert sorted(strata.tolist()) == list(range(1, rows + 1))
        return
    if isinstance(obj, AnyOrderObjective):
        assert sorted(c.masked.sum(-1).tolist()) == list(range(1, 9))
    else:
        assert c.step is not None and sorted(c.step.tolist()) == list(range(1, 17))
    assert not torch.equal(plain.x_t, c.x_t)


def test_any_order_expectation_equals_continuous_nelbo_of_time_agnostic_model():
    """RADD's identity: E_k E_S[(L/k) Σ CE] = ∫ (1/t) E_q Σ CE dt for α_t = 1 − t (exact enumeration)."""
    model = ToyDenoiser(seed=4)
    x0 = torch.tensor([0, 2, 1])
    expected = 0.0
    for pattern in all_mask_patterns():
        k = int(pattern.sum())
        if k == 0:
            continue
        x_t = torch.where(pattern, MASK, x0)[None]
        log_p = torch.log_softmax(model.logits(x_t, torch.zeros(1))[0], -1)
        ce = -log_p[pattern].gather(-1, x0[pattern][:, None]).sum().item()
        expected += (1 / LENGTH) / math.comb(LENGTH, k) * (LENGTH / k) * ce
    assert expected == pytest.approx(exact_continuous_nelbo(model, x0), rel=1e-12)


def test_sedd_with_normalised_scores_equals_mdlm_and_rdm_nll_equals_discrete_bound():
    x0, noise_mask = _batch()
    c = SEDDObjective(MASK, LinearSchedule()).corrupt(x0, noise_mask, torch.Generator().manual_seed(1))
    logits = torch.log_softmax(torch.randn(int(c.masked.sum()), MASK + 1, dtype=torch.float64), -1)
    mdlm = ContinuousObjective(MASK, LinearSchedule()).loss(logits, x0, c)
    torch.testing.assert_close(SEDDObjective(MASK, LinearSchedule()).loss(logits, x0, c).nll, mdlm.nll)

    rdm = RDMObjective(MASK, LinearSchedule(), num_steps=32)
    d3pm = DiffusionBertObjective(MASK, LinearSchedule(), num_steps=32, hybrid_weight=0.0)
    c = rdm.corrupt(x0, noise_mask, torch.Generator().manual_seed(2))
    logits = torch.randn(int(c.masked.sum()), MASK + 1, dtype=torch.float64)
    torch.testing.assert_close(rdm.loss(logits, x0, c).nll, d3pm.loss(logits, x0, c).nll)
    assert not torch.allclose(rdm.loss(logits, x0, c).loss, rdm.loss(logits, x0, c).nll)


def test_objective_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"objective='mdml'.*did you mean 'mdlm'"):
        build_objective("mdml", MASK, LinearSchedule())
    spindle = spindle_from_counts(LinearSchedule(), COUNTS)
    with pytest.raises(ConfigError, match=r"objective='mdlm' needs a token-independent schedule"):
        build_objective("mdlm", MASK, spindle)
    with pytest.raises(ConfigError, match=r"objective='rdm' needs a token-independent schedule"):
        build_objective("rdm", MASK, spindle)
    with pytest.raises(ConfigError, match=r"num_steps=0"):
        build_objective("diffusionbert", MASK, LinearSchedule(), num_steps=0)


@pytest.mark.parametrize(
    ("form", "centering"), [("reference", "sentence"), ("paper", "sentence"), ("reference", "corpus")]
)
def test_spindle_reverse_rule_per_group_is_the_per_token_rule(form, centering):
    """u computed once per distinct token value and indexed per token is bit for bit the per-token rule."""
    counts = torch.tensor([50, 5, 5, 1, 50, 0])  # ties: 4 distinct values among 6 ids ([MASK] = 5)
    schedule = spindle_from_counts(LinearSchedule(), counts, form, 0.2, centering=centering)
    obj = DiffusionBertObjective(5, schedule, num_steps=16)
    groups = obj.token_groups()
    assert int(groups.max()) + 1 == 4
    x_t = torch.tensor([[5, 0, 5, 3], [1, 5, 5, 5]])
    noise = torch.ones_like(x_t, dtype=torch.bool)
    masked = x_t == 5
    rows = masked.nonzero()[:, 0]
    log_p = torch.randn(int(masked.sum()), 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_p[:, 5] = float("-inf")
    log_p = log_p.log_softmax(-1)
    step = torch.tensor([9, 3])
    u = obj.reverse_unmask_probability(log_p, rows, x_t, noise, step, step - 1)

    values = schedule.token_values.to(log_p)  # the rule on every token's own value
    expected = log_p.exp() @ values if centering == "sentence" else None
    offsets = schedule.candidate_offsets(values, expected, rows, x_t, noise & ~masked)
    t, s = (step.double() / 16).unsqueeze(-1), ((step - 1).double() / 16).unsqueeze(-1)
    assert torch.equal(
        u, unmask_probability(schedule.token_alpha(s, offsets), schedule.token_alpha(t, offsets))
    )

    mass = group_mass(log_p.exp(), groups, 4)  # the sampler's route: E_pθ[a] from p_θ's mass per value
    if centering == "sentence":
        torch.testing.assert_close(obj.reverse_statistic(mass=mass), expected)
    else:
        assert obj.reverse_statistic(mass=mass) is None
