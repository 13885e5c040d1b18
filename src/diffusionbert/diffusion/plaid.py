"""Plaid (Gulrajani & Hashimoto, 2023): embedding diffusion trained for likelihood, in continuous time.

What Plaid adds to the Gaussian core (:mod:`.gaussian`, :mod:`.embedding`), as done here:

* **the continuous-time VDM bound**, trained directly (the loss *is* the bound):

      −log p(w) ≤ ½ E_{t ~ U(0, 1)}[ γ'(t) e^{−γ(t)} ‖x − x̂(z_t)‖² ] + KL(q(z_1 | x) ‖ N(0, I)) − E[log p(w | z_0)],

  with one t per row on an antithetic grid (as MDLM draws its times) and one ε per row;
* **a learned noise schedule**: the model's monotone γ(t) (:class:`~.gaussian.LearnedSchedule`), whose end
  points γ(0), γ(1) trade the rounding and prior terms against the diffusion term and are learned through the
  bound. (Its shape leaves the continuous-time bound unchanged in expectation; Plaid and VDM also train it to
  lower the estimator's variance, which is not done here.)
* **categorical reparameterisation**: the network outputs logits over the words; x̂ is the embedding average
  under their softmax, Σ_w p(w | z_t) E_w, so x̂ always lies in the embeddings' convex hull;
* **the output prior**: the logits are added to log N(z_t; α_t E_w, σ_t² I), the likelihood of z_t under each
  word, so that at low noise, where z_t already says which word it is, x̂ is right without the network;
* **self-conditioning**: the network also reads an earlier x̂. Training feeds it on a coin flip per batch
  (x̂ of a first pass without gradient at the same z_t, else zeros); the bound is that of the two-pass
  denoiser (evaluation always feeds it), and sampling feeds the previous step's x̂, as Plaid does;
* **rounding** p(w | z_0) ∝ N(z_0; α_0 E_w, σ_0² I) (VDM's decoder, uniform over words).

Departures at this scale, beyond the schedule's variance training: a pre-trained BERT encoder instead of
Plaid's own transformer, D = 16 embeddings initialised from it, and no low-discrepancy sampler tricks beyond
the antithetic time grid.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .corruption import stratified_uniform
from .embedding import EmbeddingDenoiser, EmbeddingObjective, unwrapped
from .gaussian import (
    alpha_sigma,
    continuous_diffusion_term,
    diffuse,
    gamma_and_derivative,
    prior_kl,
)
from .losses import LossTerms
from .objectives import Corrupted


class PlaidObjective(EmbeddingObjective):
    """Plaid's continuous-time bound with a learned schedule, categorical x̂ and self-conditioning."""

    name: ClassVar[str] = "plaid"
    self_condition_rate: ClassVar[float] = 0.5  # share of training batches shown a first pass's x̂

    def times(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """t ∈ (0, 1] per row: one uniform offset on an evenly spaced grid (antithetic, low variance)."""
        return 1.0 - stratified_uniform(batch, generator, device)

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        corrupted = super().corrupt(x0, noise_mask, generator)
        coin = torch.rand((), generator=generator, device=x0.device) < self.self_condition_rate
        flags = coin.expand(x0.shape[0])  # one coin per batch, kept per row so that micro-batches slice it
        return Corrupted(**{**corrupted.__dict__, "self_condition": flags})

    def gamma(self, network: EmbeddingDenoiser, t: Tensor) -> Tensor:
        return network.noise_schedule(t.to(network.token_embedding.weight.dtype))

    def word_logits(self, network: EmbeddingDenoiser, output: Tensor, z_t: Tensor, gamma_t: Tensor) -> Tensor:
        """The network's logits [n, V] plus the output prior log N(z_t; α_t E_w, σ_t² I)."""
        alpha, sigma = alpha_sigma(gamma_t.to(z_t.dtype))
        return output + network.likelihood_logits(z_t, alpha, sigma**2)

    def clean_estimate(
        self, network: EmbeddingDenoiser, output: Tensor, z_t: Tensor, gamma_t: Tensor
    ) -> Tensor:
        probs = torch.softmax(self.word_logits(network, output, z_t, gamma_t), -1)
        return probs @ network.token_embedding.weight

    def rounding_log_probs(self, network: EmbeddingDenoiser, z_0: Tensor) -> Tensor:
        alpha, sigma = alpha_sigma(self.gamma(network, torch.zeros((), device=z_0.device)).to(z_0.dtype))
        return torch.log_softmax(network.likelihood_logits(z_0, alpha, sigma**2), -1)

    def terms(
        self, model: torch.nn.Module, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
    ) -> LossTerms:
        network = unwrapped(model)
        scored, time = corrupted.masked, corrupted.time
        clean = network.embed(x0)
        gamma_t, dgamma_dt = gamma_and_derivative(network.noise_schedule, time.to(clean.dtype))
        z_t = self.latents(clean, scored, gamma_t, corrupted.noise)
        rows = scored.nonzero()[:, 0]
        previous = None
        if not model.training or bool(corrupted.self_condition.any()):
            with torch.no_grad():
                first = model(z_t, attention_mask, t=time, positions=scored).prediction
                previous = torch.zeros_like(z_t)
                previous[scored] = self.clean_estimate(network, first, z_t[scored], gamma_t[rows, None])
        output = model(z_t, attention_mask, t=time, positions=scored, self_condition=previous).prediction
        x, noise = clean[scored], corrupted.noise[scored]
        x_hat = self.clean_estimate(network, output, z_t[scored], gamma_t[rows, None])
        diffusion = continuous_diffusion_term(x, x_hat, gamma_t[rows, None], dgamma_dt[rows, None])
        ends = self.gamma(network, torch.tensor([0.0, 1.0], device=x.device))
        z_0 = diffuse(x, ends[0], noise)
        rounding = -self.rounding_log_probs(network, z_0).gather(-1, x0[scored, None])[:, 0]
        nll = (diffusion + rounding + prior_kl(x, ends[1])).sum()
        return LossTerms(nll, nll)
