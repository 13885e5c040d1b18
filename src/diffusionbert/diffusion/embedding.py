"""Diffusion-LM (Li et al., 2022): Gaussian diffusion of learned word embeddings, scored by its full bound.

A sentence w is embedded as x = E[w] (one D-vector per token, the table learned with the network), diffused
as z_t = α_t x + σ_t ε on a T-step grid t_k = k / T of a log-SNR schedule (:mod:`.gaussian`; Diffusion-LM's
sqrt schedule), and denoised by a network that predicts x̂(z_t, t), read as x̂ = α_t z_t − σ_t f(z_t, t)
(:meth:`DiffusionLMObjective.clean_estimate`, our departure from Li et al.'s direct x_0 output). Positions that
are not noisable ([CLS], a pair's source) are given as their clean embeddings. Rounding reads
p(w | z_0) = softmax_w(z_0 · E_w).

The bound, in nats per token (the same units as the absorbing families):

    −log p(w) ≤ E_q[ −log p(w | z_0) ] + Σ_{k=1..T} E_q[ KL(q(z_{t_{k−1}} | z_{t_k}, x) ‖ p(z_{t_{k−1}} | z_{t_k})) ]
                + KL(q(z_1 | x) ‖ N(0, I)),

estimated per row with one step k ~ U{1..T} (the sum as T times that step's KL) and one ε shared by z_{t_k}
and z_0 (each term stays unbiased). Training minimises Diffusion-LM's end-to-end loss instead: the x̂ error
‖x − x̂‖² averaged over D with every step weighted alike (L_simple), plus the rounding and prior terms, which
keep the embeddings from collapsing onto each other or growing without bound.

Sampling (:func:`reverse_step`) walks z from N(0, I) down the grid with the model's own posterior step
p(z_s | z_t) = q(z_s | z_t, x = x̂), optionally *clamping* x̂ to the embedding of its most likely word first
(Diffusion-LM's clamping trick), and reads the words off z_0 by rounding.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from ..errors import ConfigError, invalid_choice
from .gaussian import SqrtSchedule, alpha_sigma, diffuse, posterior, prior_kl, step_kl
from .losses import LossTerms, cross_entropy
from .objectives import Corrupted, Objective

GAUSSIAN_SCHEDULES: dict[str, type[nn.Module]] = {"sqrt": SqrtSchedule}
"""The log-SNR schedules a Gaussian family may name in ``diffusion.schedule``."""


class EmbeddingDenoiser(Protocol):
    """What the objective and the sampler need of a network (:class:`~diffusionbert.models.EmbeddingDiffusionLM`)."""

    def embed(self, input_ids: Tensor) -> Tensor: ...

    def rounding_logits(self, z: Tensor) -> Tensor: ...

    def __call__(
        self, latents: Tensor, attention_mask: Tensor | None, t: Tensor, positions: Tensor | None
    ) -> object: ...


def gaussian_schedule(name: str) -> nn.Module:
    """The log-SNR schedule called ``name`` (one-line error naming the allowed ones)."""
    if name not in GAUSSIAN_SCHEDULES:
        raise invalid_choice("diffusion.schedule", name, GAUSSIAN_SCHEDULES)
    return GAUSSIAN_SCHEDULES[name]()


def clamp_to_embeddings(x_hat: Tensor, model: EmbeddingDenoiser) -> Tensor:
    """Diffusion-LM's clamping: each x̂ [..., D] replaced by the embedding of its most likely word."""
    return model.embed(model.rounding_logits(x_hat).argmax(-1))


def reverse_step(z_t: Tensor, x_hat: Tensor, gamma_s: Tensor, gamma_t: Tensor, noise: Tensor) -> Tensor:
    """z_s ~ p(z_s | z_t) = q(z_s | z_t, x = x̂) from standard normal ``noise`` of z_t's shape."""
    mean, variance = posterior(z_t, x_hat, gamma_s, gamma_t)
    return mean + variance.sqrt() * noise


class DiffusionLMObjective(Objective):
    """Diffusion-LM's objective on a T-step grid (see the module doc): L_simple + rounding + prior to train,
    the full variational bound as ``nll``."""

    name: ClassVar[str] = "diffusion_lm"

    def __init__(self, mask_id: int, schedule: nn.Module, num_steps: int, embedding_dim: int) -> None:
        super().__init__(mask_id)
        if num_steps < 1:
            raise ConfigError(f"diffusion.num_steps={num_steps} is not valid; allowed: num_steps >= 1")
        if embedding_dim < 1:
            raise ConfigError(f"diffusion.embedding_dim={embedding_dim} is not valid; allowed: >= 1")
        self.schedule = schedule
        self.num_steps = num_steps
        self.embedding_dim = embedding_dim

    def gamma(self, t: Tensor) -> Tensor:
        """γ(t) in float64, for times t in [0, 1] of any shape."""
        return self.schedule(t.to(torch.float64))

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        batch, length = x0.shape
        step = torch.randint(1, self.num_steps + 1, (batch,), generator=generator, device=x0.device)
        noise = torch.randn(
            (batch, length, self.embedding_dim), generator=generator, device=x0.device, dtype=torch.float32
        )
        return Corrupted(
            x_t=x0,
            noise_mask=noise_mask,
            masked=noise_mask,
            time=step.to(torch.float32) / self.num_steps,
            step=step,
            noise=noise,
        )

    def latents(self, clean: Tensor, noise_mask: Tensor, gamma: Tensor, noise: Tensor) -> Tensor:
        """z [B, L, D]: ``clean`` embeddings diffused to log-SNR ``gamma`` [B] at the noisable positions,
        kept clean elsewhere (given tokens)."""
        z = diffuse(clean, gamma.view(-1, 1, 1).to(clean.dtype), noise)
        return torch.where(noise_mask.unsqueeze(-1), z, clean)

    def terms(
        self, model: torch.nn.Module, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
    ) -> LossTerms:
        scored, step = corrupted.masked, corrupted.step
        network = getattr(model, "module", model)  # embed and round outside a data-parallel wrapper's call
        clean = network.embed(x0)  # [B, L, D]
        t = step.to(torch.float64) / self.num_steps
        gamma_t, gamma_s = self.gamma(t), self.gamma(t - 1.0 / self.num_steps)
        z_t = self.latents(clean, scored, gamma_t, corrupted.noise)
        x, noise, rows = clean[scored], corrupted.noise[scored], scored.nonzero()[:, 0]
        dtype = x.dtype
        output = model(z_t, attention_mask, t=corrupted.time, positions=scored).prediction  # [n, D]
        x_hat = self.clean_estimate(output, z_t[scored], gamma_t[rows, None].to(dtype))
        ends = self.gamma(torch.tensor([0.0, 1.0], device=x.device)).to(dtype)
        diffusion = self.num_steps * step_kl(
            x, x_hat, gamma_s[rows, None].to(dtype), gamma_t[rows, None].to(dtype)
        )
        rounding = cross_entropy(network.rounding_logits(diffuse(x, ends[0], noise)), x0[scored])
        prior = prior_kl(x, ends[1])
        simple = (x - x_hat).pow(2).mean(-1)
        return LossTerms((simple + rounding + prior).sum(), (diffusion + rounding + prior).sum())

    @staticmethod
    def clean_estimate(output: Tensor, z_t: Tensor, gamma_t: Tensor) -> Tensor:
        """x̂ = α_t z_t − σ_t f from the network's output f [n, D] (the v-parameterisation of x̂).

        For z_t = α_t x + σ_t ε this is x exactly when f = α_t ε − σ_t x, and it tends to z_t as t → 0, so an
        untrained network is not penalised by the steps near t = 0, whose bound weight SNR(s) − SNR(t) is
        largest (about 60 per step there for the sqrt schedule, times T for the one-step estimate)."""
        alpha, sigma = alpha_sigma(gamma_t)
        return alpha * z_t - sigma * output

    def reverse_grid(self, num_steps: int) -> list[float]:
        """``num_steps + 1`` decreasing times from 1 to 0 that sampling walks (K ≤ T steps)."""
        if not 1 <= num_steps <= self.num_steps:
            raise ConfigError(
                f"steps={num_steps} is not valid; allowed: 1 <= steps <= {self.num_steps} (the objective's "
                "num_steps)"
            )
        return [1.0 - k / num_steps for k in range(num_steps + 1)]
