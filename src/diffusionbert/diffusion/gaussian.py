"""Gaussian diffusion of continuous vectors (word embeddings), the core of Diffusion-LM and Plaid.

Conventions (VDM, Kingma et al. 2021). A noise schedule is the *log-SNR schedule* γ(t) = −log SNR(t),
increasing on t ∈ [0, 1]; the process is variance preserving:

    α_t² = sigmoid(−γ(t)),   σ_t² = sigmoid(γ(t)),   SNR(t) = α_t² / σ_t² = exp(−γ(t)),
    q(z_t | x) = N(α_t x, σ_t² I).

For s < t, z_t given z_s is N(α_{t|s} z_s, σ_{t|s}² I) with α_{t|s} = α_t / α_s and
σ_{t|s}² = σ_t² − α_{t|s}² σ_s², and the posterior q(z_s | z_t, x) is Gaussian (:func:`posterior`). A denoiser
that predicts x̂(z_t, t) defines p(z_s | z_t) = q(z_s | z_t, x = x̂), so each step of the bound is a KL between
two Gaussians of the same variance (:func:`step_kl`):

    KL(q(z_s | z_t, x) ‖ p(z_s | z_t)) = ½ (SNR(s) − SNR(t)) ‖x − x̂‖².

Summed over the T steps of a grid 0 = t_0 < … < t_T = 1 this is the discrete-time diffusion term; as T → ∞
it tends to the continuous-time term ½ ∫ γ'(t) exp(−γ(t)) ‖x − x̂‖² dt
(:func:`continuous_diffusion_term`, one Monte-Carlo draw of t per call). With the prior term
KL(q(z_1 | x) ‖ N(0, I)) (:func:`prior_kl`) and a family's reconstruction term −log p(w | z_0), the sum bounds
−log p(w) in nats, per embedded token.

Schedules: :class:`SqrtSchedule` (Diffusion-LM's ᾱ(t) = 1 − √(t + s)) and :class:`LearnedSchedule` (VDM's
monotone network with learned end points, as Plaid learns its schedule). All functions here are pure tensor
math; γ arguments broadcast against the vectors' leading dimensions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(α, σ) of a log-SNR value γ: α² = sigmoid(−γ), σ² = sigmoid(γ)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def snr(gamma: Tensor) -> Tensor:
    """The signal-to-noise ratio α² / σ² = exp(−γ)."""
    return torch.exp(-gamma)


def diffuse(x: Tensor, gamma: Tensor, noise: Tensor) -> Tensor:
    """A draw of z_t ~ q(z_t | x) = N(α_t x, σ_t² I) from standard normal ``noise`` of x's shape; ``gamma``
    broadcasts over x's last dimension (shape [..., 1] or a scalar)."""
    alpha, sigma = alpha_sigma(gamma)
    return alpha * x + sigma * noise


def posterior(z_t: Tensor, x: Tensor, gamma_s: Tensor, gamma_t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(z_s | z_t, x) for s < t (γ_s < γ_t):

    mean = α_{t|s} σ_s² / σ_t² · z_t + α_s σ_{t|s}² / σ_t² · x,   variance = σ_{t|s}² σ_s² / σ_t².

    σ_{t|s}² is computed as σ_t² · (−expm1(γ_s − γ_t)), which is exact and keeps its precision when s → t.
    """
    alpha_s, sigma_s = alpha_sigma(gamma_s)
    alpha_t, sigma_t = alpha_sigma(gamma_t)
    alpha_ts = alpha_t / alpha_s
    sigma2_ts = sigma_t**2 * -torch.expm1(gamma_s - gamma_t)
    mean = alpha_ts * sigma_s**2 / sigma_t**2 * z_t + alpha_s * sigma2_ts / sigma_t**2 * x
    return mean, sigma2_ts * sigma_s**2 / sigma_t**2


def step_kl(x: Tensor, x_hat: Tensor, gamma_s: Tensor, gamma_t: Tensor) -> Tensor:
    """KL(q(z_s | z_t, x) ‖ q(z_s | z_t, x̂)) = ½ (SNR(s) − SNR(t)) ‖x − x̂‖², summed over the last dimension
    (nats). Independent of z_t: both posteriors share their variance and their z_t coefficient."""
    weight = snr(gamma_t) * torch.expm1(gamma_t - gamma_s)  # SNR(s) − SNR(t), without cancellation
    return 0.5 * weight.squeeze(-1) * (x - x_hat).pow(2).sum(-1)


def continuous_diffusion_term(x: Tensor, x_hat: Tensor, gamma_t: Tensor, dgamma_dt: Tensor) -> Tensor:
    """One-draw estimate of the continuous-time diffusion term ½ ∫₀¹ γ'(t) exp(−γ(t)) ‖x − x̂(z_t)‖² dt, for
    t ~ U(0, 1) drawn by the caller (``gamma_t`` = γ(t), ``dgamma_dt`` = γ'(t)); summed over the last
    dimension. Unbiased for the integral, the T → ∞ limit of the sum of :func:`step_kl` over a T-step grid."""
    return 0.5 * (dgamma_dt * snr(gamma_t)).squeeze(-1) * (x - x_hat).pow(2).sum(-1)


def prior_kl(x: Tensor, gamma_1: Tensor) -> Tensor:
    """KL(q(z_1 | x) ‖ N(0, I)) = ½ Σ (σ_1² + α_1² x² − 1 − log σ_1²), summed over the last dimension (nats)."""
    alpha, sigma = alpha_sigma(gamma_1)
    variance = sigma**2
    return 0.5 * (variance + alpha**2 * x.pow(2) - 1.0 - torch.log(variance)).sum(-1)


def gaussian_log_likelihood(z: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    """log N(z; mean, variance · I), summed over the last dimension (nats)."""
    return -0.5 * ((z - mean).pow(2) / variance + torch.log(2 * math.pi * variance)).sum(-1)


# ------------------------------------------------------------------------------------------ schedules


class SqrtSchedule(nn.Module):
    """Diffusion-LM's schedule ᾱ(t) = α_t² = 1 − √u with u = s + (1 − 2s) t, s = 1e-4: noise grows fast at
    the start, so a rounding-sensitive embedding is corrupted early. Li et al. define it on a T-step grid
    (u = t + s) and clip β at 0.999 near t = 1; mapping t onto u ∈ [s, 1 − s] instead keeps γ finite on all
    of [0, 1] (γ(1) ≈ 9.9, SNR(1) ≈ 5e-5)."""

    def __init__(self, offset: float = 1e-4) -> None:
        super().__init__()
        if not 0 < offset < 0.5:
            raise ConfigError(f"sqrt schedule offset={offset} is not valid; allowed: 0 < offset < 0.5")
        self.offset = offset

    def forward(self, t: Tensor) -> Tensor:
        """γ(t) = log(σ² / α²) = log(√u / (1 − √u))."""
        root = (self.offset + (1 - 2 * self.offset) * t).sqrt()
        return torch.log(root) - torch.log1p(-root)


class _PositiveLinear(nn.Linear):
    """A linear layer whose weights are kept positive (softplus), so that it is increasing in its input."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.softplus(self.weight), self.bias)


class LearnedSchedule(nn.Module):
    """A learned monotone log-SNR schedule (VDM): γ(t) = γ_0 + (γ_1 − γ_0) · g̃(t), where
    g̃(t) = (g(t) − g(0)) / (g(1) − g(0)) and g(t) = l₁(t) + l₃(sigmoid(l₂(l₁(t)))) with positive weights, so
    g is increasing and γ runs from γ_0 to γ_1 > γ_0 (end points learned too, γ_1 − γ_0 kept positive)."""

    def __init__(self, gamma_0: float = -10.0, gamma_1: float = 10.0, hidden: int = 1024) -> None:
        super().__init__()
        if not gamma_1 > gamma_0:
            raise ConfigError(
                f"learned schedule end points gamma_0={gamma_0}, gamma_1={gamma_1}; allowed: gamma_1 > gamma_0"
            )
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_0)))
        self.log_range = nn.Parameter(torch.tensor(math.log(gamma_1 - gamma_0)))
        self.l1 = _PositiveLinear(1, 1)
        self.l2 = _PositiveLinear(1, hidden)
        self.l3 = _PositiveLinear(hidden, 1, bias=False)

    def _g(self, t: Tensor) -> Tensor:
        h = self.l1(t[..., None])
        return (h + self.l3(torch.sigmoid(self.l2(h))))[..., 0]

    def forward(self, t: Tensor) -> Tensor:
        ends = self._g(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        shape = (self._g(t) - ends[0]) / (ends[1] - ends[0])
        return self.gamma_0 + self.log_range.exp() * shape


def gamma_and_derivative(schedule: nn.Module, t: Tensor) -> tuple[Tensor, Tensor]:
    """γ(t) and γ'(t) of any schedule module, the derivative by autograd (the schedule's own parameters keep
    their gradients, so a learned schedule trains through the continuous-time term)."""
    with torch.enable_grad():
        t = t.detach().requires_grad_(True)
        gamma = schedule(t)
        (derivative,) = torch.autograd.grad(gamma.sum(), t, create_graph=True)
    return gamma, derivative
