"""Pipelines: a trained model, its tokenizer and objective, ready to generate text in one call.

Python API::

    pipe = load_pipeline("runs/demo/final")            # the pipeline the model's method samples with
    out = pipe(num_samples=4, length=32, steps=64, sampler="cached")
    print(out.texts)

:class:`DiffusionPipeline` runs :func:`~diffusionbert.sampling.loop.denoise`, the one denoising loop, with
any sampler; :class:`AutoregressivePipeline` samples an AR model left to right, and
:class:`EmbeddingDiffusionPipeline` a Gaussian embedding-diffusion model. All take the same call, so a
comparison samples every row the same way.

Sequences use the training layout ``[CLS] x_1 … x_L``: position 0 is kept and positions 1..L are generated
from all-[MASK]; a generated ``[SEP]`` ends the text. Conditioning goes through the same loop by fixing
tokens: a ``prompt`` right after ``[CLS]``, an ``infill`` template whose ``[MASK]`` placeholders are the only
generated positions, or a seq2seq ``source`` in the pair layout ``[CLS] source [SEP] target …`` where only
the target is generated. A model trained with a target window (``data.target_window``) instead decodes each
text in the length it predicts from one first call (``end="predicted"``, its default in that window), the rest
of the window given as ``[SEP]`` filler. A list of sources is decoded in one call, ``num_samples`` per source, batched across
sources: rows are right-padded with ``[PAD]`` to the longest and the network sees them through an attention
mask (``x != [PAD]``, exact: the denoiser puts zero mass on ``[PAD]``, so no generated token is one).
With ``guidance`` w > 0 (classifier-free guidance, for a model trained with source dropout) every call also
runs the network on the rows with their source shown as [MASK]s and uses ``cond + w * (cond - uncond)``
(:func:`guided_logits`); each call then costs two forward passes. Each sample draws from its own generator
(derived from ``seed`` and its index), so results do not depend on ``batch_size``. With a time-agnostic model (``time_conditioning='none'``) a row's
logits are reused while its x_t is unchanged, and NFE counts only real network calls.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from rich.progress import Progress
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..checkpoint import LoadedModel, load_model_dir
from ..data.chat import Message, require_chat_template
from ..diffusion.corruption import mask_sources
from ..diffusion.length import length_cdf, median_length
from ..diffusion.objectives import Objective
from ..diffusion.self_prompt import SelfPrompt
from ..errors import CheckpointError, ConfigError, invalid_choice
from ..methods import DENOISE, GAUSSIAN, LEFT_TO_RIGHT, objective_from_config
from ..models import CausalLMForComparison, DiffusionBertForMaskedLM
from .blocks import block_index, denoise_blocks
from .chat import DEFAULT_ANSWER_LENGTH, ChatReply, fit_conversation, forming_answer
from .draws import check_sample_request, sample_generator
from .embedding_loop import denoise_embeddings
from .left_to_right import LEFT_TO_RIGHT_DECODERS, LeftToRightDecoder, generate_left_to_right
from .loop import Denoiser, DenoiseResult, denoise
from .output import SampleOutput
from .samplers import SAMPLERS, Sampler, build_sampler

MODES = ("unconditional", "prompt", "infill", "source", "chat")
"""What a model can generate from: nothing, a prompt it continues, an infill template, a seq2seq source, or a
conversation (:meth:`_Pipeline.modes` says which a model offers)."""
ENDS = ("generated", "predicted")
"""Where a generated text ends: at its first generated [SEP], or at the length the model predicts for it
(:mod:`~diffusionbert.diffusion.length`)."""


def guided_logits(conditional: Tensor, unconditional: Tensor, weight: float) -> Tensor:
    """Classifier-free guidance on logits: ``cond + w * (cond - uncond)``, i.e. p ∝ p_cond^(1+w) / p_uncond^w
    before normalisation (w = 0: the conditional model unchanged). Tokens the denoiser forbids (logit −inf in
    both) stay at −inf instead of becoming NaN."""
    guided = conditional + weight * (conditional - unconditional)
    return torch.where(torch.isneginf(conditional), conditional, guided)


@dataclass(frozen=True)
class _Layout:
    """Sequence templates [R, S]: ids with [MASK] where generated (and [PAD] after a shorter template), the
    generated and noisable positions, and per template where the text starts, from where a generated [SEP]
    cuts it (after every given token) and where the template ends (before its padding)."""

    ids: Tensor
    generated: Tensor
    noise_mask: Tensor
    text_start: Tensor
    cut_from: Tensor
    end: Tensor

    @classmethod
    def stack(cls, layouts: list[_Layout], pad_id: int) -> _Layout:
        """One layout of several one-template layouts, right-padded to the longest."""
        width = max(layout.ids.shape[1] for layout in layouts)

        def pad(name: str, value: int | bool) -> Tensor:
            rows = [getattr(layout, name) for layout in layouts]
            return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=value) for r in rows])

        return cls(
            pad("ids", pad_id),
            pad("generated", False),
            pad("noise_mask", False),
            torch.cat([layout.text_start for layout in layouts]),
            torch.cat([layout.cut_from for layout in layouts]),
            torch.cat([layout.end for layout in layouts]),
        )

    def select(self, rows: Tensor) -> _Layout:
        """The templates of ``rows`` (one index per output row)."""
        return _Layout(
            self.ids[rows],
            self.generated[rows],
            self.noise_mask[rows],
            self.text_start[rows],
            self.cut_from[rows],
            self.end[rows],
        )


_P = TypeVar("_P", bound="_Pipeline")


class _Pipeline(ABC):
    """What every pipeline shares: loading from a model directory into the class its method samples with,
    and answering a conversation."""

    default_sampler: str
    masked_loop: ClassVar[bool] = True
    """Whether a call runs the masked denoising loop, so it can decode in blocks (``block_length``) and show
    its token states as they form (``on_step``); left-to-right decoding and the Gaussian reverse process
    (whose states are vectors) cannot."""
    sharpens: ClassVar[bool] = True
    """Whether ``temperature``, ``top_k`` and ``top_p`` apply to its samplers."""
    tokenizer: PreTrainedTokenizerBase
    model: DiffusionBertForMaskedLM | CausalLMForComparison
    trained_on_pairs: bool | None
    target_window: int | None
    context_length: int | None

    @abstractmethod
    def sampler_names(self) -> tuple[str, ...]:
        """The samplers a call on this model accepts by name (its default first)."""

    @abstractmethod
    def _modes_without_source(self) -> tuple[str, ...]:
        """What a call can generate from without a source (of ``unconditional``, ``prompt``, ``infill``)."""

    @property
    def modes(self) -> tuple[str, ...]:
        """What this model generates from, of :data:`MODES`: its calls without a source, then ``source`` for
        a model trained on pairs, or ``chat`` (:meth:`chat`) for one trained on chat records."""
        chat = getattr(self.tokenizer, "chat_template", None) is not None
        paired = () if self.trained_on_pairs is False else ("chat" if chat else "source",)
        return (*self._modes_without_source(), *paired)

    @abstractmethod
    def __call__(
        self, num_samples: int, length: int, steps: int, sampler: str | None = None, **options: Any
    ) -> SampleOutput:
        """Generate ``num_samples`` texts (see :meth:`DiffusionPipeline.__call__` for the options)."""

    def chat_window(self, length: int | None, block_length: int | None = None) -> tuple[int, int]:
        """The answer window of a chat (``length``, default: the model's target window, else
        :data:`~diffusionbert.sampling.chat.DEFAULT_ANSWER_LENGTH`) and the prompt tokens the model's
        context leaves; checked, with blocks, before any conversation (a one-line ConfigError)."""
        require_chat_template(self.tokenizer)
        if block_length is not None and not self.masked_loop:
            raise ConfigError(
                f"block_length does not apply to {type(self).__name__}; allowed: a masked diffusion model"
            )
        length = length or self.target_window or DEFAULT_ANSWER_LENGTH
        context = self.context_length or self.model.max_input_length
        if length < 1 or context - length - 2 < 1:
            raise ConfigError(
                f"length={length} is not valid; allowed: 1 <= length <= {context - 3} (the model reads "
                f"{context} positions, the prompt needs some)"
            )
        return length, context - length - 2

    def chat_prompt(
        self, messages: Sequence[Message], length: int | None = None, block_length: int | None = None
    ) -> tuple[str, int, int]:
        """What :meth:`chat` decodes for ``messages``: the rendered prompt (the call's ``source``), the answer
        window (:meth:`chat_window`) and how many of the oldest messages were dropped to fit; checked like
        :meth:`chat`, so a caller that runs the call itself (a live page) answers exactly as :meth:`chat`."""
        length, budget = self.chat_window(length, block_length)
        prompt, dropped = fit_conversation(self.tokenizer, messages, budget)
        return prompt, length, dropped

    def chat(
        self,
        messages: Sequence[Message],
        *,
        length: int | None = None,
        steps: int = 64,
        sampler: str | None = None,
        block_length: int | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        on_answer: Callable[[str], None] | None = None,
    ) -> ChatReply:
        """Answer a conversation (``[{"role": "user", "content": "..."}]``, the last message the user's) with
        a model trained with ``data.format: chat`` (:mod:`~diffusionbert.sampling.chat`).

        The answer window is ``length`` positions (default: the model's target window, in which it predicts
        where its answer ends); ``steps``, ``sampler``, ``block_length`` (semi-autoregressive blocks) and the
        sharpening options are those of a call. ``on_answer(text)`` sees the answer as it forms after every
        step, [MASK] shown as ``░`` (a left-to-right model: once, at the end), and then its final text.

        Raises:
            ConfigError: no chat template, the newest message does not fit, or a bad option.
            DataError: a malformed or empty message.
        """
        prompt, length, dropped = self.chat_prompt(messages, length, block_length)
        options: dict[str, Any] = {"block_length": block_length} if block_length is not None else {}
        if on_answer is not None and self.masked_loop:
            options["on_step"] = lambda x: on_answer(forming_answer(self.tokenizer, x[0, -length:].tolist()))
        out = self(
            1,
            length,
            steps,
            sampler,
            source=prompt,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            **options,
        )
        if on_answer is not None:
            on_answer(out.texts[0])
        return ChatReply(out.texts[0], out.nfe[0], dropped)

    @classmethod
    def from_pretrained(cls: type[_P], directory: str | Path, device: torch.device | str | None = None) -> _P:
        """Load a model directory (or a run directory with ``final/``) written by training."""
        return cls.from_loaded(load_model_dir(directory, device), device)

    @classmethod
    def from_loaded(cls: type[_P], loaded: LoadedModel, device: torch.device | str | None = None) -> _P:
        """The pipeline of an already loaded model directory (an error if its method samples otherwise)."""
        wanted = PIPELINES[loaded.method.sampling]
        if wanted is not cls:
            raise CheckpointError(
                f"{loaded.directory} holds a {loaded.method.name!r} model, sampled by {wanted.__name__}, not "
                f"{cls.__name__}; use load_pipeline() to get the right one"
            )
        return cls._from_loaded(loaded, device)

    @classmethod
    @abstractmethod
    def _from_loaded(cls: type[_P], loaded: LoadedModel, device: torch.device | str | None) -> _P:
        """Build the pipeline of a loaded model directory whose method samples with this class."""


class DiffusionPipeline(_Pipeline):
    """A trained denoiser, its tokenizer and objective, ready to generate text with any sampler."""

    default_sampler = "ancestral"

    def __init__(
        self,
        model: DiffusionBertForMaskedLM,
        tokenizer: PreTrainedTokenizerBase,
        objective: Objective,
        device: torch.device | str | None = None,
        use_cache: bool = True,
        trained_on_pairs: bool | None = None,
        source_dropout: float | None = None,
        self_prompt: SelfPrompt | None = None,
        source_length: int | None = None,
        target_window: int | None = None,
        context_length: int | None = None,
    ) -> None:
        """``use_cache=False`` turns off logits reuse for time-agnostic models (a reference for benchmarks).

        ``trained_on_pairs`` (from the model directory) makes a ``source`` for a model trained on plain
        texts an error; None (not recorded) allows it. ``source_dropout`` (how often the model saw its source
        hidden in training) must be positive for ``guidance``. ``self_prompt`` is the layout of a
        self-prompting model (each step reads the previous step's estimate; logits are then never reused).
        A pair model trained with source dropout generates without a source (unconditional, prompt, infill)
        after a hidden source of ``source_length`` [MASK]s (its mean source length in training), the input
        source dropout trained it on; without source dropout it needs a source. ``target_window`` (a pair
        model's ``data.target_window``) lets a call predict where each text ends (``end="predicted"``).
        ``context_length`` (its ``data.max_length``) bounds what :meth:`chat` reads."""
        if objective.mask_id != tokenizer.mask_token_id:
            raise ConfigError(
                f"objective mask_id={objective.mask_id} differs from the tokenizer's mask_token_id="
                f"{tokenizer.mask_token_id}; allowed: the same [MASK] id in both"
            )
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has no [CLS]/[SEP] token; allowed: a BERT-family one"
            )
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.objective = objective
        self.use_cache = use_cache
        self.trained_on_pairs = trained_on_pairs
        self.source_dropout = source_dropout
        self.self_prompt = self_prompt
        self.source_length = source_length
        self.target_window = target_window
        self.context_length = context_length

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
            trained_on_pairs=loaded.trained_on_pairs,
            source_dropout=loaded.source_dropout,
            self_prompt=loaded.self_prompt,
            source_length=loaded.source_length,
            target_window=loaded.target_window,
            context_length=loaded.max_length,
        )

    @property
    def time_conditioning(self) -> str:
        """The model's time input: ``none`` (time-agnostic, logits cacheable), ``prefix_token`` or ``layerwise``."""
        return getattr(self.model.config, "time_conditioning", "none")

    @torch.inference_mode()
    def __call__(
        self,
        num_samples: int,
        length: int,
        steps: int,
        sampler: str | Sampler | None = None,
        *,
        prompt: str | None = None,
        infill: str | None = None,
        source: str | Sequence[str] | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 32,
        return_trajectory: bool = False,
        progress: bool = False,
        guidance: float = 0.0,
        end: str | None = None,
        block_length: int | None = None,
        on_step: Callable[[Tensor], None] | None = None,
    ) -> SampleOutput:
        """Generate ``num_samples`` texts of ``length`` generated positions in ``steps`` steps.

        ``sampler`` is a name (built with ``temperature``/``top_k``/``top_p``; default ``ancestral``) or a
        :class:`Sampler` object carrying its own options. With ``infill`` the template fixes the length and
        ``length`` is ignored. With a list of sources, ``num_samples`` texts are generated for each, and the
        output holds them source after source (``num_samples * len(source)`` rows). ``guidance`` w > 0
        sharpens the texts towards their source (see the module doc). With ``end="predicted"`` (a model
        trained with a target window, decoded in it) one network call first predicts each text's length (given
        its source, or its hidden source and prompt), and only that many positions are decoded, never as
        [SEP]; with ``"generated"`` a generated [SEP] ends the text. The default (None) is ``"predicted"``
        wherever it applies (a model trained with a target window, decoded in that window, no infill, not
        self-prompting), else ``"generated"``.

        With ``block_length`` B the generated positions are decoded semi-autoregressively (LLaDA): in blocks
        of B, left to right, each block in ``steps`` steps (:mod:`~diffusionbert.sampling.blocks`); with
        ``end="generated"`` a text stops after the block where it generated its [SEP]. ``on_step(x)`` sees
        the states [b, S] of the batch being decoded after every step (a live display).
        """
        check_sample_request(num_samples, batch_size, seed)
        end = self._resolve_end(end, length, infill)
        sampler = self._sampler(sampler or self.default_sampler, temperature, top_k, top_p)
        timesteps = sampler.timesteps(steps)
        layout = self._layouts(length, prompt, infill, source)
        self._check_guidance(guidance, source)
        tok = self.tokenizer
        prompted = self.self_prompt is not None  # prompted rows are right-padded to the longest span
        padded = prompted or bool((layout.ids == tok.pad_token_id).any())
        cache = self.use_cache and self.time_conditioning == "none" and not prompted

        def predict(x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
            attention_mask = (x != tok.pad_token_id).long() if padded else None
            logits = self.model(
                input_ids=x, attention_mask=attention_mask, t=time, positions=positions
            ).logits
            if not guidance:
                return logits
            every_row = torch.ones_like(x[:, 0], dtype=torch.bool)
            hidden = mask_sources(x, every_row, tok.sep_token_id, tok.mask_token_id)
            unconditional = self.model(
                input_ids=hidden, attention_mask=attention_mask, t=time, positions=positions
            )
            return guided_logits(logits, unconditional.logits, guidance)

        def call_model(x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
            logits = predict(x, time, positions)
            if end == "predicted":  # the text's length is decided: no [SEP] inside it
                logits[:, tok.sep_token_id] = float("-inf")
            return logits

        if end == "predicted":
            first_time = sampler.time_input(timesteps[0][0])
            layout = self._predicted_ends(layout, predict, first_time, batch_size)

        num_blocks = 1
        if block_length is not None:
            num_blocks = int(block_index(layout.generated, block_length).max()) + 1
        end_id = tok.sep_token_id if end == "generated" else None

        def run(
            rows: _Layout, generators: list[torch.Generator], advance: Callable[[int], None]
        ) -> DenoiseResult:
            common = {
                "generated": rows.generated,
                "noise_mask": rows.noise_mask,
                "cache": cache,
                "return_trajectory": return_trajectory,
                "advance": advance,
                "self_prompt": self.self_prompt,
                "on_step": on_step,
            }
            if block_length is None:
                return denoise(call_model, rows.ids, sampler, timesteps, generators, **common)
            return denoise_blocks(
                call_model,
                rows.ids,
                sampler,
                timesteps,
                generators,
                block_length=block_length,
                end_id=end_id,
                **common,
            )

        return self._generate(
            layout,
            num_samples,
            batch_size,
            seed,
            num_blocks * len(timesteps),
            progress,
            run,
            extra_nfe=int(end == "predicted"),
        )

    def _layouts(
        self, length: int, prompt: str | None, infill: str | None, source: str | Sequence[str] | None
    ) -> _Layout:
        """The templates of a call: one, or one per source of a list (each checked non-empty)."""
        sources = [source] if source is None or isinstance(source, str) else list(source)
        if not sources or (len(sources) > 1 and not all(one.strip() for one in sources)):
            raise ConfigError("a source in the list is empty; allowed: a text or a list of non-empty texts")
        return _Layout.stack(
            [self._layout(length, prompt, infill, one) for one in sources], self.tokenizer.pad_token_id
        )

    def _generate(
        self,
        layout: _Layout,
        num_samples: int,
        batch_size: int,
        seed: int,
        steps: int,
        progress: bool,
        run: Callable[[_Layout, list[torch.Generator], Callable[[int], None]], DenoiseResult],
        extra_nfe: int = 0,
    ) -> SampleOutput:
        """``num_samples`` texts per template of ``layout``, decoded by ``run`` (the rows of a batch, their
        generators, and a progress callback of ``steps`` per batch) in batches of ``batch_size``; each text cut
        at its end, ``extra_nfe`` network calls made before the loop added to each count."""
        total = num_samples * layout.ids.shape[0]
        template = torch.arange(total, device=self.device) // num_samples  # the source of each output row
        results: list[DenoiseResult] = []
        starts = range(0, total, batch_size)
        with Progress(disable=not progress) as bar:
            task = bar.add_task("sampling", total=len(starts) * steps)
            for start in starts:
                stop = min(start + batch_size, total)
                generators = [sample_generator(seed, i, self.device) for i in range(start, stop)]
                results.append(
                    run(layout.select(template[start:stop]), generators, lambda n: bar.advance(task, n))
                )
        tokens = torch.cat([r.tokens for r in results])
        rows = layout.select(template)
        ends = self._text_ends(tokens, rows)
        starts_at = rows.text_start.tolist()
        texts = self.tokenizer.batch_decode(
            [row[start:end].tolist() for row, start, end in zip(tokens, starts_at, ends, strict=True)],
            skip_special_tokens=True,
        )
        trajectories = [r.trajectory for r in results]
        return SampleOutput(
            texts=texts,
            token_ids=tokens.cpu(),
            lengths=[stop - start for start, stop in zip(starts_at, ends, strict=True)],
            nfe=(torch.cat([r.nfe for r in results]) + extra_nfe).tolist(),
            trajectories=torch.cat(trajectories).cpu() if trajectories[0] is not None else None,
        )

    def _check_guidance(self, guidance: float, source: str | Sequence[str] | None) -> None:
        """Guidance needs a source and a model that learned to generate without one."""
        if guidance < 0 or not math.isfinite(guidance):
            raise ConfigError(f"guidance={guidance} is not valid; allowed: a finite number >= 0")
        if guidance and not source:
            raise ConfigError("guidance contrasts a source with none; allowed: guidance with source=")
        if guidance and not self.source_dropout:
            raise ConfigError(
                f"guidance={guidance} needs a model trained with training.source_dropout > 0 (this one: "
                f"{self.source_dropout}); without it the model never saw a hidden source"
            )

    def _resolve_end(self, end: str | None, length: int, infill: str | None) -> str:
        """Where the texts of a call end: ``end`` checked (a predicted end needs the window the model learned
        to end texts in, filled from its start or after a prompt), or for None the predicted end wherever it
        applies."""
        if end is None:
            applies = not infill and self.target_window == length and self.self_prompt is None
            return "predicted" if applies else "generated"
        if end not in ENDS:
            raise invalid_choice("end", end, list(ENDS))
        if end == "generated":
            return end
        if infill:
            raise ConfigError(
                'end="predicted" decodes a window from its start, an infill fixes its own positions; '
                'allowed: end="generated" with infill='
            )
        if self.target_window is None:
            raise ConfigError(
                'end="predicted" needs a model trained with data.target_window (it learns where a text ends '
                'by filling the window with [SEP]); allowed: end="generated" for this model'
            )
        if length != self.target_window:
            raise ConfigError(
                f'end="predicted" with length={length}, but the model learned its ends in a window of '
                f"{self.target_window}; allowed: length={self.target_window}"
            )
        if self.self_prompt is not None:
            raise ConfigError(
                'end="predicted" is not implemented for a self-prompting model; allowed: end="generated"'
            )
        return end

    def _predicted_ends(self, layout: _Layout, predict: Denoiser, time: float, batch_size: int) -> _Layout:
        """``layout`` with each template's text cut to its median predicted length (at least one generated
        token): one network call on the all-[MASK] target window at ``time`` (t = 1) gives p_θ(x_i = [SEP])
        at its generated positions (after the source, or after a prompt), whose running maximum is the
        length's distribution function (:mod:`~diffusionbert.diffusion.length`); the window after the text
        becomes given [SEP] filler, as in training."""
        sep = self.tokenizer.sep_token_id
        lengths = []
        for start in range(0, layout.ids.shape[0], batch_size):
            rows = layout.select(torch.arange(start, min(start + batch_size, layout.ids.shape[0])))
            times = torch.full((rows.ids.shape[0],), time, dtype=torch.float32, device=self.device)
            logits = predict(rows.ids, times, rows.generated)
            sep_log_probs = torch.log_softmax(logits.float(), -1)[:, sep].view(rows.ids.shape[0], -1)
            lengths.append(median_length(length_cdf(sep_log_probs)).clamp_min(1))
        text_end = layout.cut_from + torch.cat(lengths)
        columns = torch.arange(layout.ids.shape[1], device=self.device)
        filler = (columns >= text_end[:, None]) & layout.generated
        return _Layout(
            layout.ids.masked_fill(filler, sep),
            layout.generated & ~filler,
            layout.noise_mask,
            layout.text_start,
            layout.cut_from,
            text_end,
        )

    def resolve_sampler(self, sampler: str | None) -> str:
        """The name of the sampler a call with ``sampler`` uses (default ``ancestral``), checked to suit the
        model, so that a caller can fail before any other work."""
        name = sampler or self.default_sampler
        self._sampler(name, 1.0, 0, 1.0)
        return name

    def sampler_names(self) -> tuple[str, ...]:
        """Every sampler of :data:`~diffusionbert.sampling.samplers.SAMPLERS` that suits this model."""

        def suits(name: str) -> bool:
            try:
                self.resolve_sampler(name)
            except ConfigError:
                return False
            return True

        names = [self.default_sampler, *(name for name in SAMPLERS if name != self.default_sampler)]
        return tuple(name for name in names if suits(name))

    def _modes_without_source(self) -> tuple[str, ...]:
        """All three, unless the model was trained on pairs without source dropout (it needs its source)."""
        if self.trained_on_pairs and not (self.source_dropout and self.source_length):
            return ()
        return ("unconditional", "prompt", "infill")

    def text_template(
        self, length: int, *, prompt: str | None = None, infill: str | None = None, source: str | None = None
    ) -> tuple[list[int], int]:
        """The first state of a one-template call (``[MASK]`` where generated) and the position where its
        text starts in every state ``on_step`` sees: what a live display draws (checked like the call)."""
        layout = self._layout(length, prompt, infill, source)
        return layout.ids[0].tolist(), int(layout.text_start[0])

    def _sampler(self, sampler: str | Sampler, temperature: float, top_k: int, top_p: float) -> Sampler:
        """Build a named sampler, or check a given one; either way it must suit the model."""
        if isinstance(sampler, str):
            sampler = build_sampler(
                sampler, self.objective, temperature=temperature, top_k=top_k, top_p=top_p
            )
        elif (temperature, top_k, top_p) != (1.0, 0, 1.0):
            raise ConfigError(
                f"temperature={temperature}, top_k={top_k}, top_p={top_p} cannot be applied to a sampler "
                "object; allowed: pass them when building it (build_sampler(name, objective, ...))"
            )
        sampler.check_model(self.time_conditioning)
        return sampler

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _layout(self, length: int, prompt: str | None, infill: str | None, source: str | None) -> _Layout:
        """The sequence template for the requested conditioning (at most one kind)."""
        given = [name for name, text in (("prompt", prompt), ("infill", infill), ("source", source)) if text]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} were both given; allowed: at most one of them")
        if source and self.trained_on_pairs is False:
            raise ConfigError(
                "source= conditions on a seq2seq source, but this model was trained on plain texts (no "
                "data.source_field); allowed: a model trained on source/target pairs, or prompt=/infill="
            )
        tok = self.tokenizer
        mask, cls_id = tok.mask_token_id, tok.cls_token_id
        hidden = [] if source else self._hidden_source()
        start = 1 + len(hidden)  # the first position of the text
        if infill:
            body = self._encode(infill)
            if mask not in body:
                raise ConfigError(
                    f"infill={infill!r} has no {tok.mask_token} placeholder; allowed: text with at least one"
                )
            ids = torch.tensor([cls_id, *hidden, *body])
            generated = (ids == mask) & (torch.arange(len(ids)) >= start)
        else:
            if length < 1:
                raise ConfigError(f"length={length} is not valid; allowed: length >= 1")
            if source:
                fixed = [*self._encode(source), tok.sep_token_id]
                to_generate = length
            else:
                fixed = [*hidden, *(self._encode(prompt) if prompt else [])]
                if len(fixed) - len(hidden) > length:
                    raise ConfigError(
                        f"prompt has {len(fixed) - len(hidden)} tokens but length={length}; allowed: a prompt "
                        "of at most length tokens (length counts the prompt)"
                    )
                to_generate = length - len(fixed) + len(hidden)
            ids = torch.tensor([cls_id, *fixed, *[mask] * to_generate])
            generated = torch.arange(len(ids)) > len(fixed)
        window = self.model.max_input_length
        if len(ids) > window:
            if source:
                raise ConfigError(
                    f"source of {len(ids) - length - 2} tokens plus length={length} needs {len(ids)} positions, "
                    f"more than the model's {window}; allowed: a shorter source or length"
                )
            if infill:
                raise ConfigError(
                    f"the infill template needs {len(ids)} positions, more than the model's {window}; "
                    f"allowed: a template of at most {window - start} tokens"
                )
            raise ConfigError(
                f"length={length} needs {len(ids)} positions, more than the model's {window}; allowed: "
                f"length <= {window - start}"
            )
        text_start = len(ids) - length if source else start
        noise_mask = torch.arange(len(ids)) >= text_start
        cut_from = int((~generated).nonzero().max()) + 1
        return _Layout(
            ids[None].to(self.device),
            generated[None].to(self.device),
            noise_mask[None].to(self.device),
            torch.tensor([text_start], device=self.device),
            torch.tensor([cut_from], device=self.device),
            torch.tensor([len(ids)], device=self.device),
        )

    def _hidden_source(self) -> list[int]:
        """What a pair model reads before a text it generates without a source: ``[MASK]`` × its mean source
        length, then ``[SEP]`` (the input source dropout trained); nothing for a model of plain texts."""
        if not self.trained_on_pairs:
            return []
        if not self.source_dropout or not self.source_length:
            raise ConfigError(
                "this model was trained on source/target pairs without training.source_dropout, so it only "
                "generates from a source; allowed: source=, or a model trained with source dropout > 0"
            )
        return [*[self.tokenizer.mask_token_id] * self.source_length, self.tokenizer.sep_token_id]

    def _text_ends(self, tokens: Tensor, layout: _Layout) -> list[int]:
        """Per row, the position of the first generated [SEP] after every given token (else the end of its
        template)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        after_given = positions >= layout.cut_from[:, None]
        cuts = (tokens == self.tokenizer.sep_token_id) & layout.generated & after_given
        first = cuts.long().argmax(-1)
        return torch.where(cuts.any(-1), first, layout.end).tolist()


class EmbeddingDiffusionPipeline(DiffusionPipeline):
    """A Gaussian embedding-diffusion model (Diffusion-LM) and its tokenizer; called like
    :class:`DiffusionPipeline`, with the same templates (unconditional, ``prompt``, ``infill``, ``source``).

    Its samplers: ``clamped`` (Diffusion-LM's clamping trick at every step, its default) and ``ancestral``
    (the model's own reverse process, the one its bound scores; Plaid's default); see
    :mod:`~diffusionbert.sampling.embedding_loop`. ``steps`` K ≤ T walks t_k = 1 − k/K, one network call
    each. A generated [SEP] ends a text. Temperature, top-k/top-p, guidance and a predicted end do not apply.
    """

    samplers = ("clamped", "ancestral")
    masked_loop = False
    sharpens = False

    def sampler_names(self) -> tuple[str, ...]:
        """Its two samplers, the family's own first."""
        return (self.default_sampler, *(name for name in self.samplers if name != self.default_sampler))

    @property
    def default_sampler(self) -> str:
        """The family's own sampler (its objective's ``default_sampler``)."""
        return self.objective.default_sampler

    def resolve_sampler(self, sampler: str | None) -> str:
        """The sampler a call with ``sampler`` uses (default: the family's own); another name is an error."""
        name = sampler or self.default_sampler
        if not isinstance(name, str) or name not in self.samplers:
            raise invalid_choice("sampler", str(name), self.samplers)
        return name

    @torch.inference_mode()
    def __call__(
        self,
        num_samples: int,
        length: int,
        steps: int,
        sampler: str | Sampler | None = None,
        *,
        prompt: str | None = None,
        infill: str | None = None,
        source: str | Sequence[str] | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 32,
        return_trajectory: bool = False,
        progress: bool = False,
        guidance: float = 0.0,
        end: str | None = None,
        block_length: int | None = None,
        on_step: Callable[[Tensor], None] | None = None,
    ) -> SampleOutput:
        """Generate ``num_samples`` texts (per source with a list of sources) of ``length`` generated
        positions in ``steps`` reverse steps; the arguments mean what they mean for :class:`DiffusionPipeline`."""
        check_sample_request(num_samples, batch_size, seed)
        unsupported = (
            ("temperature/top_k/top_p", (temperature, top_k, top_p) != (1.0, 0, 1.0)),
            ("guidance", bool(guidance)),
            ("end='predicted'", end == "predicted"),
            ("block_length", block_length is not None),
            ("on_step", on_step is not None),
        )
        given = [name for name, value in unsupported if value]
        if given:
            raise ConfigError(
                f"{', '.join(given)} does not apply to a Gaussian embedding-diffusion model; allowed: "
                f"sampler={' | '.join(self.samplers)}, steps, seed"
            )
        if end not in (None, "generated"):
            raise invalid_choice("end", str(end), list(ENDS))
        name = self.resolve_sampler(sampler)
        self.objective.reverse_grid(steps)  # a bad step count fails before any work
        layout = self._layouts(length, prompt, infill, source)

        def run(
            rows: _Layout, generators: list[torch.Generator], advance: Callable[[int], None]
        ) -> DenoiseResult:
            return denoise_embeddings(
                self.model,
                self.objective,
                rows.ids,
                rows.generated,
                steps,
                generators,
                attention_mask=(rows.ids != self.tokenizer.pad_token_id).long(),
                clamp=name == "clamped",
                mask_id=self.tokenizer.mask_token_id,
                return_trajectory=return_trajectory,
                advance=advance,
            )

        return self._generate(layout, num_samples, batch_size, seed, steps, progress, run)


class AutoregressivePipeline(_Pipeline):
    """A causal LM and its tokenizer, decoded left to right with a key-value cache; called like
    :class:`DiffusionPipeline`.

    Its samplers are ``autoregressive`` (the default: a draw per token), ``greedy`` and ``beam`` / ``beam:N``
    (:mod:`~diffusionbert.sampling.left_to_right`); ``steps`` is ignored (one network call per token). A
    ``source`` (a model trained on pairs) is decoded after ``[CLS] source [SEP]``; prompt, infill, guidance
    and trajectories are not offered: asking for them is an error.
    """

    default_sampler = "autoregressive"
    masked_loop = False

    def __init__(
        self,
        model: CausalLMForComparison,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device | str | None = None,
        trained_on_pairs: bool | None = None,
        target_window: int | None = None,
        context_length: int | None = None,
    ) -> None:
        """``trained_on_pairs`` (from the model directory) makes a ``source`` for a model trained on plain
        texts an error; None (not recorded) allows it. ``target_window`` and ``context_length`` (its
        ``data.target_window`` and ``data.max_length``) size what :meth:`chat` reads and writes."""
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.trained_on_pairs = trained_on_pairs
        self.target_window = target_window
        self.context_length = context_length

    def resolve_sampler(self, sampler: str | None) -> str:
        """The decoder a call with ``sampler`` uses (default ``autoregressive``); another name is an error."""
        name = sampler or self.default_sampler
        LeftToRightDecoder.parse(name)
        return name

    def sampler_names(self) -> tuple[str, ...]:
        """Its decoders (``beam`` with its default width)."""
        return tuple(LEFT_TO_RIGHT_DECODERS)

    def _modes_without_source(self) -> tuple[str, ...]:
        """Unconditional text for a model of plain texts; nothing for a pair model, which needs its source."""
        return () if self.trained_on_pairs else ("unconditional",)

    @classmethod
    def _from_loaded(cls, loaded: LoadedModel, device: torch.device | str | None) -> AutoregressivePipeline:
        return cls(
            loaded.model,
            loaded.tokenizer,
            device,
            trained_on_pairs=loaded.trained_on_pairs,
            target_window=loaded.target_window,
            context_length=loaded.max_length,
        )

    def __call__(
        self,
        num_samples: int,
        length: int,
        steps: int | None = None,
        sampler: str | None = None,
        *,
        prompt: str | None = None,
        infill: str | None = None,
        source: str | Sequence[str] | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 32,
        return_trajectory: bool = False,
        progress: bool = False,
        guidance: float = 0.0,
        end: str | None = None,
        block_length: int | None = None,
        on_step: Callable[[Tensor], None] | None = None,
    ) -> SampleOutput:
        """Generate ``num_samples`` texts of at most ``length`` tokens (per source with ``source``); a text
        ends at its first generated [SEP] (``end`` None or ``"generated"``)."""
        conditioning = (("prompt", prompt), ("infill", infill), ("guidance", guidance))
        conditioning += (("end='predicted'", end == "predicted"), ("block_length", block_length is not None))
        conditioning += (("on_step", on_step is not None),)
        given = [name for name, value in conditioning if value]
        given += ["return_trajectory"] if return_trajectory else []
        if given:
            raise ConfigError(
                f"{', '.join(given)} does not apply to an autoregressive model; it decodes left to right"
            )
        if source and self.trained_on_pairs is False:
            raise ConfigError(
                "source= conditions on a seq2seq source, but this model was trained on plain texts (no "
                "data.source_field); allowed: a model trained on source/target pairs"
            )
        if not source and self.trained_on_pairs:
            raise ConfigError(
                "this autoregressive model was trained on source/target pairs, so it only decodes after a "
                "source; allowed: source="
            )
        return generate_left_to_right(
            self.model,
            self.tokenizer,
            num_samples,
            length,
            source=source,
            sampler=self.resolve_sampler(sampler),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )


Pipeline = DiffusionPipeline | AutoregressivePipeline
PIPELINES: dict[str, type[DiffusionPipeline] | type[AutoregressivePipeline]] = {
    DENOISE: DiffusionPipeline,
    LEFT_TO_RIGHT: AutoregressivePipeline,
    GAUSSIAN: EmbeddingDiffusionPipeline,
}
"""The pipeline class of each sampling kind of the method registry."""


def pipeline_for(loaded: LoadedModel, device: torch.device | str | None = None) -> Pipeline:
    """The pipeline an already loaded model's method samples with."""
    return PIPELINES[loaded.method.sampling].from_loaded(loaded, device)


def load_pipeline(directory: str | Path, device: torch.device | str | None = None) -> Pipeline:
    """Load a model directory (or a run directory with ``final/``) into the pipeline its method samples with."""
    return pipeline_for(load_model_dir(directory, device), device)
