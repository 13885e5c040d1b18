"""``make reproduce-e2e``: data-to-text on E2E NLG, every decoder a row, written to ``docs/results-e2e.md``.

A plan (``configs/reproduce-e2e.yaml``) names a base run config (pairs MR → reference), the *models* to train
(each a few overrides of it: the schedule, the objective, source dropout, the AR baseline) and the *decoders*
that make the table's rows (a model, a sampler, its steps, samples per source, MBR, guidance). Every decoder
generates one text for each distinct MR of the protocol's test file with
:func:`~diffusionbert.evaluation.generate_file`, is scored against all references of its MR (BLEU, NIST,
ROUGE-L, CIDEr, the slot error rate and, with several samples, their diversity) and timed. The page puts the
published systems' numbers beside ours and checks the paper's claim (conditional text of comparable quality
and more diverse than the baselines) on our numbers. Trained models and each decoder's texts are stored
under the plan's output directory, keyed by what they depend on, so re-running only does what is missing;
the texts are scored afresh each time, so a change to a metric needs no decoding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..config import Config, DecodingConfig, load_config
from ..errors import ConfigError
from ..evaluation.conditional import ConditionalScores
from ..evaluation.generation import (
    Generation,
    SourceFile,
    generate_file,
    read_references,
    score_generations,
)
from ..evaluation.slots import references_error_rate
from ..methods import LEFT_TO_RIGHT, get_method
from ..utils.io import atomic_file, read_json, write_json
from ..utils.runtime import machine_description
from .distill import LEFT_TO_RIGHT_TEACHER_SAMPLER, distill
from .plans import (
    build_dataclass,
    check_runs,
    check_unique,
    discussion_section,
    named,
    read_plan,
    stored_record,
    train_named,
    written_at,
)


@dataclass(frozen=True)
class Model:
    """A model to train: overrides of the base config."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decoder:
    """A row of the table: how ``model`` generates (``samples`` per source; with ``mbr`` the consensus one is
    kept, else the first; the diversity columns need ``samples`` >= 2; ``end``: where a text ends, see
    :data:`~diffusionbert.config.ENDS`; ``length_beam`` and ``sampler_options`` as in
    :class:`~diffusionbert.config.DecodingConfig`). :meth:`decoding` is the whole decoding it names."""

    name: str
    model: str
    label: str
    sampler: str
    steps: int = 32
    samples: int = 1
    mbr: bool = False
    guidance: float = 0.0
    end: str = "generated"
    length_beam: int = 1
    sampler_options: dict[str, float | str] = field(default_factory=dict)

    def decoding(self, protocol: Protocol) -> DecodingConfig:
        """Every option of this row's decoding under ``protocol`` (its window, seed and batch), whatever the
        model's own decoding says: a row of the table means the same on any model."""
        return DecodingConfig(
            sampler=self.sampler,
            steps=self.steps,
            length=protocol.length,
            end=self.end,
            length_beam=self.length_beam,
            guidance=self.guidance,
            num_samples=self.samples,
            mbr=self.mbr,
            seed=protocol.seed,
            batch_size=protocol.batch_size,
            sampler_options=dict(self.sampler_options),
        )


@dataclass(frozen=True)
class Protocol:
    """What every decoder is scored on: the file, its columns, the target window, the batch and the seed."""

    test_file: str
    source_field: str = "mr"
    reference_field: str = "ref"
    max_sources: int | None = None
    length: int = 48
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class Anchor:
    """A published system's test-set numbers (None where not reported)."""

    label: str
    source: str
    bleu: float | None = None
    nist: float | None = None
    rouge_l: float | None = None
    cider: float | None = None


@dataclass(frozen=True)
class Distillation:
    """Sequence-level distillation (:mod:`.distill`): the ``teacher`` model (trained first) writes one text
    per distinct source of its own training file into ``out``, which the models that train on it
    (``data.train_file=OUT``) train on after it; ``sampler`` None: the teacher's default for distillation;
    ``e2e``: a text with slot errors gives way to the MR's reference with the fewest, when fewer."""

    name: str
    teacher: str
    out: str
    sampler: str | None = None
    e2e: bool = False


@dataclass(frozen=True)
class Curve:
    """Decoders of one model at more and more steps: a line of the speed-quality plot."""

    label: str
    decoders: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """A whole E2E reproduction (see the module doc); ``diffusion`` and ``baseline`` name the two decoders
    whose diversity the claim compares (both with several samples per source); ``curves`` are drawn, BLEU
    and SER against network calls, in ``curve_plot`` (a PNG beside the results page)."""

    title: str
    base: str
    output_dir: str
    results: str
    common: tuple[str, ...]
    protocol: Protocol
    models: tuple[Model, ...]
    decoders: tuple[Decoder, ...]
    anchors: tuple[Anchor, ...]
    diverse_diffusion: str
    diverse_baseline: str
    curves: tuple[Curve, ...] = ()
    curve_plot: str | None = None
    distillations: tuple[Distillation, ...] = ()

    def model(self, name: str) -> Model:
        return named(self.models, name, "model")

    def students(self) -> set[str]:
        """The models that train on a distilled file (they train after the distillations)."""
        outputs = {Path(d.out).resolve() for d in self.distillations}
        return {
            m.name
            for m in self.models
            if Path(model_config(self, m).data.train_file or "").resolve() in outputs
        }

    def decoder(self, name: str) -> Decoder:
        return named(self.decoders, name, "decoder")


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan: unique names, every decoder's model exists, the diversity pair has samples."""
    path = Path(path)
    raw = read_plan(path)
    parts: dict[str, Any] = {
        "models": tuple(
            build_dataclass(Model, m, f"models[{i}]") for i, m in enumerate(raw.pop("models", []))
        ),
        "decoders": tuple(
            build_dataclass(Decoder, d, f"decoders[{i}]") for i, d in enumerate(raw.pop("decoders", []))
        ),
        "anchors": tuple(
            build_dataclass(Anchor, a, f"anchors[{i}]") for i, a in enumerate(raw.pop("anchors", []))
        ),
        "protocol": build_dataclass(Protocol, raw.pop("protocol", None), "protocol"),
        "curves": tuple(
            build_dataclass(Curve, c, f"curves[{i}]") for i, c in enumerate(raw.pop("curves", []))
        ),
        "distillations": tuple(
            build_dataclass(Distillation, d, f"distillations[{i}]")
            for i, d in enumerate(raw.pop("distillations", []))
        ),
    }
    plan: Plan = build_dataclass(Plan, {**raw, **parts}, str(path))
    check_unique(path, "model", [m.name for m in plan.models])
    check_unique(path, "decoder", [d.name for d in plan.decoders])
    for decoder in plan.decoders:
        plan.model(decoder.model)
        try:
            decoder.decoding(plan.protocol)
        except ConfigError as exc:
            raise ConfigError(f"decoder {decoder.name!r}: {exc}") from None
    for name in (plan.diverse_diffusion, plan.diverse_baseline):
        if plan.decoder(name).samples < 2:
            raise ConfigError(f"decoder {name!r} compares diversity; allowed: samples >= 2 for it")
    for curve in plan.curves:
        for name in curve.decoders:
            plan.decoder(name)
    if plan.curves and plan.curve_plot is None:
        raise ConfigError(f"{path}: curves are drawn in curve_plot; allowed: a PNG path with them")
    if plan.distillations:
        check_unique(path, "distillation", [d.name for d in plan.distillations])
    students = plan.students()
    for distillation in plan.distillations:
        if plan.model(distillation.teacher).name in students:
            raise ConfigError(
                f"distillation {distillation.name!r}: its teacher {distillation.teacher!r} trains on a distilled "
                "file; allowed: a teacher trained on the plan's own data"
            )
    return plan


def model_config(plan: Plan, model: Model) -> Config:
    """The run config of a model: the base config, the shared overrides, its own, its output directory."""
    output = f"training.output_dir={Path(plan.output_dir) / model.name}"
    return load_config(plan.base, [*plan.common, *model.overrides, output])


@dataclass(frozen=True)
class DecoderResult:
    """A decoder's scores on the protocol's sources, its mean NFE, its wall time and its first texts."""

    scores: ConditionalScores
    nfe: float
    seconds: float
    examples: tuple[tuple[str, str], ...]


def model_dir(plan: Plan, decoder: Decoder) -> Path:
    """The trained model directory a decoder row decodes with."""
    return Path(model_config(plan, plan.model(decoder.model)).training.output_dir) / "final"


def stored_result(plan: Plan, decoder: Decoder) -> DecoderResult | None:
    """A decoder's stored texts, scored now, if they are up to date (same protocol, decoder and weights),
    else None."""
    if (record := stored_record(_result_file(plan, decoder), _result_key(plan, decoder))) is None:
        return None
    generations = [Generation(**g) for g in record["generations"]]
    return _scored(plan.protocol, generations, record["seconds"])


@cache
def _test_set(protocol: Protocol) -> tuple[list[str], list[list[str]]]:
    """The distinct sources the protocol scores (in file order) and the references of each."""
    p = protocol
    sources, references = read_references(p.test_file, p.source_field, p.reference_field)
    return sources[: p.max_sources], references[: p.max_sources]


def _scored(protocol: Protocol, generations: list[Generation], seconds: float) -> DecoderResult:
    scores = score_generations(generations, _test_set(protocol)[1], e2e=True)
    return DecoderResult(
        scores,
        nfe=sum(g.nfe for g in generations) / len(generations),
        seconds=seconds,
        examples=tuple((g.source, g.text) for g in generations[:5]),
    )


def _result_key(plan: Plan, decoder: Decoder) -> dict[str, object]:
    weights = written_at(model_dir(plan, decoder))
    return {"protocol": asdict(plan.protocol), "decoder": asdict(decoder), "weights": weights}


def _result_file(plan: Plan, decoder: Decoder) -> Path:
    return Path(plan.output_dir) / "decoders" / f"{decoder.name}.json"


def evaluate_decoder(
    plan: Plan, decoder: Decoder, progress: bool = True, device: str | None = None
) -> DecoderResult:
    """Generate a decoder's texts (or read its stored ones when nothing they depend on changed) and score
    them; the wall time covers the generation only."""
    if (stored := stored_result(plan, decoder)) is not None:
        return stored
    p = plan.protocol
    started = time.perf_counter()
    generated = generate_file(
        model_dir(plan, decoder),
        SourceFile(p.test_file, p.source_field, max_sources=p.max_sources),
        decoder.decoding(p),
        device=device,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    record = {
        "key": _result_key(plan, decoder),
        "seconds": seconds,
        "generations": [asdict(g) for g in generated.generations],
    }
    write_json(_result_file(plan, decoder), record)
    return _scored(p, generated.generations, seconds)


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * value:.{digits}f}"


def distill_or_reuse(
    plan: Plan, distillation: Distillation, progress: bool = True, device: str | None = None
) -> dict[str, Any]:
    """Write a distillation's file with its (trained) teacher, or reuse it when the file exists and its record
    says it came from the same teacher weights, data and sampler; the record (rows, sources, seconds)."""
    teacher = model_config(plan, plan.model(distillation.teacher))
    final = Path(teacher.training.output_dir) / "final"
    data = teacher.data
    key = {
        "teacher": written_at(final),
        "data": data.train_file,
        "fields": [data.source_field, data.field],
        "sampler": distillation.sampler,
        "e2e": distillation.e2e,
    }
    path = Path(plan.output_dir) / "distillations" / f"{distillation.name}.json"
    if Path(distillation.out).is_file() and (record := stored_record(path, key)) is not None:
        print(f"reusing the distilled file {distillation.out}")
        return record
    print(f"distilling {distillation.out} with the {distillation.teacher!r} model")
    assert data.train_file is not None and data.source_field is not None  # a pair model's config
    result = distill(
        final,
        SourceFile(data.train_file, data.source_field),
        distillation.out,
        target_field=data.field,
        e2e=distillation.e2e,
        device=device,
        progress=progress,
        **({"sampler": distillation.sampler} if distillation.sampler else {}),
    )
    record = {
        "key": key,
        "sources": result.sources,
        "rows": result.rows,
        "replaced": result.replaced,
        "empty": result.empty,
        "nfe": result.nfe,
        "seconds": result.seconds,
    }
    write_json(path, record)
    return record


def distillation_lines(plan: Plan, records: dict[str, dict[str, Any]]) -> list[str]:
    """What each distillation cost and wrote, for the page."""
    lines = []
    for d in plan.distillations:
        r, teacher = records[d.name], plan.model(d.teacher)
        timing = Path(model_config(plan, teacher).training.output_dir) / "timing.json"
        trained = f", trained in {read_json(timing)['train_seconds']:.0f} s" if timing.is_file() else ""
        sampler = d.sampler or LEFT_TO_RIGHT_TEACHER_SAMPLER
        checked = (
            f"; {r['replaced']:,} texts with slot errors gave way to the MR's reference with the fewest"
            if d.e2e
            else ""
        )
        lines.append(
            f"- `{d.out}` (`{d.name}`): the `{teacher.name}` model ({teacher.label}{trained}) wrote one text"
            f" for each of the {r['sources']:,} distinct MRs of its training file with `{sampler}`:"
            f" {r['rows']:,} pairs in {r['seconds']:.0f} s ({r['nfe']:.1f} network calls an MR){checked}."
        )
    return lines


def results_page(
    plan: Plan,
    results: dict[str, DecoderResult],
    machine: str,
    plan_path: str,
    distilled: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The markdown of the E2E results page (``distilled``: each distillation's record)."""
    p = plan.protocol
    base = load_config(plan.base, list(plan.common))
    t, d = base.training, base.data
    sources = next(iter(results.values())).scores.sources
    lines = [
        f"# {plan.title}",
        "",
        f"Generated by `make reproduce-e2e` (plan `{plan_path}`) on {machine}. Every model: backbone"
        f" `{base.model.backbone}` (pre-trained), trained on `{d.train_file}` ({d.source_field} → {d.field},"
        f" the source kept clean and only the target noised) for {t.max_steps} steps of batch {t.batch_size},"
        f" lr {t.lr} (a new head {t.head_lr}), seed {t.seed}; models differ only in the overrides listed below.",
        "",
        f"Every row generates one text for each of the {sources} distinct MRs of `{p.test_file}` (target window"
        f" {p.length} tokens, a text ending at its first generated [SEP], or with a *predicted end* at the length the"
        f" model predicts from its MR; seed {p.seed}, batch {p.batch_size} across"
        " sources) and is scored against all references of its MR: corpus BLEU-4 (sacrebleu, signature"
        " below), NIST-5, ROUGE-L (F, rouge-score), CIDEr-D, and the slot error rate (SER: the share of MR slots"
        " a text misses or contradicts, plus the slots it adds that the MR does not have; documented rules in"
        " `diffusionbert.evaluation.slots`; the references themselves score"
        f" {100 * references_error_rate(*_test_set(p)):.1f} % on the same MRs). With K samples per"
        " MR, self-BLEU is the mean BLEU of each sample against the MR's other samples (lower: more diverse) and"
        " dist-2 the distinct bigrams over all samples. NFE: network calls per text (for beam search, per MR,"
        " each call over all its beams); time: the whole row's wall time.",
        "",
        "| row | model | decoder | BLEU ↑ | NIST ↑ | ROUGE-L ↑ | CIDEr ↑ | SER ↓ | self-BLEU ↓ | dist-2 ↑ | NFE |"
        " time s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for decoder in plan.decoders:
        r = results[decoder.name]
        sc = r.scores
        how = f"{decoder.sampler}" + (
            f", {decoder.steps} steps" if not is_left_to_right(plan, decoder) else ""
        )
        how += f", K={decoder.samples}" + (" + MBR" if decoder.mbr else "") if decoder.samples > 1 else ""
        how += f", guidance {decoder.guidance:g}" if decoder.guidance else ""
        how += ", predicted end" if decoder.end == "predicted" else ""
        lines.append(
            f"| **{decoder.label}** | `{decoder.model}` | {how} | {sc.bleu:.2f} | {sc.nist:.2f} |"
            f" {_fmt(sc.rouge_l, 2, 100)} | {sc.cider:.2f} | {_fmt(sc.ser, 1, 100)} % | {_fmt(sc.self_bleu, 1, 100)} |"
            f" {_fmt(sc.distinct_2, 3)} | {r.nfe:.1f} | {r.seconds:.0f} |"
        )
    for anchor in plan.anchors:
        lines.append(
            f"| {anchor.label} (published) | – | – | {_fmt(anchor.bleu, 2)} | {_fmt(anchor.nist, 2)} |"
            f" {_fmt(anchor.rouge_l, 2)} | {_fmt(anchor.cider, 2)} | – | – | – | – | – |"
        )
    lines += ["", f"BLEU signature: `{next(iter(results.values())).scores.bleu_signature}`.", ""]
    lines += ["Models (overrides of the base config, after the shared ones):", ""]
    lines += [
        f"- `{m.name}` ({m.label}): {', '.join(f'`{o}`' for o in m.overrides) or 'none'}" for m in plan.models
    ]
    if plan.distillations:
        lines += ["", "Distilled training data (sequence-level knowledge distillation):", ""]
        lines += distillation_lines(plan, distilled or {})
    lines += ["", "Published numbers: " + "; ".join(f"{a.label}: {a.source}" for a in plan.anchors) + "."]
    lines += ["", *curve_lines(plan, results)]
    lines += ["## The paper's claim, checked on our numbers", "", *claim_lines(plan, results)]
    lines += [
        "",
        *discussion_section(Path(plan.results)),
        "",
        "## Examples (the first test MRs)",
        "",
    ]
    for decoder in plan.decoders:
        lines += [f"**{decoder.label}**", ""]
        lines += [
            f"- `{source}` → {text or '(empty)'}" for source, text in results[decoder.name].examples[:3]
        ]
        lines.append("")
    return "\n".join(lines)


def curve_plot(plan: Plan, results: dict[str, DecoderResult], png: Path) -> None:
    """BLEU and SER against mean network calls per text for each curve, the best AR row as a reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for curve in plan.curves:
        rows = [results[name] for name in curve.decoders]
        nfe = [r.nfe for r in rows]
        left.plot(nfe, [r.scores.bleu for r in rows], marker="o", ms=3, lw=1.2, label=curve.label)
        right.plot(nfe, [100 * (r.scores.ser or 0.0) for r in rows], marker="o", ms=3, lw=1.2)
    baseline = [d for d in plan.decoders if is_left_to_right(plan, d)]
    if baseline:
        best = max(baseline, key=lambda d: results[d.name].scores.bleu)
        left.axhline(results[best.name].scores.bleu, color="grey", ls="--", lw=1, label=best.label)
        right.axhline(100 * (results[best.name].scores.ser or 0.0), color="grey", ls="--", lw=1)
    for axis, name in ((left, "BLEU ↑"), (right, "slot error rate % ↓")):
        axis.set_xscale("log")
        axis.set_xlabel("network calls per text (mean)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"{plan.title}: quality against decoding steps", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def curve_lines(plan: Plan, results: dict[str, DecoderResult]) -> list[str]:
    """The speed-quality section: the plot and, per curve, each decoder's steps, calls, BLEU, SER and time."""
    if not plan.curves or plan.curve_plot is None:
        return []
    lines = [
        "## Quality against decoding steps",
        "",
        f"![BLEU and SER against network calls]({Path(plan.curve_plot).name})",
        "",
        "| curve | decoder | steps | NFE | BLEU ↑ | SER ↓ | time s |",
        "|---|---|---|---|---|---|---|",
    ]
    for curve in plan.curves:
        for name in curve.decoders:
            decoder, r = plan.decoder(name), results[name]
            lines.append(
                f"| {curve.label} | {decoder.label} | {decoder.steps} | {r.nfe:.1f} | {r.scores.bleu:.2f} |"
                f" {_fmt(r.scores.ser, 1, 100)} % | {r.seconds:.0f} |"
            )
    return [*lines, ""]


def is_left_to_right(plan: Plan, decoder: Decoder) -> bool:
    """Whether a decoder's model is sampled left to right (an AR row: its steps mean nothing)."""
    objective = model_config(plan, plan.model(decoder.model)).diffusion.objective
    return get_method(objective).sampling == LEFT_TO_RIGHT


def claim_lines(plan: Plan, results: dict[str, DecoderResult]) -> list[str]:
    """ "Comparable quality, more diverse": the best diffusion row's BLEU and SER against the best
    left-to-right row's, and the two diversity rows' self-BLEU, each with its verdict."""
    diffusion = [d for d in plan.decoders if not is_left_to_right(plan, d)]
    baseline = [d for d in plan.decoders if is_left_to_right(plan, d)]
    if not diffusion or not baseline:
        return ["_(the plan needs a diffusion row and a left-to-right row to check the claim)_"]
    best_d = max(diffusion, key=lambda d: results[d.name].scores.bleu)
    best_b = max(baseline, key=lambda d: results[d.name].scores.bleu)
    rd, rb = results[best_d.name].scores, results[best_b.name].scores
    dd, db = results[plan.diverse_diffusion].scores, results[plan.diverse_baseline].scores
    quality = rd.bleu >= rb.bleu - 1.0
    ser = rd.ser is not None and rb.ser is not None and rd.ser <= rb.ser
    diverse = dd.self_bleu is not None and db.self_bleu is not None and dd.self_bleu < db.self_bleu
    word = {True: "yes", False: "**no**"}
    return [
        "| claim | diffusion | AR baseline | agrees |",
        "|---|---|---|---|",
        f"| comparable quality: best diffusion BLEU within 1 point of (or above) the best AR row's |"
        f" {rd.bleu:.2f} ({best_d.label}) | {rb.bleu:.2f} ({best_b.label}) | {word[quality]} |",
        f"| slot errors no worse (the same two rows) | {_fmt(rd.ser, 1, 100)} % | {_fmt(rb.ser, 1, 100)} % |"
        f" {word[ser]} |",
        f"| more diverse: lower self-BLEU across {plan.decoder(plan.diverse_diffusion).samples} samples per MR |"
        f" {_fmt(dd.self_bleu, 1, 100)} ({plan.decoder(plan.diverse_diffusion).label}) |"
        f" {_fmt(db.self_bleu, 1, 100)} ({plan.decoder(plan.diverse_baseline).label}) | {word[diverse]} |",
    ]


def reproduce_e2e(
    plan_path: str | Path,
    progress: bool = True,
    train_only: bool = False,
    device: str | None = None,
    models: Sequence[str] | None = None,
) -> Path | None:
    """Train every model, score every decoder and write the results page; None with ``train_only``.
    ``models`` trains only the named models (with the plan's names, settings and folders, so the whole plan
    reuses them) and decodes nothing: how another command, e.g. ``make lm-eval``, gets the models it scores."""
    plan = load_plan(plan_path)
    if not Path(plan.protocol.test_file).is_file():
        raise ConfigError(f"protocol.test_file {plan.protocol.test_file} not found")
    chosen = plan.models if models is None else tuple(plan.model(name) for name in models)
    runs = [(m.name, m.label, model_config(plan, m)) for m in chosen]
    check_runs(runs)
    students = plan.students()
    train_named([run for run in runs if run[0] not in students], progress, device)
    distilled = {}
    if any(run[0] in students for run in runs) or models is None:
        distilled = {d.name: distill_or_reuse(plan, d, progress, device) for d in plan.distillations}
    train_named([run for run in runs if run[0] in students], progress, device)
    if train_only or models is not None:
        return None
    results = {}
    for index, decoder in enumerate(plan.decoders):
        print(f"decoding [{index + 1}/{len(plan.decoders)}] {decoder.name}: {decoder.label}")
        results[decoder.name] = evaluate_decoder(plan, decoder, progress=progress, device=device)
    page = Path(plan.results)
    if plan.curve_plot is not None:
        curve_plot(plan, results, Path(plan.curve_plot))
    text = results_page(plan, results, machine_description(), str(plan_path), distilled)
    atomic_file(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return page
