"""Run configuration: frozen dataclasses, loaded from YAML and patched with ``section.key=value`` overrides.

Unknown sections or keys are rejected with the nearest valid name, and values are checked against the field's
type and range. What a setting means for a method family (which objectives exist, which schedules and time
designs each allows) is the registry's to check: :func:`diffusionbert.methods.check_config`, which the trainer
calls before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, invalid_choice

INITS = ("pretrained", "scratch")
SOURCE_ATTENTIONS = ("full", "isolated")
"""How a pair model's source attends: to everything (``full``), or only to the source (``isolated``: UniLM's
sequence-to-sequence mask), so the source's keys and values do not depend on the answer and a decoder computes
them once per source (:mod:`diffusionbert.sampling.cache`)."""
LAYOUTS = ("sentence", "packed")
"""Data layouts: one example per row, or examples concatenated and cut into equal chunks (see ``data``)."""
DATA_FORMATS = ("text", "chat")
"""What a data file holds: texts (or source/target columns), or chat records rendered into prompt → answer pairs
(:mod:`diffusionbert.data.chat`)."""
LR_DECAYS = ("linear", "cosine", "constant", "inverse_sqrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DISTRIBUTED = ("ddp", "fsdp")
"""How several processes share the model: each a whole replica (DDP) or a shard of every layer (FSDP)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which network: ``backbone`` is ``minilm`` (the packaged MiniLM-L6) or a local model directory."""

    backbone: str = "minilm"
    init: str = "pretrained"  # pretrained | scratch
    time_conditioning: str = "none"
    # pairs: full | isolated (the source attends only to itself, so its keys and values are cached when decoding)
    source_attention: str = "full"
    # a trained model directory (a run's final/) whose weights and tokenizer start this run: the second stage
    # of a recipe (e.g. instruction tuning after diffusive adaptation); its method must be this run's
    init_from: str | None = None


@dataclass(frozen=True)
class DiffusionConfig:
    """Which method (``objective``, a name of the ``methods`` registry) and noise schedule.

    ``schedule`` None means the method's own default (spindle for DiffusionBERT, cosine for MD4, …); methods
    that use no schedule ignore it.
    """

    objective: str = "diffusionbert"
    schedule: str | None = None
    spindle_base: str = "linear"
    num_steps: int = 2048
    hybrid_weight: float = 0.01
    spindle_lambda: float = 0.3
    spindle_form: str = "reference"
    spindle_centering: str = "sentence"
    polynomial_power: float = 2.0
    embedding_dim: int = 16  # Gaussian families: the dimension D of the diffused word embeddings
    block_size: int = 4  # bd3lm: positions per block (masked diffusion inside a block, left to right across)


@dataclass(frozen=True)
class DataConfig:
    """Which text: local .txt/.jsonl/.csv files (or a hub dataset id where online). Training needs
    ``train_file``; configs/ name the shared data sets."""

    train_file: str | None = None
    valid_file: str | None = None
    # text: one text per line or record (``field``), or source/target columns (``source_field`` → ``field``);
    # chat: instruction records (instruction, input, output) or conversations (messages), each answer a target
    # after its conversation rendered with the chat template (see diffusionbert.data.chat)
    format: str = "text"
    # chat: the Jinja chat template stored with the model's tokenizer; None: the tokenizer's own, else the
    # package's default (role: content lines)
    chat_template: str | None = None
    field: str | None = "ref"
    source_field: str | None = None
    # pairs only: the target is filled with [SEP] to this many tokens, noised and learned like the rest, so the
    # model decides where a text ends (LLaDA pads its SFT answers with EOS the same way); None: its own length
    target_window: int | None = None
    layout: str = "sentence"  # sentence | packed
    max_length: int = 128
    max_train_examples: int | None = None
    max_valid_examples: int | None = 512
    # a corpus larger than memory: train_file may be a glob of .txt/.jsonl files, read as a stream and packed on
    # the fly (data.stream), through a shuffle buffer of this many rows; resumes at the exact position
    streaming: bool = False
    shuffle_rows: int = 1024
    cache_dir: str = ".cache/diffusionbert"

    @property
    def pairs(self) -> bool:
        """Whether examples are source/target pairs (a source column, or chat prompts and answers)."""
        return self.source_field is not None or self.format == "chat"


@dataclass(frozen=True)
class TrainingConfig:
    """How to optimise, log and checkpoint."""

    output_dir: str = "runs/default"
    seed: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 5e-5
    head_lr: float = 1e-3  # a newly created vocabulary head only (see models.parameter_groups)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    lr_decay: str = (
        "linear"  # linear | cosine | constant | inverse_sqrt (sqrt(warmup / step): the paper's code)
    )
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on GPUs that have it, else fp32) | fp32 | bf16 | fp16
    tf32: bool = (
        True  # fp32 matrix products in TF32 on GPUs that have it (Ampere and newer); no effect on CPU
    )
    # several processes: ddp (a whole replica each) | fsdp (torch's FSDP2: every backbone layer sharded)
    distributed: str = "ddp"
    ema_decay: float = 0.0
    eval_every: int = 0
    # the validation bound reads the first eval_batches × batch_size examples, in file order
    eval_batches: int = 8
    save_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    # pairs only: the probability that a row's source is shown as [MASK]s (LLaDA's unsupervised
    # classifier-free guidance), so the model also generates without it and guidance can contrast the two
    source_dropout: float = 0.0
    # Diffusion-NAT's self-prompting: the model reads an estimate of x_0 as a prompt before its input; this
    # share of rows gets its own estimate from a first, gradient-free pass (the rest an empty prompt). 0: off
    self_prompt: float = 0.0
    # a batch whose loss or gradient is not finite is skipped; this many in a row stop the run (diverged)
    max_nonfinite_in_row: int = 5


ENDS = ("generated", "predicted")
"""Where a generated text ends: at its first generated [SEP], or at the length the model predicts for it
(:mod:`~diffusionbert.diffusion.length`)."""


DEFAULT_LENGTH = 32
"""The generated positions of a text when a decoding names no length and the model has no target window for
it (E2E references average ~28 tokens; a window of 48 made its texts ramble, docs/results-e2e.md)."""
DEFAULT_ANSWER_LENGTH = 64
"""The answer window of a chat model trained without a target window."""


TEMPERATURES = (1e-3, 1e3)
"""The range of a temperature other than 0 (greedy): log-probabilities divided by it stay finite in float32
(1e-40 would overflow them to ±inf and decode nothing)."""


def check_sharpening(temperature: float, top_k: int, top_p: float) -> None:
    """Reject a temperature, top-k or top-p that no draw can honour (one-line errors)."""
    low, high = TEMPERATURES
    if not (temperature == 0 or low <= temperature <= high):
        raise ConfigError(
            f"temperature={temperature!r} is not valid; allowed: 0 (the most likely token) or "
            f"{low:g} <= temperature <= {high:g}"
        )
    if top_k < 0:
        raise ConfigError(f"top_k={top_k!r} is not valid; allowed: 0 (off) or a positive count")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p={top_p!r} is not valid; allowed: 0 < top_p <= 1")


def _option(default: Any, help: str) -> Any:
    """A decoding option: its default and the help text its command-line flag shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DecodingConfig:
    """Every option of one decode, in one object (like transformers' ``GenerationConfig``).

    A run's ``sampling:`` section is saved with its model (``decoding.json``) as the model's default decoding;
    every entry point (``pipe(...)``, ``sample``, ``generate``, ``evaluate``, ``chat``, ``serve``, the
    demo) starts from it, and a call overrides single options (``pipe(steps=8)``) or passes a whole
    config (``pipe(config=DecodingConfig(...))``). Values are checked here, once, each bad one a one-line
    :class:`~diffusionbert.errors.ConfigError`; what a given model supports (its samplers, ends, blocks,
    guidance, sharpening) is its pipeline's to check. ``None`` means "the model's own": its sampler, its
    window, its end. See docs/architecture.md for how to add an option.
    """

    sampler: str | None = _option(
        None,
        "the model's own by default: ancestral for diffusion models (or cached | tweedie | remdm | "
        "confidence | threshold | gibbs | routing), autoregressive for AR models (or greedy | beam | "
        "beam:N, left to right with a key-value cache), clamped or ancestral for Gaussian ones",
    )
    steps: int = _option(64, "denoising steps (network calls at most); left-to-right decoding ignores it")
    length: int | None = _option(
        None,
        "generated positions (a generated [SEP] ends a text earlier); default: with a source (or a chat) "
        "the model's data.target_window when it has one, else 32 (a chat answer 64)",
    )
    end: str | None = _option(
        None,
        "generated: a text ends at its first generated [SEP]; predicted: decode the length the model "
        "predicts (a model trained with data.target_window, in that window); default: predicted where it "
        "applies, else generated",
    )
    length_beam: int = _option(
        1,
        "with end=predicted: decode each text at its N most likely lengths (the predicted median among "
        "them) and keep the one whose tokens the model scores highest (Mask-Predict's length beam; N times "
        "the network calls)",
    )
    block_length: int | None = _option(
        None,
        "decode in blocks of this many positions, left to right, each in --steps steps "
        "(semi-autoregressive, LLaDA); a text stops after the block with its [SEP]",
    )
    temperature: float = _option(1.0, "divides the log-probabilities before a draw (0: the most likely)")
    top_k: int = _option(0, "sample from the k most likely tokens (0: all)")
    top_p: float = _option(1.0, "nucleus sampling mass (1: all)")
    guidance: float = _option(
        0.0, "classifier-free guidance weight, with a source (a model trained with source dropout)"
    )
    prompt_cache: bool | None = _option(
        None,
        "compute a source's keys and values once and run only the answer at every step (exact; a model "
        "trained with model.source_attention=isolated): default where the model has it; false: never",
    )
    num_samples: int = _option(1, "texts per source or prompt (without one: the number of texts)")
    mbr: bool = _option(False, "keep the minimum-Bayes-risk text (BLEU) of each source's samples (generate)")
    seed: int = _option(0, "seed of the draws (sample i of a call draws from its own generator)")
    batch_size: int = _option(32, "rows per network call (across sources)")
    sampler_options: dict[str, float | str] = field(
        default_factory=dict,
        metadata={
            "help": "the sampler's own options, NAME=VALUE (e.g. threshold=0.8 for threshold, "
            "schedule=linear or choice_temperature=2 for confidence, eta=0.05 or strategy=rescale for remdm)"
        },
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}={value!r} is not valid; allowed: a finite number")
        if self.sampler is not None and (not isinstance(self.sampler, str) or not self.sampler):
            raise ConfigError(f"sampler={self.sampler!r} is not valid; allowed: a sampler name")
        for name in ("steps", "num_samples", "batch_size", "length_beam"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not valid; allowed: {name} >= 1")
        for name in ("length", "block_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not valid; allowed: {name} >= 1")
        if self.end is not None and self.end not in ENDS:
            raise invalid_choice("end", self.end, ENDS)
        check_sharpening(self.temperature, self.top_k, self.top_p)
        if self.guidance < 0:
            raise ConfigError(f"guidance={self.guidance} is not valid; allowed: a finite number >= 0")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} is not valid; allowed: seed >= 0")
        shared = sorted(set(self.sampler_options) & {"temperature", "top_k", "top_p"})
        if shared:
            raise ConfigError(
                f"sampler_options names {shared[0]}; allowed: {shared[0]} as a decoding option of its own"
            )
        if self.mbr and self.num_samples < 2:
            raise ConfigError("mbr chooses among several samples; allowed: num_samples >= 2 with mbr")

    @property
    def sharpened(self) -> bool:
        """Whether temperature, top-k or top-p reshape the model's distribution."""
        return (self.temperature, self.top_k, self.top_p) != (1.0, 0, 1.0)

    def replace(self, **options: Any) -> DecodingConfig:
        """This config with ``options`` changed, each checked (an unknown name is refused with the nearest
        valid one; a value of the wrong type, e.g. from JSON, is a one-line error)."""
        return _section(DecodingConfig, "", options, base=self)

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> DecodingConfig:
        """A config from a mapping (``decoding.json``, a request body), checked like :meth:`replace`;
        ``where`` names the source in errors."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping of decoding options, got {type(raw).__name__}")
        try:
            return cls().replace(**{str(key): value for key, value in raw.items()})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Config:
    """A whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: DecodingConfig = field(default_factory=DecodingConfig)
    """The model's default decoding (saved with it as ``decoding.json``)."""

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)


def _check_choice(field_name: str, value: str, allowed: typing.Iterable[str]) -> None:
    if value not in allowed:
        raise invalid_choice(field_name, value, allowed)


def _check_positive(field_name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"{field_name}={value!r} is not valid; it must be {'>= 0' if allow_zero else '> 0'}"
        )


def _check_finite(cfg: Config) -> None:
    """Reject NaN and infinite floats anywhere (``nan < 0`` is False, so range checks alone let them in)."""
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(
                    f"{section.name}.{f.name}={value!r} is not valid; it must be a finite number"
                )


def _validate(cfg: Config) -> None:
    """Reject bad values and contradictory options, each with a one-line message."""
    _check_finite(cfg)
    m, d, data, t = cfg.model, cfg.diffusion, cfg.data, cfg.training
    _check_choice("model.init", m.init, INITS)
    _check_choice("model.source_attention", m.source_attention, SOURCE_ATTENTIONS)
    if m.source_attention == "isolated" and m.time_conditioning != "none":
        raise ConfigError(
            f"model.source_attention=isolated caches the source's keys and values across steps, but "
            f"model.time_conditioning={m.time_conditioning!r} makes them depend on the time; allowed: "
            "time_conditioning=none with it"
        )
    if m.init_from is not None and m.init == "scratch":
        raise ConfigError(
            "model.init_from starts from trained weights; allowed: model.init=pretrained with it"
        )
    _check_choice("data.layout", data.layout, LAYOUTS)
    _check_choice("data.format", data.format, DATA_FORMATS)
    _check_choice("training.lr_decay", t.lr_decay, LR_DECAYS)
    _check_choice("training.precision", t.precision, PRECISIONS)
    _check_choice("training.distributed", t.distributed, DISTRIBUTED)
    for name, value in (
        ("diffusion.num_steps", d.num_steps),
        ("diffusion.embedding_dim", d.embedding_dim),
        ("diffusion.block_size", d.block_size),
        ("data.max_length", data.max_length),
        ("training.batch_size", t.batch_size),
        ("training.grad_accum", t.grad_accum),
        ("training.max_steps", t.max_steps),
        ("training.lr", t.lr),
        ("training.head_lr", t.head_lr),
        ("training.keep_last", t.keep_last),
        ("training.log_every", t.log_every),
        ("training.max_nonfinite_in_row", t.max_nonfinite_in_row),
    ):
        _check_positive(name, value)
    for name, value in (
        ("diffusion.hybrid_weight", d.hybrid_weight),
        ("diffusion.spindle_lambda", d.spindle_lambda),
        ("training.weight_decay", t.weight_decay),
        ("training.warmup_steps", t.warmup_steps),
        ("training.grad_clip", t.grad_clip),
        ("training.eval_every", t.eval_every),
        ("training.save_every", t.save_every),
    ):
        _check_positive(name, value, allow_zero=True)
    if not 0.0 <= t.source_dropout < 1.0:
        raise ConfigError(f"training.source_dropout={t.source_dropout!r} is not valid; it must be in [0, 1)")
    if t.source_dropout > 0 and not data.pairs:
        raise ConfigError(
            "training.source_dropout > 0 needs source/target pairs; allowed: with data.source_field or "
            "data.format=chat"
        )
    if data.format == "chat" and data.source_field is not None:
        raise ConfigError(
            "data.source_field does not apply to data.format=chat (the prompt is the rendered conversation); "
            "allowed: data.source_field=null"
        )
    if data.format == "chat" and data.layout == "packed":
        raise ConfigError("data.format=chat needs data.layout=sentence (one prompt and answer per row)")
    if data.streaming:
        _check_positive("data.shuffle_rows", data.shuffle_rows)
        given = [
            name
            for name, value in (
                ("data.layout=sentence", data.layout == "sentence"),
                ("data.format=chat", data.format == "chat"),
                ("data.source_field", data.source_field is not None),
                ("data.max_train_examples", data.max_train_examples is not None),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"data.streaming reads plain texts packed into rows; {', '.join(given)} does not apply; "
                "allowed: data.layout=packed, data.format=text, no source_field or max_train_examples"
            )
    elif data.train_file and set(data.train_file) & set("*?["):
        raise ConfigError(
            f"data.train_file={data.train_file!r} is a glob; allowed: a glob with data.streaming=true, or one file"
        )
    if data.chat_template is not None and data.format != "chat":
        raise ConfigError("data.chat_template applies to data.format=chat only; allowed: data.format=chat")
    if not 0.0 <= t.self_prompt < 1.0:
        raise ConfigError(f"training.self_prompt={t.self_prompt!r} is not valid; it must be in [0, 1)")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"training.ema_decay={t.ema_decay!r} is not valid; it must be in [0, 1)")
    if t.eval_every > 0 and not data.valid_file:
        raise ConfigError("training.eval_every > 0 needs data.valid_file")
    if data.target_window is not None:
        if not data.pairs:
            raise ConfigError(
                "data.target_window needs source/target pairs; allowed: with data.source_field or "
                "data.format=chat"
            )
        if not 2 <= data.target_window <= data.max_length - 3:
            raise ConfigError(
                f"data.target_window={data.target_window} is not valid; allowed: 2 <= target_window <= "
                f"data.max_length - 3 = {data.max_length - 3} (room for [CLS], a source token and [SEP])"
            )


# What a YAML value may be for each field type (an int is a fine float; a number is a fine string).
_ACCEPTED_TYPES: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str, int, float),
}


def _coerce(path: str, value: Any, annotation: Any) -> Any:
    """Check (and gently convert, e.g. int → float) ``value`` against a field's type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _coerce(path, value, inner[0])
    if origin is dict:  # names to numbers or names (a sampler's own options)
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise ConfigError(f"{path}={value!r} is not valid; expected a mapping of names to values")
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, int | float | str):
                raise ConfigError(f"{path}.{key}={item!r} is not valid; expected a number or a name")
        return dict(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        with contextlib.suppress(ValueError):
            return float(value)
    accepted = _ACCEPTED_TYPES.get(annotation, ())
    if isinstance(value, accepted) and (annotation is bool or not isinstance(value, bool)):
        return annotation(value)
    raise ConfigError(
        f"{path}={value!r} is not valid; expected {getattr(annotation, '__name__', annotation)}"
    )


def _unknown(kind: str, name: str, allowed: typing.Iterable[str]) -> ConfigError:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(allowed)})")


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from a nested dict, rejecting unknown keys with the nearest valid name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    sections = _section_classes()
    built: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in sections:
            raise _unknown("config section", str(section), sections)
        cls = sections[section]
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        built[section] = _section(cls, section, values)
    return Config(**built)


def _section(cls: type, section: str, values: dict[str, Any], base: Any = None) -> Any:
    """The dataclass ``cls`` with ``values`` over ``base`` (default: its defaults), every key checked (an
    unknown one named with the nearest valid) and every value coerced to its field's type; ``section``
    prefixes the names in messages (``""``: the bare option names of a call)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{section}." if section else ""
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            kind = "config key" if section else f"{cls.__name__} option"
            raise _unknown(kind, f"{prefix}{key}", [f"{prefix}{n}" for n in names])
        kwargs[key] = _coerce(f"{prefix}{key}", value, hints[key])
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` → (["section", "key"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not valid; expected section.key=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key {key!r} is not valid; expected section.key (e.g. training.lr)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``section.key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    for text in overrides:
        (section, key), value = parse_override(text)
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section][key] = value
    return config_from_dict(raw)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
