"""The Gaussian embedding-diffusion pipeline (Diffusion-LM, Plaid): the same templates as masked diffusion
(unconditional, ``prompt``, ``infill``, ``source``), denoised as vectors by
:func:`~diffusionbert.sampling.embedding_loop.denoise_embeddings`.

Its samplers: ``clamped`` (Diffusion-LM's clamping trick at every step, its default) and ``ancestral`` (the
model's own reverse process, the one its bound scores; Plaid's default). ``steps`` K ≤ T walks
t_k = 1 − k/K, one network call each. A generated [SEP] ends a text. Its states are vectors: a trajectory holds
each step's most likely words, and there is no live display (``on_step``), no blocks, sharpening, guidance or
predicted end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from ...checkpoint import LoadedModel
from ...config import DecodingConfig
from ...diffusion.embedding import EmbeddingObjective
from ...errors import invalid_choice
from ...methods import GAUSSIAN, objective_from_config
from ...models import EmbeddingDiffusionLM
from ..embedding_loop import denoise_embeddings
from ..loop import DenoiseResult
from ..output import SampleOutput
from .base import Outputs, Supports, TemplatePipeline
from .layout import Conditioning, Layout

SAMPLERS = ("clamped", "ancestral")
"""The samplers of a Gaussian embedding-diffusion model."""


class EmbeddingDiffusionPipeline(TemplatePipeline, kind=GAUSSIAN):
    """A Gaussian embedding-diffusion model and its tokenizer (module doc)."""

    supports: ClassVar[Supports] = Supports(
        description="a Gaussian embedding-diffusion model",
        conditions=("prompt", "infill", "source"),
        trajectories=True,
    )
    model: EmbeddingDiffusionLM
    objective: EmbeddingObjective

    @classmethod
    def _from_loaded(
        cls, loaded: LoadedModel, device: torch.device | str | None
    ) -> EmbeddingDiffusionPipeline:
        """With the objective the model directory's settings describe."""
        objective = objective_from_config(
            loaded.diffusion_cfg, loaded.tokenizer.mask_token_id, loaded.token_counts
        )
        return cls(loaded.model, loaded.tokenizer, objective, device, **cls._settings(loaded))

    @property
    def own_sampler(self) -> str:
        """The family's own sampler (its objective's ``default_sampler``)."""
        return self.objective.default_sampler

    def _sampler_names(self) -> tuple[str, ...]:
        return (self.own_sampler, *(name for name in SAMPLERS if name != self.own_sampler))

    @classmethod
    def _check_sampler_name(cls, name: str) -> None:
        if name not in SAMPLERS:
            raise invalid_choice("sampler", name, SAMPLERS)

    def _decode(self, conditioning: Conditioning, decoding: DecodingConfig, outputs: Outputs) -> SampleOutput:
        """``num_samples`` texts (per source with a list of sources) of ``length`` generated positions in
        ``steps`` reverse steps."""
        assert decoding.length is not None  # resolved by the call
        steps = decoding.steps
        self.objective.reverse_grid(steps)  # a bad step count fails before any work
        layout = self._layouts(decoding.length, conditioning)

        def run(
            rows: Layout, generators: list[torch.Generator], advance: Callable[[int], None]
        ) -> DenoiseResult:
            return denoise_embeddings(
                self.model,
                self.objective,
                rows.ids,
                rows.generated,
                steps,
                generators,
                attention_mask=(rows.ids != self.tokenizer.pad_token_id).long(),
                clamp=decoding.sampler == "clamped",
                mask_id=self.tokenizer.mask_token_id,
                return_trajectory=outputs.return_trajectory,
                advance=advance,
            )

        return self._generate(layout, decoding, steps, outputs.progress, run)
