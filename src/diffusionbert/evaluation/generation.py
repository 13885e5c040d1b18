"""Conditional generation over a file: one text (or K samples) per source, optionally scored.

``generate_file`` reads the sources of a data file (each distinct source once, in file order: E2E lists a
meaning representation once per reference), decodes them in batches across sources with the model's pipeline,
picks one text per source (the first sample, or the minimum-Bayes-risk one with ``mbr``) and, when the file
also holds references, scores the texts with :func:`~.conditional.score_conditional`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import DecodingConfig
from ..data import load_texts
from ..errors import ConfigError
from ..sampling import Pipeline, load_pipeline
from ..utils.runtime import default_device
from .conditional import ConditionalScores, group_references, mbr_select, score_conditional


@dataclass(frozen=True)
class Generation:
    """What was generated for one source: the chosen ``text``, the network calls of its sample, and every
    sample (``candidates``) when several were drawn."""

    source: str
    text: str
    nfe: int
    candidates: list[str] | None = None

    def to_json(self) -> str:
        record: dict[str, object] = {"source": self.source, "text": self.text, "nfe": self.nfe}
        if self.candidates is not None:
            record["candidates"] = self.candidates
        return json.dumps(record, ensure_ascii=False)


@dataclass(frozen=True)
class GenerationResult:
    """The generations in source order and, when references were given, their scores."""

    generations: list[Generation]
    scores: ConditionalScores | None


@dataclass(frozen=True)
class SourceFile:
    """The sources of a data file to generate for: the distinct values of column ``source_field`` of
    ``path`` in file order (E2E lists a meaning representation once per reference), the first
    ``max_sources`` of them, with the references of each from ``reference_field`` when given."""

    path: str | Path
    source_field: str
    reference_field: str | None = None
    max_sources: int | None = None

    def __post_init__(self) -> None:
        if self.max_sources is not None and self.max_sources < 1:
            raise ConfigError(f"max_sources={self.max_sources} is not valid; allowed: an integer >= 1")

    def read(self) -> tuple[list[str], list[list[str]] | None]:
        """The sources and, with a reference field, the references of each."""
        references: list[list[str]] | None = None
        if self.reference_field:
            sources, references = read_references(self.path, self.source_field, self.reference_field)
        else:
            sources = list(dict.fromkeys(str(t) for t in load_texts(self.path, self.source_field)["text"]))
        if self.max_sources is not None:
            sources = sources[: self.max_sources]
            references = references[: self.max_sources] if references is not None else None
        return sources, references


def generate_file(
    model: str | Path | Pipeline,
    sources: SourceFile,
    config: DecodingConfig | None = None,
    *,
    e2e: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options: Any,
) -> GenerationResult:
    """Generate for every source of a file with a model trained on pairs, and score the texts when the file
    has references.

    Args:
        model: a model directory (loaded on ``device``, default CUDA when present) or a loaded pipeline.
        sources: the file, its columns and how many sources (:class:`SourceFile`).
        config: the whole decoding to use instead of the model's own (its ``decoding.json``). Its
            ``num_samples`` (K) samples are drawn per source; the text kept is the first, or with ``mbr``
            the minimum-Bayes-risk one. ``length`` is the target window (default: the model's
            ``data.target_window``, else :data:`~diffusionbert.config.DEFAULT_LENGTH`); a generated [SEP]
            ends a text earlier, or with the predicted end each text is decoded in the length the model
            predicts from its source.
        e2e: the sources are E2E meaning representations: also the slot error rate.
        progress: show a progress bar.
        **options: decoding options that change ``config`` (or the model's own) for this call.

    With references the texts are scored against all references of their source, and the K samples'
    diversity when K >= 2.
    """
    if e2e and sources.reference_field is None:
        raise ConfigError("the e2e task scores against references; allowed: a reference field with it")
    pipe = model if isinstance(model, Pipeline) else load_pipeline(model, default_device(device))
    decoding = (config or pipe.decoding).replace(**options)
    pipe.resolve_sampler(decoding.sampler)  # a wrong sampler fails before the data is read
    texts, references = sources.read()
    out = pipe(source=texts, config=decoding, progress=progress)
    k = decoding.num_samples
    generations = []
    for i, source in enumerate(texts):
        samples, nfe = out.texts[i * k : (i + 1) * k], out.nfe[i * k : (i + 1) * k]
        pick = mbr_select(samples) if decoding.mbr else 0
        generations.append(Generation(source, samples[pick], nfe[pick], samples if k > 1 else None))
    scores = None if references is None else score_generations(generations, references, e2e)
    return GenerationResult(generations, scores)


def read_references(
    data: str | Path, source_field: str, reference_field: str
) -> tuple[list[str], list[list[str]]]:
    """The distinct sources of ``data`` in file order and the references of each."""
    rows = load_texts(data, source_field, target_field=reference_field)
    return group_references([str(s) for s in rows["source"]], [str(t) for t in rows["target"]])


def score_generations(
    generations: list[Generation], references: list[list[str]], e2e: bool = False
) -> ConditionalScores:
    """Score generations (one per source, in the order of ``references``) against their references, their
    samples' diversity when each has several, and with ``e2e`` the slot error rate."""
    several = all(g.candidates is not None for g in generations)
    return score_conditional(
        [g.source for g in generations],
        [g.text for g in generations],
        references,
        candidates=[g.candidates or [] for g in generations] if several else None,
        e2e=e2e,
    )
