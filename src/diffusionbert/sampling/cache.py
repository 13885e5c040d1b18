"""The exact prompt cache: what precedes the span being denoised is encoded once and read by every later step.

Two designs make it exact: *isolated source attention* (``model.source_attention: isolated``), where a pair's
``[CLS] source [SEP]`` attends only to itself, and *block diffusion* (``bd3lm``), where a block attends only to
itself and the blocks before it. Either way the keys and values of every position before the span being
denoised (the source; or the context and the finished blocks) do not depend on that span, at any layer.
:class:`PrefixCache` is a denoiser (the loop's :data:`~diffusionbert.sampling.loop.Denoiser`) that encodes
each prefix the first time it sees it (:meth:`~diffusionbert.models.DiffusionBertForMaskedLM.encode_prefix`)
and otherwise runs the network on the span only (``forward(..., prefix=...)``): the answer of a pair model,
the current block of a block-diffusion model. The logits are those of the whole sequence (the same arithmetic
over the same keys, in another order), so the samples are the uncached decoder's.

Prefixes are looked up by their tokens, so the cache needs nothing from the loop: the K samples of a source
share one entry, a call on any subset of rows finds its own, and the hidden source of a pair model writing
without one (or of classifier-free guidance's unconditional branch) is one more entry.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import ConfigError
from ..models import DiffusionBertForMaskedLM
from ..models.unpadded import PrefixKeys

Prefix = tuple[int, ...]


class PrefixCache:
    """A denoiser over whole rows (right-padded with ``pad_id``) that reads each row's prefix from its cache
    (module doc). The span a call runs is the attention block (:meth:`~DiffusionBertForMaskedLM.blocks`)
    that holds the positions asked for; ``time`` is passed on unchanged (the model is time-agnostic)."""

    def __init__(self, model: DiffusionBertForMaskedLM, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.entries: dict[Prefix, PrefixKeys] = {}
        self._batch: tuple[tuple[Prefix, ...], PrefixKeys] | None = None

    def __call__(self, x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
        """Logits [n, V] at ``positions`` [b, L] of the rows ``x`` [b, L]; the positions of a row must lie in
        one attention block after its context."""
        start, end = self._span(x, positions)
        keys = self._keys(tuple(tuple(row[:n].tolist()) for row, n in zip(x, start.tolist(), strict=True)))
        index = start[:, None] + torch.arange(int((end - start).max()), device=x.device)[None]
        real = index < end[:, None]
        index = index.clamp(max=x.shape[1] - 1)
        span = x.gather(1, index).masked_fill(~real, self.pad_id)
        at = positions.gather(1, index) & real
        if int(at.sum()) != int(positions.sum()):
            raise ConfigError("a cached call's positions must lie in one block after the context of each row")
        return self.model(span, real.long(), t=time, positions=at, prefix=keys).logits

    def _span(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Per row, the first and past-the-last position [b] of the block holding its first asked position."""
        blocks = self.model.blocks(x)
        assert blocks is not None  # a model that caches has blocks
        real = x != self.pad_id
        block = blocks.gather(1, positions.long().argmax(-1, keepdim=True))
        inside = (blocks == block) & real
        start = inside.long().argmax(-1)
        return start, start + inside.sum(-1)

    def _keys(self, prefixes: tuple[Prefix, ...]) -> PrefixKeys:
        """The keys and values of ``prefixes`` as one batch, encoding those not seen before (in one call)."""
        if self._batch is not None and self._batch[0] == prefixes:
            return self._batch[1]
        new = [prefix for prefix in dict.fromkeys(prefixes) if prefix not in self.entries]
        if new:
            self._encode(new)
        parts = [self.entries[prefix] for prefix in prefixes]
        width = max(len(prefix) for prefix in prefixes)

        def stacked(tensors: list[Tensor]) -> Tensor:  # [1, heads, P_i, d] → [b, heads, width, d]
            return torch.cat([F.pad(t, (0, 0, 0, width - t.shape[2])) for t in tensors])

        layers = range(len(parts[0].keys))
        keys = PrefixKeys(
            tuple(stacked([part.keys[i] for part in parts]) for i in layers),
            tuple(stacked([part.values[i] for part in parts]) for i in layers),
            torch.cat([F.pad(part.mask, (0, width - part.mask.shape[1])) for part in parts]),
            torch.cat([part.length for part in parts]),
        )
        self._batch = (prefixes, keys)
        return keys

    def _encode(self, prefixes: list[Prefix]) -> None:
        """Encode ``prefixes`` in one batch and keep each one's keys and values, cut to its own length; an entry
        that one of them extends (a block-diffusion row that moved to its next block) is dropped."""
        for old in [
            old for old in self.entries if any(len(old) < len(p) and p[: len(old)] == old for p in prefixes)
        ]:
            del self.entries[old]
        device = next(self.model.parameters()).device
        width = max(len(prefix) for prefix in prefixes)
        ids = torch.tensor(
            [[*prefix, *[self.pad_id] * (width - len(prefix))] for prefix in prefixes], device=device
        )
        lengths = torch.tensor([len(prefix) for prefix in prefixes], device=device)
        mask = torch.arange(width, device=device)[None] < lengths[:, None]
        encoded = self.model.encode_prefix(ids, mask.long())
        for row, prefix in enumerate(prefixes):
            n = len(prefix)
            self.entries[prefix] = PrefixKeys(
                tuple(k[row : row + 1, :, :n] for k in encoded.keys),
                tuple(v[row : row + 1, :, :n] for v in encoded.values),
                encoded.mask[row : row + 1, :n],
                encoded.length[row : row + 1],
            )
