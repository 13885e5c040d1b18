"""Metrics of conditional generation: one text generated per source, scored against that source's references.

A data-to-text set such as E2E NLG lists each source (a meaning representation) once per reference; the
metrics here first group the references by source (:func:`group_references`), then score one hypothesis per
source against all of its references, as the E2E challenge does:

- **BLEU**: corpus BLEU-4 over all sources with every reference of a source, by ``sacrebleu`` (its signature
  is reported: mteval-v13a tokenisation, lowercased, variable number of references);
- **NIST**: corpus NIST-5 (Doddington 2002): matched n-grams weighted by their information in the references,
  ``info(w_1..w_n) = log2(count(w_1..w_{n-1}) / count(w_1..w_n))`` (for unigrams, the number of reference
  words over the count of the word), summed per order over the hypothesis n-grams and divided by their
  number, times a brevity penalty ``exp(beta * log(min(1, L_hyp / L_ref))^2)`` with ``beta`` set so that the
  penalty is 0.5 at a length ratio of 2/3, ``L_ref`` the average reference length summed over sources;
- **ROUGE-L**: the longest-common-subsequence F1 of ``rouge-score`` (its own lowercasing tokenizer), the best
  over a source's references, averaged over sources;
- **CIDEr**: CIDEr-D (Vedantam et al. 2015): per order n = 1..4, TF-IDF vectors of n-grams (document
  frequencies over the sources' reference sets), the hypothesis' counts clipped by the reference's, cosine
  similarity times a Gaussian length penalty ``exp(-(l_hyp - l_ref)^2 / (2 * 6^2))``, averaged over a
  source's references and the four orders, times 10, averaged over sources.

NIST and CIDEr are written here (no maintained package covers them without Java); they tokenise like BLEU.
With several samples per source, :func:`mbr_select` picks one (minimum Bayes risk under BLEU) and
:func:`score_conditional` adds their diversity (self-BLEU within a source, distinct-2; see :mod:`.metrics`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from ..errors import ConfigError, DataError
from .metrics import distinct_n, self_bleu, sentence_bleu, tokenize_for_bleu
from .slots import slot_error_rate

NGram = tuple[str, ...]
NIST_ORDER = 5
CIDER_ORDER = 4
CIDER_SIGMA = 6.0
_NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2  # brevity penalty 0.5 at hypothesis/reference length 2/3
_TOKENIZE = Tokenizer13a()


def tokenize(text: str) -> list[str]:
    """The tokens BLEU sees (mteval-v13a rules, lowercased), shared by NIST and CIDEr."""
    return _TOKENIZE(text.lower()).split()


def group_references(sources: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Unique sources in order of first appearance, and the references of each (a row per reference in)."""
    if len(sources) != len(references):
        raise DataError(
            f"{len(sources)} sources but {len(references)} references; allowed: one source per row"
        )
    grouped: dict[str, list[str]] = defaultdict(list)
    for source, reference in zip(sources, references, strict=True):
        grouped[source].append(reference)
    return list(grouped), list(grouped.values())


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if not hypotheses:
        raise ConfigError("no hypotheses to score; allowed: one text per source, at least one source")
    if len(hypotheses) != len(references):
        raise ConfigError(
            f"{len(hypotheses)} hypotheses for {len(references)} sources; allowed: one text per source"
        )
    if any(not refs for refs in references):
        raise DataError("a source has no reference; allowed: at least one reference per source")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, str]:
    """Corpus BLEU-4 (0-100) of one hypothesis per source against all its references, and sacrebleu's
    signature of the settings."""
    _check(hypotheses, references)
    most = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]
    bleu = BLEU(lowercase=True, tokenize="13a")
    return bleu.corpus_score(list(hypotheses), streams).score, str(bleu.get_signature())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[NGram]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_nist(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = NIST_ORDER
) -> float:
    """Corpus NIST-``max_n`` of one hypothesis per source against all its references (see module doc)."""
    _check(hypotheses, references)
    ref_tokens = [[tokenize(r) for r in refs] for refs in references]
    counts: Counter[NGram] = Counter()
    for refs in ref_tokens:
        for tokens in refs:
            for n in range(1, max_n + 1):
                counts.update(_ngrams(tokens, n))
    total_words = sum(len(tokens) for refs in ref_tokens for tokens in refs)

    def info(ngram: NGram) -> float:
        context = counts[ngram[:-1]] if len(ngram) > 1 else total_words
        return math.log2(context / counts[ngram])

    matched_info, hyp_ngrams = [0.0] * max_n, [0] * max_n
    hyp_length, ref_length = 0, 0.0
    for hypothesis, refs in zip(hypotheses, ref_tokens, strict=True):
        tokens = tokenize(hypothesis)
        hyp_length += len(tokens)
        ref_length += sum(len(r) for r in refs) / len(refs)
        for n in range(1, max_n + 1):
            hyp = _ngrams(tokens, n)
            ceiling: Counter[NGram] = Counter()
            for r in refs:
                ceiling |= _ngrams(r, n)
            hyp_ngrams[n - 1] += sum(hyp.values())
            matched_info[n - 1] += sum(info(g) * min(c, ceiling[g]) for g, c in hyp.items() if g in ceiling)
    score = sum(m / h for m, h in zip(matched_info, hyp_ngrams, strict=True) if h)
    ratio = min(1.0, hyp_length / ref_length) if ref_length else 0.0
    return score * (math.exp(-_NIST_BETA * math.log(ratio) ** 2) if ratio > 0 else 0.0)


def corpus_rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over sources of the best ROUGE-L F1 (0-1) of the hypothesis against one of its references."""
    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [
        scorer.score_multi(list(refs), hyp)["rougeL"].fmeasure
        for hyp, refs in zip(hypotheses, references, strict=True)
    ]
    return sum(best) / len(best)


def corpus_cider(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = CIDER_ORDER,
    sigma: float = CIDER_SIGMA,
) -> float:
    """CIDEr-D of one hypothesis per source against its references (see module doc); document frequencies
    are counted over the sources' reference sets, so a corpus of one source scores 0."""
    _check(hypotheses, references)
    ref_tokens = [[tokenize(r) for r in refs] for refs in references]
    document_frequency: Counter[NGram] = Counter()
    for refs in ref_tokens:
        document_frequency.update({g for r in refs for n in range(1, max_n + 1) for g in _ngrams(r, n)})
    log_documents = math.log(len(references))

    def tf_idf(counts: Counter[NGram]) -> dict[NGram, float]:
        return {g: c * (log_documents - math.log(max(1.0, document_frequency[g]))) for g, c in counts.items()}

    total = 0.0
    for hypothesis, refs in zip(hypotheses, ref_tokens, strict=True):
        tokens = tokenize(hypothesis)
        per_order = []
        for n in range(1, max_n + 1):
            hyp = tf_idf(_ngrams(tokens, n))
            hyp_norm = math.sqrt(sum(v * v for v in hyp.values()))
            similarity = 0.0
            for r in refs:
                ref = tf_idf(_ngrams(r, n))
                ref_norm = math.sqrt(sum(v * v for v in ref.values()))
                dot = sum(min(v, ref[g]) * ref[g] for g, v in hyp.items() if g in ref)  # clipped (CIDEr-D)
                if hyp_norm and ref_norm:
                    penalty = math.exp(-((len(tokens) - len(r)) ** 2) / (2 * sigma**2))
                    similarity += penalty * dot / (hyp_norm * ref_norm)
            per_order.append(similarity / len(refs))
        total += 10.0 * sum(per_order) / max_n
    return total / len(hypotheses)


def mbr_select(candidates: Sequence[str]) -> int:
    """Minimum-Bayes-risk choice among a source's samples with BLEU as the utility (as DiffuSeq decodes): the
    index of the candidate with the highest mean sentence BLEU against the other candidates (an empty text
    has utility 0; ties go to the first)."""
    if not candidates:
        raise ConfigError("mbr_select needs at least one candidate")
    tokens = [tokenize_for_bleu(c) for c in candidates]

    def utility(i: int, j: int) -> float:
        return sentence_bleu(tokens[i], [tokens[j]]) if tokens[i] and tokens[j] else 0.0

    others = range(len(candidates))
    risks = [sum(utility(i, j) for j in others if j != i) for i in others]
    return max(others, key=lambda i: (risks[i], -i))


@dataclass(frozen=True)
class ConditionalScores:
    """Corpus metrics of one text per source (see the module doc), and the diversity of the samples per
    source when there are several: mean self-BLEU within a source (0-1, lower is more diverse) and distinct
    2-grams over all samples. ``ser`` is the E2E slot error rate (:mod:`.slots`) when the sources are MRs."""

    sources: int
    bleu: float
    bleu_signature: str
    nist: float
    rouge_l: float
    cider: float
    ser: float | None = None
    self_bleu: float | None = None
    distinct_2: float | None = None

    def table(self) -> str:
        """The scores as aligned ``name  value`` lines."""
        rows = [
            ("sources", str(self.sources)),
            ("BLEU", f"{self.bleu:.2f}  ({self.bleu_signature})"),
            ("NIST", f"{self.nist:.3f}"),
            ("ROUGE-L", f"{100 * self.rouge_l:.2f}"),
            ("CIDEr", f"{self.cider:.3f}"),
        ]
        rows += [("SER", f"{100 * self.ser:.2f} %")] if self.ser is not None else []
        if self.self_bleu is not None and self.distinct_2 is not None:
            rows += [
                ("self-BLEU / source", f"{100 * self.self_bleu:.2f}"),
                ("dist-2", f"{self.distinct_2:.3f}"),
            ]
        return "\n".join(f"{name:<20}{value}" for name, value in rows)


def score_conditional(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    candidates: Sequence[Sequence[str]] | None = None,
    e2e: bool = False,
) -> ConditionalScores:
    """Score one hypothesis per source against its references; with ``candidates`` (the samples of each
    source, at least two) also their diversity; with ``e2e`` the slot error rate of the hypotheses against
    the sources read as E2E meaning representations."""
    bleu, signature = corpus_bleu(hypotheses, references)
    diversity: dict[str, float] = {}
    if candidates is not None:
        if any(len(c) < 2 for c in candidates):
            raise ConfigError("diversity needs at least 2 samples per source")
        diversity = {
            "self_bleu": sum(self_bleu(c) for c in candidates) / len(candidates),
            "distinct_2": distinct_n([text for c in candidates for text in c], 2),
        }
    return ConditionalScores(
        sources=len(hypotheses),
        bleu=bleu,
        bleu_signature=signature,
        nist=corpus_nist(hypotheses, references),
        rouge_l=corpus_rouge_l(hypotheses, references),
        cider=corpus_cider(hypotheses, references),
        ser=slot_error_rate(sources, hypotheses) if e2e else None,
        **diversity,
    )
