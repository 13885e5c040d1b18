"""``make demo``: fine-tune the packaged MiniLM into a data-to-text model on E2E, generate, score, report.

The model learns to describe a restaurant from its meaning representation (MR → reference, the MR kept clean
and only the text noised), with source dropout so that the same model also writes without an MR. The report
shows descriptions of a handful of test MRs with the slots each realises, misses or contradicts, corpus
scores on the first validation MRs, and a few texts written without an MR. Re-running is safe: a finished
run is reused, an interrupted one resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, DecodingConfig, load_config
from ..errors import ConfigError, DataError
from ..evaluation.conditional import ConditionalScores
from ..evaluation.generation import Generation, SourceFile, generate_file, read_references
from ..evaluation.slots import check_slots, references_error_rate, self_contradictions
from ..sampling import load_pipeline
from ..sampling.pipelines import Conditioning, check_trained_decoding
from ..training import train_or_reuse
from ..utils.io import atomic_file
from ..utils.runtime import default_device, machine_description

EXAMPLES_FILE = "../shared/data/e2e/test.csv"
EXAMPLE_SOURCES = 6
SCORED_SOURCES = 200
UNCONDITIONAL_TEXTS = 6
"""Texts the report shows written without an MR."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote and measured: the report, the scores on the validation MRs, the test-MR
    descriptions, the texts written without an MR, and the end-of-training validation bound (nats/token)."""

    report: Path
    scores: ConditionalScores
    examples: list[Generation]
    samples: list[str]
    valid_nats_per_token: float | None


def _contradiction_note(text: str) -> str:
    """`` (contradicts itself on: slot, ...)`` for a text that states two values of one slot, else empty."""
    slots = self_contradictions(text)
    return f" *(contradicts itself on: {', '.join(slots)})*" if slots else ""


def _slot_note(mr: str, text: str) -> str:
    """What a description does with its MR's slots, in a few words."""
    check = check_slots(mr, text)
    wrong = [f"misses {', '.join(check.missed)}"] if check.missed else []
    wrong += [f"contradicts {', '.join(check.contradicted)}"] if check.contradicted else []
    wrong += [f"adds {', '.join(check.added)}"] if check.added else []
    return "; ".join(wrong) if wrong else f"all {len(check.realised)} slots, nothing added"


def _log_records(log_file: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]


def _loss_curve(records: list[dict[str, float]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["step"], r["nll_per_token"]) for r in records if "nll_per_token" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([s for s, _ in points], [v for _, v in points], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training NELBO estimate (nats/token)")
    ax.set_title("DiffusionBERT fine-tuning on E2E (MR → text)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _check(cfg: Config, examples: str | Path) -> None:
    """The demo's files must exist, and its config must train pairs with source dropout and a default
    decoding the model can decode with."""
    files = (("data.train_file", cfg.data.train_file), ("data.valid_file", cfg.data.valid_file))
    for name, path in (*files, ("examples", str(examples))):
        if path and not Path(path).exists():
            raise DataError(
                f"{name} {path} not found: the demo needs the shared data directory (../shared/data)"
            )
    if not cfg.data.source_field or not cfg.data.valid_file:
        raise ConfigError("the demo trains data-to-text: it needs data.source_field and data.valid_file")
    if cfg.training.source_dropout <= 0:
        raise ConfigError("the demo also writes without an MR: it needs training.source_dropout > 0")
    check_trained_decoding(cfg)


def run_demo(
    config: str | Path = "configs/demo.yaml",
    overrides: tuple[str, ...] = (),
    fresh: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    examples: str | Path | None = None,
) -> DemoResult:
    """Train (or reuse / resume), describe test MRs, score validation MRs, write without an MR, report.

    The demo runs offline on local files: it turns off hub access for this process (a user's own runs keep
    theirs, e.g. for hub datasets). ``examples`` is the file of the MRs the report describes (default: E2E
    test).
    """
    examples = examples or EXAMPLES_FILE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cfg = load_config(config, overrides)
    _check(cfg, examples)
    out = Path(cfg.training.output_dir)
    started = time.perf_counter()
    if not train_or_reuse(cfg, progress=progress, device=device, overwrite=fresh):
        print("(pass --fresh to train again)")
    train_seconds = time.perf_counter() - started

    # everything decodes with the model's saved decoding (the config's sampling section)
    pipe = load_pipeline(out / "final", default_device(device))
    d = cfg.data
    started = time.perf_counter()
    described = generate_file(
        pipe, SourceFile(examples, d.source_field, max_sources=EXAMPLE_SOURCES), progress=progress
    )
    valid = SourceFile(d.valid_file, d.source_field, d.field, SCORED_SOURCES)
    scored = generate_file(pipe, valid, e2e=True, progress=progress)
    generate_seconds = time.perf_counter() - started
    assert scored.scores is not None  # references were given
    unconditional = pipe(num_samples=UNCONDITIONAL_TEXTS, progress=progress)
    records = _log_records(out / "log.jsonl")
    _loss_curve(records, out / "loss_curve.png")
    valid = [r for r in records if "valid_nats_per_token" in r]
    valid_nats = valid[-1]["valid_nats_per_token"] if valid else None
    report = out / "report.md"
    timing = (
        f"Wall time of this invocation: training {train_seconds:.0f} s, generation {generate_seconds:.0f} s."
    )
    references = read_references(cfg.data.valid_file, cfg.data.source_field, cfg.data.field)
    floor = references_error_rate(*(part[:SCORED_SOURCES] for part in references))
    decoding = pipe.resolve(None, {}, Conditioning(source=described.generations[0].source))
    text = _report(
        cfg,
        decoding,
        described.generations,
        scored.scores,
        floor,
        unconditional.texts,
        valid,
        examples,
        timing,
    )
    atomic_file(report, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return DemoResult(report, scored.scores, described.generations, list(unconditional.texts), valid_nats)


def _report(
    cfg: Config,
    decoding: DecodingConfig,
    examples: list[Generation],
    scores: ConditionalScores,
    references_ser: float,
    samples: list[str],
    valid: list[dict[str, float]],
    examples_file: str | Path,
    timing: str,
) -> str:
    """The markdown of ``report.md``; ``decoding`` is how the model decoded its texts (its saved decoding,
    resolved for an MR)."""
    d, t, s = cfg.data, cfg.training, decoding
    unguided = f"`{s.sampler}` sampler, {s.steps} steps, window {s.length}"
    unguided += ", its predicted end" if cfg.data.target_window and s.end != "generated" else ""
    unguided += f", length beam {s.length_beam}" if s.length_beam > 1 else ""
    how = unguided + (f", guidance {s.guidance:g}" if s.guidance else "")
    bound = (
        f"Validation bound at step {valid[-1]['step']:.0f} ({t.eval_batches} batches of `{d.valid_file}`): "
        f"{valid[-1]['valid_nats_per_token']:.4f} nats per target token."
        if valid
        else "No validation bound was logged (training.eval_every is 0)."
    )
    lines = [
        "# diffusionbert demo report: restaurant descriptions from meaning representations (E2E NLG)",
        "",
        f"Fine-tuned `{cfg.model.backbone}` ({cfg.model.init}) with objective `{cfg.diffusion.objective}`, schedule"
        f" `{cfg.diffusion.schedule}` on `{d.train_file}`: {d.source_field} → {d.field}, the MR kept clean and"
        " only the text noised"
        + (
            f", a target window of {d.target_window} (the model learns where a text ends)"
            if d.target_window
            else ""
        )
        + (", the MR attending only to itself" if cfg.model.source_attention == "isolated" else "")
        + f", the MR hidden in {t.source_dropout:.0%} of the rows (source dropout) so the model also writes"
        f" without one; {t.max_steps} steps of batch {t.batch_size}, seed {t.seed}. How this recipe was chosen,"
        " and what else was measured: docs/recipes.md.",
        f"Machine: {machine_description()}. {timing}",
        "",
        "![training curve](loss_curve.png)",
        "",
        bound,
        "",
        f"## Descriptions of the first {len(examples)} test MRs ({how}, seed {s.seed})",
        "",
        f"From `{examples_file}`; the last column is what the text does with the MR's slots (the slot rules of"
        " `diffusionbert.evaluation.slots`).",
        "",
        "| MR | generated description | slots |",
        "|---|---|---|",
        *[f"| {g.source} | {g.text} | {_slot_note(g.source, g.text)} |" for g in examples],
        "",
        f"## Scores on the first {scores.sources} validation MRs (same decoding)",
        "",
        "Against every reference of an MR. For scale: the E2E challenge baseline TGen scored BLEU 65.93 on the"
        " test set, and the references of these MRs themselves have a slot error rate of"
        f" {100 * references_ser:.1f} % by these rules (they omit slots, and add some).",
        "",
        "```",
        scores.table(),
        "```",
        "",
        f"## Written without an MR ({unguided}, seed {s.seed})",
        "",
        "The same model with its MR hidden, as source dropout trained it:",
        "",
        *[f"{i + 1}. {text}{_contradiction_note(text)}" for i, text in enumerate(samples)],
        "",
        f"{sum(bool(self_contradictions(text)) for text in samples)} of {len(samples)} texts state two "
        "incompatible values of one E2E slot (`diffusionbert.evaluation.slots.self_contradictions`): without an"
        " MR nothing holds the facts together, which is why the descriptions above are conditioned on one.",
        "",
        "Regenerate with `make demo` (reuses the run) or `make demo DEMO_ARGS=--fresh`.",
        "",
    ]
    return "\n".join(lines)
