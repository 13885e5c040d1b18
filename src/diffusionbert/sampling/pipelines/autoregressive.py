"""The left-to-right pipeline: a causal LM of the same backbone (the AR baseline), decoded with a key-value
cache by :func:`~diffusionbert.sampling.left_to_right.generate_left_to_right`.

Its samplers are ``autoregressive`` (a draw per token), ``greedy`` and ``beam`` / ``beam:N``; ``steps`` does
not count (one network call per token). A ``source`` (a model trained on pairs) is decoded after
``[CLS] source [SEP]``; a text ends at its first generated [SEP].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from ...checkpoint import LoadedModel
from ...config import DecodingConfig
from ...errors import ConfigError
from ...methods import LEFT_TO_RIGHT
from ...models import CausalLMForComparison
from ..left_to_right import LEFT_TO_RIGHT_DECODERS, LeftToRightDecoder, generate_left_to_right
from ..output import SampleOutput
from .base import Outputs, Pipeline, Supports
from .layout import Conditioning


class AutoregressivePipeline(Pipeline, kind=LEFT_TO_RIGHT):
    """A causal LM and its tokenizer, decoded left to right (module doc)."""

    supports: ClassVar[Supports] = Supports(
        description="an autoregressive model (it decodes left to right)",
        conditions=("source",),
        steps=False,
        sharpening=True,
    )
    model: CausalLMForComparison

    def __init__(
        self,
        model: CausalLMForComparison,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device | str | None = None,
        *,
        decoding: DecodingConfig | None = None,
        trained_on_pairs: bool | None = None,
        target_window: int | None = None,
        context_length: int | None = None,
    ) -> None:
        """``decoding`` is the model's default decoding. ``trained_on_pairs`` (from the model directory) makes
        a ``source`` for a model trained on plain texts an error; None (not recorded) allows it.
        ``target_window`` and ``context_length`` (its ``data.target_window`` and ``data.max_length``) size
        what :meth:`chat` reads and writes."""
        self._init(model, tokenizer, device, decoding, trained_on_pairs, target_window, context_length)

    @classmethod
    def _from_loaded(cls, loaded: LoadedModel, device: torch.device | str | None) -> AutoregressivePipeline:
        return cls(
            loaded.model,
            loaded.tokenizer,
            device,
            decoding=loaded.decoding,
            trained_on_pairs=loaded.trained_on_pairs,
            target_window=loaded.target_window,
            context_length=loaded.max_length,
        )

    @property
    def cache(self) -> str:
        return "key-value"

    @property
    def own_sampler(self) -> str:
        """``autoregressive``: a draw per token from the model's own distribution."""
        return "autoregressive"

    def _sampler_names(self) -> tuple[str, ...]:
        """Its decoders (``beam`` with its default width)."""
        return tuple(LEFT_TO_RIGHT_DECODERS)

    @classmethod
    def _check_sampler_name(cls, name: str) -> None:
        LeftToRightDecoder.parse(name)

    def _modes_without_source(self) -> tuple[str, ...]:
        """Unconditional text for a model of plain texts; nothing for a pair model, which needs its source."""
        return () if self.trained_on_pairs else ("unconditional",)

    def _decode(self, conditioning: Conditioning, decoding: DecodingConfig, outputs: Outputs) -> SampleOutput:
        """``num_samples`` texts of at most ``length`` tokens (per source with ``source``)."""
        if conditioning.source and self.trained_on_pairs is False:
            raise ConfigError(
                "source= conditions on a seq2seq source, but this model was trained on plain texts (no "
                "data.source_field); allowed: a model trained on source/target pairs"
            )
        if not conditioning.source and self.trained_on_pairs:
            raise ConfigError(
                "this autoregressive model was trained on source/target pairs, so it only decodes after a "
                "source; allowed: source="
            )
        return generate_left_to_right(
            self.model, self.tokenizer, decoding, source=conditioning.source, progress=outputs.progress
        )
