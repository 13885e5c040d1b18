"""Benchmarks behind ``make bench``: ratios against naive references measured in the same run.

Training throughput compares our step with the paper's formulation of the same objective on the same model
and sentences: every sentence padded to 128, full-vocabulary logits at every position, the posterior KL in
probability space, fp32. Ours scores masked positions only, in log space, with length-bucketed batches and
the fastest precision of the device; its encoder runs on real tokens only and its last layer only where the
head reads (:mod:`diffusionbert.models.unpadded`). Both run the same model object, so both get its cheaper CPU dropout
in the hidden layers; the naive step's attention dropout is torch's own, inside SDPA. Model FLOPs
utilisation is measured against a matmul peak taken in the same run, in the precision used.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..config import DecodingConfig, config_from_dict
from ..data import load_texts, make_dataloader, tokenize_dataset
from ..diffusion.corruption import unmask_probability
from ..diffusion.objectives import DiffusionBertObjective
from ..diffusion.schedules import LinearSchedule
from ..diffusion.token_info import spindle_from_counts
from ..errors import CheckpointError, ConfigError
from ..methods import GAUSSIAN, build_model, check_config, get_method, objective_from_config
from ..models import DiffusionBertForMaskedLM, backbone_dir, default_backbone_path
from ..models.loading import load_tokenizer
from ..sampling import EmbeddingDiffusionPipeline
from ..sampling.pipelines.embedding import SAMPLERS as EMBEDDING_SAMPLERS
from ..training.step import denoiser_terms
from ..utils.io import atomic_file
from ..utils.runtime import default_device, machine_description, synchronize
from .bench_decoding import (
    bench_chat,
    bench_conditional,
    bench_sampling,
    chat_report,
    conditional_report,
    sampling_report,
    speed_at_quality_rows,
)
from .bench_memory import SOAK_WINDOW, bench_memory, memory_report
from .reproduce_e2e import load_plan
from .reproduce_instruct import load_plan as load_instruct_plan


@dataclass(frozen=True)
class StepTiming:
    name: str
    seconds_per_step: float
    real_tokens_per_s: float
    flops_per_s: float


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """Best FLOP/s of a square matmul over a few repeats: the practical peak of this device and precision."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(6):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def training_flops(model: DiffusionBertForMaskedLM, attended_tokens: int, masked_tokens: int) -> float:
    """Useful FLOPs of one forward+backward: 6 × parameters × tokens for the work the loss needs.

    That is the encoder at every real token, except that the last layer needs only its keys and values at
    unmasked positions (nothing reads the rest of its output there), and the head at masked positions.
    Attention score FLOPs are left out (small at these lengths); padding and logits at unmasked positions
    are not needed by the loss, so they count as no useful work, for both steps alike.
    """
    base = model.backbone.base_model
    embeddings = model.get_input_embeddings().weight.numel()
    encoder = sum(p.numel() for p in base.parameters()) - embeddings
    last = base.encoder.layer[-1]
    keys_values = sum(
        p.numel() for m in (last.attention.self.key, last.attention.self.value) for p in m.parameters()
    )
    unread = sum(p.numel() for p in last.parameters()) - keys_values  # per unmasked token of the last layer
    vocab, hidden = model.get_output_embeddings().weight.shape
    head = vocab * hidden + hidden * hidden
    return 6.0 * (
        encoder * attended_tokens - unread * (attended_tokens - masked_tokens) + head * masked_tokens
    )


def naive_step(
    model: DiffusionBertForMaskedLM,
    objective: DiffusionBertObjective,
    x0: Tensor,
    attention_mask: Tensor,
    noise_mask: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """The paper's formulation of the same loss: full logits everywhere, dense probability-space KL."""
    corrupted = objective.corrupt(x0, noise_mask, generator)
    logits = model(corrupted.x_t, attention_mask, t=corrupted.time).logits  # [B, L, V], padding included
    probs = logits.float().softmax(-1)
    u_q = unmask_probability(corrupted.alpha_s, corrupted.alpha_t)  # [B, L]
    rows = torch.arange(x0.shape[0], device=x0.device).repeat_interleave(x0.shape[1])
    masked = corrupted.masked.reshape(-1)
    log_p = probs.reshape(-1, probs.shape[-1]).clamp_min(1e-30).log()
    u_p = objective.reverse_unmask_probability(
        log_p[masked], rows[masked], corrupted.x_t, noise_mask, corrupted.step, corrupted.step - 1
    )  # [B, 1 or V]
    p_reveal = probs * u_p[:, None, :]  # [B, L, V]
    p_stay = (probs * (1 - u_p[:, None, :])).sum(-1)
    q_reveal = torch.zeros_like(probs).scatter(-1, x0.unsqueeze(-1), u_q.unsqueeze(-1).to(probs.dtype))
    kl_reveal = torch.where(q_reveal > 0, q_reveal * (q_reveal / p_reveal.clamp_min(1e-30)).log(), 0.0).sum(
        -1
    )
    keep = (1 - u_q).to(probs.dtype)
    kl_stay = torch.where(keep > 0, keep * (keep / p_stay.clamp_min(1e-30)).log(), 0.0)
    kl = (kl_reveal + kl_stay) * corrupted.masked
    ce = -(probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30).log()) * corrupted.masked
    loss = (objective.num_steps * kl.sum() + objective.hybrid_weight * ce.sum()) / noise_mask.sum()
    return loss, int(corrupted.masked.sum())


def bench_training(
    data_file: Path,
    num_sentences: int = 256,
    batch_size: int = 32,
    steps: int = 4,
    seed: int = 0,
    rounds: int = 3,
    device: str | torch.device | None = None,
) -> tuple[list[StepTiming], list[StepTiming], float]:
    """Time the naive and our training step on the packaged MiniLM and LM1B sentences, ``rounds`` times each,
    alternating, so that drift of the machine's speed reaches both (one timing per round and step kind)."""
    device = default_device(device)
    precision = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    path = default_backbone_path()
    tokenizer = load_tokenizer(path)
    tokenized, counts = _sentences(data_file, tokenizer, num_sentences)
    schedule = spindle_from_counts(LinearSchedule(), counts)
    objective = DiffusionBertObjective(tokenizer.mask_token_id, schedule, num_steps=2048)
    peak = matmul_peak_flops(device, precision)

    def run(name: str, loader, step_fn) -> StepTiming:
        torch.manual_seed(seed)
        model = DiffusionBertForMaskedLM.from_backbone(path, "none", tokenizer).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        generator = torch.Generator(device=device).manual_seed(seed)
        batches = list(loader)
        seconds, real, flops = 0.0, 0, 0.0
        for i in range(steps + 1):  # the first step warms up allocators and is not timed
            batch = {k: v.to(device) for k, v in batches[i % len(batches)].items()}
            synchronize(device)
            start = time.perf_counter()
            loss, masked = step_fn(model, batch, generator)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            if i:
                seconds += time.perf_counter() - start
                real += int(batch["attention_mask"].sum())
                flops += training_flops(model, int(batch["attention_mask"].sum()), masked)
        return StepTiming(name, seconds / steps, real / seconds, flops / seconds)

    def naive(model, batch, generator):
        return naive_step(
            model, objective, batch["input_ids"], batch["attention_mask"], batch["noise_mask"], generator
        )

    def ours(model, batch, generator):
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            corrupted = objective.corrupt(batch["input_ids"], batch["noise_mask"], generator)
            terms = denoiser_terms(model, objective, batch["input_ids"], batch["attention_mask"], corrupted)
        return terms.loss / batch["noise_mask"].sum(), int(corrupted.masked.sum())

    padded = [
        _pad_to(b, 128, tokenizer.pad_token_id)
        for b in make_dataloader(
            tokenized,
            batch_size,
            shuffle=True,
            seed=seed,
            pad_token_id=tokenizer.pad_token_id,
            bucket_batches=1,
        )
    ]
    bucketed = make_dataloader(
        tokenized, batch_size, shuffle=True, seed=seed, pad_token_id=tokenizer.pad_token_id
    )
    timings = [
        (run("naive (paper formulation)", padded, naive), run("ours", bucketed, ours)) for _ in range(rounds)
    ]
    return [n for n, _ in timings], [o for _, o in timings], peak


def _sentences(
    data_file: Path, tokenizer: PreTrainedTokenizerBase, num_sentences: int
) -> tuple[Dataset, Tensor]:
    """The first ``num_sentences`` of ``data_file`` tokenised as sentences (up to 128 tokens), and their token
    counts (for a spindle schedule)."""
    texts = load_texts(data_file).select(range(num_sentences))
    tokenized = tokenize_dataset(texts, tokenizer, "sentence", 128).dataset
    counts = torch.bincount(
        torch.tensor([i for ids in tokenized["input_ids"] for i in ids[1:]]), minlength=len(tokenizer)
    )
    return tokenized, counts


def combined(timings: list[StepTiming]) -> StepTiming:
    """One timing for several rounds of the same step kind: total work over total time."""
    seconds = [t.seconds_per_step for t in timings]
    total = sum(seconds)
    return StepTiming(
        timings[0].name,
        total / len(timings),
        sum(t.real_tokens_per_s * s for t, s in zip(timings, seconds, strict=True)) / total,
        sum(t.flops_per_s * s for t, s in zip(timings, seconds, strict=True)) / total,
    )


def _pad_to(batch: dict[str, Tensor], length: int, pad_id: int) -> dict[str, Tensor]:
    """Pad every tensor of a collated batch on the right to ``length`` positions (the paper pads to 128)."""
    out = {}
    for key, value in batch.items():
        if value.ndim == 2:
            fill = pad_id if key == "input_ids" else 0
            value = torch.nn.functional.pad(value, (0, length - value.shape[1]), value=fill)
        out[key] = value
    return out


def training_report(naive: list[StepTiming], ours: list[StepTiming], peak: float, settings: str) -> str:
    """The training section of docs/benchmarks.md: both steps over all rounds, and each round's speed-up."""
    total_naive, total_ours = combined(naive), combined(ours)
    ratios = [o.real_tokens_per_s / n.real_tokens_per_s for n, o in zip(naive, ours, strict=True)]
    lines = [
        "## Training throughput (issue: data/trainer)",
        "",
        settings,
        "",
        "| step | s / step | real tokens / s | model TFLOP/s | MFU |",
        "|---|---|---|---|---|",
        *[
            f"| {t.name} | {t.seconds_per_step:.2f} | {t.real_tokens_per_s:,.0f} | {t.flops_per_s / 1e12:.3f} | "
            f"{t.flops_per_s / peak:.0%} |"
            for t in (total_naive, total_ours)
        ],
        "",
        f"Speed-up (real tokens/s, ours ÷ naive), lowest round: **{min(ratios):.1f}×**; per round: "
        f"{', '.join(f'{r:.1f}×' for r in ratios)}; all rounds together: "
        f"{total_ours.real_tokens_per_s / total_naive.real_tokens_per_s:.1f}×. Seconds per step, per round: naive "
        f"{', '.join(f'{t.seconds_per_step:.2f}' for t in naive)}; ours "
        f"{', '.join(f'{t.seconds_per_step:.2f}' for t in ours)}. "
        f"Matmul peak measured in the same run: {peak / 1e9:.0f} GFLOP/s.",
        "",
        "Ours: logits and loss at masked positions only, in log space; length-bucketed batches; the encoder on "
        "real tokens only, its last layer only where the head reads; dropout masks from 16-bit draws on CPU. "
        "Both steps run the same model object, so the naive one shares the cheaper hidden-layer dropout (its "
        "attention dropout is torch's, inside SDPA). Useful FLOPs leave out padding, logits at unmasked "
        "positions and the last layer's unread outputs, for both steps alike.",
        "",
    ]
    return "\n".join(lines)


FAMILIES = ("diffusionbert", "mdlm", "sedd", "rdm", "radd", "diffusion_lm", "plaid", "ar")
"""The families whose training step (and, for the Gaussian ones, sampler) the family benchmark times."""


@dataclass(frozen=True)
class FamilyTiming:
    """A family's training step (seconds, real tokens/s) and, for a Gaussian family, its samplers' samples/s
    at ``sample_steps`` (the absorbing samplers have their own section)."""

    family: str
    schedule: str | None
    seconds_per_step: float
    real_tokens_per_s: float
    samples_per_s: dict[str, float]
    sample_steps: int


def bench_families(
    data_file: Path,
    families: tuple[str, ...] = FAMILIES,
    backbone: str = "minilm",
    num_sentences: int = 256,
    batch_size: int = 32,
    steps: int = 4,
    num_samples: int = 8,
    length: int = 64,
    sample_steps: int = 64,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> list[FamilyTiming]:
    """Each family's training step on the same bucketed batches of ``data_file`` (its own objective, default
    schedule and model on ``backbone``, AdamW, one untimed warm-up step), and the samplers of a Gaussian
    family on its freshly built model (speed does not depend on the weights)."""
    device = default_device(device)
    tokenizer = load_tokenizer(backbone_dir(backbone))
    tokenized, counts = _sentences(data_file, tokenizer, num_sentences)
    batches = list(
        make_dataloader(tokenized, batch_size, shuffle=True, seed=seed, pad_token_id=tokenizer.pad_token_id)
    )
    timings = []
    for family in families:
        cfg = check_config(
            config_from_dict({"model": {"backbone": backbone}, "diffusion": {"objective": family}})
        )
        torch.manual_seed(seed)
        model, _ = build_model(cfg)
        model = model.to(device).train()
        objective = objective_from_config(cfg.diffusion, tokenizer.mask_token_id, counts)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        generator = torch.Generator(device=device).manual_seed(seed)
        seconds, real = 0.0, 0
        for i in range(steps + 1):  # the first step warms up allocators and is not timed
            batch = {k: v.to(device) for k, v in batches[i % len(batches)].items()}
            synchronize(device)
            start = time.perf_counter()
            corrupted = objective.corrupt(batch["input_ids"], batch["noise_mask"], generator)
            terms = denoiser_terms(model, objective, batch["input_ids"], batch["attention_mask"], corrupted)
            (terms.loss / batch["noise_mask"].sum()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            if i:
                seconds += time.perf_counter() - start
                real += int(batch["attention_mask"].sum())
        sampling = {}
        if get_method(family).sampling == GAUSSIAN:
            pipe = EmbeddingDiffusionPipeline(model.eval(), tokenizer, objective, device)
            for sampler in EMBEDDING_SAMPLERS:
                decoding = DecodingConfig(
                    sampler, sample_steps, length, num_samples=num_samples, seed=seed, batch_size=num_samples
                )
                synchronize(device)
                start = time.perf_counter()
                pipe(config=decoding)
                synchronize(device)
                sampling[sampler] = num_samples / (time.perf_counter() - start)
        timings.append(
            FamilyTiming(
                family, cfg.diffusion.schedule, seconds / steps, real / seconds, sampling, sample_steps
            )
        )
    return timings


def families_report(timings: list[FamilyTiming], settings: str) -> str:
    """The family section of docs/benchmarks.md: each family's training step against the first one's
    (DiffusionBERT in :data:`FAMILIES`' order), and the Gaussian families' samplers."""
    reference = timings[0]  # the first family timed (DiffusionBERT in the default order)
    lines = [
        "## Training step and sampler per family (issue 14)",
        "",
        settings,
        "",
        f"| family | schedule | s / step | real tokens / s | ÷ {reference.family} |",
        "|---|---|---|---|---|",
        *[
            f"| {t.family} | {t.schedule or '–'} | {t.seconds_per_step:.2f} | {t.real_tokens_per_s:,.0f} |"
            f" {t.real_tokens_per_s / reference.real_tokens_per_s:.2f}× |"
            for t in timings
        ],
        "",
    ]
    gaussian = [t for t in timings if t.samples_per_s]
    if gaussian:
        lines += [
            "| Gaussian family | sampler | steps | samples / s |",
            "|---|---|---|---|",
            *[
                f"| {t.family} | {name} | {t.sample_steps} | {rate:.3f} |"
                for t in gaussian
                for name, rate in t.samples_per_s.items()
            ],
            "",
        ]
    return "\n".join(lines)


SECTIONS = ("training", "sampling", "families", "conditional", "chat", "memory")
"""The sections of docs/benchmarks.md, in page order (``diffusionbert bench --only``)."""


@dataclass(frozen=True)
class BenchSettings:
    """What ``make bench`` measures on: the training sentences (``data``: the first ``sentences`` of it,
    ``steps`` timed steps, ``rounds`` of each kind), the demo model for the samplers (``checkpoint``,
    ``num_samples``), and the reproductions whose rows it times (``e2e_plan``: ``e2e_sources`` test MRs;
    ``instruct_plan``: ``chat_prompts`` instructions), the soak run's config and measured steps (``()``: no
    soak); ``seed`` for all."""

    data: Path
    checkpoint: Path = Path("runs/demo/final")
    sentences: int = 256
    steps: int = 4
    rounds: int = 3
    seed: int = 0
    num_samples: int = 8
    e2e_plan: Path = Path("configs/reproduce-e2e.yaml")
    e2e_sources: int = 32
    instruct_plan: Path = Path("configs/reproduce-instruct.yaml")
    chat_prompts: int = 32
    soak_config: Path = Path("configs/demo.yaml")
    soak_steps: tuple[int, ...] = (50, 500, 2000)
    only: tuple[str, ...] = ()
    """Measure only these of :data:`SECTIONS` and keep the page's other sections as they are (``()``: all)."""


def merged_page(old: str, new: str) -> str:
    """``new`` (a page of some sections) with ``old``'s other ``## `` sections kept, in ``old``'s order: each
    section of ``new`` replaces the one of ``old`` with its heading, or comes after them when ``old`` has none."""
    old_sections, new_sections = _sections(old), _sections(new)
    merged = {**old_sections, **new_sections}
    head = new[: new.index("\n## ")] if "\n## " in new else new
    return head.rstrip("\n") + "\n\n" + "\n".join(block.rstrip("\n") + "\n" for block in merged.values())


def _sections(page: str) -> dict[str, str]:
    """A page's ``## `` sections by heading line, in order (what precedes the first is left out)."""
    blocks = re.split(r"(?m)^(?=## )", page)[1:]
    return {block.split("\n", 1)[0]: block for block in blocks}


def run_bench(
    b: BenchSettings,
    out: Path,
    device: str | torch.device | None = None,
    report: Callable[[str], None] = print,
) -> Path:
    """Every benchmark, in one run: each section goes to ``report`` when done, all of them to ``out``. The
    conditional and chat comparisons need the results of ``make reproduce-e2e`` and ``make
    reproduce-instruct`` (skipped, said so, without)."""
    data, checkpoint, sentences, steps, rounds, seed = (
        b.data,
        b.checkpoint,
        b.sentences,
        b.steps,
        b.rounds,
        b.seed,
    )
    num_samples = b.num_samples
    unknown = sorted(set(b.only) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"bench section {unknown[0]!r} is not valid; allowed: {', '.join(SECTIONS)}")
    wanted = set(b.only or SECTIONS)
    if "sampling" in wanted and not (checkpoint / "diffusion.json").is_file():
        raise CheckpointError(
            f"sampling benchmark needs a trained model at {checkpoint}: run `make demo` first"
        )
    machine = machine_description()
    sections = []
    if "training" in wanted:
        naive, ours, peak = bench_training(
            data, num_sentences=sentences, steps=steps, seed=seed, rounds=rounds, device=device
        )
        settings = (
            f"Machine: {machine}. Packaged MiniLM-L6, spindle DiffusionBERT objective (T = 2048), batch 32 of "
            f"the first {sentences} sentences of `{data}`, {steps} timed steps after one warm-up, AdamW, "
            f"{rounds} rounds of each step kind, alternating, seed {seed}."
        )
        sections.append(training_report(naive, ours, peak, settings))
        report(sections[-1])
    if "sampling" in wanted:
        timings = bench_sampling(checkpoint, num_samples=num_samples, seed=seed, device=device)
        settings = (
            f"Machine: {machine}. Model `{checkpoint}` (the demo model), {num_samples} samples of length 64 "
            f"in one batch, seed {seed}; NFE counts network calls per sample."
        )
        sections.append(sampling_report(timings, settings))
        report(sections[-1])
    if "families" in wanted:
        families = bench_families(data, num_sentences=sentences, steps=steps, seed=seed, device=device)
        settings = (
            f"Machine: {machine}. Packaged MiniLM-L6, each family's default schedule and model, batch 32 of "
            f"the first {sentences} sentences of `{data}` (bucketed, the same batches for every family), "
            f"{steps} timed steps after one warm-up, AdamW, seed {seed}; the Gaussian families' samplers: "
            f"{num_samples} samples of length 64 in one batch, 64 steps, one network call each."
        )
        sections.append(families_report(families, settings))
        report(sections[-1])
    if "conditional" in wanted:
        plan = load_plan(b.e2e_plan)
        rows = speed_at_quality_rows(plan)
        if rows is None:
            report(f"(no conditional speed comparison: run `make reproduce-e2e` first for {b.e2e_plan})")
        else:
            settings = (
                f"Machine: {machine}. The rows of `{plan.results}` (plan `{b.e2e_plan}`): the AR row of the highest"
                " test BLEU and AR greedy (left to right, key-value cache), and the best-BLEU row of the best model"
                " decoded in full and of every model with the exact prompt cache (isolated source attention, block"
                f" diffusion), each decoding the first {b.e2e_sources} test MRs as in the table (one warm-up call"
                " first); batch 1 times the first 4 MRs one at a time. Text tokens: WordPiece tokens of the kept"
                " text."
            )
            timed = bench_conditional(plan, rows.all, sources=b.e2e_sources, device=device)
            sections.append(conditional_report(timed, rows, settings))
            report(sections[-1])
    if "chat" in wanted:
        instruct = load_instruct_plan(b.instruct_plan)
        chats = bench_chat(instruct, prompts=b.chat_prompts, device=device)
        baseline = next((d.label for d in instruct.decoders if d.model == instruct.baseline), None)
        if not chats or baseline not in {t.label for t in chats}:
            report(f"(no chat timing: run `make reproduce-instruct` first for {b.instruct_plan})")
        else:
            settings = (
                f"Machine: {machine}. The instruction-tuned models of plan `{b.instruct_plan}`, each with its first"
                f" decoder row, answering the first {b.chat_prompts} test instructions of"
                f" `{instruct.protocol.test_file}` one at a time, as `chat` does (one warm-up answer first)."
            )
            sections.append(chat_report(chats, baseline, settings))
            report(sections[-1])
    if "memory" in wanted and b.soak_steps:
        points = bench_memory(b.soak_config, b.soak_steps, seed=seed, device=device)
        settings = (
            f"Machine: {machine}. `{b.soak_config}` trained for {b.soak_steps[-1]} steps (seed {seed}, the"
            f" validation off, one checkpoint at the end), resident memory (`/proc/self/statm`) logged every step;"
            f" each row is the peak over the {SOAK_WINDOW} steps up to it (the trainer hands freed memory back"
            " after every step)."
        )
        sections.append(memory_report(points, settings))
        report(sections[-1])
    text = (
        "# Benchmarks\n\nEvery number below comes from `make bench` (`diffusionbert bench`; `--only SECTION` "
        "measures some sections again and keeps the others), ratios measured within one run.\n\n"
        + "\n".join(sections)
    )
    if b.only and out.is_file():
        text = merged_page(out.read_text(encoding="utf-8"), text)
    atomic_file(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
