"""What every pipeline shares: one call signature, the model's default decoding, what it supports, chat.

A pipeline is a trained model behind one call::

    pipe = load_pipeline("runs/demo/final")
    out = pipe(num_samples=4, steps=16)                      # the model's saved decoding, two options changed
    out = pipe(source="name[The Eagle]", config=DecodingConfig(sampler="confidence", steps=32))

Every option of a decode lives in one :class:`~diffusionbert.config.DecodingConfig`. A model directory holds
its default decoding (``decoding.json``, the training run's ``sampling:`` section); ``pipe(**options)``
overrides single options of it, ``pipe(config=...)`` replaces it (like transformers'
``generate(generation_config=..., **kwargs)``). Each pipeline declares what it supports as data
(:class:`Supports`, :meth:`Pipeline.sampler_names`, :attr:`Pipeline.modes`) and one check refuses the rest
with a line naming what is allowed. Samplers are looked up, never built, to be checked.

:class:`TemplatePipeline` adds what the two denoising pipelines share (masked diffusion and Gaussian
embedding diffusion): sequence templates (:mod:`.layout`), batches across sources, one generator per sample,
and the text cut at its end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from rich.progress import Progress
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ...checkpoint import LoadedModel, load_model_dir
from ...config import DEFAULT_ANSWER_LENGTH, DEFAULT_LENGTH, DecodingConfig
from ...data.chat import Message, check_model_chat_template
from ...diffusion.objectives import Objective
from ...errors import CheckpointError, ConfigError
from ...models import CausalLMForComparison, DiffusionBertForMaskedLM, EmbeddingDiffusionLM
from ..chat import ChatReply, fit_conversation, forming_answer
from ..draws import sample_generator
from ..loop import DenoiseResult
from ..output import SampleOutput
from .layout import Conditioning, Layout, template, text_ends

MODES = ("unconditional", "prompt", "infill", "source", "chat")
"""What a model can generate from: nothing, a prompt it continues, an infill template, a seq2seq source, or a
conversation (:attr:`Pipeline.modes` says which a model offers)."""

StepHook = Callable[[Tensor], None]
"""``on_step(x)``: sees the token states [b, S] of the batch being decoded after every step."""


@dataclass(frozen=True)
class Outputs:
    """What a call reports besides its texts: a progress bar, every state, a hook after every step."""

    progress: bool = False
    return_trajectory: bool = False
    on_step: StepHook | None = None


@dataclass(frozen=True)
class Supports:
    """What a pipeline's calls honour beyond a sampler, a length, samples, a seed and a batch size: the data
    :meth:`Pipeline.check` refuses every other option with (one line naming what is allowed)."""

    description: str
    """What the pipeline decodes, as error messages name it (``an autoregressive model``)."""
    conditions: tuple[str, ...]
    """Which of ``prompt``, ``infill`` and ``source`` a call may give."""
    ends: tuple[str, ...] = ("generated",)
    """Where a text may end (:data:`~diffusionbert.config.ENDS`)."""
    steps: bool = True
    """Whether ``steps`` counts (left to right: one network call per token, whatever it says)."""
    blocks: bool = False
    """``block_length``: semi-autoregressive blocks."""
    length_beam: bool = False
    """``length_beam``: several predicted lengths per text, the best-scored kept."""
    guidance: bool = False
    """``guidance``: classifier-free guidance."""
    sharpening: bool = False
    """``temperature``, ``top_k`` and ``top_p``."""
    sampler_options: bool = False
    """``sampler_options``: a sampler's own settings (a threshold, an unmasking schedule…)."""
    prompt_cache: bool = False
    """``prompt_cache``: a source's keys and values computed once (:mod:`~diffusionbert.sampling.cache`)."""
    trajectories: bool = False
    """``return_trajectory``: every state of a text, from the first to the last."""
    live: bool = False
    """``on_step``: the token states of a batch after every step, as they form."""

    def refused(self, decoding: DecodingConfig, conditioning: Conditioning, outputs: Outputs) -> list[str]:
        """The options of a call (its ``decoding``, ``conditioning`` and what it reports) that this pipeline
        does not honour."""
        refused = [
            name
            for name in ("prompt", "infill", "source")
            if getattr(conditioning, name) and name not in self.conditions
        ]
        refused += [
            name for name, field, asked in _OPTIONAL if asked(decoding, outputs) and not getattr(self, field)
        ]
        if decoding.end is not None and decoding.end not in self.ends:
            refused.append(f"end={decoding.end!r}")
        return refused

    def allowed(self) -> str:
        """The options it honours, for messages."""
        steps = ["steps"] if self.steps else []
        optional = [name for name, field, _ in _OPTIONAL if getattr(self, field)]
        ends = f"end={' | '.join(self.ends)}"
        return ", ".join(
            [
                *self.conditions,
                "sampler",
                *steps,
                "length",
                ends,
                *optional,
                "num_samples",
                "seed",
                "batch_size",
            ]
        )


_OPTIONAL: tuple[tuple[str, str, Callable[[DecodingConfig, Outputs], bool]], ...] = (
    ("block_length", "blocks", lambda decoding, _: decoding.block_length is not None),
    ("length_beam", "length_beam", lambda decoding, _: decoding.length_beam > 1),
    ("guidance", "guidance", lambda decoding, _: bool(decoding.guidance)),
    ("temperature/top_k/top_p", "sharpening", lambda decoding, _: decoding.sharpened),
    ("sampler_options", "sampler_options", lambda decoding, _: bool(decoding.sampler_options)),
    ("prompt_cache", "prompt_cache", lambda decoding, _: decoding.prompt_cache is not None),
    ("return_trajectory", "trajectories", lambda _, outputs: outputs.return_trajectory),
    ("on_step", "live", lambda _, outputs: outputs.on_step is not None),
)
"""Each option only some pipelines honour: its name in messages, the :class:`Supports` field that declares it,
and whether a call asks for it."""


_P = TypeVar("_P", bound="Pipeline")
PIPELINES: dict[str, type[Pipeline]] = {}
"""The pipeline class of each sampling kind of the method registry (filled as the classes are defined)."""


class Pipeline(ABC):
    """A trained model, its tokenizer and its default decoding, behind one call (module doc).

    A concrete pipeline names the sampling kind of the method registry it serves
    (``class DiffusionPipeline(TemplatePipeline, kind=DENOISE)``); :data:`PIPELINES` maps each kind to it.
    """

    supports: ClassVar[Supports]
    kind: ClassVar[str]
    model: DiffusionBertForMaskedLM | CausalLMForComparison | EmbeddingDiffusionLM
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    decoding: DecodingConfig
    """The model's default decoding (its ``decoding.json``; the library's defaults for older directories)."""
    trained_on_pairs: bool | None
    target_window: int | None
    context_length: int | None
    source_dropout: float | None = None
    """How often the model saw its source hidden in training (None: not recorded, or not a pair model)."""

    def __init_subclass__(cls, kind: str | None = None, **rest: Any) -> None:
        super().__init_subclass__(**rest)
        if kind is not None:
            cls.kind = kind
            PIPELINES[kind] = cls

    def _init(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device | str | None,
        decoding: DecodingConfig | None,
        trained_on_pairs: bool | None,
        target_window: int | None,
        context_length: int | None,
    ) -> None:
        """Set what every pipeline holds; the model's saved decoding is checked against what it supports."""
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.trained_on_pairs = trained_on_pairs
        self.target_window = target_window
        self.context_length = context_length
        self.decoding = decoding or DecodingConfig()
        try:
            self.check(self.decoding, Conditioning(), Outputs())
        except ConfigError as exc:
            raise ConfigError(f"the model's saved decoding (decoding.json) does not suit it: {exc}") from None

    # ----------------------------------------------------------------------------------- what it supports

    @property
    @abstractmethod
    def own_sampler(self) -> str:
        """The sampler of the model's family (used when neither the call nor the saved decoding names one)."""

    @abstractmethod
    def _sampler_names(self) -> tuple[str, ...]:
        """Every sampler this model can run, in the family's order."""

    @classmethod
    @abstractmethod
    def _check_sampler_name(cls, name: str) -> None:
        """Refuse a sampler name no model of this pipeline runs (a one-line ConfigError naming what is
        allowed)."""

    def _check_sampler(self, name: str) -> None:
        """Refuse a sampler this model cannot run (by default: a name the pipeline does not know)."""
        self._check_sampler_name(name)

    @abstractmethod
    def _modes_without_source(self) -> tuple[str, ...]:
        """What a call can generate from without a source (of ``unconditional``, ``prompt``, ``infill``)."""

    @property
    def default_sampler(self) -> str:
        """The sampler a call uses unless told otherwise: the saved decoding's, else the family's own."""
        return self.decoding.sampler or self.own_sampler

    def sampler_names(self) -> tuple[str, ...]:
        """The samplers a call on this model accepts by name, its default first (a saved ``beam:N`` too)."""
        default = self.default_sampler
        return (default, *(name for name in self._sampler_names() if name != default))

    def resolve_sampler(self, sampler: str | None) -> str:
        """The sampler a call with ``sampler`` uses (None: :attr:`default_sampler`), checked to suit the model
        so a caller can fail before any other work."""
        name = sampler or self.default_sampler
        self._check_sampler(name)
        return name

    @property
    def modes(self) -> tuple[str, ...]:
        """What this model generates from, of :data:`MODES`: its calls without a source, then ``source`` for
        a model trained on pairs, or ``chat`` (:meth:`chat`) for one trained on chat records."""
        chat = getattr(self.tokenizer, "chat_template", None) is not None
        paired = () if self.trained_on_pairs is False else ("chat" if chat else "source",)
        return (*self._modes_without_source(), *paired)

    @property
    def cache(self) -> str:
        """What a decode keeps instead of recomputing: ``prompt`` (each source's keys and values, computed
        once: isolated source attention), ``key-value`` (the prefix of a left-to-right decode) or ``none``
        (the whole sequence runs at every step)."""
        return "none"

    @property
    def guided(self) -> bool:
        """Whether classifier-free guidance applies: the pipeline supports it and the model learned to write
        without its source (source dropout)."""
        return self.supports.guidance and bool(self.source_dropout)

    @property
    def main_mode(self) -> str:
        """The mode the model was trained for: ``chat`` or ``source`` for a pair model, else its first."""
        return self.modes[-1] if self.trained_on_pairs else self.modes[0]

    def default_length(self, mode: str) -> int:
        """The generated positions of a call that names no length: a pair model's target window for its
        source (or chat), else :data:`~diffusionbert.config.DEFAULT_LENGTH` (a chat answer
        :data:`~diffusionbert.config.DEFAULT_ANSWER_LENGTH`)."""
        if mode in ("source", "chat") and self.target_window:
            return self.target_window
        return DEFAULT_ANSWER_LENGTH if mode == "chat" else DEFAULT_LENGTH

    def check(self, decoding: DecodingConfig, conditioning: Conditioning, outputs: Outputs) -> None:
        """Refuse what this pipeline does not support, and a sampler it cannot run, in one line each."""
        self._check_supported(decoding, conditioning, outputs)
        if decoding.sampler is not None:
            self._check_sampler(decoding.sampler)

    @classmethod
    def check_default_decoding(cls, decoding: DecodingConfig) -> None:
        """Refuse a default decoding (a run's ``sampling:``, saved with the model) that no model of this
        pipeline could decode with, before one is trained: an option it does not honour, a sampler name it
        does not know. What depends on the trained model (a sampler that needs a time-agnostic one) is
        checked when it is loaded."""
        cls._check_supported(decoding, Conditioning(), Outputs())
        if decoding.sampler is not None:
            cls._check_sampler_name(decoding.sampler)

    @classmethod
    def _check_supported(cls, decoding: DecodingConfig, conditioning: Conditioning, outputs: Outputs) -> None:
        """Refuse in one line the options of a call this pipeline does not honour."""
        refused = cls.supports.refused(decoding, conditioning, outputs)
        if refused:
            raise ConfigError(
                f"{', '.join(refused)} does not apply to {cls.supports.description}; allowed: "
                f"{cls.supports.allowed()}"
            )

    def resolve(
        self, config: DecodingConfig | None, options: dict[str, Any], conditioning: Conditioning
    ) -> DecodingConfig:
        """The decoding of a call: ``config`` (default: the model's own) with ``options`` changed, its length
        and sampler filled in. A default of the model's own that the call's conditioning rules out gives
        way (its guidance without a source; its predicted end becomes "predicted where it applies"), while
        the same option asked for in the call is an error; a call that names another sampler drops the
        options of the one it replaces."""
        base = config or self.decoding
        if options.get("sampler", base.sampler) != base.sampler and "sampler_options" not in options:
            options = {**options, "sampler_options": {}}  # another sampler: the first one's options go
        decoding = base.replace(**options)
        if config is None:
            if "guidance" not in options and not conditioning.source:
                decoding = replace(decoding, guidance=0.0)
            if "end" not in options and decoding.end == "predicted":
                decoding = replace(decoding, end=None)
        length = decoding.length or self.default_length(conditioning.mode)
        return replace(decoding, length=length, sampler=self.resolve_sampler(decoding.sampler))

    # ------------------------------------------------------------------------------------------- the call

    @torch.inference_mode()
    def __call__(
        self,
        *,
        prompt: str | None = None,
        infill: str | None = None,
        source: str | Sequence[str] | None = None,
        config: DecodingConfig | None = None,
        progress: bool = False,
        return_trajectory: bool = False,
        on_step: StepHook | None = None,
        **options: Any,
    ) -> SampleOutput:
        """Generate texts: ``num_samples`` (an option) per source, or in all without one.

        Args:
            prompt: text the generated one starts with (``length`` counts it).
            infill: text with ``[MASK]`` placeholders, the only positions generated (it fixes the length).
            source: a seq2seq source (a model trained on pairs), or a list of them decoded in one call; the
                output then holds ``num_samples`` texts per source, source after source.
            config: the whole decoding to use instead of the model's own (:attr:`decoding`).
            progress: show a progress bar.
            return_trajectory: also return every state from all-[MASK] to the end.
            on_step: sees the states [b, S] of the batch being decoded after every step (a live display).
            **options: fields of :class:`~diffusionbert.config.DecodingConfig` that change the decoding of
                this call (``steps=8``, ``sampler="confidence"``, ``guidance=1.0``…).

        Raises:
            ConfigError: an option this model does not support, or a bad value (one line each), before
                any network call.
        """
        conditioning = Conditioning(prompt, infill, source)
        outputs = Outputs(progress, return_trajectory, on_step)
        decoding = self.resolve(config, options, conditioning)
        self.check(decoding, conditioning, outputs)
        return self._decode(conditioning, decoding, outputs)

    @abstractmethod
    def _decode(self, conditioning: Conditioning, decoding: DecodingConfig, outputs: Outputs) -> SampleOutput:
        """Generate with a checked ``decoding`` (its length and sampler resolved)."""

    # ------------------------------------------------------------------------------------------------ chat

    def chat_decoding(self, config: DecodingConfig | None = None, **options: Any) -> DecodingConfig:
        """The decoding of a chat answer: ``config`` (default: the model's own) with ``options`` changed, one
        answer (no samples, MBR or length beam), its window ``length`` (default: the model's target window, else
        :data:`~diffusionbert.config.DEFAULT_ANSWER_LENGTH`) and sampler filled in; checked before any
        conversation is read (a one-line ConfigError), so a chat fails at its start, not at its first
        answer."""
        check_model_chat_template(self.tokenizer)
        decoding = (config or self.decoding).replace(
            **{**options, "num_samples": 1, "mbr": False, "length_beam": 1}
        )
        decoding = replace(decoding, length=decoding.length or self.default_length("chat"))
        decoding = self.resolve(decoding, {}, Conditioning(source="chat"))
        self.check(decoding, Conditioning(source="chat"), Outputs())
        context = self._context()
        if context - decoding.length - 2 < 1:
            raise ConfigError(
                f"length={decoding.length} is not valid; allowed: 1 <= length <= {context - 3} (the model "
                f"reads {context} positions, the prompt needs some)"
            )
        return decoding

    def chat_prompt(self, messages: Sequence[Message], decoding: DecodingConfig) -> tuple[str, int]:
        """What :meth:`chat` decodes for ``messages`` with ``decoding`` (:meth:`chat_decoding`): the rendered
        prompt (the call's ``source``) and how many of the oldest messages were dropped to fit the model's
        context beside the answer window; a caller that runs the call itself (a live page) answers exactly
        as :meth:`chat`."""
        assert decoding.length is not None  # chat_decoding sets it
        return fit_conversation(self.tokenizer, messages, self._context() - decoding.length - 2)

    def _context(self) -> int:
        """The positions the model reads: its training ``data.max_length``, else the network's maximum."""
        return self.context_length or self.model.max_input_length

    def chat(
        self,
        messages: Sequence[Message],
        *,
        config: DecodingConfig | None = None,
        on_answer: Callable[[str], None] | None = None,
        **options: Any,
    ) -> ChatReply:
        """Answer a conversation with a model trained with ``data.format: chat``
        (:mod:`~diffusionbert.sampling.chat`).

        Args:
            messages: ``[{"role": "user", "content": "..."}]``, the last message the user's.
            config: the whole decoding to use instead of the model's own; one answer is generated.
            on_answer: sees the answer as it forms after every step, [MASK] shown as ``░`` (a model without
                token states: once, at the end), and then its final text.
            **options: decoding options of this answer (``steps``, ``sampler``, ``length``: the answer
                window, default the model's target window; ``block_length``…).

        Raises:
            ConfigError: no chat template, the newest message does not fit, or a bad option.
            DataError: a malformed or empty message.
        """
        decoding = self.chat_decoding(config, **options)
        prompt, dropped = self.chat_prompt(messages, decoding)
        length = decoding.length
        on_step = None
        if on_answer is not None and self.supports.live:

            def on_step(x: Tensor) -> None:
                on_answer(forming_answer(self.tokenizer, x[0, -length:].tolist()))

        out = self(source=prompt, config=decoding, on_step=on_step)
        if on_answer is not None:
            on_answer(out.texts[0])
        return ChatReply(out.texts[0], out.nfe[0], dropped)

    # ------------------------------------------------------------------------------------------- loading

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


Run = Callable[[Layout, list[torch.Generator], Callable[[int], None]], DenoiseResult]
"""Decodes the rows of one batch: their templates, their generators and a progress callback."""


class TemplatePipeline(Pipeline):
    """A pipeline that denoises a template of [MASK]s (masked or Gaussian embedding diffusion): templates
    of every source, a hidden source for a pair model writing without one, batches across sources with one
    generator per sample, and texts cut at their end."""

    objective: Objective
    source_length: int | None

    def __init__(
        self,
        model: DiffusionBertForMaskedLM | EmbeddingDiffusionLM,
        tokenizer: PreTrainedTokenizerBase,
        objective: Objective,
        device: torch.device | str | None = None,
        *,
        decoding: DecodingConfig | None = None,
        trained_on_pairs: bool | None = None,
        source_dropout: float | None = None,
        source_length: int | None = None,
        target_window: int | None = None,
        context_length: int | None = None,
    ) -> None:
        """``decoding`` is the model's default decoding. ``trained_on_pairs`` (from the model directory)
        makes a ``source`` for a model trained on plain texts an error; None (not recorded) allows it.
        ``source_dropout`` is how often the model saw its source hidden in training: a pair model trained
        with it generates without a source (unconditional, prompt, infill) after a hidden source of
        ``source_length`` [MASK]s (its mean source length in training); without it, it needs a source.
        ``target_window`` (a pair model's ``data.target_window``) is where it learned to end its texts;
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
        self.objective = objective
        self.source_dropout = source_dropout
        self.source_length = source_length
        self._init(model, tokenizer, device, decoding, trained_on_pairs, target_window, context_length)

    @classmethod
    def _settings(cls, loaded: LoadedModel) -> dict[str, Any]:
        """The keyword settings of a loaded model directory that :meth:`__init__` takes."""
        return {
            "decoding": loaded.decoding,
            "trained_on_pairs": loaded.trained_on_pairs,
            "source_dropout": loaded.source_dropout,
            "source_length": loaded.source_length,
            "target_window": loaded.target_window,
            "context_length": loaded.max_length,
        }

    def _modes_without_source(self) -> tuple[str, ...]:
        """All three, unless the model was trained on pairs without source dropout (it needs its source)."""
        if self.trained_on_pairs and not (self.source_dropout and self.source_length):
            return ()
        return ("unconditional", "prompt", "infill")

    def text_template(self, length: int, conditioning: Conditioning) -> tuple[list[int], int]:
        """The first state of a one-template call (``[MASK]`` where generated) and the position where its
        text starts in every state ``on_step`` sees: what a live display draws (checked like the call)."""
        layout = self._layouts(length, conditioning)
        return layout.ids[0].tolist(), int(layout.text_start[0])

    def _layouts(self, length: int, conditioning: Conditioning) -> Layout:
        """The templates of a call: one, or one per source of a list, on the pipeline's device."""
        if conditioning.source and self.trained_on_pairs is False:
            raise ConfigError(
                "source= conditions on a seq2seq source, but this model was trained on plain texts (no "
                "data.source_field); allowed: a model trained on source/target pairs, or prompt=/infill="
            )
        window = self.model.max_input_length
        layouts = [
            template(self.tokenizer, window, length, conditioning, one, [] if one else self._hidden_source())
            for one in conditioning.sources()
        ]
        layout = Layout.stack(layouts, self.tokenizer.pad_token_id)
        return Layout(*(getattr(layout, name).to(self.device) for name in Layout.__dataclass_fields__))

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

    def _generate(
        self,
        layout: Layout,
        decoding: DecodingConfig,
        steps: int,
        progress: bool,
        run: Run,
        extra_nfe: int = 0,
    ) -> SampleOutput:
        """``decoding.num_samples`` texts per template of ``layout``, decoded by ``run`` in batches of
        ``decoding.batch_size`` (``steps`` per batch on the progress bar); each text cut at its end,
        ``extra_nfe`` network calls made before the loop added to each count."""
        num_samples, batch_size = decoding.num_samples, decoding.batch_size
        total = num_samples * layout.ids.shape[0]
        source_of = torch.arange(total, device=self.device) // num_samples
        results: list[DenoiseResult] = []
        starts = range(0, total, batch_size)
        with Progress(disable=not progress) as bar:
            task = bar.add_task("sampling", total=len(starts) * steps)
            for start in starts:
                stop = min(start + batch_size, total)
                generators = [sample_generator(decoding.seed, i, self.device) for i in range(start, stop)]
                results.append(
                    run(layout.select(source_of[start:stop]), generators, lambda n: bar.advance(task, n))
                )
        tokens = torch.cat([r.tokens for r in results])
        rows = layout.select(source_of)
        ends = text_ends(tokens, rows, self.tokenizer.sep_token_id)
        starts_at = rows.text_start.tolist()
        texts = self.tokenizer.batch_decode(
            [row[start:end].tolist() for row, start, end in zip(tokens, starts_at, ends, strict=True)],
            skip_special_tokens=True,
        )
        trajectories = [r.trajectory for r in results]
        scores = None
        if all(r.scores is not None for r in results):
            generated = rows.generated.to(torch.float64)
            total = (torch.cat([r.scores for r in results]) * generated).sum(-1)  # type: ignore[misc]
            scores = (total / generated.sum(-1).clamp_min(1.0)).tolist()
        return SampleOutput(
            texts=texts,
            token_ids=tokens.cpu(),
            lengths=[stop - start for start, stop in zip(starts_at, ends, strict=True)],
            nfe=(torch.cat([r.nfe for r in results]) + extra_nfe).tolist(),
            trajectories=torch.cat(trajectories).cpu() if trajectories[0] is not None else None,
            scores=scores,
        )
