"""Decoding benchmarks behind ``make bench``: samplers on the demo model (the exact cache against the uncached
reference, the fast decoders), and conditional decoding on E2E at equal quality (the fastest diffusion row
within 1 BLEU of the best AR row, against that AR row), each a ratio measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import DecodingConfig
from ..data import load_texts
from ..evaluation.conditional import mbr_select
from ..sampling import DiffusionPipeline, load_pipeline
from ..utils.runtime import default_device, synchronize
from .reproduce_e2e import Decoder, Plan, is_left_to_right, model_dir, stored_result


@dataclass(frozen=True)
class SamplingTiming:
    name: str
    steps: int
    samples_per_s: float
    mean_nfe: float


def bench_sampling(
    checkpoint: Path,
    num_samples: int = 8,
    length: int = 64,
    seed: int = 0,
    runs: tuple[tuple[str, str, int, bool], ...] | None = None,
    device: str | torch.device | None = None,
) -> list[SamplingTiming]:
    """Samples/s and NFE per sampler on a trained model, all in one run.

    ``runs`` holds (label, sampler, steps, use_cache). The default compares the paper's ancestral sampler
    walking all T = 2048 steps with no cache, the exact cached sampler on the same steps (same output
    distribution), and the faster approximate samplers.
    """
    runs = runs or (
        ("ancestral, no cache", "ancestral", 2048, False),
        ("cached (exact, same distribution)", "cached", 2048, True),
        ("ancestral, no cache, paper's 128 steps", "ancestral", 128, False),
        ("confidence (LLaDA low-confidence remasking)", "confidence", 64, True),
        ("threshold (Fast-dLLM, τ = 0.9)", "threshold", 64, True),
        ("gibbs (Mask-Predict)", "gibbs", 16, True),
        ("routing (RDM top-k routing)", "routing", 16, True),
    )
    timings = []
    for label, sampler, steps, use_cache in runs:
        pipe = DiffusionPipeline.from_pretrained(checkpoint, default_device(device))
        pipe.use_cache = use_cache
        device = next(pipe.model.parameters()).device
        synchronize(device)
        start = time.perf_counter()
        decoding = DecodingConfig(
            sampler, steps, length, num_samples=num_samples, seed=seed, batch_size=num_samples
        )
        out = pipe(config=decoding)
        synchronize(device)
        seconds = time.perf_counter() - start
        timings.append(SamplingTiming(label, steps, num_samples / seconds, sum(out.nfe) / len(out.nfe)))
    return timings


def sampling_report(timings: list[SamplingTiming], settings: str) -> str:
    by_label = {t.name: t for t in timings}
    ratio = (
        by_label["cached (exact, same distribution)"].samples_per_s
        / by_label["ancestral, no cache"].samples_per_s
    )
    lines = [
        "## Sampling speed (issue: sampling)",
        "",
        settings,
        "",
        "| sampler | steps | samples / s | mean NFE |",
        "|---|---|---|---|",
        *[f"| {t.name} | {t.steps} | {t.samples_per_s:.3f} | {t.mean_nfe:.1f} |" for t in timings],
        "",
        f"Cached ÷ ancestral at T = 2048 (identical output distribution): **{ratio:.1f}×** samples/s.",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class DecodeTiming:
    """One decoder of the E2E table timed at one batch size: seconds per source, text tokens per second."""

    label: str
    bleu: float
    batch: int
    seconds_per_source: float
    tokens_per_s: float
    mean_nfe: float


def speed_at_quality_rows(plan: Plan) -> tuple[Decoder, Decoder] | None:
    """The two rows the speed comparison times: the AR row of the highest BLEU, and among the diffusion rows
    within 1 BLEU of it the fastest (by its measured decode time), else the diffusion row of the highest
    BLEU; None while either kind has no up-to-date result (``make reproduce-e2e`` first)."""
    results = {d.name: r for d in plan.decoders if (r := stored_result(plan, d)) is not None}
    left = [d for d in plan.decoders if d.name in results and is_left_to_right(plan, d)]
    diffusion = [d for d in plan.decoders if d.name in results and not is_left_to_right(plan, d)]
    if not left or not diffusion:
        return None
    ar = max(left, key=lambda d: results[d.name].scores.bleu)
    close = [d for d in diffusion if results[d.name].scores.bleu >= results[ar.name].scores.bleu - 1.0]
    if close:
        return min(close, key=lambda d: results[d.name].seconds), ar
    return max(diffusion, key=lambda d: results[d.name].scores.bleu), ar


def bench_conditional(
    plan: Plan, rows: tuple[Decoder, ...], sources: int = 32, device: str | torch.device | None = None
) -> list[DecodeTiming]:
    """Time each decoder row on the first ``sources`` test MRs at batch 1 and at batch ``sources``, as the
    reproduction decodes them (its target window, samples per source, MBR, guidance and end), after one warm-up
    call; tokens are those of the text kept per source."""
    p = plan.protocol
    texts = list(dict.fromkeys(str(t) for t in load_texts(p.test_file, p.source_field)["text"]))[:sources]
    timings = []
    for decoder in rows:
        pipe = load_pipeline(model_dir(plan, decoder), default_device(device))
        bleu = stored_result(plan, decoder).scores.bleu
        for batch in (1, len(texts)):
            decoding = replace(decoder.decoding(p), batch_size=batch * decoder.samples)
            pipe(source=texts[:1], config=decoding)  # warm-up
            chosen = texts[: max(batch, 4)] if batch == 1 else texts
            model_device = next(pipe.model.parameters()).device
            synchronize(model_device)
            start = time.perf_counter()
            out = pipe(source=chosen, config=decoding)
            k = decoder.samples
            kept = [
                i * k + (mbr_select(out.texts[i * k : (i + 1) * k]) if decoder.mbr else 0)
                for i in range(len(chosen))
            ]
            synchronize(model_device)
            seconds = time.perf_counter() - start
            tokens = sum(out.lengths[i] for i in kept)
            nfe = sum(out.nfe) / len(chosen)
            timings.append(
                DecodeTiming(decoder.label, bleu, batch, seconds / len(chosen), tokens / seconds, nfe)
            )
    return timings


def conditional_report(timings: list[DecodeTiming], settings: str) -> str:
    """The speed-at-quality section: the two rows at both batch sizes and the diffusion ÷ AR ratios."""
    diffusion, ar = timings[0].label, timings[-1].label
    by = {(t.label, t.batch): t for t in timings}
    lines = [
        "## Conditional decoding speed at equal quality (issue 13)",
        "",
        settings,
        "",
        "| decoder | test BLEU | batch | s / source | text tokens / s | network calls / source |",
        "|---|---|---|---|---|---|",
        *[
            f"| {t.label} | {t.bleu:.2f} | {t.batch} | {t.seconds_per_source:.3f} | {t.tokens_per_s:.1f} |"
            f" {t.mean_nfe:.1f} |"
            for t in timings
        ],
        "",
    ]
    gap = by[(diffusion, 1)].bleu - by[(ar, 1)].bleu
    for batch in sorted({t.batch for t in timings}):
        ratio = by[(diffusion, batch)].tokens_per_s / by[(ar, batch)].tokens_per_s
        verdict = "met" if ratio >= 2 and gap >= -1 else "**not met**"
        lines.append(
            f"Batch {batch}: diffusion ÷ AR text tokens/s **{ratio:.2f}×** at a BLEU gap of {gap:+.2f}"
            f" (goal: ≥ 2× within 1 BLEU: {verdict})."
        )
        lines.append("")
    return "\n".join(lines)
