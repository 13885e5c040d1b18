"""``make reproduce``: a small-scale reproduction of DiffusionBERT's Table 2, written to ``docs/results.md``.

A *plan* (YAML, e.g. ``configs/reproduce.yaml``) names a base run config, overrides shared by every row,
the rows (each a few overrides, the sampler it is sampled with, and the paper's numbers when the paper has
that row), the evaluation protocol, the paper claims to check, and which two rows make the convergence plot.
:func:`reproduce` trains every row (reusing finished runs and resuming interrupted ones), evaluates them all
on the test file with the same protocol (the autoregressive row is the judge of generative perplexity), and
writes the results page with a table, the claims as agree / differ, and the convergence plot. Each row's
evaluation is stored next to its run, keyed by the protocol, so re-running only does what is missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import Config, DecodingConfig, load_config
from ..errors import ConfigError
from ..evaluation import Evaluation, EvaluationReport, evaluate_file
from ..utils.io import atomic_file, write_json
from ..utils.runtime import machine_description
from .plans import (
    build_dataclass,
    discussion_section,
    named,
    paired_gap,
    read_plan,
    stored_record,
    train_named,
    written_at,
)

LOWER_IS_BETTER = {"ppl_word": True, "nats_token": True, "bleu": False, "self_bleu": True, "gen_ppl": True}


@dataclass(frozen=True)
class PaperNumbers:
    """A row's numbers in the paper (Table 2 or the ablation tables); None where the paper gives none."""

    ppl: float | None = None
    bleu: float | None = None
    self_bleu: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Row:
    """One trained model of the table: overrides of the base config and how it is sampled."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()
    sampler: str = "ancestral"  # any sampler name, or "autoregressive" for the AR row
    paper: PaperNumbers | None = None
    top_k: int | None = None  # the protocol's top-k unless set (0: off, for a sampler without top-k)


@dataclass(frozen=True)
class Protocol:
    """How every row is evaluated: the same file, sentences, samples, steps and seed."""

    test_file: str
    max_examples: int = 1000
    repeats: int = 1
    num_samples: int = 128
    length: int = 64
    steps: int = 128
    top_k: int = 0
    batch_size: int = 64
    seed: int = 0

    def evaluation(self, metrics: tuple[str, ...] = ("bound",), judge: Path | None = None) -> Evaluation:
        """What every row measures on the test file: its bound and, with more ``metrics``, its samples'."""
        return Evaluation(
            max_examples=self.max_examples,
            metrics=metrics,
            repeats=self.repeats,
            samples=self.num_samples,
            judge=judge,
        )

    def decoding(self, sampler: str | None = None, top_k: int | None = None) -> DecodingConfig:
        """Every option of the rows' decoding (a row's ``sampler``, its ``top_k`` unless the protocol's),
        whatever a model's own says; its seed and batch size are the bound's too."""
        return DecodingConfig(
            sampler=sampler,
            steps=self.steps,
            length=self.length,
            top_k=self.top_k if top_k is None else top_k,
            seed=self.seed,
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class Claim:
    """A comparative claim of the paper: row ``better`` beats row ``worse`` on ``metric``."""

    text: str
    better: str
    worse: str
    metric: str = "ppl_word"


@dataclass(frozen=True)
class Plan:
    """A whole reproduction (see the module doc)."""

    base: str
    output_dir: str
    results: str
    common: tuple[str, ...]
    protocol: Protocol
    rows: tuple[Row, ...]
    judge: str
    convergence: tuple[
        str, ...
    ]  # rows whose validation curves are plotted; the first two differ in init only
    claims: tuple[Claim, ...] = ()
    title: str = "Small-scale reproduction of DiffusionBERT's Table 2"

    def row(self, name: str) -> Row:
        return named(self.rows, name, "row")


def load_plan(path: str | Path) -> Plan:
    """Read and check a reproduction plan: unique row names, and every referenced row exists."""
    path = Path(path)
    raw = read_plan(path)
    rows = []
    for i, item in enumerate(raw.pop("rows", None) or []):
        paper = item.pop("paper", None) if isinstance(item, dict) else None
        row = build_dataclass(Row, item, f"rows[{i}]")
        if paper is not None:
            row = Row(**{**asdict(row), "paper": build_dataclass(PaperNumbers, paper, f"rows[{i}].paper")})
        rows.append(row)
    if not rows:
        raise ConfigError(f"reproduction plan {path} has no rows")
    claims = tuple(
        build_dataclass(Claim, c, f"claims[{i}]") for i, c in enumerate(raw.pop("claims", None) or [])
    )
    protocol = build_dataclass(Protocol, raw.pop("protocol", None), "protocol")
    plan = build_dataclass(Plan, {**raw, "rows": rows, "claims": claims, "protocol": protocol}, str(path))
    if len(plan.convergence) < 2:
        raise ConfigError(f"reproduction plan {path}: convergence needs at least two rows")
    names = [r.name for r in plan.rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"reproduction plan {path} repeats a row name: {names}")
    for name in (plan.judge, *plan.convergence, *(n for c in plan.claims for n in (c.better, c.worse))):
        plan.row(name)
    for claim in plan.claims:
        if claim.metric not in LOWER_IS_BETTER:
            raise ConfigError(
                f"claim {claim.text!r} has metric {claim.metric!r}; allowed: {', '.join(LOWER_IS_BETTER)}"
            )
    return plan


def row_config(plan: Plan, row: Row) -> Config:
    """The run config of a row: the base config, the shared overrides, the row's own, its output dir."""
    output = f"training.output_dir={Path(plan.output_dir) / row.name}"
    return load_config(plan.base, [*plan.common, *row.overrides, output])


# ------------------------------------------------------------------------------------------------ training


def train_rows(plan: Plan, progress: bool = True, device: str | None = None) -> None:
    """Train every row in plan order (see :func:`train_named`)."""
    train_named([(row.name, row.label, row_config(plan, row)) for row in plan.rows], progress, device)


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class RowResult:
    """A row's measured numbers (see :class:`~diffusionbert.evaluation.EvaluationReport` for definitions)."""

    nats_token: float
    stderr_token: float
    ppl_word: float | None
    bleu: float
    self_bleu: float
    gen_ppl: float
    entropy: float
    mean_length: float
    steps: int
    train_seconds: float | None
    eval_seconds: float
    sampler: str
    sample_steps: int
    samples: tuple[str, ...]


def evaluate_row(plan: Plan, row: Row, progress: bool = True, device: str | None = None) -> RowResult:
    """Evaluate a trained row by the plan's protocol, or return its stored result when the protocol, the row's
    config and its final weights are the ones it was computed for."""
    p = plan.protocol
    cfg = row_config(plan, row)
    run = Path(cfg.training.output_dir)
    stored = run / "evaluation.json"
    judge = Path(row_config(plan, plan.row(plan.judge)).training.output_dir) / "final"
    decoding = p.decoding(row.sampler, row.top_k)
    key = _evaluation_key(plan, cfg, judge) | {"sampler": row.sampler, "top_k": decoding.top_k}
    if (record := stored_record(stored, key)) is not None:
        return RowResult(**{**record["result"], "samples": tuple(record["result"]["samples"])})
    started = time.perf_counter()
    report: EvaluationReport = evaluate_file(
        run / "final",
        p.test_file,
        p.evaluation(("bound", "bleu", "self-bleu", "entropy", "gen-ppl"), judge),
        decoding,
        device=device,
        progress=progress,
    )
    timing = run / "timing.json"
    b, s = report.bound, report.samples
    result = RowResult(
        nats_token=b.nats_per_token,
        stderr_token=b.stderr_per_token,
        ppl_word=b.ppl_per_word,
        bleu=s.bleu,
        self_bleu=s.self_bleu,
        gen_ppl=s.gen_ppl,
        entropy=s.entropy,
        mean_length=s.mean_length,
        steps=cfg.training.max_steps,
        train_seconds=json.loads(timing.read_text())["train_seconds"] if timing.is_file() else None,
        eval_seconds=time.perf_counter() - started,
        sampler=s.sampler,
        sample_steps=s.steps,
        samples=tuple(s.texts),
    )
    write_json(stored, {"key": key, "result": asdict(result)})
    batches = {"key": _evaluation_key(plan, cfg, None), "batch_nats_per_token": list(b.batch_nats_per_token)}
    write_json(run / "batch_bounds.json", batches)  # so batch_bounds need not evaluate the bound again
    return result


def batch_bounds(plan: Plan, row: Row, progress: bool = True, device: str | None = None) -> tuple[float, ...]:
    """The row's bound on the protocol's test sentences per batch (nats/token), stored next to the run by
    :func:`evaluate_row`; evaluated here only when that record is missing or stale.

    Every row is evaluated on the same batches with the same seed, so two rows' per-batch difference is a
    paired sample: :func:`claim_verdicts` judges gaps by its standard error.
    """
    cfg = row_config(plan, row)
    run = Path(cfg.training.output_dir)
    stored = run / "batch_bounds.json"
    key = _evaluation_key(plan, cfg, None)
    if (record := stored_record(stored, key)) is not None:
        return tuple(record["batch_nats_per_token"])
    p = plan.protocol
    report = evaluate_file(
        run / "final", p.test_file, p.evaluation(), p.decoding(), device=device, progress=progress
    )
    values = report.bound.batch_nats_per_token
    write_json(stored, {"key": key, "batch_nats_per_token": list(values)})
    return values


def _evaluation_key(plan: Plan, cfg: Config, judge: Path | None) -> dict[str, object]:
    """What a stored evaluation depends on: the protocol, the row's config and the weights it read."""
    run = Path(cfg.training.output_dir)
    weights = [written_at(run / "final")] + ([] if judge is None else [written_at(judge)])
    return {
        "protocol": asdict(plan.protocol),
        "judge": plan.judge,
        "config": cfg.to_dict(),
        "weights": weights,
    }


# ----------------------------------------------------------------------------------------------- the page


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Verdict:
    """A claim checked on our numbers: the two rows' values, whether the order agrees, and for the bound
    metrics the gap in paired standard errors (None for sample metrics, which have none)."""

    claim: Claim
    better: float
    worse: float
    agrees: bool
    gap_in_stderr: float | None

    @property
    def text(self) -> str:
        word = "yes" if self.agrees else "**no**"
        if self.gap_in_stderr is None:
            return word
        gap = f"{abs(self.gap_in_stderr):.1f} s.e."
        return f"{word}, within noise ({gap})" if abs(self.gap_in_stderr) < 2 else f"{word} ({gap})"


def claim_verdicts(
    plan: Plan, results: dict[str, RowResult], batches: dict[str, tuple[float, ...]]
) -> list[Verdict]:
    """Each claim with the two rows' values and whether our numbers agree with it; bound metrics also get
    :func:`paired_gap` from the rows' ``batches`` (under 2 standard errors the order is within noise)."""
    verdicts = []
    for claim in plan.claims:
        better = getattr(results[claim.better], claim.metric)
        worse = getattr(results[claim.worse], claim.metric)
        holds = better < worse if LOWER_IS_BETTER[claim.metric] else better > worse
        gap = None
        if claim.metric in ("ppl_word", "nats_token"):
            gap = paired_gap(batches[claim.better], batches[claim.worse])
        verdicts.append(Verdict(claim, better, worse, holds, gap))
    return verdicts


def convergence_plot(plan: Plan, png: Path) -> None:
    """Validation bound (nats/token) against step for the plan's convergence rows, from their logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name in plan.convergence:
        row = plan.row(name)
        log = Path(row_config(plan, row).training.output_dir) / "log.jsonl"
        points = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        points = {r["step"]: r["valid_nats_per_token"] for r in points if "valid_nats_per_token" in r}
        steps = sorted(points)
        ax.plot(steps, [points[s] for s in steps], marker="o", ms=3, lw=1.2, label=row.label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation NELBO (nats / token)")
    ax.set_title("Convergence: pre-trained vs random initialisation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def results_page(
    plan: Plan,
    results: dict[str, RowResult],
    batches: dict[str, tuple[float, ...]],
    machine: str,
    plan_path: str,
) -> str:
    """The markdown of the results page."""
    p = plan.protocol
    base = load_config(plan.base, list(plan.common))
    t, d = base.training, base.data
    lines = [
        f"# {plan.title}",
        "",
        f"Generated by `make reproduce` (plan `{plan_path}`) on {machine}. Every row: backbone"
        f" `{base.model.backbone}` (its pre-trained weights unless the row says scratch), {t.max_steps} steps of"
        f" batch {t.batch_size}, lr {t.lr} (a newly created head {t.head_lr}), sentences of `{d.train_file}`"
        f" up to {d.max_length} WordPiece tokens, seed {t.seed}; rows differ only in the overrides listed below.",
        "",
        f"Evaluation, identical for every row: the NELBO on the first {p.max_examples} sentences of"
        f" `{p.test_file}` ({p.repeats} Monte-Carlo draw(s) of t per sentence, ± one standard error; the AR"
        " row's number is its exact NLL), per word (whitespace words + one end-of-sentence) and per WordPiece"
        " token incl. the final [SEP]; the paper does not say which unit its PPL uses. Samples:"
        f" {p.num_samples} of at most {p.length} tokens, {p.steps} steps, top-k {p.top_k or 'off'}, seed"
        f" {p.seed}, cut at the first generated [SEP]; BLEU-4 of each sample against all the test sentences as"
        " references and self-BLEU-4 of each sample against the others (epsilon smoothing, lower-cased"
        " punctuation-split tokens); generative perplexity per WordPiece token under the"
        f" `{plan.judge}` row (the AR model of the same size) with the samples' unigram entropy (nats).",
        "",
        "| row | PPL/word ↓ | nats/token ↓ | BLEU ↑ | self-BLEU ↓ | gen. PPL | entropy | mean len | sampler |"
        " steps | train s | eval s | paper PPL | paper BLEU | paper self-BLEU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in plan.rows:
        r, paper = results[row.name], row.paper or PaperNumbers()
        lines.append(
            f"| **{row.label}** | {_fmt(r.ppl_word, 1)} | {r.nats_token:.3f} ± {r.stderr_token:.3f} |"
            f" {r.bleu:.4f} | {r.self_bleu:.4f} | {r.gen_ppl:.1f} | {r.entropy:.2f} | {r.mean_length:.1f} |"
            f" {r.sampler} ({r.sample_steps}) | {r.steps} | {_fmt(r.train_seconds, 0)} | {r.eval_seconds:.0f} |"
            f" {_fmt(paper.ppl, 2)} | {_fmt(paper.bleu, 4)} | {_fmt(paper.self_bleu, 4)} |"
        )
    lines += ["", "Row settings (overrides of the base config, after the shared ones):", ""]
    lines += [
        f"- `{row.name}`: {', '.join(f'`{o}`' for o in row.overrides) or 'none'}"
        + ("" if row.top_k is None else f"; sampled with top-k {row.top_k or 'off'}")
        for row in plan.rows
    ]
    sources = sorted({row.paper.source for row in plan.rows if row.paper and row.paper.source})
    if sources:
        lines += ["", "Paper numbers: " + "; ".join(sources) + "."]
    lines += [
        "",
        "## The paper's claims, checked on our numbers",
        "",
        "For the bounds, the gap is the mean per-batch difference of the two rows' nats/token over its"
        " standard error: every row is scored on the same batches of sentences with the same random draws,"
        " so this paired error is much smaller than the ± of the table; under 2 the order is within noise.",
        "",
        "| claim | metric | ours (better row) | ours (worse row) | agrees |",
        "|---|---|---|---|---|",
    ]
    for v in claim_verdicts(plan, results, batches):
        lines.append(f"| {v.claim.text} | {v.claim.metric} | {v.better:.4g} | {v.worse:.4g} | {v.text} |")
    lines += [
        "",
        "## Convergence",
        "",
        f"Validation bound (nats/token, {base.training.eval_batches} batches of `{base.data.valid_file}`, the same"
        f" draws at every point) against step. `{plan.convergence[0]}` and `{plan.convergence[1]}` differ only in"
        " their initialisation (pre-trained vs random)"
        + (
            f"; {', '.join(f'`{n}`' for n in plan.convergence[2:])} for comparison."
            if len(plan.convergence) > 2
            else "."
        ),
        "",
        "![convergence](convergence.png)",
        "",
        *discussion_section(Path(plan.results)),
        "",
        "## Samples (first three of each row)",
        "",
    ]
    for row in plan.rows:
        lines.append(f"**{row.label}**")
        lines.append("")
        lines += [f"- {text or '(empty)'}" for text in results[row.name].samples[:3]]
        lines.append("")
    return "\n".join(lines)


def reproduce(
    plan_path: str | Path, progress: bool = True, train_only: bool = False, device: str | None = None
) -> Path | None:
    """Train, evaluate and write the results page of a plan; returns the page (None with ``train_only``)."""
    plan = load_plan(plan_path)
    if not Path(plan.protocol.test_file).is_file():
        raise ConfigError(f"protocol.test_file {plan.protocol.test_file} not found")
    train_rows(plan, progress=progress, device=device)
    if train_only:
        return None
    results, batches = {}, {}
    for index, row in enumerate(plan.rows):
        print(f"evaluating [{index + 1}/{len(plan.rows)}] {row.name}")
        results[row.name] = evaluate_row(plan, row, progress=progress, device=device)
        batches[row.name] = batch_bounds(plan, row, progress=progress, device=device)
    page = Path(plan.results)
    page.parent.mkdir(parents=True, exist_ok=True)
    convergence_plot(plan, page.with_name("convergence.png"))
    text = results_page(plan, results, batches, machine_description(), str(plan_path))
    atomic_file(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return page
