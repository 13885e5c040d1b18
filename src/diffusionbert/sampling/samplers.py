"""Samplers: how one reverse step turns x_t into x_s, given the network's prediction. They never call the model.

Like diffusers' schedulers, a sampler is a small object with a three-method contract that the one denoising
loop (:func:`diffusionbert.sampling.loop.denoise`) drives:

* ``sampler.timesteps(K)`` → the K pairs ``(t, s)``, t > s, that the loop walks from all-[MASK] (t = T or 1) to
  clean text (s = 0);
* ``sampler.prepare(logits)`` → what the steps read of the logits [m, V] of one network call, per position
  (log-probabilities and, for the ancestral rule, p_θ's mass per token group): computed once per call and
  kept in a :class:`Prediction` while x_t is unchanged;
* ``sampler.step(StepInput, generator)`` → :class:`StepOutput` with x_s [B, L], from that prediction of
  p_θ(x_0 | x_t) at the n currently masked positions (row-major order of ``masked.nonzero()``).

Contract of every step: only masked generated positions are written (:class:`GibbsSampler`,
:class:`RoutingSampler` and :class:`RemaskingSampler` may re-mask by design), a state without masked positions
is returned unchanged (so the loop stops early), forbidden ids (logit −inf) are never drawn, and every
categorical draw uses float64 Gumbel-max noise from the given generator(s). A list of generators, one per batch
row, makes the draws of a row independent of the rest of the batch, so splitting a batch differently gives
the same samples.

Samplers (:func:`build_sampler` by name):

* ``ancestral`` — the model's own generative process p_θ(x_s | x_t): the objective's exact reverse rule
  (:meth:`DiscreteObjective.reverse_unmask_probability` + :func:`~diffusionbert.diffusion.corruption.reverse_step`,
  evaluated per token group: :func:`~diffusionbert.diffusion.corruption.reverse_stay`), so the
  bound the objective reports is the NLL bound of exactly what this sampler runs (with K = T steps; K < T
  walks the coarser chain t_k = T − kT/K, whose bound is another valid one).
* ``cached`` — the same draws, for time-agnostic models only: the loop then reuses the prepared logits while
  x_t is unchanged, so the number of network calls is at most the number of generated tokens (MDLM's
  cache), and a step without a call costs O(n·G), not O(n·V).
* ``tweedie`` — SEDD's Tweedie τ-leaping from unnormalised scores: the ancestral rule with the reveal
  probability scaled by the scores' total (identical to ``ancestral`` for a normalised network).
* ``remdm`` — ReMDM: the ancestral rule, plus a scheduled chance for each token revealed earlier to go back
  to [MASK] (``eta``, ``strategy``), chosen so the forward marginals are kept; token-independent schedules.
* ``confidence`` — MaskGIT / LLaDA low-confidence remasking: reveal the most confident candidates, a planned
  number per step (not the model's distribution; a heuristic decoder).
* ``threshold`` — Fast-dLLM parallel decoding: reveal every candidate with probability ≥ τ, at least one.
* ``gibbs`` — Mask-Predict from a plain MLM: fill every mask, re-mask the least confident, repeat.
* ``routing`` — RDM's top-k routing: Mask-Predict with the re-masked count set by the noise schedule.

``temperature``, ``top_k`` and ``top_p`` reshape p_θ(x_0 | x_t) before any step. Any non-default value
changes the sampled distribution: samples are then no longer from the model whose NLL bound is reported.
"""

from __future__ import annotations

import inspect
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..diffusion.corruption import reverse_stay
from ..diffusion.objectives import Objective
from ..diffusion.reverse import Time
from ..errors import ConfigError, invalid_choice
from .draws import Generators, RowRandom, Sharpening, gumbel_argmax
from .step import Prediction, StepInput, StepOutput

UnmaskingSchedule = Literal["linear", "cosine"]


def planned_masked(total: Tensor, index: int, num_steps: int, schedule: UnmaskingSchedule) -> Tensor:
    """Masked positions left after ``index`` of ``num_steps`` steps: ⌊total · γ(index / K)⌋ per row.

    γ falls from 1 to 0: ``linear`` γ = 1 − r (Mask-Predict, LLaDA), ``cosine`` γ = cos(π r / 2) (MaskGIT).
    """
    ratio = index / num_steps
    gamma = 1.0 - ratio if schedule == "linear" else math.cos(0.5 * math.pi * ratio)
    return masked_count(total, gamma)


def masked_count(total: Tensor, fraction: float) -> Tensor:
    """⌊total · fraction⌋ per row [B] (with a 1e-9 guard, so an exact product is not rounded down)."""
    return torch.floor(total.to(torch.float64) * fraction + 1e-9).long()


def _unmasking_schedule(schedule: str) -> UnmaskingSchedule:
    """``schedule`` checked to be one :func:`planned_masked` knows."""
    if schedule not in ("linear", "cosine"):
        raise invalid_choice("unmasking schedule", schedule, ["linear", "cosine"])
    return schedule


def _choice_temperature(value: float) -> float:
    """``value`` checked to be a valid scale of the confidence noise (≥ 0)."""
    if not value >= 0:
        raise ConfigError(f"choice_temperature={value!r} is not valid; allowed: choice_temperature >= 0")
    return value


def _annealed(choice_temperature: float, inp: StepInput) -> float:
    """The scale of the choice noise at step ``inp.index``: ``choice_temperature · (1 − (k + 1)/K)``, 0 at
    the last step (MaskGIT's annealing, also RDM's stochastic routing)."""
    return choice_temperature * (1.0 - (inp.index + 1) / inp.num_steps)


def _one_alpha(name: str, objective: Objective, allowed: str) -> str | None:
    """Why sampler ``name``, which reads one α_t for every token, cannot run ``objective`` (a spindle model's
    α differs per token), naming the ``allowed`` samplers; None when it can."""
    if objective.reverse_process().groups is None:
        return None
    return (
        f"sampler={name!r} needs a token-independent schedule, but objective={objective.name!r} uses spindle;"
        f" allowed: {allowed} for a spindle model"
    )


def _ranks(values: Tensor, where: Tensor, descending: bool) -> Tensor:
    """Rank [B, L] of each ``where`` entry of ``values`` [B, L] within its row (0: first); ties by position."""
    fill = float("-inf") if descending else float("inf")
    dense = torch.where(where, values.to(torch.float64), fill)
    return dense.argsort(dim=-1, descending=descending, stable=True).argsort(dim=-1)


def _confidence_ranks(inp: StepInput, confidence: Tensor) -> Tensor:
    """Rank [n] of each masked position's ``confidence`` [n] within its row, most confident first."""
    dense = torch.zeros(inp.masked.shape, dtype=torch.float64, device=confidence.device)
    dense = dense.masked_scatter(inp.masked, confidence.to(torch.float64))
    return _ranks(dense, inp.masked, descending=True)[inp.masked]


class Sampler(ABC):
    """Turns p_θ(x_0 | x_t) at the masked positions into x_s; the loop in ``sampling.loop`` drives it."""

    name: ClassVar[str]
    requires_time_agnostic: ClassVar[bool] = False
    can_jump: ClassVar[bool] = False  # has ``jump``: walks one sentence to its next change (ancestral rule)

    def __init__(
        self, objective: Objective, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
    ) -> None:
        self.process = objective.reverse_process()
        self.mask_id = objective.mask_id
        self.sharpening = Sharpening(temperature, top_k, top_p)

    def timesteps(self, num_steps: int) -> list[tuple[Time, Time]]:
        """The K = ``num_steps`` pairs (t, s), t > s, from fully masked to s = 0."""
        limit = self.process.max_steps
        if num_steps < 1 or (limit is not None and num_steps > limit):
            allowed = "steps >= 1" if limit is None else f"1 <= steps <= {limit} (the objective's num_steps)"
            raise ConfigError(f"steps={num_steps} is not valid; allowed: {allowed}")
        times = self.process.grid(num_steps)
        return list(itertools.pairwise(times))

    def time_input(self, t: Time) -> float:
        """The network's time input at t."""
        return self.process.time_input(t)

    @classmethod
    def unsuitable(cls, objective: Objective, time_conditioning: str = "none") -> str | None:
        """Why this sampler cannot run a model of ``objective`` whose time input is ``time_conditioning``
        (one line naming what is allowed), or None when it can: a pipeline lists and checks its samplers
        without building them."""
        if cls.requires_time_agnostic and time_conditioning != "none":
            return (
                f"sampler={cls.name!r} needs a time-agnostic model but time_conditioning="
                f"{time_conditioning!r}; allowed: time_conditioning='none' (e.g. RADD), or sampler='ancestral'"
            )
        return None

    def prepare(self, logits: Tensor) -> dict[str, Tensor]:
        """What this sampler's steps read of the logits [m, V], per position [m, …]: computed once per network
        call and reused while x_t is unchanged. ``log_probs``: the model's log p_θ(x_0 | x_t); ``log_p``:
        after temperature, top-k and top-p (the same tensor with the defaults)."""
        log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        return {"log_probs": log_probs, "log_p": self.sharpening(log_probs)}

    def prediction(self, inp: StepInput) -> Prediction:
        """The loop's prepared prediction, or one prepared now from ``inp.logits`` (a step on its own)."""
        if inp.prediction is not None:
            return inp.prediction
        prediction = Prediction(inp.masked.shape)
        prediction.write(inp.masked, self.prepare(inp.logits))
        return prediction

    def step(self, inp: StepInput, generator: Generators) -> StepOutput:
        """x_s from x_t: reveal the positions :meth:`choose` picks, with its values."""
        prediction = self.prediction(inp)
        reveal, values = self.choose(inp, prediction, RowRandom(generator, inp.x_t.shape[0]))
        return self._write(inp, prediction, reveal, values)

    def _write(self, inp: StepInput, prediction: Prediction, reveal: Tensor, values: Tensor) -> StepOutput:
        """x_s and scores with ``values`` [n] written at the ``reveal`` [n] masked positions."""
        chosen = values[reveal]
        tokens = torch.full_like(values, self.mask_id).masked_scatter(reveal, chosen)
        chosen_log_probs = prediction.at("log_probs", inp.positions[reveal], chosen)
        scores = inp.scores[inp.masked].masked_scatter(reveal, chosen_log_probs.to(torch.float64))
        return StepOutput(
            inp.x_t.masked_scatter(inp.masked, tokens), inp.scores.masked_scatter(inp.masked, scores)
        )

    @abstractmethod
    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        """Which masked positions to reveal [n] (bool) and their tokens [n] (ignored where not revealed)."""

    def _candidates(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        """One token drawn from ``log_p`` at every masked position [n], and its confidence [n]: its
        log-probability under the model's own p_θ (MaskGIT, LLaDA and Fast-dLLM score it so, so that
        greedy decoding still ranks positions)."""
        values = gumbel_argmax(prediction.at("log_p", inp.positions), inp.rows, random)
        return values, prediction.at("log_probs", inp.positions, values)


class AncestralSampler(Sampler):
    """The model's generative process: per masked position, x_s = v with p_θ(v | x_t)·u(v), else [MASK].

    Drawn in two stages with the same law: reveal with probability 1 − p_θ(x_s = [MASK] | x_t), then the token
    ∝ p_θ(v | x_t)·u(v) (Gumbel-max over the vocabulary, only at the revealed positions). The stay
    probability Σ_v p_θ(v | x_t)(1 − u(v)) is summed per token group from masses prepared once per network
    call (:meth:`ReverseProcess.prepare`), so a step costs O(n·G + B·G), plus O(V) per revealed position.

    :meth:`jump` walks one sentence over the steps where its x_t stays the same, with the draws :meth:`step`
    would make there, so the loop can let each sentence of a time-agnostic model run on its own clock.
    """

    name: ClassVar[str] = "ancestral"
    can_jump: ClassVar[bool] = True
    lookahead: ClassVar[int] = 64  # steps whose reveal draws one jump evaluates at once

    def prepare(self, logits: Tensor) -> dict[str, Tensor]:
        out = super().prepare(logits)
        return out | self.process.prepare(out["log_p"])

    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        rows, positions = inp.rows, inp.positions
        mass = prediction.at("mass", positions)
        expected = prediction.at("expected", positions) if "expected" in prediction.fields else None
        u = self.process.unmask_probability(
            inp.x_t, inp.noise_mask, rows, expected, inp.t, inp.s, mass.dtype
        )  # [B, 1] or [B, G]
        reveal = random.uniform(rows) < -torch.expm1(reverse_stay(mass, u, rows).to(torch.float64))
        return reveal, self._reveal_values(prediction, positions, rows, reveal, u, random)

    def _reveal_values(
        self,
        prediction: Prediction,
        positions: Tensor,
        rows: Tensor,
        reveal: Tensor,
        u: Tensor,
        random: RowRandom,
    ) -> Tensor:
        """Tokens [n] at the revealed positions, ∝ p(v)·u(v) ([MASK] elsewhere; no draw when none reveals)."""
        values = torch.full_like(rows, self.mask_id)
        if bool(reveal.any()):
            log_u = torch.log(u)  # −inf where u = 0: such tokens are never drawn
            if self.process.groups is not None:
                log_u = log_u[:, self.process.groups.to(log_u.device)]
            log_reveal = prediction.at("log_p", positions[reveal]) + log_u[rows[reveal]]
            values[reveal] = gumbel_argmax(log_reveal, rows[reveal], random)
        return values

    def jump(
        self, inp: StepInput, timesteps: Sequence[tuple[Time, Time]], generator: torch.Generator
    ) -> tuple[int, StepOutput]:
        """Walk one sentence (``inp`` a batch of one at step ``inp.index``) until its x_t changes.

        Returns the steps taken and the state after them. Every draw is the one :meth:`step` makes for this
        sentence at each of those steps, from ``generator`` in the same order: the reveal draws of up to
        :attr:`lookahead` steps are evaluated at once (the sentence as a batch of copies, one per step), and
        the generator is rewound to consume exactly the draws of the steps walked. So a loop that jumps gives
        the samples of a loop that steps; it is exact only while the prediction stays valid, i.e. for a
        time-agnostic model.
        """
        prediction, positions, n = inp.prediction, inp.positions, int(inp.masked.sum())
        mass = prediction.at("mass", positions)
        expected = prediction.at("expected", positions) if "expected" in prediction.fields else None
        device, index = inp.x_t.device, inp.index
        while index < len(timesteps):
            window = timesteps[index : index + self.lookahead]
            w = len(window)
            t, s = (torch.tensor(v, device=device) for v in zip(*window, strict=True))
            copies = torch.arange(w, device=device).repeat_interleave(n)
            u = self.process.unmask_probability_at(
                inp.x_t.expand(w, -1),
                inp.noise_mask.expand(w, -1),
                copies,
                None if expected is None else expected.repeat(w),
                t,
                s,
                mass.dtype,
            )
            stay = -torch.expm1(reverse_stay(mass.repeat(w, 1), u, copies).to(torch.float64))
            state = generator.get_state()
            draws = torch.empty(w * n, dtype=torch.float64, device=device).uniform_(generator=generator)
            hits = (draws < stay).view(w, n)
            if not bool(hits.any()):
                index += w
                continue
            first = int(hits.any(-1).nonzero()[0])
            generator.set_state(state)  # consume exactly the reveal draws of the steps up to ``first``
            torch.empty((first + 1) * n, dtype=torch.float64, device=device).uniform_(generator=generator)
            reveal = hits[first]
            rows = torch.zeros(n, dtype=torch.long, device=device)
            values = self._reveal_values(
                prediction, positions, rows, reveal, u[first : first + 1], RowRandom(generator, 1)
            )
            return index + first + 1 - inp.index, self._write(inp, prediction, reveal, values)
        return len(timesteps) - inp.index, StepOutput(inp.x_t, inp.scores)


class CachedSampler(AncestralSampler):
    """The ancestral sampler restricted to time-agnostic models, where the loop's logits cache is exact.

    Without a time input the logits depend on x_t only, so the loop reuses them until a token is revealed:
    at most one network call per generated token, whatever the number of steps. The random draws are the
    ancestral sampler's, so both give identical samples for the same seed.
    """

    name: ClassVar[str] = "cached"
    requires_time_agnostic: ClassVar[bool] = True


class TweedieSampler(AncestralSampler):
    """SEDD's Tweedie τ-leaping on the absorbing graph (Lou et al., 2024), read from unnormalised scores.

    A network trained with score entropy (``objective='sedd'``) outputs log-scores ℓ [V]: its estimate of the
    concrete score p_t(v at i) / p_t([MASK] at i) is e^{ℓ_v}·α_t / (1 − α_t), whose total Z = Σ_v e^{ℓ_v} is
    learned, not fixed to 1. The Tweedie step from t to s (the scores carried back through exp of the
    forward rates, then the transposed transition) reveals a masked position with probability min(1, Z·u),
    u = (α_s − α_t) / (1 − α_t), as token v ∝ e^{ℓ_v}. The last step reveals every position left (SEDD's
    final denoising step), as a network with Z < 1 may otherwise stop short of clean text. For a normalised
    network (Z = 1) this is exactly the ancestral rule. It needs a token-independent schedule (one group).
    """

    name: ClassVar[str] = "tweedie"
    can_jump: ClassVar[bool] = False  # the jump's stay probability reads p_θ only, not Z

    def __init__(
        self, objective: Objective, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
    ) -> None:
        super().__init__(objective, temperature=temperature, top_k=top_k, top_p=top_p)
        if (reason := self.unsuitable(objective)) is not None:
            raise ConfigError(reason)

    @classmethod
    def unsuitable(cls, objective: Objective, time_conditioning: str = "none") -> str | None:
        return _one_alpha(cls.name, objective, "sampler='ancestral'") or super().unsuitable(
            objective, time_conditioning
        )

    def prepare(self, logits: Tensor) -> dict[str, Tensor]:
        """:meth:`AncestralSampler.prepare`, plus ``log_total`` [m]: log Z, from the raw logits."""
        log_total = torch.logsumexp(logits.to(torch.float64), dim=-1)
        return super().prepare(logits) | {"log_total": log_total}

    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        rows, positions = inp.rows, inp.positions
        u = self.process.unmask_probability(
            inp.x_t, inp.noise_mask, rows, None, inp.t, inp.s, torch.float64
        )  # [B, 1]
        reveal_probability = (prediction.at("log_total", positions).exp() * u[rows, 0]).clamp(max=1.0)
        reveal = random.uniform(rows) < reveal_probability
        if inp.is_last:
            reveal = torch.ones_like(reveal)
        return reveal, self._reveal_values(prediction, positions, rows, reveal, u, random)


RemaskingStrategy = Literal["cap", "rescale"]


class RemaskingSampler(AncestralSampler):
    """ReMDM (Wang et al., 2025): the ancestral step, and every token revealed earlier may go back to [MASK].

    A decoder that never revisits a committed token keeps its early mistakes; ReMDM's reverse step lets each
    generated position revealed before the step from t to s return to [MASK] with probability σ, and reveals
    a masked one with probability (α_s − (1 − σ)·α_t) / (1 − α_t) (token ∝ p_θ), so that with the model's
    exact x_0 a position is masked at s with probability 1 − α_s, the forward marginal, for any
    σ ≤ σ_max = min(1, (1 − α_s)/α_t); σ = 0 is the ancestral step. ``strategy`` sets σ per step:
    ``cap`` σ = min(η, σ_max) (ReMDM-cap), ``rescale`` σ = η·σ_max (ReMDM-rescale). The last step reveals
    every position left and re-masks none. α is the schedule's token-independent α_t, so a spindle model
    (per-token α) is refused. A row with nothing masked is left as it is (the loop stops it).
    """

    name: ClassVar[str] = "remdm"
    can_jump: ClassVar[bool] = False  # a jump assumes x_t stays put between reveals; re-masking moves it

    def __init__(
        self,
        objective: Objective,
        *,
        eta: float = 0.02,
        strategy: RemaskingStrategy = "cap",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> None:
        super().__init__(objective, temperature=temperature, top_k=top_k, top_p=top_p)
        if (reason := self.unsuitable(objective)) is not None:
            raise ConfigError(reason)
        if strategy not in ("cap", "rescale"):
            raise invalid_choice("remasking strategy", strategy, ["cap", "rescale"])
        if not 0 <= eta <= 1:
            raise ConfigError(f"eta={eta!r} is not valid; allowed: 0 <= eta <= 1")
        self.eta, self.strategy = float(eta), strategy

    @classmethod
    def unsuitable(cls, objective: Objective, time_conditioning: str = "none") -> str | None:
        return _one_alpha(cls.name, objective, "sampler='ancestral' or 'routing'") or super().unsuitable(
            objective, time_conditioning
        )

    def remask_probability(self, t: Time, s: Time) -> float:
        """σ for the step from t to s: ``min(η, σ_max)`` (cap) or ``η·σ_max`` (rescale)."""
        alpha_t, alpha_s = 1.0 - self.process.masked_fraction(t), 1.0 - self.process.masked_fraction(s)
        if alpha_t <= 0.0:
            return 0.0
        sigma_max = min(1.0, max(0.0, (1.0 - alpha_s) / alpha_t))
        return min(self.eta, sigma_max) if self.strategy == "cap" else self.eta * sigma_max

    def reveal_probability(self, t: Time, s: Time) -> float:
        """(α_s − (1 − σ)·α_t) / (1 − α_t): the chance a masked position is revealed from t to s."""
        alpha_t, alpha_s = 1.0 - self.process.masked_fraction(t), 1.0 - self.process.masked_fraction(s)
        sigma = self.remask_probability(t, s)
        return min(1.0, max(0.0, (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)))

    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        rows, positions = inp.rows, inp.positions
        if inp.is_last:
            reveal = torch.ones_like(rows, dtype=torch.bool)
        else:
            reveal = random.uniform(rows) < self.reveal_probability(inp.t, inp.s)
        one_group = torch.ones((inp.x_t.shape[0], 1), dtype=torch.float64, device=rows.device)
        return reveal, self._reveal_values(prediction, positions, rows, reveal, one_group, random)

    def step(self, inp: StepInput, generator: Generators) -> StepOutput:
        """The reveal step of :meth:`choose`, then each earlier revealed token of a row still being
        decoded re-masked with probability σ (uniform draws from the row's generator, after the reveal's)."""
        x_s, scores = super().step(inp, generator)
        sigma = 0.0 if inp.is_last else self.remask_probability(inp.t, inp.s)
        if sigma <= 0.0:
            return StepOutput(x_s, scores)
        revealed = inp.generated & ~inp.masked & inp.masked.any(-1, keepdim=True)
        draws = RowRandom(generator, inp.x_t.shape[0]).uniform(revealed.nonzero()[:, 0])
        remask = revealed.masked_scatter(revealed, draws < sigma)
        return StepOutput(x_s.masked_fill(remask, self.mask_id), scores)


class ConfidenceSampler(Sampler):
    """Reveal the n_k most confident candidates per step (MaskGIT, LLaDA low-confidence remasking).

    Candidates are drawn for every masked position; confidence is the candidate's log p_θ, plus
    MaskGIT's annealed Gumbel noise ``choice_temperature · (1 − (k + 1)/K) · g`` when that is > 0. The counts
    follow ``schedule`` (see :func:`planned_masked`) so that every position is revealed by the last step.
    """

    name: ClassVar[str] = "confidence"

    def __init__(
        self,
        objective: Objective,
        *,
        schedule: UnmaskingSchedule = "cosine",
        choice_temperature: float = 0.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> None:
        super().__init__(objective, temperature=temperature, top_k=top_k, top_p=top_p)
        self.schedule = _unmasking_schedule(schedule)
        self.choice_temperature = _choice_temperature(choice_temperature)

    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        rows = inp.rows
        values, confidence = self._candidates(inp, prediction, random)
        noise_scale = _annealed(self.choice_temperature, inp)
        if noise_scale > 0:
            confidence = confidence.to(torch.float64) + noise_scale * random.gumbel(rows)
        left = planned_masked(inp.generated.sum(-1), inp.index + 1, inp.num_steps, self.schedule)
        count = (inp.masked.sum(-1) - left).clamp_min(0)
        return _confidence_ranks(inp, confidence) < count[rows], values


class ThresholdSampler(Sampler):
    """Fast-dLLM parallel decoding: reveal every candidate whose probability is ≥ ``threshold``.

    At least the most confident position of each row is revealed per step, and all that remain at the last
    step. With ``temperature=0`` the candidate is the argmax, so this is Fast-dLLM's max-probability rule;
    when sampling, the drawn candidate's probability is thresholded (for τ > 0.5 that is the argmax too).
    """

    name: ClassVar[str] = "threshold"

    def __init__(
        self,
        objective: Objective,
        *,
        threshold: float = 0.9,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> None:
        super().__init__(objective, temperature=temperature, top_k=top_k, top_p=top_p)
        if not 0 < threshold <= 1:
            raise ConfigError(f"threshold={threshold!r} is not valid; allowed: 0 < threshold <= 1")
        self.threshold = threshold

    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        values, confidence = self._candidates(inp, prediction, random)
        if inp.is_last:
            return torch.ones_like(values, dtype=torch.bool), values
        best = _confidence_ranks(inp, confidence) == 0
        return best | (confidence >= math.log(self.threshold)), values


class GibbsSampler(Sampler):
    """Mask-Predict (Ghazvininejad et al., 2019) / BERT-Mouth style decoding from a plain MLM.

    Each step fills every masked position with a drawn candidate, then re-masks the generated tokens with
    the lowest scores (log-probability when predicted) so that ⌊N·γ⌋ stay masked for the next step, with γ
    from ``schedule`` (linear: Mask-Predict's n = N(K − k)/K). Earlier tokens may be re-masked by design.
    """

    name: ClassVar[str] = "gibbs"

    def __init__(
        self,
        objective: Objective,
        *,
        schedule: UnmaskingSchedule = "linear",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> None:
        super().__init__(objective, temperature=temperature, top_k=top_k, top_p=top_p)
        self.schedule = _unmasking_schedule(schedule)

    def choose(self, inp: StepInput, prediction: Prediction, random: RowRandom) -> tuple[Tensor, Tensor]:
        values, _ = self._candidates(inp, prediction, random)
        return torch.ones_like(values, dtype=torch.bool), values

    def step(self, inp: StepInput, generator: Generators) -> StepOutput:
        x_s, scores = super().step(inp, generator)
        ranking = self.routing_scores(inp, scores, RowRandom(generator, inp.x_t.shape[0]))
        remask_count = self.masked_after(inp)
        remask = inp.generated & (_ranks(ranking, inp.generated, descending=False) < remask_count[:, None])
        return StepOutput(x_s.masked_fill(remask, self.mask_id), scores)

    def masked_after(self, inp: StepInput) -> Tensor:
        """How many generated positions [B] go back to [MASK] after step ``inp.index``."""
        return planned_masked(inp.generated.sum(-1), inp.index + 1, inp.num_steps, self.schedule)

    def routing_scores(self, inp: StepInput, scores: Tensor, random: RowRandom) -> Tensor:
        """What the generated positions compete on [B, L] (the lowest are re-masked): their scores."""
        return scores


class RoutingSampler(GibbsSampler):
    """RDM's adaptive routing with top-k selection (Zheng et al., 2023, "reparameterized" decoding).

    As in Mask-Predict, each step draws a candidate at every masked position, and then every generated
    position, revealed earlier or just now, competes on its score (log p_θ of its token when drawn), so a
    token revealed early goes back to [MASK] when later ones score higher. What RDM changes is the count:
    after the step from t to s, ⌊N·(1 − α_s)⌋ positions stay masked, the objective's own expected masked
    fraction at s (:meth:`ReverseProcess.masked_fraction`), so decoding follows the schedule the model was
    trained on. ``choice_temperature`` > 0 is RDM's stochastic routing: Gumbel noise
    ``choice_temperature · (1 − (k + 1)/K) · g`` added to the scores, annealed to 0 by the last step.
    """

    name: ClassVar[str] = "routing"

    def __init__(
        self,
        objective: Objective,
        *,
        choice_temperature: float = 0.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> None:
        super().__init__(objective, temperature=temperature, top_k=top_k, top_p=top_p)
        self.choice_temperature = _choice_temperature(choice_temperature)

    def masked_after(self, inp: StepInput) -> Tensor:
        return masked_count(inp.generated.sum(-1), self.process.masked_fraction(inp.s))

    def routing_scores(self, inp: StepInput, scores: Tensor, random: RowRandom) -> Tensor:
        noise_scale = _annealed(self.choice_temperature, inp)
        if noise_scale <= 0:
            return scores
        noise = noise_scale * random.gumbel(inp.generated.nonzero()[:, 0])
        return scores.masked_scatter(inp.generated, scores[inp.generated] + noise)


SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        AncestralSampler,
        CachedSampler,
        TweedieSampler,
        RemaskingSampler,
        ConfidenceSampler,
        ThresholdSampler,
        GibbsSampler,
        RoutingSampler,
    )
}


def build_sampler(name: str, objective: Objective, **options: object) -> Sampler:
    """A sampler by name (see :data:`SAMPLERS`) with its keyword options."""
    if name not in SAMPLERS:
        raise invalid_choice("sampler", name, SAMPLERS)
    cls = SAMPLERS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "objective")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"sampler={name!r} has no option {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    try:
        return cls(objective, **options)
    except TypeError as exc:  # a value of the wrong kind (a name where a number belongs)
        raise ConfigError(f"sampler={name!r} options {options} are not valid ({exc})") from None
