"""The one registry of method families: a name → its model class, objective, allowed options and sampling kind.

``diffusion.objective`` in a run config names an entry of :data:`METHODS`. Every other module asks this one
what a method needs (which network to build or load, which objective trains and scores it, whether it takes a
noise schedule or a time input, whether it is sampled by the denoising loop or left to right), and no other
module compares method names. Adding a family is one :func:`register` call plus the family's own modules:

    register(Method(
        name="mine", summary="my objective", model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: MyObjective(mask_id, schedule),
        schedules=BASE_SCHEDULE_NAMES, default_schedule="linear",
    ))

after which ``diffusionbert train … diffusion.objective=mine``, ``sample`` and ``evaluate`` work on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .config import Config, DiffusionConfig
from .diffusion.autoregressive import AutoregressiveObjective
from .diffusion.block import BlockDiffusionObjective
from .diffusion.embedding import DiffusionLMObjective, gaussian_schedule
from .diffusion.objectives import (
    AnyOrderObjective,
    ContinuousObjective,
    DiffusionBertObjective,
    MaskedLMObjective,
    MD4Objective,
    Objective,
    RDMObjective,
    SEDDObjective,
)
from .diffusion.plaid import PlaidObjective
from .diffusion.schedules import (
    BASE_SCHEDULES,
    SCHEDULE_NAMES,
    SPINDLE_BASES,
    SPINDLE_CENTERINGS,
    SPINDLE_FORMS,
    NoiseSchedule,
    SpindleSchedule,
    get_schedule,
)
from .diffusion.token_info import spindle_from_counts
from .errors import ConfigError, invalid_choice
from .models import (
    TIME_CONDITIONINGS,
    BackboneWrapperModel,
    CausalLMForComparison,
    DiffusionBertForMaskedLM,
    EmbeddingDiffusionLM,
    backbone_dir,
)
from .models.loading import load_tokenizer

Schedule = NoiseSchedule | SpindleSchedule
SamplingKind = Literal["denoise", "left_to_right", "gaussian"]
DENOISE: SamplingKind = "denoise"
LEFT_TO_RIGHT: SamplingKind = "left_to_right"
GAUSSIAN: SamplingKind = "gaussian"
BASE_SCHEDULE_NAMES: tuple[str, ...] = tuple(BASE_SCHEDULES)

ObjectiveBuilder = Callable[[int, Schedule | None, DiffusionConfig], Objective]
"""(mask id, the absorbing noise schedule or None for a method without one, the run's diffusion settings) →
objective."""
ModelSettings = Callable[[Config], dict[str, object]]
"""A run's settings → the keyword settings its model class's ``from_backbone`` takes."""


def time_design(cfg: Config) -> dict[str, object]:
    """The settings of a denoiser with a time design (``model.time_conditioning``)."""
    return {"time_conditioning": cfg.model.time_conditioning}


def check_blocks(cfg: Config) -> None:
    """Block diffusion's blocks must fit the window they cut (the target window of a pair model, else the text
    after [CLS]), tile a fixed target window exactly, and a pair model's source is its context block, which
    only isolated source attention keeps apart."""
    data, size = cfg.data, cfg.diffusion.block_size
    window = data.target_window or data.max_length - 1
    name = "data.target_window" if data.target_window else "data.max_length - 1"
    if size > window:
        raise ConfigError(
            f"diffusion.block_size={size} is larger than the window it cuts ({name} = {window}); allowed: "
            f"1 <= block_size <= {window}"
        )
    if data.target_window and data.target_window % size:
        raise ConfigError(
            f"diffusion.block_size={size} does not divide data.target_window={data.target_window}; allowed: a "
            f"divisor of it ({', '.join(str(d) for d in range(1, window + 1) if window % d == 0)})"
        )
    if data.pairs and cfg.model.source_attention != "isolated":
        raise ConfigError(
            "diffusion.objective=bd3lm on pairs reads the source as its first, clean block; allowed: "
            "model.source_attention=isolated with it"
        )


def block_design(cfg: Config) -> dict[str, object]:
    """The settings of block diffusion's denoiser: block-causal attention over ``diffusion.block_size``."""
    return {"block_size": cfg.diffusion.block_size}


def embedding_dimension(cfg: Config) -> dict[str, object]:
    """The settings of Diffusion-LM's denoiser: the dimension of the diffused embeddings."""
    return {"embedding_dim": cfg.diffusion.embedding_dim}


def plaid_denoiser(cfg: Config) -> dict[str, object]:
    """The settings of Plaid's denoiser: word logits, self-conditioning and its own learned schedule."""
    return {
        "embedding_dim": cfg.diffusion.embedding_dim,
        "output": "logits",
        "self_conditioning": True,
        "learned_schedule": True,
    }


@dataclass(frozen=True)
class Method:
    """One method family: what ``diffusion.objective=<name>`` means everywhere in the package.

    ``schedules`` are the ``diffusion.schedule`` values it allows (empty: it uses no schedule and ignores the
    setting); ``default_schedule`` is the one it gets when the setting is left unset. ``time_conditionings``
    are the ``model.time_conditioning`` values it allows (``("none",)`` for a time-free model, and for a
    Gaussian family, whose denoiser always reads t through its input). ``model_settings`` picks the run
    settings its model class is built with (None: the time design, for a method that takes one).
    ``sampling`` says how text is generated: ``denoise`` (the absorbing denoising loop and its samplers),
    ``left_to_right``, or ``gaussian`` (the reverse process of embedding diffusion). ``exact_likelihood``
    marks methods whose bound is the exact NLL (such a model can judge generative perplexity).
    """

    name: str
    summary: str
    model: type[BackboneWrapperModel]
    objective: ObjectiveBuilder
    schedules: tuple[str, ...] = ()
    default_schedule: str | None = None
    time_conditionings: tuple[str, ...] = TIME_CONDITIONINGS
    model_settings: ModelSettings | None = None
    sampling: SamplingKind = DENOISE
    exact_likelihood: bool = False
    check: Callable[[Config], None] | None = None
    """What else the family needs of a run's settings (one-line ConfigErrors), called by :func:`check_config`."""

    def __post_init__(self) -> None:
        if self.schedules and self.default_schedule not in self.schedules:
            raise ConfigError(
                f"method {self.name!r}: default_schedule={self.default_schedule!r} is not one of its "
                f"schedules; allowed: {', '.join(self.schedules)}"
            )
        if not self.time_conditionings or not set(self.time_conditionings) <= set(TIME_CONDITIONINGS):
            raise ConfigError(
                f"method {self.name!r}: time_conditionings={self.time_conditionings!r} is not valid; allowed: "
                f"a non-empty subset of {', '.join(TIME_CONDITIONINGS)}"
            )

    @property
    def takes_time(self) -> bool:
        """Whether its model may take the diffusion time as an input (a time design other than none)."""
        return self.time_conditionings != ("none",)


METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace`` allows redefining a name); returns it."""
    if method.name in METHODS and not replace:
        raise ConfigError(f"method {method.name!r} is already registered; pass replace=True to redefine it")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``, or a one-line error naming the nearest one."""
    if name not in METHODS:
        raise invalid_choice("diffusion.objective", name, METHODS)
    return METHODS[name]


def schedule_name(cfg: DiffusionConfig) -> str | None:
    """The schedule a run uses: its setting, else its method's default; None for a method without one."""
    method = get_method(cfg.objective)
    if not method.schedules:
        return None
    return cfg.schedule or method.default_schedule


def check_config(cfg: Config) -> Config:
    """Check what a run's settings mean for its method, and return them with the schedule default filled in.

    One-line errors name the key, its value and what is allowed: an unknown objective, a schedule or time
    design the method does not allow, an unknown spindle option.
    """
    d, m = cfg.diffusion, cfg.model
    method = get_method(d.objective)
    if m.time_conditioning not in TIME_CONDITIONINGS:
        raise invalid_choice("model.time_conditioning", m.time_conditioning, TIME_CONDITIONINGS)
    if m.time_conditioning not in method.time_conditionings:
        raise ConfigError(
            f"model.time_conditioning={m.time_conditioning!r} contradicts diffusion.objective={d.objective!r}"
            f" ({method.summary}); allowed: {', '.join(method.time_conditionings)}"
        )
    known = tuple(dict.fromkeys([*SCHEDULE_NAMES, *(s for m in METHODS.values() for s in m.schedules)]))
    if d.schedule is not None and d.schedule not in known:
        raise invalid_choice("diffusion.schedule", d.schedule, known)
    for key, value, allowed in (
        ("diffusion.spindle_base", d.spindle_base, SPINDLE_BASES),
        ("diffusion.spindle_form", d.spindle_form, SPINDLE_FORMS),
        ("diffusion.spindle_centering", d.spindle_centering, SPINDLE_CENTERINGS),
    ):
        if value not in allowed:
            raise invalid_choice(key, value, allowed)
    if m.source_attention == "isolated" and not cfg.data.pairs:
        raise ConfigError(
            "model.source_attention=isolated separates a source from its target; allowed: with "
            "data.source_field or data.format=chat"
        )
    if m.source_attention not in method.model.source_attentions:
        raise ConfigError(
            f"model.source_attention={m.source_attention!r} contradicts diffusion.objective={d.objective!r} "
            f"({method.summary}); allowed: {', '.join(method.model.source_attentions)}"
        )
    if cfg.training.distributed == "fsdp" and method.sampling == GAUSSIAN:
        raise ConfigError(
            f"training.distributed='fsdp' is not implemented for diffusion.objective={d.objective!r} "
            f"({method.summary}): its loss reads the embedding table outside the network's forward, where "
            "FSDP keeps it sharded; allowed: training.distributed='ddp'"
        )
    if cfg.training.source_dropout > 0 and method.sampling == GAUSSIAN:
        raise ConfigError(
            f"training.source_dropout={cfg.training.source_dropout} contradicts diffusion.objective="
            f"{d.objective!r} ({method.summary}); allowed: 0, its source is never shown as [MASK]s"
        )
    if cfg.training.self_prompt > 0 and method.sampling != DENOISE:
        raise ConfigError(
            f"training.self_prompt={cfg.training.self_prompt} contradicts diffusion.objective={d.objective!r}"
            f" ({method.summary}); allowed: 0 for a model sampled {method.sampling.replace('_', ' ')}"
        )
    if method.check is not None:
        method.check(cfg)
    schedule = schedule_name(d)
    if schedule is not None and schedule not in method.schedules:
        raise ConfigError(
            f"diffusion.schedule={schedule!r} contradicts diffusion.objective={d.objective!r} "
            f"({method.summary}); allowed: {', '.join(method.schedules)}"
        )
    return dataclasses.replace(cfg, diffusion=dataclasses.replace(d, schedule=schedule or d.schedule))


def needs_token_counts(cfg: DiffusionConfig) -> bool:
    """Whether the run's schedule is built from the training data's token counts (spindle)."""
    return schedule_name(cfg) == "spindle"


def schedule_from_config(cfg: DiffusionConfig, token_counts: Tensor | None) -> Schedule | None:
    """The absorbing noise schedule a run's diffusion settings describe (spindle needs the training-split
    counts); None for a method that uses none, or a Gaussian family's log-SNR schedule (its objective builds
    it from the name)."""
    name = schedule_name(cfg)
    if name is None or name not in SCHEDULE_NAMES:  # none, or a log-SNR schedule its family builds
        return None
    base = cfg.spindle_base if name == "spindle" else name
    kwargs = {"power": cfg.polynomial_power} if base == "polynomial" else {}
    if name != "spindle":
        return get_schedule(name, **kwargs)
    if token_counts is None:
        raise ConfigError("diffusion.schedule='spindle' needs token counts of the training data")
    return spindle_from_counts(
        get_schedule(base, **kwargs),
        token_counts,
        form=cfg.spindle_form,
        lam=cfg.spindle_lambda,
        centering=cfg.spindle_centering,
    )


def objective_from_config(cfg: DiffusionConfig, mask_id: int, token_counts: Tensor | None) -> Objective:
    """The objective a run's diffusion settings describe."""
    return get_method(cfg.objective).objective(mask_id, schedule_from_config(cfg, token_counts), cfg)


def build_objective(
    name: str, mask_id: int, schedule: Schedule | None = None, **settings: object
) -> Objective:
    """The objective of method ``name`` on a given ``schedule`` object (ignored by methods without one);
    ``settings`` are further ``DiffusionConfig`` fields such as ``num_steps`` (for tests and scripts)."""
    method = get_method(name)
    return method.objective(mask_id, schedule, DiffusionConfig(objective=name, **settings))


def build_model(cfg: Config) -> tuple[BackboneWrapperModel, PreTrainedTokenizerBase]:
    """The network of a run and its tokenizer: pre-trained backbone weights, or the same architecture at
    random (``model.init: scratch``); the method picks the class."""
    method = get_method(cfg.diffusion.objective)
    path = backbone_dir(cfg.model.backbone)
    tokenizer = load_tokenizer(path)
    settings_of = method.model_settings or (time_design if method.takes_time else None)
    settings = settings_of(cfg) if settings_of is not None else {}
    if cfg.model.source_attention != "full":  # check_config let only a model that has it get here
        settings["source_attention"] = cfg.model.source_attention
    model = method.model.from_backbone(path, tokenizer=tokenizer, **settings)
    if cfg.model.init == "scratch":
        config = type(model.config)(**{**model.config.to_dict(), "new_parameter_names": []})
        model = type(model)(config)
    return model, tokenizer


register(
    Method(
        name="diffusionbert",
        summary="DiffusionBERT / D3PM-absorbing: discrete-T bound plus λ·CE",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: DiffusionBertObjective(
            mask_id, schedule, cfg.num_steps, cfg.hybrid_weight
        ),
        schedules=SCHEDULE_NAMES,
        default_schedule="spindle",
    )
)
register(
    Method(
        name="rdm",
        summary="RDM: reweighted discrete-T cross-entropy",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: RDMObjective(mask_id, schedule, cfg.num_steps),
        schedules=BASE_SCHEDULE_NAMES,
        default_schedule="linear",
    )
)
register(
    Method(
        name="mdlm",
        summary="MDLM: continuous-time NELBO",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: ContinuousObjective(mask_id, schedule),
        schedules=BASE_SCHEDULE_NAMES,
        default_schedule="loglinear",
    )
)
register(
    Method(
        name="md4",
        summary="MD4: continuous-time NELBO, cosine schedule",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: MD4Objective(mask_id, schedule),
        schedules=BASE_SCHEDULE_NAMES,
        default_schedule="cosine",
    )
)
register(
    Method(
        name="sedd",
        summary="SEDD-absorb: denoising score entropy",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: SEDDObjective(mask_id, schedule),
        schedules=BASE_SCHEDULE_NAMES,
        default_schedule="loglinear",
    )
)
register(
    Method(
        name="radd",
        summary="RADD: time-free any-order objective",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: AnyOrderObjective(mask_id),
        time_conditionings=("none",),
    )
)
register(
    Method(
        name="bd3lm",
        summary="BD3-LM: block diffusion, MDLM inside blocks of diffusion.block_size, left to right across",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: BlockDiffusionObjective(mask_id, schedule, cfg.block_size),
        schedules=BASE_SCHEDULE_NAMES,
        default_schedule="loglinear",
        time_conditionings=("none",),
        model_settings=block_design,
        check=check_blocks,
    )
)
register(
    Method(
        name="mlm",
        summary="plain 15 % masked LM, the BERT-Mouth baseline",
        model=DiffusionBertForMaskedLM,
        objective=lambda mask_id, schedule, cfg: MaskedLMObjective(mask_id),
        time_conditionings=("none",),
    )
)
register(
    Method(
        name="ar",
        summary="autoregressive baseline of the same backbone",
        model=CausalLMForComparison,
        objective=lambda mask_id, schedule, cfg: AutoregressiveObjective(mask_id),
        time_conditionings=("none",),
        sampling=LEFT_TO_RIGHT,
        exact_likelihood=True,
    )
)
register(
    Method(
        name="diffusion_lm",
        summary="Diffusion-LM: Gaussian diffusion of learned word embeddings, full variational bound",
        model=EmbeddingDiffusionLM,
        objective=lambda mask_id, schedule, cfg: DiffusionLMObjective(
            mask_id, gaussian_schedule(cfg.schedule or "sqrt"), cfg.num_steps, cfg.embedding_dim
        ),
        schedules=("sqrt",),
        default_schedule="sqrt",
        time_conditionings=("none",),
        model_settings=embedding_dimension,
        sampling=GAUSSIAN,
    )
)
register(
    Method(
        name="plaid",
        summary="Plaid: continuous-time likelihood training of embedding diffusion, learned schedule",
        model=EmbeddingDiffusionLM,
        objective=lambda mask_id, schedule, cfg: PlaidObjective(mask_id, cfg.embedding_dim),
        schedules=("learned",),
        default_schedule="learned",
        time_conditionings=("none",),
        model_settings=plaid_denoiser,
        sampling=GAUSSIAN,
    )
)
