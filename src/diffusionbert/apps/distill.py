"""Sequence-level knowledge distillation: a teacher's texts in place of a pair file's references.

E2E lists about eight references per meaning representation, and a decoder that writes all positions at once
mixes them (the "multimodality" of non-autoregressive generation: "located in the city centre and in the city
centre"). Kim & Rush (2016) and Mask-Predict (Ghazvininejad et al. 2019) remove the mixing from the data: a
teacher (the autoregressive model, decoding with beam search) writes *one* text per source, and the student
trains on those pairs. :func:`distill` does the decoding and writes a pair file with the input's own column
names, so a run trains on it by changing ``data.train_file`` alone.

A teacher's text inherits the teacher's mistakes: the AR model of docs/results-e2e.md drops or garbles about
15 % of the slots, and a student learns them as data. With ``e2e=True`` each text is checked against its MR
by the slot rules of :mod:`~diffusionbert.evaluation.slots`; one with slot errors is replaced by the MR's
reference (from the same file) with the fewest, when that one has fewer: the targets keep the teacher's
regular wording where it is right and a human's where it is not.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import DecodingConfig
from ..errors import ConfigError
from ..evaluation.generation import SourceFile, generate_file, read_references
from ..evaluation.slots import check_slots, parse_mr
from ..methods import LEFT_TO_RIGHT
from ..sampling import Pipeline, load_pipeline
from ..utils.io import atomic_file
from ..utils.runtime import default_device

LEFT_TO_RIGHT_TEACHER_SAMPLER = "beam:4"
"""How a left-to-right (AR) teacher decodes unless told otherwise: beam search, as in sequence-level KD."""


@dataclass(frozen=True)
class DistillResult:
    """What :func:`distill` wrote: the file, its distinct sources and rows (a source has a row for each of
    its distinct samples), the sources whose every sample was empty (left out), the mean network calls per
    source, the decoding wall time and, with ``e2e``, the texts replaced by a reference with fewer slot
    errors."""

    out: Path
    sources: int
    rows: int
    empty: int
    nfe: float
    seconds: float
    replaced: int = 0


def distill(
    teacher: str | Path | Pipeline,
    sources: SourceFile,
    out: str | Path,
    config: DecodingConfig | None = None,
    *,
    target_field: str = "ref",
    e2e: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options: Any,
) -> DistillResult:
    """Decode every distinct source of ``sources`` with ``teacher`` and write the pairs to ``out``.

    Args:
        teacher: a model directory trained on pairs, or its loaded pipeline.
        sources: the file and its source column (``max_sources`` to distil only the first sources).
        out: a ``.csv`` or ``.jsonl`` file, written atomically, with the columns ``sources.source_field``
            and ``target_field``.
        config: the whole decoding instead of the teacher's own; ``options`` change it. A left-to-right
            teacher without a sampler given decodes with :data:`LEFT_TO_RIGHT_TEACHER_SAMPLER`. With
            ``num_samples`` K, each source gets a row per distinct non-empty sample.
        e2e: the sources are E2E MRs and the file's ``target_field`` holds their references: a text with
            slot errors gives way to the reference with the fewest, when it has fewer (see the module doc).

    Raises:
        ConfigError: an output extension other than .csv/.jsonl, ``out`` the input file itself, or the same
            column for source and target.
    """
    out = Path(out)
    if out.suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"{out}: a distilled file is .csv or .jsonl; allowed: one of those extensions")
    if out.resolve() == Path(sources.path).resolve():
        raise ConfigError(f"{out} is the --data file itself; allowed: another file (the sources are kept)")
    if target_field == sources.source_field:
        raise ConfigError(f"the target column {target_field!r} is the source column; allowed: another name")
    pipe = teacher if isinstance(teacher, Pipeline) else load_pipeline(teacher, default_device(device))
    if config is None and "sampler" not in options and pipe.kind == LEFT_TO_RIGHT:
        options["sampler"] = LEFT_TO_RIGHT_TEACHER_SAMPLER
    decoding = (config or pipe.decoding).replace(**options)
    started = time.perf_counter()
    result = generate_file(
        pipe,
        SourceFile(sources.path, sources.source_field, None, sources.max_sources),
        decoding,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    references = _references(sources, target_field) if e2e else {}
    rows: list[tuple[str, str]] = []
    empty = replaced = 0
    for generation in result.generations:
        texts = [t.strip() for t in (generation.candidates or [generation.text])]
        if e2e:
            checked = [
                _fewest_slot_errors(generation.source, t, references[generation.source]) for t in texts
            ]
            replaced += sum(new != old for new, old in zip(checked, texts, strict=True))
            texts = checked
        kept = [t for t in dict.fromkeys(texts) if t]
        empty += not kept
        rows += [(generation.source, text) for text in kept]
    atomic_file(
        out,
        lambda tmp: tmp.write_text(
            _pair_file(rows, out.suffix, sources.source_field, target_field), encoding="utf-8"
        ),
    )
    nfe = sum(g.nfe for g in result.generations) / max(len(result.generations), 1)
    return DistillResult(out, len(result.generations), len(rows), empty, nfe, seconds, replaced)


def _references(sources: SourceFile, target_field: str) -> dict[str, list[str]]:
    """Each distinct source's references in the file (its ``target_field`` column)."""
    names, references = read_references(sources.path, sources.source_field, target_field)
    return dict(zip(names, references, strict=True))


def _fewest_slot_errors(mr: str, text: str, references: list[str]) -> str:
    """``text``, or the first of ``references`` with the fewest slot errors against ``mr`` when it has fewer."""
    slots = parse_mr(mr)
    errors = check_slots(slots, text).errors
    if errors == 0 or not references:
        return text
    counts = [check_slots(slots, reference).errors for reference in references]
    best = min(counts)
    return references[counts.index(best)].strip() if best < errors else text


def _pair_file(rows: list[tuple[str, str]], suffix: str, source_field: str, target_field: str) -> str:
    """The text of a pair file: CSV with a header row (CRLF, as E2E's files), or one JSON object a line."""
    if suffix == ".jsonl":
        return "".join(
            json.dumps({source_field: s, target_field: t}, ensure_ascii=False) + "\n" for s, t in rows
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([source_field, target_field])
    writer.writerows(rows)
    return buffer.getvalue()
