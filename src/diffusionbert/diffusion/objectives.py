"""Objectives: a schedule, a way to draw the time t and x_t, and a loss. The trainer and evaluator use these;
the samplers step the reverse process each absorbing objective names (:meth:`Objective.reverse_process`).

Each objective corrupts a batch of clean tokens x_0 ([B, L], with ``noise_mask`` marking the positions the
diffusion may mask) into :class:`Corrupted`, and scores the network's logits at the masked positions
with a loss from :mod:`.losses`. Every objective's ``nll`` is an unbiased estimate of a
valid NELBO in nats, so any of them can report PPL per token and per word.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError
from .corruption import mask_tokens, stratified_uniform, unmask_probability
from .losses import (
    LossTerms,
    d3pm_hybrid_loss,
    rdm_loss,
    score_entropy_loss,
    weighted_cross_entropy_loss,
)
from .reverse import ContinuousReverse, ReverseProcess, Time
from .schedules import LinearSchedule, NoiseSchedule, SpindleSchedule, get_schedule

Schedule = NoiseSchedule | SpindleSchedule


@dataclass(frozen=True)
class Corrupted:
    """A corrupted batch: x_t [B, L], the noisable and the masked positions [B, L], the time input t [B].

    Discrete objectives also carry the step k [B] and per-position α_s, α_t [B, L] (s = k − 1); continuous
    and any-order objectives carry a per-row loss weight [B]. Gaussian families keep x_t = x_0, score every
    noisable position (``masked`` = ``noise_mask``) and carry the standard normal ``noise`` [B, L, D] that
    diffuses the embeddings; a self-conditioning family marks the rows shown a first pass's estimate [B].
    """

    x_t: Tensor
    noise_mask: Tensor
    masked: Tensor
    time: Tensor
    step: Tensor | None = None
    alpha_s: Tensor | None = None
    alpha_t: Tensor | None = None
    weight: Tensor | None = None
    noise: Tensor | None = None
    self_condition: Tensor | None = None

    def select(self, rows: slice, width: int | None = None) -> Corrupted:
        """The same corruption for a slice of rows (a process's shard or a micro-batch), optionally cropped
        to the first ``width`` positions (the rest being padding)."""
        cols = slice(None, width)
        values = (getattr(self, f.name) for f in dataclasses.fields(self))
        return Corrupted(*(None if v is None else v[rows, cols] if v.ndim >= 2 else v[rows] for v in values))


def _masked_row_weights(corrupted: Corrupted, logits: Tensor) -> Tensor:
    """Each row's loss weight, repeated for that row's masked positions [n]."""
    masked = corrupted.masked
    return corrupted.weight.unsqueeze(-1).expand_as(masked)[masked].to(logits.dtype)


class Objective(ABC):
    """Draws the corruption of x_0 (t and x_t, or the noise that makes x_t) and scores the network on it."""

    name: ClassVar[str]

    def __init__(self, mask_id: int) -> None:
        self.mask_id = mask_id

    @abstractmethod
    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        """Draw t and x_t ~ q(x_t | x_0) for every row (for a Gaussian family: t and the noise)."""

    def corrupt_stratified(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        """Draw t and x_t as :meth:`corrupt` does, the rows' times (or mask counts) stratified over the batch
        (:func:`stratified_uniform`): each row's draw has :meth:`corrupt`'s law, so a bound averaged over the
        batch is unbiased, with less variance for a batch of copies of one sequence. The continuous-time
        families draw so already (training included); the T-step chains and RADD override this and keep
        independent draws in training, whose random stream (and the results made with it) stays as it was;
        Diffusion-LM's Gaussian steps stay independent here too."""
        return self.corrupt(x0, noise_mask, generator)

    @abstractmethod
    def terms(
        self, model: torch.nn.Module, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
    ) -> LossTerms:
        """Run ``model`` on the corrupted batch and score it: loss and NELBO estimate (sums, nats)."""

    @property
    def bound_objective(self) -> Objective:
        """The objective whose ``nll`` estimates this model's NELBO: itself, except for a training objective
        that is not a diffusion's (plain MLM), which names the diffusion its model is evaluated as."""
        return self

    def reverse_process(self) -> ReverseProcess:
        """The reverse process the exact samplers step for this objective's model; an objective without one
        (a Gaussian family, the AR baseline) is sampled otherwise, so asking for it is a config error."""
        raise ConfigError(f"objective={self.name!r} has no reverse process to sample from")


class TokenObjective(Objective):
    """An objective whose network reads token ids x_t and returns logits at ``corrupted.masked`` (every
    absorbing family and the AR baseline); what differs between them is the corruption and the loss."""

    def terms(
        self, model: torch.nn.Module, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
    ) -> LossTerms:
        logits = model(corrupted.x_t, attention_mask, t=corrupted.time, positions=corrupted.masked).logits
        return self.loss(logits, x0, corrupted)

    @abstractmethod
    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        """Loss and NELBO estimate (sums, nats) from ``logits`` [n, V] at ``corrupted.masked``."""


class DiscreteObjective(TokenObjective):
    """A T-step chain: t = k/T with k uniform in {1..T}; α may depend on the token (spindle)."""

    def __init__(self, mask_id: int, schedule: Schedule, num_steps: int) -> None:
        super().__init__(mask_id)
        if num_steps < 1:
            raise ConfigError(f"num_steps={num_steps} is not valid; it must be >= 1")
        self.schedule = schedule
        self.num_steps = num_steps

    def alphas(self, x0: Tensor, noise_mask: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """α_s and α_t [B, L] of the forward process at steps s = k − 1 and t = k (q may use x_0)."""
        t = (step.to(torch.float64) / self.num_steps).unsqueeze(-1)
        s = ((step - 1).to(torch.float64) / self.num_steps).unsqueeze(-1)
        if isinstance(self.schedule, SpindleSchedule):
            offsets = self.schedule.forward_offsets(x0, noise_mask).to(torch.float64)
            return self.schedule.token_alpha(s, offsets), self.schedule.token_alpha(t, offsets)
        shape = x0.shape
        return self.schedule.alpha(s).expand(shape), self.schedule.alpha(t).expand(shape)

    def corrupted_at(self, x0: Tensor, noise_mask: Tensor, step: Tensor, x_t: Tensor) -> Corrupted:
        """Package a given step k [B] and x_t, e.g. to sum the bound exactly over steps."""
        alpha_s, alpha_t = self.alphas(x0, noise_mask, step)
        return Corrupted(
            x_t=x_t,
            noise_mask=noise_mask,
            masked=noise_mask & (x_t == self.mask_id),
            time=step.to(torch.float32) / self.num_steps,
            step=step,
            alpha_s=alpha_s,
            alpha_t=alpha_t,
        )

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        step = torch.randint(1, self.num_steps + 1, (x0.shape[0],), generator=generator, device=x0.device)
        return self._corrupt_at_step(x0, noise_mask, step, generator)

    def corrupt_stratified(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        """The steps k of the batch stratified over {1..T}: ⌊u T⌋ + 1 for stratified u."""
        u = stratified_uniform(x0.shape[0], generator, x0.device)
        step = (u * self.num_steps).floor().long().clamp_max(self.num_steps - 1) + 1
        return self._corrupt_at_step(x0, noise_mask, step, generator)

    def _corrupt_at_step(
        self, x0: Tensor, noise_mask: Tensor, step: Tensor, generator: torch.Generator
    ) -> Corrupted:
        _, alpha_t = self.alphas(x0, noise_mask, step)
        return self.corrupted_at(
            x0, noise_mask, step, mask_tokens(x0, alpha_t, noise_mask, self.mask_id, generator)
        )

    def reverse_unmask_probability(
        self,
        log_p_x0: Tensor,
        rows: Tensor,
        x_t: Tensor,
        noise_mask: Tensor,
        step: Tensor,
        prev_step: Tensor,
        probs: Tensor | None = None,
    ) -> Tensor:
        """The reverse process's unmask probabilities u per sentence, from step ``step`` to ``prev_step`` ([B]).

        Built from x_t and p_θ(x_0 | x_t) [n, V] (at the masked positions, which sit in batch ``rows`` [n])
        only, never from x_0: [B, 1] for token-independent schedules, [B, V] (one per candidate token) for
        spindle. Index with ``rows`` for the masked positions. The sampler and the bound share this rule
        (the sampler through :meth:`reverse_unmask_probability_per_group`, which this method expands).
        ``probs`` = exp(``log_p_x0``) may be passed when the caller has it.
        """
        expected = self.reverse_statistic(log_p_x0.exp() if probs is None else probs)
        u = self.reverse_unmask_probability_per_group(
            expected, rows, x_t, noise_mask, step, prev_step, log_p_x0.dtype
        )
        groups = self.token_groups()
        return u if groups is None else u[:, groups.to(u.device)]

    def token_groups(self) -> Tensor | None:
        """Each token's group [V] for the reverse rule, or None when u does not depend on the token at all.

        Tokens of one group share u: for spindle the groups are the distinct token values (u reads a token
        only through its value), so G is the number of distinct values, often far below V.
        """
        return self.schedule.value_groups[1] if isinstance(self.schedule, SpindleSchedule) else None

    def reverse_process(self) -> ReverseProcess:
        return DiscreteReverse(self)

    def reverse_statistic(self, probs: Tensor | None = None, *, mass: Tensor | None = None) -> Tensor | None:
        """What the reverse rule reads of p_θ(x_0 | x_t): E_pθ[a] [n] for spindle with sentence centring (its
        centre estimate), else nothing (None).

        From ``probs`` [n, V], or from ``mass`` [n, G], p_θ's mass per token group (:meth:`token_groups`:
        tokens of equal value a) as Σ_g mass_g a_g. Both are the same number up to rounding; the second costs
        O(n·G) and sums each position alone, so a sampler gets the same bits whichever positions share a
        network call (the logits cache stays bit-identical to uncached sampling).
        """
        if not (isinstance(self.schedule, SpindleSchedule) and self.schedule.centering == "sentence"):
            return None
        if mass is None:
            return self.schedule.expected_value(probs)
        return (mass * self.schedule.value_groups[0].to(mass)).sum(-1)

    def reverse_unmask_probability_per_group(
        self,
        expected: Tensor | None,
        rows: Tensor,
        x_t: Tensor,
        noise_mask: Tensor,
        step: Tensor,
        prev_step: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        """:meth:`reverse_unmask_probability` per token group (see :meth:`token_groups`): [B, 1] or [B, G].

        ``expected`` is :meth:`reverse_statistic` of p_θ at the masked positions; ``dtype`` the working
        precision (p_θ's: float32 in training and sampling, float64 in the exactness tests). Each entry is
        bit for bit the value the per-token rule gives every token of that group.
        """
        t = (step.to(dtype) / self.num_steps).unsqueeze(-1)
        s = (prev_step.to(dtype) / self.num_steps).unsqueeze(-1)
        if isinstance(self.schedule, SpindleSchedule):
            revealed = noise_mask & (x_t != self.mask_id)
            values = self.schedule.value_groups[0].to(device=x_t.device, dtype=dtype)
            offsets = self.schedule.candidate_offsets(values, expected, rows, x_t, revealed)
            return unmask_probability(
                self.schedule.token_alpha(s, offsets), self.schedule.token_alpha(t, offsets)
            )
        return unmask_probability(self.schedule.alpha(s), self.schedule.alpha(t))

    def _posterior_terms(
        self, log_p: Tensor, x0: Tensor, corrupted: Corrupted, probs: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Targets [n], q's unmask probability u_q [n], p_θ's u_p per sentence and the rows [n]."""
        masked = corrupted.masked
        rows = masked.nonzero()[:, 0]
        u_q = unmask_probability(corrupted.alpha_s[masked], corrupted.alpha_t[masked])
        u_p = self.reverse_unmask_probability(
            log_p, rows, corrupted.x_t, corrupted.noise_mask, corrupted.step, corrupted.step - 1, probs
        )
        return x0[masked], u_q, u_p, rows


class DiscreteReverse(ReverseProcess):
    """A T-step objective walked on the integer grid t_k = ⌊T(K − k)/K⌋ (every step when K = T), with the
    objective's own reverse rule (so the sampler and the bound share it bit for bit)."""

    def __init__(self, objective: DiscreteObjective) -> None:
        self.objective = objective
        self.max_steps = objective.num_steps
        self.groups = objective.token_groups()
        self.num_groups = 1 if self.groups is None else int(self.groups.max()) + 1

    def grid(self, num_steps: int) -> list[Time]:
        total = self.objective.num_steps
        return [total * (num_steps - k) // num_steps for k in range(num_steps + 1)]

    def time_input(self, t: Time) -> float:
        return t / self.objective.num_steps

    def masked_fraction(self, t: Time) -> float:
        schedule = self.objective.schedule
        base = schedule.base if isinstance(schedule, SpindleSchedule) else schedule
        return 1.0 - float(base.discrete_alpha(torch.tensor(t), self.objective.num_steps))

    def prepare(self, log_p_x0: Tensor) -> dict[str, Tensor]:
        out = super().prepare(log_p_x0)
        expected = self.objective.reverse_statistic(mass=out["mass"])
        if expected is not None:
            out["expected"] = expected
        return out

    def unmask_probability_at(
        self,
        x_t: Tensor,
        noise_mask: Tensor,
        rows: Tensor,
        expected: Tensor | None,
        t: Tensor,
        s: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        return self.objective.reverse_unmask_probability_per_group(
            expected, rows, x_t, noise_mask, t.long(), s.long(), dtype
        )


class DiffusionBertObjective(DiscreteObjective):
    """DiffusionBERT / D3PM-absorbing: the discrete-T bound plus λ·cross-entropy (hybrid loss)."""

    name: ClassVar[str] = "diffusionbert"

    def __init__(self, mask_id: int, schedule: Schedule, num_steps: int = 2048, hybrid_weight: float = 0.01):
        super().__init__(mask_id, schedule, num_steps)
        self.hybrid_weight = hybrid_weight

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        log_p = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        probs = log_p.exp()  # once: the reverse rule reads p_θ twice (sentence centre, stay probability)
        targets, u_q, u_p, rows = self._posterior_terms(log_p, x0, corrupted, probs)
        return d3pm_hybrid_loss(
            log_p, targets, u_q.to(log_p.dtype), u_p, rows, self.num_steps, self.hybrid_weight, probs
        )


class RDMObjective(DiscreteObjective):
    """RDM (reparameterised discrete diffusion): cross-entropy reweighted by λ_k = 1 − (k − 1)/T."""

    name: ClassVar[str] = "rdm"

    def __init__(self, mask_id: int, schedule: Schedule, num_steps: int = 2048):
        if isinstance(schedule, SpindleSchedule):
            raise ConfigError("objective='rdm' needs a token-independent schedule, not 'spindle'")
        super().__init__(mask_id, schedule, num_steps)

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        masked = corrupted.masked
        step = corrupted.step.unsqueeze(-1).expand_as(masked)[masked].to(logits.dtype)
        u = unmask_probability(corrupted.alpha_s[masked], corrupted.alpha_t[masked]).to(logits.dtype)
        return rdm_loss(logits, x0[masked], 1.0 - (step - 1.0) / self.num_steps, self.num_steps * u)


class ContinuousObjective(TokenObjective):
    """MD4 / MDLM: t ∈ (0, 1] drawn per row with low-discrepancy (antithetic) draws, NELBO-weighted CE."""

    name: ClassVar[str] = "mdlm"

    def __init__(self, mask_id: int, schedule: NoiseSchedule):
        super().__init__(mask_id)
        if isinstance(schedule, SpindleSchedule):
            raise ConfigError(
                f"objective={self.name!r} needs a token-independent schedule, not 'spindle' "
                "(spindle is discrete-time: use objective='diffusionbert')"
            )
        self.schedule = schedule

    def reverse_process(self) -> ReverseProcess:
        return ContinuousReverse(self.schedule)

    def times(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """t ∈ (0, 1] per row [B], float64: one uniform offset on an evenly spaced grid (low discrepancy)."""
        return 1.0 - stratified_uniform(batch, generator, device)

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        t = self.times(x0.shape[0], generator, x0.device)
        alpha = self.schedule.alpha(t).unsqueeze(-1).expand(x0.shape)
        x_t = mask_tokens(x0, alpha, noise_mask, self.mask_id, generator)
        return Corrupted(
            x_t=x_t,
            noise_mask=noise_mask,
            masked=noise_mask & (x_t == self.mask_id),
            time=t.to(torch.float32),
            weight=self.schedule.nelbo_weight(t),
        )

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        return weighted_cross_entropy_loss(
            logits, x0[corrupted.masked], _masked_row_weights(corrupted, logits)
        )


class MD4Objective(ContinuousObjective):
    """MD4: the same continuous-time NELBO as MDLM; its method defaults to the cosine schedule (``methods``)."""

    name: ClassVar[str] = "md4"


class SEDDObjective(ContinuousObjective):
    """SEDD-absorbing: denoising score entropy with unnormalised scores (the raw logits)."""

    name: ClassVar[str] = "sedd"

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        return score_entropy_loss(logits, x0[corrupted.masked], _masked_row_weights(corrupted, logits))


class MaskedLMObjective(ContinuousObjective):
    """BERT's plain masked-LM training, the BERT-Mouth baseline: mask a fixed fraction of the noisable tokens
    (``mask_rate``, BERT's 15 %) and score them with unweighted cross-entropy.

    That corruption is no diffusion's, so the training ``nll`` is the masked tokens' cross-entropy, not a bound.
    The network it trains is a time-agnostic denoiser like any other here, so it is evaluated and sampled as
    the linear-schedule absorbing diffusion it defines (:attr:`bound_objective`, the MDLM NELBO); with
    ``mask_rate`` fixed, nothing in training teaches it the heavily masked states that sampling starts from.
    """

    name: ClassVar[str] = "mlm"

    def __init__(self, mask_id: int, mask_rate: float = 0.15) -> None:
        super().__init__(mask_id, get_schedule("linear"))
        if not 0.0 < mask_rate <= 1.0:
            raise ConfigError(f"mask_rate={mask_rate!r} is not valid; allowed: 0 < mask_rate <= 1")
        self.mask_rate = mask_rate

    @property
    def bound_objective(self) -> Objective:
        return ContinuousObjective(self.mask_id, self.schedule)

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        alpha = torch.full(x0.shape, 1.0 - self.mask_rate, dtype=torch.float64, device=x0.device)
        x_t = mask_tokens(x0, alpha, noise_mask, self.mask_id, generator)
        rows = x0.shape[0]
        return Corrupted(
            x_t=x_t,
            noise_mask=noise_mask,
            masked=noise_mask & (x_t == self.mask_id),
            time=torch.full((rows,), self.mask_rate, dtype=torch.float32, device=x0.device),
            weight=torch.ones(rows, dtype=torch.float64, device=x0.device),
        )


class AnyOrderObjective(TokenObjective):
    """RADD's time-free objective: mask exactly k ~ U{1..L} of a row's L tokens, weight L / k.

    Its expectation is the any-order autoregressive NLL, equal to the continuous-time NELBO of a
    time-agnostic network; the time input k / L is given for completeness but RADD models ignore it.
    """

    name: ClassVar[str] = "radd"

    def reverse_process(self) -> ReverseProcess:
        """Walked with α_t = 1 − t: without a time input, any token-independent schedule reveals positions in
        a uniformly random order, and all of them approach RADD's any-order model as the number of steps
        grows."""
        return ContinuousReverse(LinearSchedule())

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        draw = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=torch.float64)
        return self._corrupt_with(x0, noise_mask, draw, generator)

    def corrupt_stratified(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        """The rows' masked fractions k / L stratified over the batch (for copies of one row: each count k
        about equally often)."""
        return self._corrupt_with(
            x0, noise_mask, stratified_uniform(x0.shape[0], generator, x0.device), generator
        )

    def _corrupt_with(
        self, x0: Tensor, noise_mask: Tensor, draw: Tensor, generator: torch.Generator
    ) -> Corrupted:
        """Mask k = ⌊draw L⌋ + 1 of each row's L noisable tokens (``draw`` [B] uniform in [0, 1))."""
        length = noise_mask.sum(-1)
        num_masked = (draw * length).floor().long() + 1
        num_masked = torch.minimum(num_masked, length)
        scores = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        scores = scores.masked_fill(~noise_mask, 2.0)
        ranks = scores.argsort(dim=-1).argsort(dim=-1)
        masked = noise_mask & (ranks < num_masked.unsqueeze(-1))
        x_t = torch.where(masked, torch.full_like(x0, self.mask_id), x0)
        ratio = length.to(torch.float64) / num_masked.clamp_min(1).to(torch.float64)
        return Corrupted(
            x_t=x_t, noise_mask=noise_mask, masked=masked, time=(1.0 / ratio).to(torch.float32), weight=ratio
        )

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        return weighted_cross_entropy_loss(
            logits, x0[corrupted.masked], _masked_row_weights(corrupted, logits)
        )
