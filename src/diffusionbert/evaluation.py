"""The NLL bound of a model on a text file, per token and per word.

Units (see docs/concepts.md): nats per scored token, where scored tokens are the noisable ones (every
WordPiece token of a sentence and its final [SEP], which is modelled as end-of-sentence; never [CLS] or
padding); perplexity per word = exp(total NLL / (whitespace words + one end-of-sentence per sentence)).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import torch
from rich.progress import track
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .losses import LossTerms
from .objectives import Corrupted, Objective


def denoiser_terms(
    model: torch.nn.Module, objective: Objective, x0: Tensor, attention_mask: Tensor, corrupted: Corrupted
) -> LossTerms:
    """Run the denoiser on x_t, at masked positions only, and score it: where a loss meets the model."""
    logits = model(corrupted.x_t, attention_mask, t=corrupted.time, positions=corrupted.masked).logits
    return objective.loss(logits, x0, corrupted)


@dataclass(frozen=True)
class BoundResult:
    """A Monte-Carlo estimate of the NELBO over a data set (t and x_t drawn once per sentence).

    ``batch_nats_per_token`` keeps each batch's estimate: two models evaluated on the same file with the same
    seed see the same sentences and random draws batch by batch, so their difference can be judged by its
    paired standard error, far smaller than the two ± combined.
    """

    nats_per_token: float
    stderr_per_token: float
    ppl_per_token: float
    ppl_per_word: float | None
    total_nats: float
    n_tokens: int
    n_words: int | None
    n_sequences: int
    batch_nats_per_token: tuple[float, ...]  # per batch and repeat: for paired comparisons of two models

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.inference_mode()
def nll_bound(
    model: torch.nn.Module,
    objective: Objective,
    batches: list[dict[str, Tensor]] | torch.utils.data.DataLoader,
    seed: int = 0,
    max_batches: int | None = None,
    repeats: int = 1,
) -> BoundResult:
    """Estimate the NELBO of ``model`` on ``batches`` with the objective's own t and x_t draws.

    The estimate is ``objective.bound_objective``'s (a plain MLM is scored as the diffusion it defines).
    ``repeats`` draws t and x_t that many times per sentence (lower variance). The standard error is over
    batch-level estimates. Per-word perplexity needs word counts (sentence layout); otherwise it is None.
    """
    objective = objective.bound_objective
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals: list[tuple[float, int]] = []
    n_words, n_sequences, words_known = 0, 0, True
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        x0 = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        noise_mask = batch["noise_mask"].to(device)
        tokens = int(noise_mask.sum())
        for _ in range(repeats):
            corrupted = objective.corrupt(x0, noise_mask, generator)
            nats = float(denoiser_terms(model, objective, x0, attention_mask, corrupted).nll)
            totals.append((nats, tokens))
        words = batch["n_words"]
        words_known = words_known and bool((words >= 0).all())
        n_words += int(words.sum()) + int(words.numel())  # + one end-of-sentence ([SEP]) per sentence
        n_sequences += int(x0.shape[0])
    model.train(was_training)
    if not totals:
        raise ValueError("nll_bound got no batches to evaluate")
    total_nats = sum(n for n, _ in totals) / repeats
    n_tokens = sum(t for _, t in totals) // repeats
    per_batch = torch.tensor([n / max(t, 1) for n, t in totals], dtype=torch.float64)
    stderr = float(per_batch.std() / math.sqrt(len(per_batch))) if len(per_batch) > 1 else float("nan")
    per_token = total_nats / max(n_tokens, 1)
    return BoundResult(
        nats_per_token=per_token,
        stderr_per_token=stderr,
        ppl_per_token=math.exp(per_token),
        ppl_per_word=math.exp(total_nats / n_words) if words_known and n_words else None,
        total_nats=total_nats,
        n_tokens=n_tokens,
        n_words=n_words if words_known else None,
        n_sequences=n_sequences,
        batch_nats_per_token=tuple(per_batch.tolist()),
    )


METRICS = ("bound", "bleu", "self-bleu", "dist", "entropy", "gen-ppl")
AR_SAMPLER = "autoregressive"
SAMPLE_METRICS = frozenset(METRICS) - {"bound"}


@dataclass(frozen=True)
class SampleMetrics:
    """Metrics of generated samples (the paper's protocol: BLEU against the data file, self-BLEU among them).

    BLEU-4 with epsilon smoothing on lower-cased, punctuation-split tokens (see :mod:`diffusionbert.metrics`);
    ``gen_ppl`` is the judge's exact perplexity per token of the samples, with the samples' unigram entropy.
    ``steps`` is the sampler's (for the AR sampler: the most tokens drawn), ``length`` the positions generated,
    ``mean_length`` the mean tokens before the first generated [SEP], ``sharpening`` temperature/top-k/top-p.
    """

    num_samples: int
    sampler: str
    steps: int
    length: int
    sharpening: dict[str, float]
    bleu: float | None
    self_bleu: float | None
    dist: tuple[float, float, float] | None
    entropy: float | None
    gen_ppl: float | None
    judge: str | None
    mean_length: float
    mean_nfe: float
    texts: tuple[str, ...]


@dataclass(frozen=True)
class EvaluationReport:
    """What ``diffusionbert evaluate`` prints and writes."""

    checkpoint: str
    data: str
    objective: str
    bound: BoundResult | None
    samples: SampleMetrics | None
    n_examples: int
    n_truncated: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("checkpoint", self.checkpoint),
            ("data", f"{self.data} ({self.n_examples} examples, {self.n_truncated} truncated)"),
        ]
        if (b := self.bound) is not None:
            exact = self.objective == "ar"
            rows += [
                (
                    "bound",
                    "exact NLL (autoregressive)"
                    if exact
                    else f"{self.objective} NELBO, t drawn by Monte Carlo",
                ),
                ("nats / token", f"{b.nats_per_token:.4f} ± {b.stderr_per_token:.4f} (standard error)"),
                ("PPL / token", f"{b.ppl_per_token:.3f}  ({b.n_tokens} WordPiece tokens incl. [SEP])"),
                (
                    "PPL / word",
                    "n/a"
                    if b.ppl_per_word is None
                    else f"{b.ppl_per_word:.3f}  ({b.n_words} = words + one EOS per sentence)",
                ),
            ]
        if (m := self.samples) is not None:
            changed = ", ".join(f"{k} {v}" for k, v in m.sharpening.items() if v != {"top_k": 0}.get(k, 1.0))
            rows.append(
                (
                    "samples",
                    f"{m.num_samples} × length ≤ {m.length}, {m.sampler}, {m.steps} steps"
                    + (f", {changed}" if changed else ""),
                )
            )
            rows.append(("mean length / NFE", f"{m.mean_length:.1f} tokens / {m.mean_nfe:.1f} network calls"))
            if m.bleu is not None:
                rows.append(("BLEU-4", f"{m.bleu:.4f}  (each sample against every data sentence)"))
            if m.self_bleu is not None:
                rows.append(("self-BLEU-4", f"{m.self_bleu:.4f}  (lower = more diverse)"))
            if m.dist is not None:
                rows.append(("dist-1/2/3", " / ".join(f"{d:.4f}" for d in m.dist)))
            if m.entropy is not None:
                rows.append(("unigram entropy", f"{m.entropy:.4f} nats"))
            if m.gen_ppl is not None:
                rows.append(("generative PPL", f"{m.gen_ppl:.3f} per token under judge {m.judge}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def text_batches(
    texts: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int, what: str
) -> tuple[list[dict[str, Tensor]], int]:
    """Sentence-layout batches of ``texts`` and how many were truncated (warned about on stderr)."""
    from .data import make_dataloader, tokenize_dataset

    tokenized = tokenize_dataset(texts, tokenizer, "sentence", max_length)
    if tokenized.num_truncated:
        print(
            f"warning: {tokenized.num_truncated} of {len(texts)} {what} were longer than the model's "
            f"{max_length} positions and were truncated",
            file=sys.stderr,
        )
    loader = make_dataloader(
        tokenized.dataset, batch_size, shuffle=False, pad_token_id=tokenizer.pad_token_id
    )
    return list(loader), tokenized.num_truncated


def evaluate_file(
    checkpoint: str | Path,
    data: str | Path,
    field: str | None = None,
    max_examples: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    repeats: int = 1,
    progress: bool = False,
    metrics: tuple[str, ...] = ("bound",),
    num_samples: int = 1000,
    sampler: str | None = None,
    steps: int = 128,
    length: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    judge: str | Path | None = None,
) -> EvaluationReport:
    """Evaluate a saved model on a text file: its NLL bound, and metrics of samples it generates.

    ``sampler`` defaults to ``ancestral`` for diffusion models and ``autoregressive`` (left to right) for
    AR ones; ``temperature``, ``top_k`` and ``top_p`` reshape every draw (the paper samples with top-k 30).
    """
    from .checkpoint import load_model_dir
    from .data import load_texts
    from .errors import CheckpointError, ConfigError
    from .metrics import bleu_against_references, distinct_n, self_bleu, unigram_entropy
    from .objectives import objective_from_config

    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ConfigError(f"metrics={','.join(metrics)!r} is not valid; allowed: {', '.join(METRICS)}")
    if batch_size < 1 or repeats < 1:
        raise ConfigError(f"batch_size={batch_size} and repeats={repeats} must both be >= 1")
    if "gen-ppl" in metrics and judge is None:
        raise ConfigError("metric 'gen-ppl' needs --judge: an autoregressive checkpoint (objective 'ar')")
    loaded = load_model_dir(checkpoint, device=_default_device())
    is_ar = loaded.diffusion_cfg.objective == "ar"
    sampler = sampler or (AR_SAMPLER if is_ar else "ancestral")
    if SAMPLE_METRICS & set(metrics) and is_ar != (sampler == AR_SAMPLER):
        raise ConfigError(
            f"sampler={sampler!r} does not fit this {loaded.diffusion_cfg.objective!r} checkpoint; allowed: "
            + (f"{AR_SAMPLER!r} for an autoregressive model" if is_ar else "a diffusion sampler")
        )
    texts = load_texts(data, field)
    if max_examples is not None:
        texts = texts.select(range(min(max_examples, len(texts))))
    objective = objective_from_config(
        loaded.diffusion_cfg, loaded.tokenizer.mask_token_id, loaded.token_counts
    )
    max_length = loaded.model.max_input_length
    bound, n_truncated = None, 0
    if "bound" in metrics:
        batches, n_truncated = text_batches(texts, loaded.tokenizer, max_length, batch_size, "examples")
        bound = nll_bound(
            loaded.model,
            objective,
            track(batches, description="bound", disable=not progress),
            seed=seed,
            repeats=repeats,
        )
    samples = None
    if SAMPLE_METRICS & set(metrics):
        judge_model = None
        if "gen-ppl" in metrics:
            judge_model = load_model_dir(judge, device=_default_device())
            if judge_model.diffusion_cfg.objective != "ar":
                raise CheckpointError(
                    f"judge {judge} is not an autoregressive checkpoint (objective "
                    f"{judge_model.diffusion_cfg.objective!r}); train one with objective 'ar'"
                )
        sharpening = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        options = {"seed": seed, "batch_size": batch_size, "progress": progress, **sharpening}
        if is_ar:
            from .autoregressive import generate_left_to_right

            out = generate_left_to_right(loaded.model, loaded.tokenizer, num_samples, length, **options)
        else:
            from .pipeline import DiffusionPipeline

            pipe = DiffusionPipeline(loaded.model, loaded.tokenizer, objective)
            out = pipe(num_samples=num_samples, length=length, steps=steps, sampler=sampler, **options)
        generated = out.texts
        references = (
            [str(t) for t in texts["text"]]
            if "text" in texts.column_names
            else [str(t) for t in texts["target"]]
        )
        gen_ppl = None
        if judge_model is not None:
            judged = datasets.Dataset.from_dict({"text": [g if g.strip() else "." for g in generated]})
            batches, _ = text_batches(
                judged, judge_model.tokenizer, judge_model.model.max_input_length, batch_size, "samples"
            )
            judge_objective = objective_from_config(
                judge_model.diffusion_cfg, judge_model.tokenizer.mask_token_id, None
            )
            gen_ppl = nll_bound(judge_model.model, judge_objective, batches, seed=seed).ppl_per_token
        samples = SampleMetrics(
            num_samples=num_samples,
            sampler=sampler,
            steps=max(out.nfe) if is_ar else steps,
            length=length,
            sharpening=sharpening,
            bleu=bleu_against_references(generated, references) if "bleu" in metrics else None,
            self_bleu=self_bleu(generated) if "self-bleu" in metrics and num_samples > 1 else None,
            dist=tuple(distinct_n(generated, n) for n in (1, 2, 3)) if "dist" in metrics else None,
            entropy=unigram_entropy(generated) if {"entropy", "gen-ppl"} & set(metrics) else None,
            gen_ppl=gen_ppl,
            judge=None if judge is None else str(judge),
            mean_length=sum(out.lengths) / len(out.lengths),
            mean_nfe=sum(out.nfe) / len(out.nfe),
            texts=tuple(generated),
        )
    return EvaluationReport(
        str(checkpoint), str(data), loaded.diffusion_cfg.objective, bound, samples, len(texts), n_truncated
    )


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
