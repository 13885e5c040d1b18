"""``make reproduce-instruct``: the Diffusion-LLM recipe on a small BERT, diffusion against AR, written to
``docs/results-instruct.md``.

A plan (``configs/reproduce-instruct.yaml``) names two stages — stage 1, diffusive adaptation on plain text;
stage 2, instruction tuning on chat records, started from stage 1's weights (``model.init_from``) — the
*models* that run them (each a few overrides applied to both stages: the objective; a model may skip stage 1)
and the *decoders* that answer the protocol's test instructions (a model, a sampler, its steps, blocks).

Every model's stage-2 result is scored by its answer NLL on the whole test file (the diffusion bound, or an
AR model's exact NLL, on the same answer windows and batches, so the two are compared pairwise); every
decoder answers the first test instructions and is scored by ROUGE-L against the reference answers, its
answer length and its network calls per answer. Trained models, bounds and answers are stored under the
plan's output directory, keyed by what they depend on, so re-running only does what is missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import load_model_dir
from ..config import DEFAULT_ANSWER_LENGTH, Config, DecodingConfig, load_config
from ..data.chat import load_chat
from ..errors import ConfigError
from ..evaluation.conditional import corpus_rouge_l
from ..evaluation.report import evaluate_file
from ..methods import LEFT_TO_RIGHT, get_method
from ..sampling import pipeline_for
from ..utils.io import atomic_file, write_json
from ..utils.runtime import default_device, machine_description
from .plans import (
    build_dataclass,
    check_unique,
    discussion_section,
    named,
    paired_gap,
    read_plan,
    stored_record,
    train_named,
    written_at,
)


@dataclass(frozen=True)
class Stage:
    """A training stage: a base run config and the overrides every model applies to it."""

    base: str
    common: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """A model to train through the stages: overrides of both stages' configs, and ``stage2`` of the second
    only (e.g. isolated source attention, which plain texts do not have); with ``adapted`` False it is
    instruction-tuned straight from the pre-trained backbone (no stage 1)."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()
    stage2: tuple[str, ...] = ()
    adapted: bool = True


@dataclass(frozen=True)
class Decoder:
    """A row of the answer table: how ``model`` answers (``block_length``: semi-autoregressive blocks;
    ``end``: where an answer ends, see :data:`~diffusionbert.config.ENDS`, None: the default).
    :meth:`decoding` is the whole decoding it names."""

    name: str
    model: str
    label: str
    sampler: str
    steps: int = 64
    block_length: int | None = None
    end: str | None = None

    def decoding(self, protocol: Protocol, length: int) -> DecodingConfig:
        """Every option of this row's decoding under ``protocol`` (its seed and batch), answers in a window
        of ``length``, whatever the model's own decoding says."""
        return DecodingConfig(
            sampler=self.sampler,
            steps=self.steps,
            length=length,
            end=self.end,
            block_length=self.block_length,
            seed=protocol.seed,
            batch_size=protocol.batch_size,
        )


@dataclass(frozen=True)
class Protocol:
    """What is scored: the test file (chat records), how many of its instructions are answered, the batch and
    the seed."""

    test_file: str
    max_answers: int | None = None
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class Plan:
    """A whole instruction-tuning reproduction (see the module doc); ``diffusion`` and ``baseline`` name the
    two models whose answer NLL is compared pairwise."""

    title: str
    output_dir: str
    results: str
    stage1: Stage
    stage2: Stage
    protocol: Protocol
    models: tuple[Model, ...]
    decoders: tuple[Decoder, ...]
    diffusion: str
    baseline: str

    def model(self, name: str) -> Model:
        return named(self.models, name, "model")


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan: unique names, every decoder's model exists, a known end."""
    path = Path(path)
    raw = read_plan(path)
    parts: dict[str, Any] = {
        "stage1": build_dataclass(Stage, raw.pop("stage1", None), "stage1"),
        "stage2": build_dataclass(Stage, raw.pop("stage2", None), "stage2"),
        "protocol": build_dataclass(Protocol, raw.pop("protocol", None), "protocol"),
        "models": tuple(
            build_dataclass(Model, m, f"models[{i}]") for i, m in enumerate(raw.pop("models", []))
        ),
        "decoders": tuple(
            build_dataclass(Decoder, d, f"decoders[{i}]") for i, d in enumerate(raw.pop("decoders", []))
        ),
    }
    plan: Plan = build_dataclass(Plan, {**raw, **parts}, str(path))
    check_unique(path, "model", [m.name for m in plan.models])
    check_unique(path, "decoder", [d.name for d in plan.decoders])
    for decoder in plan.decoders:
        plan.model(decoder.model)
        try:
            decoder.decoding(plan.protocol, DEFAULT_ANSWER_LENGTH)
        except ConfigError as exc:
            raise ConfigError(f"decoder {decoder.name!r}: {exc}") from None
    plan.model(plan.diffusion)
    plan.model(plan.baseline)
    return plan


def stage_configs(plan: Plan, model: Model) -> tuple[Config | None, Config]:
    """The run configs of a model's two stages (None for stage 1 when it is not adapted first); stage 2
    starts from stage 1's final weights."""
    root = Path(plan.output_dir) / model.name
    first = None
    start: list[str] = []
    if model.adapted:
        out = root / "stage1"
        first = load_config(
            plan.stage1.base, [*plan.stage1.common, *model.overrides, f"training.output_dir={out}"]
        )
        start = [f"model.init_from={out / 'final'}"]
    second = load_config(
        plan.stage2.base,
        [
            *plan.stage2.common,
            *model.overrides,
            *model.stage2,
            *start,
            f"training.output_dir={root / 'stage2'}",
        ],
    )
    return first, second


def final_dir(plan: Plan, model: Model) -> Path:
    """The instruction-tuned model directory of a model."""
    return Path(stage_configs(plan, model)[1].training.output_dir) / "final"


def train_models(plan: Plan, progress: bool = True, device: str | None = None) -> None:
    """Train (or reuse, or resume) every model's stages, stage 1 of all first."""
    runs = []
    for stage in (0, 1):
        for model in plan.models:
            cfg = stage_configs(plan, model)[stage]
            if cfg is not None:
                runs.append((f"{model.name}/stage{stage + 1}", model.label, cfg))
    train_named(runs, progress, device)


@dataclass(frozen=True)
class ModelResult:
    """A model's answer NLL on the test file: nats per window token, its error, PPL per answer word, and the
    per-batch values (for the paired comparison); its training seconds over both stages."""

    nats_token: float
    stderr_token: float
    ppl_word: float | None
    batches: tuple[float, ...]
    n_answers: int
    train_seconds: float | None


def evaluate_model(plan: Plan, model: Model, progress: bool = True, device: str | None = None) -> ModelResult:
    """A model's answer NLL on the whole test file (stored, recomputed only when its weights change)."""
    final = final_dir(plan, model)
    key = {"protocol": asdict(plan.protocol), "weights": written_at(final)}
    path = Path(plan.output_dir) / "models" / f"{model.name}.json"
    if (record := stored_record(path, key)) is None:
        p = plan.protocol
        report = evaluate_file(
            final, p.test_file, batch_size=p.batch_size, seed=p.seed, progress=progress, device=device
        )
        assert report.bound is not None  # the default metrics are the bound
        record = {"key": key, "bound": report.bound.to_dict(), "examples": report.n_examples}
        write_json(path, record)
    bound = record["bound"]
    return ModelResult(
        bound["nats_per_token"],
        bound["stderr_per_token"],
        bound["ppl_per_word"],
        tuple(bound["batch_nats_per_token"]),
        record["examples"],
        _train_seconds(plan, model),
    )


def _train_seconds(plan: Plan, model: Model) -> float | None:
    """Both stages' training wall time, from their timing files (None when one is missing)."""
    total = 0.0
    for cfg in stage_configs(plan, model):
        if cfg is None:
            continue
        timing = Path(cfg.training.output_dir) / "timing.json"
        if not timing.is_file():
            return None
        total += float(json.loads(timing.read_text(encoding="utf-8"))["train_seconds"])
    return total


@dataclass(frozen=True)
class DecoderResult:
    """A decoder's answers scored: ROUGE-L F1 against the references, mean answer and reference words, the
    share of empty answers, network calls per answer and the wall time; the first answers as examples."""

    rouge_l: float
    answer_words: float
    reference_words: float
    empty: float
    nfe: float
    seconds: float
    examples: tuple[tuple[str, str, str], ...]


def evaluate_decoder(
    plan: Plan, decoder: Decoder, progress: bool = True, device: str | None = None
) -> DecoderResult:
    """Answer the protocol's first test instructions with a decoder (or read its stored answers when nothing
    they depend on changed) and score them."""
    final = final_dir(plan, plan.model(decoder.model))
    key = {"protocol": asdict(plan.protocol), "decoder": asdict(decoder), "weights": written_at(final)}
    path = Path(plan.output_dir) / "decoders" / f"{decoder.name}.json"
    if (record := stored_record(path, key)) is None:
        record = {"key": key, **_answer(plan.protocol, final, decoder, progress, device)}
        write_json(path, record)
    answers, sources, references = record["answers"], record["sources"], record["references"]
    words = [len(a.split()) for a in answers]
    return DecoderResult(
        rouge_l=corpus_rouge_l(answers, [[r] for r in references]),
        answer_words=sum(words) / len(words),
        reference_words=sum(len(r.split()) for r in references) / len(references),
        empty=sum(not a.strip() for a in answers) / len(answers),
        nfe=sum(record["nfe"]) / len(record["nfe"]),
        seconds=record["seconds"],
        examples=tuple(zip(sources[:4], references[:4], answers[:4], strict=True)),
    )


def _answer(p: Protocol, final: Path, decoder: Decoder, progress: bool, device: str | None) -> dict[str, Any]:
    """The decoder's answers to the first ``max_answers`` test instructions, in one batched call."""
    loaded = load_model_dir(final, device=default_device(device))
    pairs = load_chat(p.test_file, loaded.tokenizer)
    if p.max_answers is not None:
        pairs = pairs.select(range(min(p.max_answers, len(pairs))))
    pipe = pipeline_for(loaded)
    decoding = decoder.decoding(p, loaded.target_window or DEFAULT_ANSWER_LENGTH)
    started = time.perf_counter()
    out = pipe(source=list(pairs["source"]), config=decoding, progress=progress)
    return {
        "seconds": time.perf_counter() - started,
        "sources": list(pairs["source"]),
        "references": list(pairs["target"]),
        "answers": out.texts,
        "nfe": out.nfe,
    }


def is_left_to_right(plan: Plan, model: Model) -> bool:
    """Whether a model is decoded left to right (its steps mean nothing)."""
    return get_method(stage_configs(plan, model)[1].diffusion.objective).sampling == LEFT_TO_RIGHT


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * value:.{digits}f}"


def results_page(
    plan: Plan,
    models: dict[str, ModelResult],
    decoders: dict[str, DecoderResult],
    machine: str,
    plan_path: str,
) -> str:
    """The markdown of the instruction-tuning results page."""
    p = plan.protocol
    probe = plan.models[0]
    first, second = stage_configs(plan, probe)
    d2, t2 = second.data, second.training
    stage1 = (
        "no stage 1"
        if first is None
        else (
            f"stage 1: `{first.data.train_file}`, {first.training.max_steps} steps of batch {first.training.batch_size},"
            f" sentences of at most {first.data.max_length} tokens"
        )
    )
    lines = [
        f"# {plan.title}",
        "",
        f"Generated by `make reproduce-instruct` (plan `{plan_path}`) on {machine}. Every model starts from the"
        f" pre-trained `{second.model.backbone}` and runs the recipe of Diffusion-LLM: {stage1}; stage 2:"
        f" instruction tuning on `{d2.train_file}` (chat records rendered by the chat template, the prompt kept"
        f" clean and only the answer noised and scored), {t2.max_steps} steps of batch {t2.batch_size}, lr"
        f" {t2.lr}, sequences of at most {d2.max_length} tokens with the answer in a {d2.target_window}-token"
        f" window (the answer, then [SEP] filler the model learns to place; longer answers are cut), seed"
        f" {t2.seed}. Models differ only in the overrides listed below.",
        "",
        "## Answer likelihood on the test instructions",
        "",
        f"The NLL of each reference answer given its instruction, on all of `{p.test_file}` (the diffusion"
        " models' bound, the AR model's exact NLL; both over the same answer windows, [SEP] filler included, in"
        f" the same batches of {p.batch_size}, seed {p.seed}). PPL per word divides the total by the answers'"
        " words plus one.",
        "",
        "| model | answers | NLL nats/token ↓ | PPL per word ↓ | training s (both stages) |",
        "|---|---|---|---|---|",
    ]
    for model in plan.models:
        r = models[model.name]
        lines.append(
            f"| **{model.label}** (`{model.name}`) | {r.n_answers} | {r.nats_token:.3f} ± {r.stderr_token:.3f} |"
            f" {_fmt(r.ppl_word, 1)} | {_fmt(r.train_seconds, 0)} |"
        )
    gap = paired_gap(models[plan.baseline].batches, models[plan.diffusion].batches)
    diffusion, baseline = plan.model(plan.diffusion), plan.model(plan.baseline)
    difference = models[plan.diffusion].nats_token - models[plan.baseline].nats_token
    lines += [
        "",
        f"{diffusion.label} minus {baseline.label}: {difference:+.3f} nats/token, {gap:+.1f} paired standard"
        " errors (the per-batch differences of the same answers; a bound can only be above the true NLL, so a"
        " positive gap is an upper bound on how much worse the diffusion model is).",
        "",
        "## Answers",
        "",
        f"Each decoder answers the first {p.max_answers or 'all'} test instructions (one answer each, seed"
        f" {p.seed}, batched {p.batch_size} across instructions). ROUGE-L: F1 of the longest common subsequence"
        " with the reference answer (rouge-score), averaged; words: whitespace words per answer; empty: answers"
        " with no text; NFE: network calls per answer (blocks: all blocks' calls); time: the whole row.",
        "",
        "| decoder | model | how | ROUGE-L ↑ | words (reference) | empty | NFE | time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for decoder in plan.decoders:
        r = decoders[decoder.name]
        model = plan.model(decoder.model)
        how = decoder.sampler
        if not is_left_to_right(plan, model):
            how += f", {decoder.steps} steps" + (" per block" if decoder.block_length else "")
        how += f", blocks of {decoder.block_length}" if decoder.block_length else ""
        how += f", {decoder.end} end" if decoder.end else ""
        lines.append(
            f"| **{decoder.label}** | `{decoder.model}` | {how} | {100 * r.rouge_l:.1f} |"
            f" {r.answer_words:.1f} ({r.reference_words:.1f}) | {100 * r.empty:.0f} % | {r.nfe:.1f} |"
            f" {r.seconds:.0f} |"
        )
    lines += ["", "Models (overrides of both stages' configs, after the shared ones):", ""]
    lines += [
        f"- `{m.name}` ({m.label}): {', '.join(f'`{o}`' for o in m.overrides) or 'none'}"
        + ("" if m.adapted else "; no stage 1 (instruction-tuned straight from the backbone)")
        for m in plan.models
    ]
    lines += [
        "",
        *discussion_section(Path(plan.results)),
        "",
        "## The same recipe on a larger BERT and a GPU",
        "",
        "Any local `AutoModelForMaskedLM` directory can be the backbone (nothing is downloaded); on a CUDA"
        " machine the trainer picks the GPU, and bf16 autocast where the GPU has it (not measured here: this"
        " page's machine has no GPU):",
        "",
        "```bash",
        "diffusionbert train --config configs/lm1b.yaml model.backbone=/models/bert-base-uncased \\",
        "    diffusion.objective=mdlm diffusion.schedule=loglinear training.output_dir=runs/stage1-base",
        "diffusionbert train --config configs/alpaca.yaml model.init_from=runs/stage1-base/final \\",
        "    training.output_dir=runs/alpaca-base training.max_steps=5000",
        "diffusionbert chat --checkpoint runs/alpaca-base/final --sampler confidence --block-length 16 --steps 16",
        "```",
        "",
        "## Examples (the first test instructions)",
        "",
    ]
    first_decoder = decoders[plan.decoders[0].name]
    for index, (source, reference, _) in enumerate(first_decoder.examples):
        lines += [
            f"**Prompt {index + 1}.** `{_one_line(source)}`",
            "",
            f"- reference: {_one_line(reference)}",
        ]
        lines += [
            f"- {decoder.label}: {_one_line(decoders[decoder.name].examples[index][2]) or '(empty)'}"
            for decoder in plan.decoders
        ]
        lines.append("")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """Text on one markdown line (newlines shown as ⏎, backticks kept out of code spans)."""
    return " ⏎ ".join(part.strip() for part in text.splitlines() if part.strip()).replace("`", "'")


def reproduce_instruct(
    plan_path: str | Path, progress: bool = True, train_only: bool = False, device: str | None = None
) -> Path | None:
    """Train every model's stages, score every model and decoder and write the results page; None with
    ``train_only``."""
    plan = load_plan(plan_path)
    if not Path(plan.protocol.test_file).is_file():
        raise ConfigError(f"protocol.test_file {plan.protocol.test_file} not found")
    train_models(plan, progress, device)
    if train_only:
        return None
    models = {}
    for model in plan.models:
        print(f"scoring {model.name}: {model.label}")
        models[model.name] = evaluate_model(plan, model, progress, device)
    decoders = {}
    for index, decoder in enumerate(plan.decoders):
        print(f"answering [{index + 1}/{len(plan.decoders)}] {decoder.name}: {decoder.label}")
        decoders[decoder.name] = evaluate_decoder(plan, decoder, progress, device)
    page = Path(plan.results)
    text = results_page(plan, models, decoders, machine_description(), str(plan_path))
    atomic_file(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return page
