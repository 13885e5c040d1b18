"""The reverse process an absorbing objective is sampled with: the time grid and its unmask probabilities.

What the exact samplers step (:mod:`diffusionbert.sampling.samplers`) and what the bound scores share: u, the
probability that a masked position is revealed between t and s < t, built from x_t and p_θ(x_0 | x_t) only,
never from x_0. A reverse process never calls the model. Each objective names its own
(:meth:`~.objectives.Objective.reverse_process`): the continuous-time one is here, the T-step chain's
(:class:`~.objectives.DiscreteReverse`) sits beside the rule it steps, in :mod:`.objectives`, which imports
this module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .corruption import group_mass, unmask_probability
from .schedules import NoiseSchedule

Time = int | float  # a step k of a T-step chain, or a continuous time in [0, 1]


class ReverseProcess(ABC):
    """The time grid an objective is sampled on and its unmask probabilities u from t to s < t.

    u is per sentence and token group: tokens of one group share u (one group unless u depends on the token,
    as with spindle, whose groups are the distinct token values). A step reads p_θ only through
    :meth:`prepare`'s per-position statistics, so a prediction reused over many steps is summarised once.
    """

    max_steps: int | None  # the most steps the grid allows (T), None for continuous time
    groups: Tensor | None = None  # each token's group [V]; None: one group of every token
    num_groups: int = 1

    @abstractmethod
    def grid(self, num_steps: int) -> list[Time]:
        """``num_steps + 1`` strictly decreasing times from the fully masked one down to 0."""

    @abstractmethod
    def time_input(self, t: Time) -> float:
        """The network's time input (the fraction t/T of the chain still to walk)."""

    @abstractmethod
    def masked_fraction(self, t: Time) -> float:
        """1 − α_t: the expected fraction of positions still masked at t (spindle: its token-independent
        base schedule's), the count a routing decoder keeps masked."""

    def prepare(self, log_p_x0: Tensor) -> dict[str, Tensor]:
        """What the rule reads of p_θ(x_0 | x_t) [m, V], per position: ``mass`` [m, G], p_θ's mass per token
        group (for the stay probability), and ``expected`` [m] when u needs it (spindle's centre estimate)."""
        return {"mass": group_mass(log_p_x0.exp(), self.groups, self.num_groups)}

    def unmask_probability(
        self,
        x_t: Tensor,
        noise_mask: Tensor,
        rows: Tensor,
        expected: Tensor | None,
        t: Time,
        s: Time,
        dtype: torch.dtype,
    ) -> Tensor:
        """u per sentence and token group, [B, 1] or [B, G], from x_t [B, L] and p_θ only (in ``dtype``), for
        the step from ``t`` to ``s`` of every sentence.

        ``rows`` [n] is the batch row of each masked position; ``expected`` [n] is :meth:`prepare`'s
        ``expected`` at the masked positions (None when not prepared).
        """
        t_rows, s_rows = (torch.full((x_t.shape[0],), v, device=x_t.device) for v in (t, s))
        return self.unmask_probability_at(x_t, noise_mask, rows, expected, t_rows, s_rows, dtype)

    @abstractmethod
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
        """:meth:`unmask_probability` with a time pair per row, t [B] > s [B], and the masked positions'
        batch ``rows`` [n]: one sentence at many steps can be evaluated as a batch of copies of it."""


class ContinuousReverse(ReverseProcess):
    """Continuous time walked on t_k = 1 − k/K with the absorbing rule u = (α_s − α_t) / (1 − α_t)."""

    max_steps = None

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def grid(self, num_steps: int) -> list[Time]:
        return [1.0 - k / num_steps for k in range(num_steps + 1)]

    def time_input(self, t: Time) -> float:
        return float(t)

    def masked_fraction(self, t: Time) -> float:
        return 1.0 - float(self.schedule.alpha(torch.tensor(float(t), dtype=torch.float64)))

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
        alpha_s, alpha_t = (self.schedule.alpha(v.to(torch.float64)) for v in (s, t))
        return unmask_probability(alpha_s, alpha_t).unsqueeze(-1).to(dtype)
