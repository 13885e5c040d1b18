import pytest
import torch

from diffusionbert.diffusion.schedules import (
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    SpindleSchedule,
    get_schedule,
    sin_pi,
)
from diffusionbert.diffusion.token_info import spindle_from_counts
from diffusionbert.errors import ConfigError

BASES = [LinearSchedule(), CosineSchedule(), PolynomialSchedule(2.0), PolynomialSchedule(0.5)]
GRID = torch.linspace(0, 1, 4097, dtype=torch.float64)
COUNTS = torch.tensor([0, 0, 5000, 1200, 300, 40, 7, 1, 0, 90])  # a Zipf-like corpus, two unseen ids


@pytest.mark.parametrize("schedule", BASES, ids=lambda s: f"{s.name}")
def test_base_schedule_endpoints_monotone_and_derivative(schedule):
    assert schedule.alpha(torch.tensor(0.0)).item() == 1.0
    assert schedule.alpha(torch.tensor(1.0)).item() == 0.0
    alpha = schedule.alpha(GRID)
    assert bool((alpha.diff() <= 0).all())
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.alpha_derivative(t), numeric, rtol=1e-6, atol=1e-8)


def test_linear_nelbo_weight_is_one_over_t_and_discrete_grid():
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(LinearSchedule().nelbo_weight(t), 1 / t)
    steps = torch.arange(0, 9)
    torch.testing.assert_close(LinearSchedule().discrete_alpha(steps, 8), 1 - steps.double() / 8)


def test_sin_pi_is_exactly_zero_at_both_ends():
    assert sin_pi(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == [0.0, 0.0]
    assert sin_pi(torch.tensor(0.5)).item() == pytest.approx(1.0)


def test_get_schedule_unknown_name_names_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"schedule='linaer'.*did you mean 'linear'.*allowed: cosine"):
        get_schedule("linaer")
    assert get_schedule("loglinear") == LinearSchedule()


@pytest.mark.parametrize("form", ["reference", "paper"])
@pytest.mark.parametrize("centering", ["sentence", "corpus"])
@pytest.mark.parametrize("base", BASES[:3], ids=lambda s: s.name)
def test_spindle_endpoints_and_monotone_for_every_token(form, centering, base):
    spindle = spindle_from_counts(base, COUNTS, form, 0.3, centering=centering)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, len(COUNTS), (16, 12), generator=gen)
    noise_mask = torch.ones_like(x0, dtype=torch.bool)
    offsets = spindle.forward_offsets(x0, noise_mask).double()
    alpha = spindle.token_alpha(GRID.view(-1, 1, 1), offsets)  # [grid, B, L]
    assert bool((alpha[0] == 1.0).all()) and bool((alpha[-1] == 0.0).all())
    assert bool((alpha.diff(dim=0) <= 0).all())
    assert bool(((alpha >= 0) & (alpha <= 1)).all())


def test_spindle_masks_informative_tokens_first():
    spindle = spindle_from_counts(LinearSchedule(), COUNTS, "reference", 0.3)
    x0 = torch.tensor([[2, 7, 5]])  # frequent, rare, middling
    alpha = spindle.token_alpha(torch.tensor(0.5, dtype=torch.float64), spindle.forward_offsets(x0, x0 >= 0))
    assert alpha[0, 0] > alpha[0, 2] > alpha[0, 1]  # frequent kept longest, rare masked first
    paper = spindle_from_counts(LinearSchedule(), COUNTS, "paper", 0.3)
    alpha = paper.token_alpha(torch.tensor(0.5, dtype=torch.float64), paper.forward_offsets(x0, x0 >= 0))
    assert alpha[0, 0] > alpha[0, 2] > alpha[0, 1]


def test_spindle_sentence_centering_uses_only_noisable_positions():
    spindle = spindle_from_counts(LinearSchedule(), COUNTS, "reference", 0.3)
    x0 = torch.tensor([[2, 7, 5, 0]])
    noise_mask = torch.tensor([[True, True, True, False]])
    offsets = spindle.forward_offsets(x0, noise_mask)
    assert offsets[0, :3].sum().item() == pytest.approx(0.0, abs=1e-12)


def test_spindle_rejects_lambda_that_leaves_unit_interval_without_clipping():
    with pytest.raises(ConfigError, match=r"lam=1.0 makes alpha leave \[0, 1\].*clip=False"):
        spindle_from_counts(LinearSchedule(), COUNTS, "reference", 1.0, clip=False)
    spindle_from_counts(LinearSchedule(), COUNTS, "reference", 0.3, clip=False)  # λ ≤ 1/π is fine unclipped


def test_spindle_rejects_lambda_that_breaks_monotonicity():
    with pytest.raises(ConfigError, match=r"lam=1.0 makes alpha increase in t"):
        spindle_from_counts(PolynomialSchedule(0.5), COUNTS, "reference", 1.0)


def test_spindle_rejects_unknown_form_and_centering():
    values = torch.rand(5, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"spindle form='papr'.*allowed: paper, reference"):
        SpindleSchedule(LinearSchedule(), values, 0.5, form="papr")
    with pytest.raises(ConfigError, match=r"spindle centering='word'.*allowed: corpus, sentence"):
        SpindleSchedule(LinearSchedule(), values, 0.5, centering="word")
