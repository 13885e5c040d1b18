"""Random draws of the samplers: one generator per sample, float64 Gumbel-max, and reshaping p_θ before a draw.

Every sample draws from its own generator, derived from the request's seed and the sample's index
(:func:`sample_generator`), so samples do not depend on the batch they fall in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import check_sharpening
from ..errors import ConfigError

Generators = torch.Generator | Sequence[torch.Generator]


def sample_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """The generator of sample ``index`` under ``seed``: the same whichever batch the sample falls in."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


class RowRandom:
    """float64 random draws for entries that belong to batch rows, from one generator or one per row.

    With one generator per row, row b's draws come from its own generator only, in row order, so they do not
    depend on which other rows share the batch. ``rows`` [m] must be sorted (row-major entry order).
    """

    def __init__(self, generators: Generators, batch_size: int) -> None:
        self.per_row = not isinstance(generators, torch.Generator)
        if self.per_row and len(generators) != batch_size:
            raise ConfigError(
                f"got {len(generators)} generators for a batch of {batch_size} rows; "
                "allowed: one torch.Generator, or exactly one per row"
            )
        self.generators = generators

    def uniform(self, rows: Tensor, width: int | None = None) -> Tensor:
        """U[0, 1) draws of shape [m] (or [m, width]), float64."""
        shape = (rows.numel(),) if width is None else (rows.numel(), width)
        return self._fill(torch.empty(shape, dtype=torch.float64, device=rows.device), rows, "uniform_")

    def normal(self, rows: Tensor, width: int) -> Tensor:
        """Standard normal draws of shape [m, width], float32 (Gaussian noise of embedding diffusion)."""
        out = torch.empty((rows.numel(), width), dtype=torch.float32, device=rows.device)
        return self._fill(out, rows, "normal_")

    def _fill(self, out: Tensor, rows: Tensor, method: str) -> Tensor:
        """``out`` filled in place by ``Tensor.<method>``, each row's entries from its own generator."""
        if not self.per_row:
            return getattr(out, method)(generator=self.generators)
        counts = torch.bincount(rows, minlength=len(self.generators)).tolist()
        start = 0
        for gen, count in zip(self.generators, counts, strict=True):
            if count:
                getattr(out[start : start + count], method)(generator=gen)
                start += count
        return out

    def gumbel(self, rows: Tensor, width: int | None = None) -> Tensor:
        """Standard Gumbel draws −log(−log U), float64 so that rare tokens keep their probability."""
        draw = self.uniform(rows, width).clamp_min_(torch.finfo(torch.float64).tiny)
        return draw.log_().neg_().log_().neg_()


def gumbel_argmax(log_weights: Tensor, rows: Tensor, random: RowRandom) -> Tensor:
    """One categorical draw per entry [m] from unnormalised log-weights [m, V] (−inf: never drawn)."""
    return random.gumbel(rows, log_weights.shape[-1]).add_(log_weights).argmax(-1)


@dataclass(frozen=True)
class Sharpening:
    """Temperature, top-k and top-p applied to p_θ(x_0 | x_t) before a step (defaults: unchanged).

    ``temperature=0`` keeps only the most likely token(s) (greedy). Any non-default value changes the
    distribution, so the samples are no longer from the model whose bound is reported.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        check_sharpening(self.temperature, self.top_k, self.top_p)

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0

    def __call__(self, log_probs: Tensor) -> Tensor:
        """Reshaped log p [n, V] from log p_θ(x_0 | x_t) [n, V] (returned as is with the defaults)."""
        if self.is_identity:
            return log_probs
        if self.temperature == 0:
            best = log_probs.amax(-1, keepdim=True)
            log_probs = torch.where(log_probs == best, 0.0, float("-inf")).to(log_probs.dtype)
        elif self.temperature != 1.0:
            log_probs = log_probs / self.temperature
        if 0 < self.top_k < log_probs.shape[-1]:
            kth = log_probs.topk(self.top_k, dim=-1).values[:, -1:]
            log_probs = log_probs.masked_fill(log_probs < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = log_probs.sort(dim=-1, descending=True)
            probs = ordered.softmax(-1)
            mass_before = probs.cumsum(-1) - probs  # keep the smallest prefix whose mass reaches top_p
            drop = torch.zeros_like(log_probs, dtype=torch.bool).scatter(-1, order, mass_before >= self.top_p)
            log_probs = log_probs.masked_fill(drop, float("-inf"))
        return torch.log_softmax(log_probs, dim=-1)
