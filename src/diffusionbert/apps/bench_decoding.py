"""Decoding benchmarks behind ``make bench``: samplers on the demo model (the exact cache against the uncached
reference, the fast decoders), conditional decoding on E2E at equal quality (the diffusion rows, with and
without the exact prompt cache, against the AR rows of the same backbone), and chat answers of the
instruction-tuned models, each a ratio measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import DEFAULT_ANSWER_LENGTH, DecodingConfig
from ..data import load_texts
from ..data.chat import load_chat
from ..evaluation.conditional import mbr_select
from ..sampling import DiffusionPipeline, load_pipeline
from ..utils.runtime import default_device, synchronize
from .reproduce_e2e import Decoder, Plan, is_left_to_right, model_config, model_dir, stored_result
from .reproduce_instruct import Plan as InstructPlan
from .reproduce_instruct import final_dir


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


@dataclass(frozen=True)
class SpeedRows:
    """The rows of the E2E table the speed comparison times: the AR row of the highest BLEU and AR greedy (left
    to right with a key-value cache), and the diffusion rows, each the best-BLEU row of its model: the best
    one of a model decoded in full, and every model with the exact prompt cache (isolated source attention
    or block diffusion)."""

    ar: tuple[Decoder, ...]
    diffusion: tuple[Decoder, ...]

    @property
    def best_ar(self) -> Decoder:
        return self.ar[0]

    @property
    def all(self) -> tuple[Decoder, ...]:
        return (*self.diffusion, *self.ar)


def speed_at_quality_rows(plan: Plan) -> SpeedRows | None:
    """The rows :func:`bench_conditional` times (:class:`SpeedRows`); None while either kind has no up-to-date
    result (``make reproduce-e2e`` first)."""
    results = {d.name: r for d in plan.decoders if (r := stored_result(plan, d)) is not None}
    left = [d for d in plan.decoders if d.name in results and is_left_to_right(plan, d)]
    diffusion = [d for d in plan.decoders if d.name in results and not is_left_to_right(plan, d)]
    if not left or not diffusion:
        return None

    def bleu(decoder: Decoder) -> float:
        return results[decoder.name].scores.bleu

    ar = sorted(left, key=bleu, reverse=True)
    greedy = [d for d in ar if d.sampler == "greedy"]
    best_of_model: dict[str, Decoder] = {}
    for decoder in sorted(diffusion, key=bleu, reverse=True):
        best_of_model.setdefault(decoder.model, decoder)
    cached = [d for d in best_of_model.values() if caches_prompt(plan, d)]
    full = [d for d in best_of_model.values() if not caches_prompt(plan, d)][:1]
    ar_rows = (ar[0], *(greedy[:1] if greedy and greedy[0] is not ar[0] else ()))
    return SpeedRows(ar_rows, (*full, *cached))


def caches_prompt(plan: Plan, decoder: Decoder) -> bool:
    """Whether a decoder's model has the exact prompt cache (trained with isolated source attention, which
    block diffusion on pairs needs too)."""
    return model_config(plan, plan.model(decoder.model)).model.source_attention == "isolated"


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


def conditional_report(timings: list[DecodeTiming], rows: SpeedRows, settings: str) -> str:
    """The speed-at-quality section: every row at both batch sizes, and each diffusion row's text tokens/s
    against the best AR row's, with its BLEU gap (the goal: at least 2× at batch 1 within 1 BLEU, and at
    least equal at the larger batch)."""
    by = {(t.label, t.batch): t for t in timings}
    batches = sorted({t.batch for t in timings})
    ar = rows.best_ar.label
    lines = [
        "## Conditional decoding speed at equal quality (issue 27)",
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
        f"Each diffusion row against the best AR row ({ar}):",
        "",
        "| diffusion row | BLEU gap | "
        + " | ".join(f"÷ AR tokens/s, batch {b}" for b in batches)
        + " | goal |",
        "|---|---|" + "---|" * len(batches) + "---|",
    ]
    for decoder in rows.diffusion:
        gap = by[(decoder.label, batches[0])].bleu - by[(ar, batches[0])].bleu
        ratios = [by[(decoder.label, b)].tokens_per_s / by[(ar, b)].tokens_per_s for b in batches]
        met = gap >= -1.0 and ratios[0] >= 2.0 and ratios[-1] >= 1.0
        cells = " | ".join(f"{r:.2f}×" for r in ratios)
        lines.append(f"| {decoder.label} | {gap:+.2f} | {cells} | {'met' if met else '**not met**'} |")
    return "\n".join([*lines, ""])


@dataclass(frozen=True)
class ChatTiming:
    """A chat decoder timed answering prompts one at a time: seconds and network calls per answer."""

    label: str
    seconds_per_answer: float
    mean_nfe: float
    mean_words: float


def bench_chat(
    plan: InstructPlan, prompts: int = 32, device: str | torch.device | None = None
) -> list[ChatTiming]:
    """Each model's first decoder row of the instruction-tuning plan (its headline one), answering the same
    first ``prompts`` test instructions one at a time, as ``chat`` does (after one warm-up answer); models
    not trained yet are left out."""
    p = plan.protocol
    timings = []
    for model in plan.models:
        final = final_dir(plan, model)
        decoders = [d for d in plan.decoders if d.model == model.name]
        if not decoders or not (final / "diffusion.json").is_file():
            continue
        pipe = load_pipeline(final, default_device(device))
        sources = list(load_chat(p.test_file, pipe.tokenizer)["source"])[:prompts]
        decoding = decoders[0].decoding(p, pipe.target_window or DEFAULT_ANSWER_LENGTH)
        pipe(source=sources[0], config=decoding)  # warm-up
        model_device = next(pipe.model.parameters()).device
        synchronize(model_device)
        start = time.perf_counter()
        answers = [pipe(source=source, config=decoding) for source in sources]
        synchronize(model_device)
        seconds = time.perf_counter() - start
        nfe = sum(a.nfe[0] for a in answers) / len(answers)
        words = sum(len(a.texts[0].split()) for a in answers) / len(answers)
        timings.append(ChatTiming(decoders[0].label, seconds / len(sources), nfe, words))
    return timings


def chat_report(timings: list[ChatTiming], baseline: str, settings: str) -> str:
    """The chat section: seconds per answer of each row, and its ratio to the AR row's (goal: at most 1×)."""
    ar = next((t for t in timings if t.label == baseline), None)
    lines = [
        "## Chat: seconds per answer (issue 27)",
        "",
        settings,
        "",
        "| decoder | s / answer | ÷ AR | network calls / answer | words / answer |",
        "|---|---|---|---|---|",
    ]
    for t in timings:
        ratio = f"{t.seconds_per_answer / ar.seconds_per_answer:.2f}×" if ar is not None else "–"
        lines.append(
            f"| {t.label} | {t.seconds_per_answer:.3f} | {ratio} | {t.mean_nfe:.1f} | {t.mean_words:.1f} |"
        )
    return "\n".join([*lines, ""])
