"""Noise schedules: α_t, the probability that a token is still unmasked at time t.

Time is continuous, t ∈ [0, 1]; a discrete chain of T steps uses the grid t = k/T, k = 0..T. Every schedule
guarantees α_0 = 1 and α_1 = 0 exactly and is non-increasing in t. The mask rate is 1 − α_t.

The spindle schedule (DiffusionBERT) makes α depend on each token: frequent, uninformative tokens are kept
longer and rare, informative ones are masked earlier, so the reverse process writes easy tokens first.
"""

from __future__ import annotations

import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..errors import ConfigError, invalid_choice

SpindleForm = Literal["reference", "paper"]
SpindleCentering = Literal["sentence", "corpus"]


def sin_pi(t: Tensor) -> Tensor:
    """sin(π t) for t ∈ [0, 1], exactly 0 at both ends (floating-point sin(π) is 1.2e-16, not 0)."""
    return torch.sin(math.pi * torch.minimum(t, 1.0 - t))


class NoiseSchedule(ABC):
    """α_t for continuous t ∈ [0, 1], elementwise over any tensor shape."""

    name: ClassVar[str]

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Probability that a token is still unmasked at time t."""

    @abstractmethod
    def alpha_derivative(self, t: Tensor) -> Tensor:
        """dα/dt, used by the continuous-time NELBO weight."""

    def nelbo_weight(self, t: Tensor) -> Tensor:
        """Continuous-time NELBO weight −α'_t / (1 − α_t) (1/t for the linear schedule)."""
        return -self.alpha_derivative(t) / (1.0 - self.alpha(t))

    def discrete_alpha(self, step: Tensor, num_steps: int) -> Tensor:
        """α at step k of a T-step chain, i.e. at t = k / T."""
        return self.alpha(step.to(torch.float64) / num_steps)


@dataclass(frozen=True)
class LinearSchedule(NoiseSchedule):
    """α_t = 1 − t: DiffusionBERT's 1 − k/T, D3PM-absorbing's mutual-information schedule, and MDLM's
    log-linear noise (total noise σ_t = −log(1 − t)), which is the same α."""

    name: ClassVar[str] = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def alpha_derivative(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


@dataclass(frozen=True)
class CosineSchedule(NoiseSchedule):
    """α_t = cos(π t / 2) (MD4's cosine): masks slowly at first, fast at the end."""

    name: ClassVar[str] = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * (1.0 - t))  # = cos(πt/2), exactly 0 at t = 1

    def alpha_derivative(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


@dataclass(frozen=True)
class PolynomialSchedule(NoiseSchedule):
    """α_t = 1 − t^power (MD4's polynomial family; power 1 is linear)."""

    name: ClassVar[str] = "polynomial"
    power: float = 2.0

    def __post_init__(self) -> None:
        if not self.power > 0:
            raise ConfigError(f"polynomial schedule power={self.power!r} is not valid; it must be > 0")

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t**self.power

    def alpha_derivative(self, t: Tensor) -> Tensor:
        return -self.power * t ** (self.power - 1.0)


BASE_SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "linear": LinearSchedule,
    "loglinear": LinearSchedule,  # MDLM's name for the same α_t = 1 − t
    "cosine": CosineSchedule,
    "polynomial": PolynomialSchedule,
}


SCHEDULE_NAMES = (*BASE_SCHEDULES, "spindle")
SPINDLE_BASES = ("linear", "cosine", "polynomial")  # the base ᾱ_t a spindle schedule bends
SPINDLE_FORMS: tuple[str, ...] = typing.get_args(SpindleForm)
SPINDLE_CENTERINGS: tuple[str, ...] = typing.get_args(SpindleCentering)


def get_schedule(name: str, **kwargs: float) -> NoiseSchedule:
    """A token-independent schedule by name (``linear``, ``loglinear``, ``cosine``, ``polynomial``)."""
    if name not in BASE_SCHEDULES:
        raise invalid_choice("schedule", name, SCHEDULE_NAMES)
    return BASE_SCHEDULES[name](**kwargs)


@dataclass(frozen=True, eq=False)
class SpindleSchedule:
    """DiffusionBERT's spindle schedule: α_t^i = clip(ᾱ_t + λ·sin(πt)·d_i, 0, 1).

    ``token_values`` holds one number a_v per vocabulary id (see :mod:`.token_info`); the
    spindle offset d_i of a token compares its value with a centre c:
    - ``form="reference"`` (the public code): a = normalised log count, d = a − c;
    - ``form="paper"`` (arXiv 2211.15029, eq. 10): a = token information −log p̂, d = c / a − 1.
    Either way a positive offset means a frequent token, kept longer. The centre c is the mean of a over the
    sentence's noisable tokens (``centering="sentence"``, the paper's forward process) or over the corpus
    (``centering="corpus"``). The reverse process cannot see the sentence, see :meth:`candidate_offsets`.
    """

    base: NoiseSchedule
    token_values: Tensor
    corpus_centre: float
    form: SpindleForm = "reference"
    lam: float = 0.3
    centering: SpindleCentering = "sentence"
    clip: bool = True
    name: ClassVar[str] = "spindle"
    offset_range: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        if self.form not in ("reference", "paper"):
            raise invalid_choice("spindle form", self.form, ["reference", "paper"])
        if self.centering not in ("sentence", "corpus"):
            raise invalid_choice("spindle centering", self.centering, ["sentence", "corpus"])
        if not self.lam >= 0:
            raise ConfigError(f"spindle lam={self.lam!r} is not valid; it must be >= 0")
        if self.form == "paper" and not bool((self.token_values > 0).all()):
            raise ConfigError("spindle form='paper' needs token information > 0 for every token")
        lo, hi = float(self.token_values.min()), float(self.token_values.max())
        extremes = (self.offset(torch.tensor(hi), lo), self.offset(torch.tensor(lo), hi))
        object.__setattr__(self, "offset_range", (float(min(extremes)), float(max(extremes))))
        self._check_alpha_is_valid()

    def offset(self, values: Tensor, centre: Tensor | float) -> Tensor:
        """Spindle offset d of tokens with value a against centre c (positive: kept longer)."""
        if self.form == "reference":
            return values - centre
        return centre / values - 1.0

    def token_alpha(self, t: Tensor, offsets: Tensor) -> Tensor:
        """α_t for tokens with the given offsets; ``t`` broadcasts against ``offsets``."""
        alpha = self.base.alpha(t) + self.lam * sin_pi(t) * offsets
        return alpha.clamp(0.0, 1.0) if self.clip else alpha

    def forward_offsets(self, x0: Tensor, noise_mask: Tensor) -> Tensor:
        """Offsets [B, L] of the clean tokens, centred as the forward process q does (may use x_0)."""
        values = self.token_values.to(x0.device)[x0]
        if self.centering == "corpus":
            return self.offset(values, self.corpus_centre)
        weights = noise_mask.to(values.dtype)
        centre = (values * weights).sum(-1, keepdim=True) / weights.sum(-1, keepdim=True).clamp_min(1.0)
        return self.offset(values, centre)

    @cached_property
    def value_groups(self) -> tuple[Tensor, Tensor]:
        """The distinct token values a [G] and each token's index into them [V].

        Every rule of this schedule reads a token only through its value a_v, so a quantity per candidate
        token (α, u, offsets) can be computed once per distinct value and indexed with the second tensor.
        """
        return torch.unique(self.token_values, return_inverse=True)

    def expected_value(self, probs: Tensor) -> Tensor:
        """E_pθ[a] [n] at the masked positions from p_θ(x_0 | x_t) [n, V]: what sentence centring reads of p_θ."""
        return probs @ self.token_values.to(probs)

    def candidate_offsets(
        self, values: Tensor, expected: Tensor | None, rows: Tensor, x_t: Tensor, revealed: Tensor
    ) -> Tensor:
        """Offsets [B, C] of candidate tokens with values a [C] (in the working dtype), per sentence, from x_t
        and p_θ only.

        This is the reverse process's rule; the sampler and the bound both use it. With corpus centring the
        centre is a constant. With sentence centring the unknown sentence mean is estimated as the mean over
        the sentence's noisable positions of a(x_t^j) where revealed and E_pθ[a] where masked: ``expected``
        [n] is :meth:`expected_value` at the n masked positions (None with corpus centring), ``rows`` [n]
        their batch row, ``revealed`` [B, L] the noisable positions that are not masked. The candidates are
        every token's value or, to compute each distinct value once, those of :attr:`value_groups`.
        """
        batch = x_t.shape[0]
        if self.centering == "corpus":
            return self.offset(values, self.corpus_centre).expand(batch, -1)
        revealed_sum = (self.token_values.to(values)[x_t] * revealed).sum(-1)
        expected = expected.to(values.dtype)  # a matmul under autocast returns it in bf16
        masked_sum = torch.zeros(batch, dtype=values.dtype, device=values.device).index_add(0, rows, expected)
        count = revealed.sum(-1).to(values.dtype).index_add(0, rows, torch.ones_like(expected))
        centre = (revealed_sum + masked_sum) / count.clamp_min(1.0)
        return self.offset(values.unsqueeze(0), centre.unsqueeze(-1))

    def _check_alpha_is_valid(self, grid_points: int = 2049, offset_points: int = 41) -> None:
        """Reject λ that breaks α_t ∈ [0, 1] (unclipped) or monotonicity, checked on a fine grid."""
        t = torch.linspace(0.0, 1.0, grid_points, dtype=torch.float64).unsqueeze(1)
        offsets = torch.linspace(*self.offset_range, offset_points, dtype=torch.float64).unsqueeze(0)
        alpha = self.token_alpha(t, offsets)
        if not self.clip and bool(((alpha < -1e-12) | (alpha > 1 + 1e-12)).any()):
            raise ConfigError(
                f"spindle lam={self.lam} makes alpha leave [0, 1] for offsets in "
                f"[{self.offset_range[0]:.3f}, {self.offset_range[1]:.3f}] with clip=False; "
                "use clip=True or a smaller lam"
            )
        if bool((alpha.diff(dim=0) > 1e-12).any()):
            raise ConfigError(
                f"spindle lam={self.lam} makes alpha increase in t for some tokens with base schedule "
                f"{self.base.name!r}; use a smaller lam"
            )
