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

import torch

from ..checkpoint import load_model_dir
from ..data import load_texts
from ..errors import ConfigError
from ..sampling import pipeline_for
from ..utils.runtime import default_device
from .conditional import ConditionalScores, group_references, mbr_select, score_conditional

DEFAULT_LENGTH = 32
"""Target positions for a model trained without a fixed target window: such a model fills the window it is
given, and E2E references average ~28 tokens (a window of 48 made its texts ramble, docs/results-e2e.md)."""


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


def generate_file(
    checkpoint: str | Path,
    data: str | Path,
    source_field: str,
    *,
    reference_field: str | None = None,
    samples_per_source: int = 1,
    mbr: bool = False,
    e2e: bool = False,
    max_sources: int | None = None,
    sampler: str | None = None,
    steps: int = 64,
    length: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    guidance: float = 0.0,
    end: str | None = None,
    block_length: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> GenerationResult:
    """Generate for every distinct source of ``data`` (column ``source_field``) with a pair-trained model.

    ``samples_per_source`` (K) samples are drawn per source; the text kept is the first, or with ``mbr``
    the minimum-Bayes-risk one (K >= 2). With ``reference_field`` the texts are scored against all
    references of their source (and the K samples' diversity when K >= 2); ``e2e`` adds the slot error
    rate, the sources being E2E meaning representations. ``length`` is the target window (default: the
    model's ``data.target_window``, else :data:`DEFAULT_LENGTH`): a generated ``[SEP]`` ends a text earlier.
    ``guidance`` is classifier-free guidance (a model trained with ``training.source_dropout`` > 0).
    ``end="predicted"`` decodes each text in the length the model predicts from its source (a model trained
    with ``data.target_window``; see :mod:`~diffusionbert.diffusion.length`), ``"generated"`` ends it at
    its first generated [SEP]; the default is the predicted end wherever it applies. ``block_length``
    decodes each text in semi-autoregressive blocks (:mod:`~diffusionbert.sampling.blocks`).
    """
    _check_request(samples_per_source, mbr, e2e, reference_field, max_sources)
    loaded = load_model_dir(checkpoint, device=default_device(device))
    length = length if length is not None else loaded.target_window or DEFAULT_LENGTH
    pipe = pipeline_for(loaded)
    pipe.resolve_sampler(sampler)  # a wrong sampler fails before the data is read
    references: list[list[str]] | None = None
    if reference_field:
        sources, references = read_references(data, source_field, reference_field)
    else:
        sources = list(dict.fromkeys(str(t) for t in load_texts(data, source_field)["text"]))
    if max_sources is not None:
        sources = sources[:max_sources]
        references = references[:max_sources] if references is not None else None
    out = pipe(
        num_samples=samples_per_source,
        length=length,
        steps=steps,
        sampler=sampler,
        source=sources,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        guidance=guidance,
        end=end,
        block_length=block_length,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    generations = []
    for i, source in enumerate(sources):
        texts = out.texts[i * samples_per_source : (i + 1) * samples_per_source]
        nfe = out.nfe[i * samples_per_source : (i + 1) * samples_per_source]
        pick = mbr_select(texts) if mbr else 0
        several = texts if samples_per_source > 1 else None
        generations.append(Generation(source, texts[pick], nfe[pick], several))
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


def _check_request(
    samples_per_source: int, mbr: bool, e2e: bool, reference_field: str | None, max_sources: int | None
) -> None:
    """Reject impossible requests before any model or data is loaded."""
    if samples_per_source < 1:
        raise ConfigError(f"samples_per_source={samples_per_source} is not valid; allowed: an integer >= 1")
    if mbr and samples_per_source < 2:
        raise ConfigError("mbr chooses among several samples; allowed: samples_per_source >= 2 with mbr")
    if e2e and reference_field is None:
        raise ConfigError("the e2e task scores against references; allowed: a reference field with it")
    if max_sources is not None and max_sources < 1:
        raise ConfigError(f"max_sources={max_sources} is not valid; allowed: an integer >= 1")
