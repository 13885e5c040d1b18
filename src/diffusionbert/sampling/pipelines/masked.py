"""The masked (absorbing) diffusion pipeline: any sampler of :mod:`~diffusionbert.sampling.samplers` through
the one denoising loop, whole or in semi-autoregressive blocks.

Every generated position starts as [MASK]; each step calls the network (skipped while a time-agnostic
model's x_t is unchanged: logits reuse, and NFE counts only real calls) and lets the sampler reveal tokens.
A list of sources is decoded in one call, batched across sources: rows are right-padded with ``[PAD]`` to
the longest and the network sees them through an attention mask (``x != [PAD]``, exact: the denoiser puts
zero mass on ``[PAD]``, so no generated token is one). With ``guidance`` w > 0 (classifier-free guidance, for
a model trained with source dropout) every call also runs the network on the rows with their source shown
as [MASK]s and uses ``cond + w * (cond - uncond)`` (:func:`guided_logits`); each call then costs two forward
passes. Each sample draws from its own generator (derived from ``seed`` and its index), so results do not
depend on ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ...checkpoint import LoadedModel
from ...config import ENDS, DecodingConfig
from ...diffusion.corruption import mask_sources
from ...diffusion.objectives import Objective
from ...diffusion.self_prompt import SelfPrompt
from ...errors import ConfigError, invalid_choice
from ...methods import DENOISE, objective_from_config
from ...models import DiffusionBertForMaskedLM
from ..blocks import block_index, denoise_blocks
from ..cache import PrefixCache
from ..loop import Denoiser, DenoiseResult, denoise
from ..output import SampleOutput
from ..samplers import SAMPLERS, Sampler, build_sampler
from .base import Outputs, Supports, TemplatePipeline
from .layout import Conditioning, Layout, predicted_ends, resolve_end


def guided_logits(conditional: Tensor, unconditional: Tensor, weight: float) -> Tensor:
    """Classifier-free guidance on logits: ``cond + w * (cond - uncond)``, i.e. p ∝ p_cond^(1+w) / p_uncond^w
    before normalisation (w = 0: the conditional model unchanged). Tokens the denoiser forbids (logit −inf in
    both) stay at −inf instead of becoming NaN."""
    guided = conditional + weight * (conditional - unconditional)
    return torch.where(torch.isneginf(conditional), conditional, guided)


class DiffusionPipeline(TemplatePipeline, kind=DENOISE):
    """A trained denoiser, its tokenizer and objective, ready to generate text with any sampler."""

    supports: ClassVar[Supports] = Supports(
        description="a masked diffusion model",
        conditions=("prompt", "infill", "source"),
        ends=ENDS,
        blocks=True,
        length_beam=True,
        guidance=True,
        sharpening=True,
        sampler_options=True,
        prompt_cache=True,
        trajectories=True,
        live=True,
    )
    model: DiffusionBertForMaskedLM

    def __init__(
        self,
        model: DiffusionBertForMaskedLM,
        tokenizer: PreTrainedTokenizerBase,
        objective: Objective,
        device: torch.device | str | None = None,
        *,
        use_cache: bool = True,
        self_prompt: SelfPrompt | None = None,
        **settings: Any,
    ) -> None:
        """``use_cache=False`` turns off logits reuse for time-agnostic models (a reference for benchmarks).
        ``self_prompt`` is the layout of a self-prompting model (each step reads the previous step's
        estimate; logits are then never reused). ``settings`` are those of :class:`TemplatePipeline`."""
        self.use_cache = use_cache
        self.self_prompt = self_prompt
        super().__init__(model, tokenizer, objective, device, **settings)

    @classmethod
    def _from_loaded(cls, loaded: LoadedModel, device: torch.device | str | None) -> DiffusionPipeline:
        """With the objective the model directory's settings describe."""
        objective = objective_from_config(
            loaded.diffusion_cfg, loaded.tokenizer.mask_token_id, loaded.token_counts
        )
        return cls(
            loaded.model,
            loaded.tokenizer,
            objective,
            device,
            self_prompt=loaded.self_prompt,
            **cls._settings(loaded),
        )

    @property
    def time_conditioning(self) -> str:
        """The model's time input: ``none`` (time-agnostic, logits cacheable), ``prefix_token`` or ``layerwise``."""
        return getattr(self.model.config, "time_conditioning", "none")

    @property
    def own_sampler(self) -> str:
        """``ancestral``: the model's own reverse process, whose bound it reports."""
        return "ancestral"

    def _sampler_names(self) -> tuple[str, ...]:
        """Every sampler of :data:`~diffusionbert.sampling.samplers.SAMPLERS` that suits this model."""
        return tuple(
            name
            for name, cls in SAMPLERS.items()
            if cls.unsuitable(self.objective, self.time_conditioning) is None
        )

    @classmethod
    def _check_sampler_name(cls, name: str) -> None:
        if name not in SAMPLERS:
            raise invalid_choice("sampler", name, SAMPLERS)

    def _check_sampler(self, name: str) -> None:
        self._check_sampler_name(name)
        if (reason := SAMPLERS[name].unsuitable(self.objective, self.time_conditioning)) is not None:
            raise ConfigError(reason)

    def _decode(self, conditioning: Conditioning, decoding: DecodingConfig, outputs: Outputs) -> SampleOutput:
        """Generate ``num_samples`` texts of ``length`` generated positions in ``steps`` steps.

        With ``end="predicted"`` (a model trained with a target window, decoded in it) one network call first
        predicts each text's length (given its source, or its hidden source and prompt), and only that many
        positions are decoded, never as [SEP]; with ``"generated"`` a generated [SEP] ends the text (see
        :mod:`.layout`). With ``block_length`` B the generated positions are decoded semi-autoregressively
        (LLaDA): in blocks of B, left to right, each block in ``steps`` steps
        (:mod:`~diffusionbert.sampling.blocks`); with ``end="generated"`` a text stops after the block where
        it generated its [SEP].
        """
        assert decoding.sampler is not None and decoding.length is not None  # resolved by the call
        block_length = self._block_length(decoding, conditioning)
        end = resolve_end(
            decoding.end or ("generated" if self.model.config.block_size else None),
            decoding.length,
            conditioning.infill,
            self.target_window,
            self.self_prompt is not None,
        )
        beam = decoding.length_beam
        if beam > 1 and end != "predicted":
            raise ConfigError(
                f"length_beam={beam} chooses among the lengths a model predicts; allowed: length_beam > 1 "
                'with end="predicted" (a model trained with data.target_window, decoded in its window)'
            )
        if end == "predicted" and self.model.config.block_size:
            raise ConfigError(
                'end="predicted" reads every position of the window at once, but block diffusion sees no '
                'block before it is decoded; allowed: end="generated" (a text ends at its block with [SEP])'
            )
        sampler = self._sampler(decoding)
        timesteps = sampler.timesteps(decoding.steps)
        layout = self._layouts(decoding.length, conditioning)
        self._check_guidance(decoding.guidance, conditioning)
        tok, guidance = self.tokenizer, decoding.guidance
        prompted = self.self_prompt is not None  # prompted rows are right-padded to the longest span
        padded = prompted or bool((layout.ids == tok.pad_token_id).any())
        cache = self.use_cache and self.time_conditioning == "none" and not prompted
        self._check_prompt_cache(decoding.prompt_cache)

        def predictor() -> Denoiser:
            """The network's prediction of a batch (guided with ``guidance``), through its own prompt caches
            (one per branch of guidance) when the model has them."""
            network, unconditional = self._network(decoding, padded), self._network(decoding, padded)

            def predict(x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
                logits = network(x, time, positions)
                if not guidance:
                    return logits
                every_row = torch.ones_like(x[:, 0], dtype=torch.bool)
                hidden = mask_sources(x, every_row, tok.sep_token_id, tok.mask_token_id)
                return guided_logits(logits, unconditional(hidden, time, positions), guidance)

            return predict

        if end == "predicted":
            first_time = sampler.time_input(timesteps[0][0])
            layout = predicted_ends(
                layout, predictor(), first_time, decoding.batch_size, tok.sep_token_id, beam
            )

        num_blocks = 1 if block_length is None else int(self._blocks(layout, block_length).max()) + 1
        end_id = tok.sep_token_id if end == "generated" else None

        def run(
            rows: Layout, generators: list[torch.Generator], advance: Callable[[int], None]
        ) -> DenoiseResult:
            predict = predictor()  # the batch's own caches: freed with it

            def call_model(x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
                logits = predict(x, time, positions)
                if end == "predicted":  # the text's length is decided: no [SEP] inside it
                    logits[:, tok.sep_token_id] = float("-inf")
                return logits

            common = {
                "generated": rows.generated,
                "noise_mask": rows.noise_mask,
                "cache": cache,
                "return_trajectory": outputs.return_trajectory,
                "advance": advance,
                "self_prompt": self.self_prompt,
                "on_step": outputs.on_step,
            }
            if block_length is None:
                return denoise(call_model, rows.ids, sampler, timesteps, generators, **common)
            return denoise_blocks(
                call_model,
                rows.ids,
                sampler,
                timesteps,
                generators,
                blocks=self._blocks(rows, block_length),
                end_id=end_id,
                **common,
            )

        steps = num_blocks * len(timesteps)
        length_call = int(end == "predicted")
        if beam == 1:
            return self._generate(layout, decoding, steps, outputs.progress, run, extra_nfe=length_call)
        out = self._generate(layout, decoding, steps, outputs.progress, run)
        return best_of_beam(out, beam, decoding.num_samples, length_call)

    @property
    def cache(self) -> str:
        return "prompt" if self.caches_prompt else "none"

    @property
    def caches_prompt(self) -> bool:
        """Whether a call can compute what precedes the span it denoises once (:mod:`~diffusionbert.sampling.cache`):
        a model trained with isolated source attention or block diffusion on a BERT-layout encoder, not
        self-prompting."""
        return self.model.caches_prefix and self.self_prompt is None

    def _check_prompt_cache(self, prompt_cache: bool | None) -> None:
        """Refuse ``prompt_cache=True`` for a model that cannot have it (a one-line ConfigError)."""
        if prompt_cache and not self.caches_prompt:
            if not self.model.blocks_apply:
                why = "what comes before the answer attends to it: model.source_attention=full"
            else:
                why = "it is self-prompting" if self.self_prompt else "its encoder is not of BERT's layout"
            raise ConfigError(
                "prompt_cache=True needs a model trained with model.source_attention=isolated or block "
                f"diffusion, on a BERT-layout encoder, and this one cannot ({why}); allowed: "
                "prompt_cache=None or False"
            )

    def _network(self, decoding: DecodingConfig, padded: bool) -> Denoiser:
        """The network call of a decode: through a prompt cache where it applies (and ``prompt_cache`` is
        not False), else the whole sequence (masking out padding when a batch has any)."""
        if decoding.prompt_cache is not False and self.caches_prompt:
            return PrefixCache(self.model, self.tokenizer.pad_token_id)

        def whole(x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
            attention_mask = (x != self.tokenizer.pad_token_id).long() if padded else None
            return self.model(input_ids=x, attention_mask=attention_mask, t=time, positions=positions).logits

        return whole

    def _block_length(self, decoding: DecodingConfig, conditioning: Conditioning) -> int | None:
        """The blocks a call decodes in: ``block_length``, or for a block-diffusion model its trained
        ``block_size`` (the only one it decodes; an infill template, whose later text such a model cannot
        see, is refused)."""
        trained = self.model.config.block_size
        if trained is None:
            return decoding.block_length
        if decoding.block_length not in (None, trained):
            raise ConfigError(
                f"block_length={decoding.block_length} conflicts with the block_size={trained} this block "
                f"diffusion model was trained with; allowed: block_length={trained} (or none)"
            )
        if conditioning.infill:
            raise ConfigError(
                "infill= fixes text after a blank, which a block-diffusion model never sees while it decodes "
                "the blank's block; allowed: prompt= or source="
            )
        return trained

    def _blocks(self, rows: Layout, block_length: int) -> Tensor:
        """The decoding block of each generated position [R, L] (−1 elsewhere): the model's own blocks for a
        block-diffusion model (counted from its context, so a prompt fills the first ones), else runs of
        ``block_length`` generated positions."""
        blocks = self.model.blocks(rows.ids) if self.model.config.block_size else None
        if blocks is None:
            return block_index(rows.generated, block_length)
        return torch.where(rows.generated, blocks - 1, -1)

    def _sampler(self, decoding: DecodingConfig) -> Sampler:
        """The call's sampler, built with its own options and the sharpening."""
        assert decoding.sampler is not None
        return build_sampler(
            decoding.sampler,
            self.objective,
            **decoding.sampler_options,
            temperature=decoding.temperature,
            top_k=decoding.top_k,
            top_p=decoding.top_p,
        )

    def _check_guidance(self, guidance: float, conditioning: Conditioning) -> None:
        """Guidance needs a source and a model that learned to generate without one."""
        if guidance and not conditioning.source:
            raise ConfigError("guidance contrasts a source with none; allowed: guidance with source=")
        if guidance and not self.source_dropout:
            raise ConfigError(
                f"guidance={guidance} needs a model trained with training.source_dropout > 0 (this one: "
                f"{self.source_dropout}); without it the model never saw a hidden source"
            )


def best_of_beam(out: SampleOutput, beam: int, num_samples: int, extra_nfe: int = 0) -> SampleOutput:
    """Mask-Predict's choice among a length beam: ``out`` holds, per template, ``beam`` candidate lengths ×
    ``num_samples`` samples (template-major, then length, then sample); for each template and sample the
    candidate with the highest mean token score is kept (ties: the first, the median length). Its network
    calls are those of every candidate, plus ``extra_nfe`` (the length prediction, once per template)."""
    assert out.scores is not None, "a masked diffusion loop scores its tokens"
    scores = torch.tensor(out.scores, dtype=torch.float64).view(-1, beam, num_samples)
    nfe = torch.tensor(out.nfe).view(-1, beam, num_samples).sum(1) + extra_nfe
    best = scores.argmax(1)  # [templates, samples]: the first maximum
    base = torch.arange(scores.shape[0])[:, None] * beam * num_samples + torch.arange(num_samples)
    keep = (base + best * num_samples).flatten()
    return SampleOutput(
        texts=[out.texts[i] for i in keep.tolist()],
        token_ids=out.token_ids[keep],
        lengths=[out.lengths[i] for i in keep.tolist()],
        nfe=nfe.flatten().tolist(),
        trajectories=None if out.trajectories is None else out.trajectories[keep],
        scores=scores.gather(1, best[:, None]).flatten().tolist(),
    )
