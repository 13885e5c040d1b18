"""The step contract between the denoising loop and a sampler: what one reverse step reads (:class:`StepInput`,
with the network's prepared output kept per position in a :class:`Prediction`) and what it returns
(:class:`StepOutput`). :mod:`.samplers` implements it; :mod:`.loop` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from torch import Tensor

from ..diffusion.reverse import Time


class Prediction:
    """The network's prediction and what a sampler derives from it alone, kept per position: fields [B, L, …].

    The loop writes each network call's :meth:`Sampler.prepare` output here (log-probabilities and the
    sampler's statistics of them) at the positions the call was made for, and keeps an entry while its
    row's x_t is unchanged (the logits cache). So everything that depends only on the logits is computed
    once per network call, and a step on a cached row does no O(V) work per position. Entries at positions
    that are not masked now are stale and never read.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.fields: dict[str, Tensor] = {}

    def write(self, where: Tensor, values: dict[str, Tensor]) -> None:
        """Store ``values`` (each [m, …], m = where.sum(), row-major) at the ``where`` [B, L] positions.

        A tensor given under two names (``log_p`` when nothing reshapes p_θ) is stored once, under both.
        """
        first: dict[int, str] = {}
        for name, value in values.items():
            if id(value) in first:
                self.fields[name] = self.fields[first[id(value)]]
                continue
            first[id(value)] = name
            store = self.fields.get(name)
            if store is None:
                store = self.fields[name] = value.new_zeros((*self.shape, *value.shape[1:]))
            store[where] = value.to(store.dtype)

    def row(self, index: int) -> Prediction:
        """The entries of batch row ``index`` as a batch of one (views, not copies)."""
        view = Prediction((1, *self.shape[1:]))
        view.fields = {name: field[index : index + 1] for name, field in self.fields.items()}
        return view

    def at(self, name: str, positions: Tensor, tokens: Tensor | None = None) -> Tensor:
        """Field ``name`` at ``positions`` [k, 2] ((row, column) pairs), [k, …], or at one token each, [k]."""
        index = (positions[:, 0], positions[:, 1]) if tokens is None else (*positions.unbind(-1), tokens)
        return self.fields[name][index]


@dataclass(frozen=True)
class StepInput:
    """Everything one step may use. Shapes: ids and masks [B, L]; ``logits`` [n, V] at ``masked``.

    ``generated`` marks the positions this run writes (not the prompt, infill text or source);
    ``noise_mask`` the sentence's noisable positions as in training (⊇ generated; given prompt tokens are
    revealed tokens of the sentence), which the spindle rule centres over. ``scores`` [B, L] float64 holds
    log p_θ of each generated token at the step that revealed it (Mask-Predict re-masks the lowest).
    ``index`` is the step's position 0..K−1 in the K-step walk. The loop passes ``prediction`` (the
    sampler's prepared network output, see :class:`Prediction`) instead of ``logits``.
    """

    logits: Tensor | None
    x_t: Tensor
    masked: Tensor
    generated: Tensor
    noise_mask: Tensor
    scores: Tensor
    t: Time
    s: Time
    index: int
    num_steps: int
    prediction: Prediction | None = None

    @cached_property
    def positions(self) -> Tensor:
        """(row, column) [n, 2] of each masked position, row-major."""
        return self.masked.nonzero()

    @cached_property
    def rows(self) -> Tensor:
        """Batch row [n] of each masked position (row-major order)."""
        return self.positions[:, 0]

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1


class StepOutput(NamedTuple):
    """x_s [B, L] and the updated per-token ``scores`` [B, L]."""

    x_s: Tensor
    scores: Tensor
