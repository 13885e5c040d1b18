"""The documents and metric of the offline E2E tasks of the harness (``e2e_choice.yaml``, ``e2e_gen.yaml``).

The harness loads this file by its path (``!function e2e.choice_docs`` in a task YAML) and reads the CSV
(columns ``mr``, ``ref``: a meaning representation once per reference) itself; each task turns its rows into
one document per distinct MR, in file order.
"""

from __future__ import annotations

import random

import datasets
from rouge_score import rouge_scorer

CHOICES = 4
"""Candidates of an ``e2e_choice`` document: the MR's own reference and three of other MRs."""
SEED = 1234
"""The seed of the distractors and of the gold's place among the candidates (fixed: same documents every run)."""


def _grouped(rows: datasets.Dataset) -> tuple[list[str], list[list[str]]]:
    """The distinct MRs in file order and the references of each."""
    refs: dict[str, list[str]] = {}
    for mr, ref in zip(rows["mr"], rows["ref"], strict=True):
        refs.setdefault(str(mr), []).append(str(ref))
    return list(refs), list(refs.values())


def choice_docs(rows: datasets.Dataset) -> datasets.Dataset:
    """One multiple-choice document per MR: its first reference among the first references of three other
    MRs drawn with :data:`SEED`, at a place drawn too (``choices``, ``gold`` the index of its own)."""
    mrs, refs = _grouped(rows)
    if len(mrs) < CHOICES:
        raise ValueError(f"e2e_choice needs at least {CHOICES} distinct MRs, the file has {len(mrs)}")
    rng = random.Random(SEED)
    docs: dict[str, list] = {"mr": [], "choices": [], "gold": []}
    for i, mr in enumerate(mrs):
        others = rng.sample([j for j in range(len(mrs)) if j != i], CHOICES - 1)
        gold = rng.randrange(CHOICES)
        choices = [refs[j][0] for j in others]
        choices.insert(gold, refs[i][0])
        docs["mr"].append(mr)
        docs["choices"].append(choices)
        docs["gold"].append(gold)
    return datasets.Dataset.from_dict(docs)


def generation_docs(rows: datasets.Dataset) -> datasets.Dataset:
    """One generation document per MR, its first reference the target (the harness's BLEU takes the same
    number of references for every text, and E2E's MRs have from 1 to 40-odd)."""
    mrs, refs = _grouped(rows)
    return datasets.Dataset.from_dict({"mr": mrs, "ref": [r[0] for r in refs]})


_ROUGE = rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(references: list[str], predictions: list[str]) -> float:
    """ROUGE-L F1 of a text against its reference (rouge-score, as ``diffusionbert generate``), 0 to 100."""
    return 100.0 * _ROUGE.score(references[0], predictions[0])["rougeL"].fmeasure
