"""``diffusionbert evaluate``: a saved model's NLL bound on a text file and metrics of samples it generates.

The bound is :func:`~diffusionbert.training.bound.nll_bound` (per token and per word, see docs/concepts.md);
the sample metrics are the paper's protocol (:mod:`.metrics`), with the samples drawn by the pipeline the
model's method samples with.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from rich.progress import track
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..checkpoint import LoadedModel, load_model_dir
from ..data import load_texts, make_dataloader, tokenize_dataset
from ..data.chat import load_chat
from ..errors import CheckpointError, ConfigError
from ..methods import LEFT_TO_RIGHT, METHODS, get_method, objective_from_config
from ..sampling import SampleOutput, pipeline_for
from ..training.bound import BoundResult, nll_bound
from ..utils.runtime import default_device
from .metrics import bleu_against_references, distinct_n, self_bleu, unigram_entropy

METRICS = ("bound", "bleu", "self-bleu", "dist", "entropy", "gen-ppl")
SAMPLE_METRICS = frozenset(METRICS) - {"bound"}


@dataclass(frozen=True)
class SampleMetrics:
    """Metrics of generated samples (the paper's protocol: BLEU against the data file, self-BLEU among them).

    BLEU-4 with epsilon smoothing on lower-cased, punctuation-split tokens (see :mod:`.metrics`);
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
            exact = get_method(self.objective).exact_likelihood
            rows += [
                (
                    "bound",
                    f"exact NLL ({get_method(self.objective).summary})"
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
    texts: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    batch_size: int,
    what: str,
    target_window: int | None = None,
    source_cut: str = "end",
) -> tuple[list[dict[str, Tensor]], int]:
    """Sentence-layout batches of ``texts`` (or source/target pairs, their targets in a ``target_window``,
    a too-long source cut at its ``source_cut`` end) and how many were truncated (warned about on stderr)."""
    tokenized = tokenize_dataset(
        texts, tokenizer, "sentence", max_length, target_window=target_window, source_cut=source_cut
    )
    if tokenized.num_truncated:
        print(
            f"warning: {tokenized.num_truncated} of {len(texts)} {what} were longer than the model's "
            f"{max_length} positions and were truncated",
            file=sys.stderr,
        )
    loader = make_dataloader(
        tokenized.dataset,
        batch_size,
        shuffle=False,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
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
    device: str | torch.device | None = None,
    source_field: str | None = None,
) -> EvaluationReport:
    """Evaluate a saved model on a text file: its NLL bound, and metrics of samples it generates.

    A model trained on pairs is scored on pairs: ``source_field`` names the sources' column and ``field`` the
    targets'; the bound is then that of each target given its source (its target window as in training).
    A chat model (``data.format: chat``) reads ``data`` as chat records: the bound is that of each answer
    given its rendered conversation (:func:`~diffusionbert.data.chat.load_chat`), and no field is named.

    ``sampler`` defaults to the model's own (``ancestral`` for diffusion models, ``autoregressive``, left to
    right, for AR ones); ``temperature``, ``top_k`` and ``top_p`` reshape every draw (the paper samples with
    top-k 30). ``device`` defaults to CUDA when present.
    """
    _check_request(metrics, batch_size, repeats, judge, max_examples)
    device = default_device(device)
    loaded = load_model_dir(checkpoint, device=device)
    sampling = bool(SAMPLE_METRICS & set(metrics))
    pipe = pipeline_for(loaded) if sampling else None
    if pipe is not None:
        sampler = pipe.resolve_sampler(sampler)  # a wrong sampler fails before any work
    if loaded.chat and (source_field or field):
        raise ConfigError(
            f"{checkpoint} is a chat model: it reads chat records (instruction/output or messages); "
            "allowed: no --source-field or --field"
        )
    if (
        not loaded.chat
        and loaded.trained_on_pairs is not None
        and bool(source_field) != loaded.trained_on_pairs
    ):
        trained = "source/target pairs" if loaded.trained_on_pairs else "plain texts"
        raise ConfigError(
            f"{checkpoint} was trained on {trained}; allowed: "
            + (
                "a source column (--source-field) and a target column (--field)"
                if loaded.trained_on_pairs
                else "no source column"
            )
        )
    if loaded.chat:
        texts = load_chat(data, loaded.tokenizer)
    elif source_field:
        texts = load_texts(data, source_field, target_field=field)
    else:
        texts = load_texts(data, field)
    if max_examples is not None:
        texts = texts.select(range(min(max_examples, len(texts))))
    bound, n_truncated = None, 0
    if "bound" in metrics:
        objective = objective_from_config(
            loaded.diffusion_cfg, loaded.tokenizer.mask_token_id, loaded.token_counts
        )
        batches, n_truncated = text_batches(
            texts,
            loaded.tokenizer,
            loaded.model.max_input_length,
            batch_size,
            "examples",
            loaded.target_window,
            "start" if loaded.chat else "end",
        )
        bound = nll_bound(
            loaded.model,
            objective,
            track(batches, description="bound", disable=not progress),
            seed=seed,
            repeats=repeats,
            self_prompt=loaded.self_prompt,
        )
        if not math.isfinite(bound.nats_per_token):
            raise CheckpointError(
                f"the NLL bound of {checkpoint} on {data} is not finite ({bound.nats_per_token}): the model "
                "gives some token zero probability or its weights are not finite (a diverged run?)"
            )
    samples = None
    if pipe is not None:
        references = [str(t) for t in texts["text" if "text" in texts.column_names else "target"]]
        judge_model = _load_judge(judge, device) if "gen-ppl" in metrics else None
        sharpening = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        request = {"num_samples": num_samples, "length": length, "steps": steps, "sampler": sampler}
        out = pipe(**request, **sharpening, seed=seed, batch_size=batch_size, progress=progress)
        if loaded.method.sampling == LEFT_TO_RIGHT:
            request["steps"] = max(out.nfe)  # left to right: the most tokens drawn
        gen_ppl = None if judge_model is None else judge_perplexity(judge_model, out.texts, batch_size, seed)
        samples = _sample_metrics(out, references, metrics, request, sharpening, gen_ppl, judge)
    return EvaluationReport(
        str(checkpoint), str(data), loaded.diffusion_cfg.objective, bound, samples, len(texts), n_truncated
    )


def _sample_metrics(
    out: SampleOutput,
    references: list[str],
    metrics: tuple[str, ...],
    request: dict[str, Any],
    sharpening: dict[str, float],
    gen_ppl: float | None,
    judge: str | Path | None,
) -> SampleMetrics:
    """The requested metrics of generated samples ``out`` against ``references`` (the data file), with the
    judge's perplexity of them when one was asked for."""
    generated = out.texts
    return SampleMetrics(
        **request,
        sharpening=sharpening,
        bleu=bleu_against_references(generated, references) if "bleu" in metrics else None,
        self_bleu=self_bleu(generated) if "self-bleu" in metrics and len(generated) > 1 else None,
        dist=tuple(distinct_n(generated, n) for n in (1, 2, 3)) if "dist" in metrics else None,
        entropy=unigram_entropy(generated) if {"entropy", "gen-ppl"} & set(metrics) else None,
        gen_ppl=gen_ppl,
        judge=None if judge is None else str(judge),
        mean_length=sum(out.lengths) / len(out.lengths),
        mean_nfe=sum(out.nfe) / len(out.nfe),
        texts=tuple(generated),
    )


def _judges() -> str:
    """The registered methods whose models can judge generative perplexity (an exact likelihood)."""
    return ", ".join(repr(m.name) for m in METHODS.values() if m.exact_likelihood)


def _check_request(
    metrics: tuple[str, ...],
    batch_size: int,
    repeats: int,
    judge: str | Path | None,
    max_examples: int | None,
) -> None:
    """Reject unknown metrics, bad counts and a missing judge before anything is loaded."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ConfigError(f"metrics={','.join(metrics)!r} is not valid; allowed: {', '.join(METRICS)}")
    for name, value in (("batch_size", batch_size), ("repeats", repeats), ("max_examples", max_examples)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}={value} is not valid; allowed: an integer >= 1")
    if "gen-ppl" in metrics and judge is None:
        raise ConfigError(f"metric 'gen-ppl' needs --judge: a checkpoint of objective {_judges()}")


def _load_judge(judge: str | Path, device: torch.device) -> LoadedModel:
    """The judge of generative perplexity: a model whose bound is its exact likelihood."""
    loaded = load_model_dir(judge, device=device)
    if not loaded.method.exact_likelihood:
        raise CheckpointError(
            f"judge {judge} is not an autoregressive checkpoint (objective {loaded.method.name!r}); "
            f"train one with objective {_judges()}"
        )
    return loaded


def judge_perplexity(judge: LoadedModel, texts: list[str], batch_size: int, seed: int) -> float:
    """The judge's perplexity per token of ``texts`` (an empty text is scored as ".")."""
    judged = datasets.Dataset.from_dict({"text": [t if t.strip() else "." for t in texts]})
    batches, _ = text_batches(judged, judge.tokenizer, judge.model.max_input_length, batch_size, "samples")
    objective = objective_from_config(judge.diffusion_cfg, judge.tokenizer.mask_token_id, None)
    return nll_bound(judge.model, objective, batches, seed=seed).ppl_per_token
