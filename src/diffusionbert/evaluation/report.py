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
from ..config import DecodingConfig
from ..data import load_texts, make_dataloader, tokenize_dataset
from ..data.chat import load_chat
from ..errors import CheckpointError, ConfigError
from ..methods import LEFT_TO_RIGHT, METHODS, get_method, objective_from_config
from ..sampling import SampleOutput, pipeline_for
from ..sampling.pipelines import Conditioning
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


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_file` measures on a data file.

    ``field`` is the column (``.csv``) or key (``.jsonl``) of the texts, for a pair model the targets'
    and ``source_field`` the sources'; ``max_examples`` keeps the first N. ``metrics`` are of
    :data:`METRICS`: the bound (``repeats`` Monte Carlo draws of t per text) and those of ``samples`` texts
    generated without conditioning (BLEU against the file, self-BLEU, dist-n, unigram entropy, and the
    perplexity of ``judge``, an AR model directory, for ``gen-ppl``).
    """

    field: str | None = None
    source_field: str | None = None
    max_examples: int | None = None
    metrics: tuple[str, ...] = ("bound",)
    repeats: int = 1
    samples: int = 1000
    judge: str | Path | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise ConfigError(
                f"metrics={','.join(self.metrics)!r} is not valid; allowed: {', '.join(METRICS)}"
            )
        for name in ("repeats", "samples", "max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} is not valid; allowed: an integer >= 1")
        if "gen-ppl" in self.metrics and self.judge is None:
            raise ConfigError(f"metric 'gen-ppl' needs --judge: a checkpoint of objective {_judges()}")


def evaluate_file(
    checkpoint: str | Path,
    data: str | Path,
    evaluation: Evaluation | None = None,
    config: DecodingConfig | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options: Any,
) -> EvaluationReport:
    """Evaluate a saved model on a text file: its NLL bound, and metrics of samples it generates.

    Args:
        checkpoint: a model directory (a run's ``final/`` or a checkpoint).
        data: the text file (``.txt``, ``.jsonl`` or ``.csv``).
        evaluation: what to measure (default: the bound only).
        config: the whole decoding of the samples instead of the model's own (its ``decoding.json``); its
            ``seed`` and ``batch_size`` are the bound's too. The paper samples with top-k 30.
        device: where the model runs (default CUDA when present).
        progress: show progress bars.
        **options: decoding options that change ``config`` (or the model's own).

    A model trained on pairs is scored on pairs: ``evaluation.source_field`` names the sources' column and
    ``evaluation.field`` the targets'; the bound is then that of each target given its source (its target
    window as in training). A chat model (``data.format: chat``) reads ``data`` as chat records: the bound
    is that of each answer given its rendered conversation (:func:`~diffusionbert.data.chat.load_chat`), and
    no field is named.
    """
    evaluation = evaluation or Evaluation()
    metrics, source_field, field = evaluation.metrics, evaluation.source_field, evaluation.field
    device = default_device(device)
    loaded = load_model_dir(checkpoint, device=device)
    sampling = bool(SAMPLE_METRICS & set(metrics))
    pipe = pipeline_for(loaded) if sampling else None
    decoding = (config or loaded.decoding).replace(**options)  # its seed and batch size are the bound's too
    if pipe is not None:  # the samples' decoding, resolved (and a bad one refused) before any work
        decoding = pipe.resolve(config, {**options, "num_samples": evaluation.samples}, Conditioning())
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
    if evaluation.max_examples is not None:
        texts = texts.select(range(min(evaluation.max_examples, len(texts))))
    bound, n_truncated = None, 0
    if "bound" in metrics:
        objective = objective_from_config(
            loaded.diffusion_cfg, loaded.tokenizer.mask_token_id, loaded.token_counts
        )
        batches, n_truncated = text_batches(
            texts,
            loaded.tokenizer,
            loaded.model.max_input_length,
            decoding.batch_size,
            "examples",
            loaded.target_window,
            "start" if loaded.chat else "end",
        )
        bound = nll_bound(
            loaded.model,
            objective,
            track(batches, description="bound", disable=not progress),
            seed=decoding.seed,
            repeats=evaluation.repeats,
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
        judge = evaluation.judge
        judge_model = _load_judge(judge, device) if "gen-ppl" in metrics and judge is not None else None
        out = pipe(config=decoding, progress=progress)
        gen_ppl = None
        if judge_model is not None:
            gen_ppl = judge_perplexity(judge_model, out.texts, decoding.batch_size, decoding.seed)
        steps = max(out.nfe) if loaded.method.sampling == LEFT_TO_RIGHT else decoding.steps
        samples = _sample_metrics(out, references, metrics, decoding, steps, gen_ppl, judge)
    return EvaluationReport(
        str(checkpoint), str(data), loaded.diffusion_cfg.objective, bound, samples, len(texts), n_truncated
    )


def _sample_metrics(
    out: SampleOutput,
    references: list[str],
    metrics: tuple[str, ...],
    decoding: DecodingConfig,
    steps: int,
    gen_ppl: float | None,
    judge: str | Path | None,
) -> SampleMetrics:
    """The requested metrics of samples ``out`` (generated with ``decoding``, ``steps`` the steps they
    took) against ``references`` (the data file), with the judge's perplexity of them when one was asked for."""
    generated = out.texts
    assert decoding.sampler is not None and decoding.length is not None  # resolved by the pipeline
    return SampleMetrics(
        num_samples=decoding.num_samples,
        sampler=decoding.sampler,
        steps=steps,
        length=decoding.length,
        sharpening={"temperature": decoding.temperature, "top_k": decoding.top_k, "top_p": decoding.top_p},
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
