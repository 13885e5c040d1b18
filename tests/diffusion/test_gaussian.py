"""Gaussian diffusion core (``diffusion.gaussian``) against closed forms and quadrature, in float64.

A 1-D toy: three embeddings e = (−1, 0, 1.5), uniform. With it the Bayes-optimal denoiser x̂(z_t) = E[x | z_t]
and its squared error m(t) = E ‖x − x̂(z_t)‖² are computed by quadrature over z, so every bound term below is
a number, not a Monte-Carlo estimate.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusionbert.diffusion.gaussian import (
    LearnedSchedule,
    SqrtSchedule,
    alpha_sigma,
    continuous_diffusion_term,
    diffuse,
    gamma_and_derivative,
    gaussian_log_likelihood,
    posterior,
    prior_kl,
    snr,
    step_kl,
)
from diffusionbert.errors import ConfigError

DT = torch.float64
EMBEDDINGS = torch.tensor([-1.0, 0.0, 1.5], dtype=DT)
GRID = torch.linspace(-10.0, 10.0, 16_001, dtype=DT)  # quadrature nodes for z
DZ = float(GRID[1] - GRID[0])


class LinearGamma(torch.nn.Module):
    """γ(t) = γ_0 + (γ_1 − γ_0) t: VDM's fixed schedule, smooth in t (a test schedule)."""

    def __init__(self, gamma_0: float = -6.0, gamma_1: float = 6.0) -> None:
        super().__init__()
        self.gamma_0, self.gamma_1 = gamma_0, gamma_1

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma_0 + (self.gamma_1 - self.gamma_0) * t


def normal_pdf(z: torch.Tensor, mean: torch.Tensor | float, variance: torch.Tensor | float) -> torch.Tensor:
    return torch.exp(-((z - mean) ** 2) / (2 * variance)) / torch.sqrt(
        2 * math.pi * torch.as_tensor(variance)
    )


def bayes_denoiser(z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """E[x | z_t = z] for x uniform over EMBEDDINGS."""
    alpha, sigma = alpha_sigma(gamma)
    log_w = -((z[:, None] - alpha * EMBEDDINGS) ** 2) / (2 * sigma**2)
    return (torch.softmax(log_w, dim=-1) * EMBEDDINGS).sum(-1)


@torch.no_grad()
def bayes_error(gamma: torch.Tensor) -> torch.Tensor:
    """m = E_{x, z_t} (x − x̂(z_t))² by quadrature over z, for the Bayes-optimal denoiser."""
    alpha, sigma = alpha_sigma(gamma)
    x_hat = bayes_denoiser(GRID, gamma)
    total = torch.zeros((), dtype=DT)
    for e in EMBEDDINGS:
        density = normal_pdf(GRID, alpha * e, sigma**2)
        total = total + (density * (e - x_hat) ** 2).sum() * DZ / len(EMBEDDINGS)
    return total


@torch.no_grad()
def discrete_term(schedule: torch.nn.Module, steps: int) -> float:
    """Σ_i ½ (SNR(s_i) − SNR(t_i)) m(t_i) on the uniform T-step grid: the exact T-step diffusion term of the
    Bayes-optimal denoiser (step_kl's weight times the expected squared error)."""
    gammas = schedule(torch.linspace(0, 1, steps + 1, dtype=DT))
    total = 0.0
    for i in range(steps):
        weight = 2 * step_kl(torch.ones(1, dtype=DT), torch.zeros(1, dtype=DT), gammas[i], gammas[i + 1])
        total += float(weight * bayes_error(gammas[i + 1])) / 2
    return total


@torch.no_grad()
def continuous_term(schedule: torch.nn.Module, nodes: int = 1001) -> float:
    """½ ∫ m d SNR from SNR(1) to SNR(0) (= ½ ∫₀¹ γ' e^{−γ} m dt), trapezoid in log SNR."""
    gammas = schedule(torch.tensor([0.0, 1.0], dtype=DT))
    log_snr = torch.linspace(float(-gammas[1]), float(-gammas[0]), nodes, dtype=DT)
    integrand = torch.stack([bayes_error(-v) for v in log_snr]) * log_snr.exp()  # m · dSNR/dlogSNR
    return float(0.5 * torch.trapezoid(integrand, log_snr))


# ----------------------------------------------------------------------------------------- closed forms


def test_alpha_sigma_preserve_variance_and_snr_is_exp_minus_gamma() -> None:
    gamma = torch.linspace(-10, 10, 21, dtype=DT)
    alpha, sigma = alpha_sigma(gamma)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(gamma))
    assert torch.allclose(alpha**2 / sigma**2, snr(gamma)) and torch.allclose(snr(gamma), torch.exp(-gamma))


def test_diffuse_draws_have_the_forward_moments() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.full((200_000, 1), 1.5, dtype=DT)
    gamma = torch.tensor(0.3, dtype=DT)
    z = diffuse(x, gamma, torch.randn(x.shape, generator=generator, dtype=DT))
    alpha, sigma = alpha_sigma(gamma)
    assert abs(float(z.mean()) - float(alpha * 1.5)) < 4 * float(sigma) / math.sqrt(len(z))
    assert abs(float(z.var()) - float(sigma**2)) < 0.01


@pytest.mark.parametrize(("gamma_s", "gamma_t"), [(-3.0, -1.0), (-0.5, 2.0), (1.0, 1.0001)])
def test_posterior_is_the_bayes_update_of_the_forward_process(gamma_s: float, gamma_t: float) -> None:
    """q(z_s | z_t, x) ∝ q(z_t | z_s) q(z_s | x), its mean and variance by quadrature over z_s."""
    gs, gt = torch.tensor(gamma_s, dtype=DT), torch.tensor(gamma_t, dtype=DT)
    (alpha_s, sigma_s), (alpha_t, sigma_t) = alpha_sigma(gs), alpha_sigma(gt)
    x, z_t = torch.tensor(1.5, dtype=DT), torch.tensor(0.4, dtype=DT)
    alpha_ts = alpha_t / alpha_s
    sigma2_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
    mean, variance = posterior(z_t, x, gs, gt)
    if gamma_t - gamma_s < 1e-3:  # too narrow for a grid: the closed form against its own definition
        assert torch.allclose(variance, sigma2_ts * sigma_s**2 / sigma_t**2, rtol=1e-6)
        return
    density = normal_pdf(z_t, alpha_ts * GRID, sigma2_ts) * normal_pdf(GRID, alpha_s * x, sigma_s**2)
    density = density / density.sum()
    numeric_mean = (density * GRID).sum()
    assert float(mean) == pytest.approx(float(numeric_mean), abs=1e-7)
    assert float(variance) == pytest.approx(float((density * (GRID - numeric_mean) ** 2).sum()), rel=1e-5)


def test_step_kl_is_the_kl_of_the_two_posteriors_for_any_z_t() -> None:
    gs, gt = torch.tensor(-1.2, dtype=DT), torch.tensor(0.7, dtype=DT)
    x = torch.tensor([[0.3, -1.0, 2.0]], dtype=DT)
    x_hat = torch.tensor([[0.1, -0.5, 1.0]], dtype=DT)
    for z_t in (torch.zeros_like(x), torch.tensor([[1.0, 2.0, -3.0]], dtype=DT)):
        mean_q, variance = posterior(z_t, x, gs, gt)
        mean_p, _ = posterior(z_t, x_hat, gs, gt)
        closed = 0.5 * ((mean_q - mean_p) ** 2 / variance).sum(-1)  # equal variances: the mean term only
        assert torch.allclose(step_kl(x, x_hat, gs, gt), closed, rtol=1e-10)


def test_prior_kl_by_quadrature() -> None:
    gamma_1 = torch.tensor(1.5, dtype=DT)
    alpha, sigma = alpha_sigma(gamma_1)
    for x in (0.0, 1.5, -2.0):
        q = normal_pdf(GRID, alpha * x, sigma**2)
        numeric = (q * (torch.log(q.clamp_min(1e-300)) - torch.log(normal_pdf(GRID, 0.0, 1.0)))).sum() * DZ
        assert float(prior_kl(torch.tensor([[x]], dtype=DT), gamma_1)) == pytest.approx(
            float(numeric), rel=1e-6
        )


def test_gaussian_log_likelihood_is_the_normal_log_density() -> None:
    z = torch.tensor([[0.3, -1.0]], dtype=DT)
    expected = torch.log(normal_pdf(z, 0.5, 2.0)).sum(-1)
    assert torch.allclose(
        gaussian_log_likelihood(z, torch.full_like(z, 0.5), torch.tensor(2.0, dtype=DT)), expected
    )


# ------------------------------------------------------------------------------------------- schedules


def test_sqrt_schedule_is_diffusion_lms_alpha_bar_and_its_derivative_by_autograd() -> None:
    schedule = SqrtSchedule()
    t = torch.linspace(0, 1, 11, dtype=DT)
    gamma, derivative = gamma_and_derivative(schedule, t)
    u = 1e-4 + (1 - 2e-4) * t
    assert torch.allclose(alpha_sigma(gamma)[0] ** 2, 1 - u.sqrt())  # ᾱ(t) = 1 − √u
    analytic = (1 - 2e-4) / (2 * u.sqrt()) * (1 / u.sqrt() + 1 / (1 - u.sqrt()))  # d/dt log(√u / (1 − √u))
    assert torch.allclose(derivative, analytic, rtol=1e-8)
    assert bool((gamma.diff() > 0).all()) and float(gamma[-1].detach()) == pytest.approx(9.9, abs=0.05)
    with pytest.raises(ConfigError, match=r"offset=0\.6"):
        SqrtSchedule(0.6)


def test_learned_schedule_hits_its_ends_and_stays_monotone_while_it_trains() -> None:
    torch.manual_seed(0)
    schedule = LearnedSchedule(gamma_0=-6.0, gamma_1=4.0, hidden=16).double()
    t = torch.linspace(0, 1, 201, dtype=DT)
    ends = schedule(torch.tensor([0.0, 1.0], dtype=DT))
    assert torch.allclose(ends, torch.tensor([-6.0, 4.0], dtype=DT))
    optimizer = torch.optim.Adam(schedule.parameters(), lr=0.05)
    target = 8 * torch.sin(6 * t)  # a non-monotone target: the fit bends, but γ stays increasing
    first = float((schedule(t) - target).pow(2).mean().detach())
    for _ in range(30):
        loss = (schedule(t) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        gamma, derivative = gamma_and_derivative(schedule, t)
        assert bool((gamma.diff() > 0).all()) and bool((derivative > 0).all())
    assert float(loss.detach()) < 0.9 * first  # it did train
    with pytest.raises(ConfigError, match="gamma_1 > gamma_0"):
        LearnedSchedule(gamma_0=1.0, gamma_1=1.0)


# ---------------------------------------------------------------------- the diffusion term of a toy


def test_discrete_term_decreases_to_the_continuous_term_as_steps_grow() -> None:
    """VDM: for a fixed denoiser the T-step diffusion term decreases with T towards the continuous one, its
    excess falling like 1/T. The continuous term is also ½ ∫ mmse d SNR = I(x; z_{t=0}) − I(x; z_{t=1}) (the
    I-MMSE relation), ≈ H(x) = log 3 when the ends are nearly clean and nearly pure noise."""
    schedule = LinearGamma()
    continuous = continuous_term(schedule)
    assert continuous == pytest.approx(math.log(3), abs=0.01)
    terms = [discrete_term(schedule, steps) for steps in (40, 160, 640)]  # measured: 1.280, 1.140, 1.108
    assert terms[0] > terms[1] > terms[2] > continuous
    excess = [term - continuous for term in terms]
    assert excess[2] < 0.015 * continuous
    assert 3.5 < excess[0] / excess[1] < 5 and 3.5 < excess[1] / excess[2] < 5  # 4× the steps, ~ ¼ the excess


def test_the_continuous_estimator_is_unbiased() -> None:
    """The mean of continuous_diffusion_term over t ~ U(0, 1), with the exact expected error at each t,
    is the continuous term (by stratified draws, to keep the check tight)."""
    schedule = LinearGamma()
    t = (torch.arange(1000, dtype=DT) + 0.5) / 1000
    gamma, derivative = (v.detach() for v in gamma_and_derivative(schedule, t))
    errors = torch.stack([bayes_error(g) for g in gamma])
    one = torch.ones(len(t), 1, dtype=DT)
    draws = continuous_diffusion_term(one, one - errors.sqrt()[:, None], gamma[:, None], derivative[:, None])
    assert float(draws.mean()) == pytest.approx(continuous_term(schedule), rel=2e-3)


def test_the_bound_of_the_bayes_optimal_toy_model_is_above_and_near_its_entropy() -> None:
    """−log p(w) ≤ prior + diffusion + reconstruction; the data are uniform over 3 embeddings, so the exact
    NLL is log 3. With the Bayes-optimal denoiser, the exact reconstruction p(w | z_0) ∝ N(z_0; α_0 e_w, σ_0²)
    and a schedule from SNR e^{10} to e^{-10}, the bound is within a few hundredths of a nat of it; half or
    twice the diffusion term would be off by about log 3 / 2."""
    schedule = LearnedSchedule(gamma_0=-10.0, gamma_1=10.0, hidden=8).double()
    with torch.no_grad():
        diffusion = continuous_term(schedule)
        gamma_0, gamma_1 = schedule(torch.tensor([0.0, 1.0], dtype=DT))
        prior = float(prior_kl(EMBEDDINGS[:, None], gamma_1).mean())
        alpha, sigma = alpha_sigma(gamma_0)
        reconstruction = 0.0
        for w, e in enumerate(EMBEDDINGS):
            z = alpha * e + sigma * torch.linspace(-8, 8, 4001, dtype=DT)
            log_p = torch.log_softmax(-((z[:, None] - alpha * EMBEDDINGS) ** 2) / (2 * sigma**2), -1)[:, w]
            weights = normal_pdf(z, alpha * e, sigma**2)
            reconstruction += float(-(weights * log_p).sum() / weights.sum()) / len(EMBEDDINGS)
    bound = prior + diffusion + reconstruction
    assert math.log(3) <= bound < math.log(3) + 0.05
    assert abs(diffusion - math.log(3)) < 0.05 and prior < 1e-3 and reconstruction < 1e-3
