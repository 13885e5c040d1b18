"""Text-generation metrics for comparing diffusion LMs, as in DiffusionBERT (arXiv 2211.15029, Table 2).

The paper scores 1,000 unconditional samples with
- BLEU against the test set: each sample is scored by sentence BLEU with *every* test sentence as a
  reference, and the scores are averaged (quality: higher is better);
- self-BLEU: each sample is scored against all the *other* samples, averaged (diversity: lower is more
  diverse);
plus, commonly alongside, dist-n, unigram entropy and per-word perplexity. Everything here is pure Python
on token lists; no model code.

Conventions (fixed so numbers are comparable across runs and with the usual ``nltk``-based scripts):
- tokens: :func:`tokenize_for_bleu` — lowercase, then every punctuation character (BERT's definition)
  becomes its own token, then split on whitespace;
- n-gram order: ``max_n=4`` with uniform weights ``1/max_n`` (BLEU-4);
- smoothing: ``"epsilon"`` by default (Chen & Cherry 2014 method 1, ``nltk`` ``SmoothingFunction().method1``),
  the usual choice for sentence-level BLEU/self-BLEU (Texygen);
- BLEU is 0 when no unigram matches, whatever the smoothing (as ``nltk``): smoothing only rescues
  higher orders;
- a hypothesis with fewer than n tokens has n-gram precision 0/1 for that order (as ``nltk``), so
  smoothing applies to it; with ``"none"`` its BLEU is 0.
"""

from __future__ import annotations

import math
import unicodedata
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from ..errors import ConfigError, DataError, invalid_choice

Smoothing = Literal["epsilon", "add1", "none"]
SMOOTHINGS: tuple[str, ...] = ("epsilon", "add1", "none")
EPSILON = 0.1
"""The count given to an n-gram order with no matches under ``smoothing="epsilon"`` (nltk's default)."""

NGram = tuple[str, ...]


# --------------------------------------------------------------------------------------------- tokens


@lru_cache(maxsize=4096)
def _is_punctuation(char: str) -> bool:
    """BERT's BasicTokenizer rule: ASCII non-alphanumeric printables and every Unicode ``P*`` category."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def tokenize_for_bleu(text: str) -> list[str]:
    """Lowercase, split off every punctuation character as its own token, then split on whitespace.

    Why: references (LM1B) are whitespace-tokenised with punctuation already separated ("he said ."),
    while samples decoded from a BERT tokenizer glue punctuation back on ("he said."). Splitting the
    characters BERT's own basic tokenizer splits (ASCII symbols and Unicode punctuation) makes both sides
    agree, and it is idempotent on already-separated text. Accents are kept (no NFD stripping).
    Example: ``"Don't stop, OK?" -> ["don", "'", "t", "stop", ",", "ok", "?"]``.
    """
    lowered = text.lower()
    if not any(_is_punctuation(c) for c in lowered):
        return lowered.split()
    return "".join(f" {c} " if _is_punctuation(c) else c for c in lowered).split()


def _ngrams(tokens: Sequence[str], n: int) -> Counter[NGram]:
    """Counts of the contiguous n-grams of ``tokens`` (empty when there are fewer than n tokens)."""
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


# ----------------------------------------------------------------------------------------- validation


def _check_options(max_n: int, smoothing: str) -> None:
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ConfigError(f"max_n must be an integer >= 1, got {max_n!r}")
    if smoothing not in SMOOTHINGS:
        raise invalid_choice("smoothing", smoothing, SMOOTHINGS)


def _check_texts(name: str, texts: Sequence[str], minimum: int = 1) -> None:
    if isinstance(texts, str):
        raise DataError(f"{name} must be a list of strings, got a single string")
    if len(texts) < minimum:
        raise DataError(f"{name} is empty" if minimum == 1 else f"{name} needs at least {minimum} texts")


def _check_tokens(name: str, tokens: Sequence[str]) -> None:
    if isinstance(tokens, str):
        raise DataError(f"{name} must be a list of tokens, got a string (use tokenize_for_bleu)")


# ----------------------------------------------------------------------------------------------- BLEU


def _closest_length(sorted_lengths: Sequence[int], hyp_len: int) -> int:
    """The reference length closest to ``hyp_len``; ties go to the shorter (Papineni, nltk)."""
    i = bisect_left(sorted_lengths, hyp_len)
    candidates = sorted_lengths[max(i - 1, 0) : i + 1]
    return min(candidates, key=lambda r: (abs(r - hyp_len), r))


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    """1 when the hypothesis is longer than the reference length, else exp(1 − r/c); 0 for c = 0."""
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1.0 - ref_len / hyp_len)


def _bleu_from_stats(
    matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int, smoothing: str
) -> float:
    """BLEU from clipped match counts and hypothesis n-gram totals per order (index 0 = unigrams).

    p_n = m_n / max(1, t_n), geometric mean with uniform weights, times the brevity penalty.
    Smoothing of p_n:
    - ``"none"``: any m_n = 0 makes BLEU 0;
    - ``"epsilon"``: m_n = 0 becomes ε / max(1, t_n) with ε = 0.1 (Chen & Cherry method 1);
    - ``"add1"``: for n ≥ 2, p_n = (m_n + 1) / (max(1, t_n) + 1) (Lin & Och 2004, Chen & Cherry method 2;
      unigrams are not smoothed, as in current nltk).
    With m_1 = 0 (no shared word, or an empty hypothesis) BLEU is 0 under every smoothing.
    """
    if matches[0] == 0:
        return 0.0
    log_sum = 0.0
    for order, (m, t) in enumerate(zip(matches, totals, strict=True)):
        d = max(1, t)
        if smoothing == "add1" and order > 0:
            p = (m + 1) / (d + 1)
        elif m > 0:
            p = m / d
        elif smoothing == "epsilon":
            p = EPSILON / d
        else:
            return 0.0
        log_sum += math.log(p)
    return _brevity_penalty(hyp_len, ref_len) * math.exp(log_sum / len(matches))


def _max_counts(token_lists: Sequence[Sequence[str]], max_n: int) -> list[Counter[NGram]]:
    """Per order n, the maximum count of each n-gram over the token lists (the clipping ceiling)."""
    tables: list[Counter[NGram]] = [Counter() for _ in range(max_n)]
    for tokens in token_lists:
        for n, table in enumerate(tables, start=1):
            # Not ``table |= ...``: Counter's in-place union rescans the whole table on every call.
            for g, c in _ngrams(tokens, n).items():
                if c > table[g]:
                    table[g] = c
    return tables


def _clipped_stats(tokens: Sequence[str], ceilings: Sequence[Counter[NGram]]) -> tuple[list[int], list[int]]:
    """Clipped matches min(count, ceiling) and hypothesis n-gram totals for each order."""
    matches, totals = [], []
    for n, ceiling in enumerate(ceilings, start=1):
        counts = _ngrams(tokens, n)
        matches.append(sum(min(c, ceiling[g]) for g, c in counts.items() if g in ceiling))
        totals.append(sum(counts.values()))
    return matches, totals


def _pair_stats(
    caller: str, what: str, hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int
) -> tuple[list[int], list[int], int]:
    """Checked clipped n-gram matches, n-gram totals and closest reference length of one hypothesis."""
    _check_tokens(what, hypothesis)
    if len(references) == 0:
        raise DataError(f"{caller}: every hypothesis needs at least one reference")
    for ref in references:
        _check_tokens("each reference", ref)
    matches, totals = _clipped_stats(hypothesis, _max_counts(references, max_n))
    return matches, totals, _closest_length(sorted({len(r) for r in references}), len(hypothesis))


def sentence_bleu(
    hypothesis: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    smoothing: Smoothing = "epsilon",
) -> float:
    """Multi-reference sentence BLEU of one tokenised hypothesis, in [0, 1].

    Clipped n-gram precision for n = 1..max_n (each hypothesis n-gram count is clipped by its *maximum*
    count in any single reference), geometric mean with uniform weights, brevity penalty against the
    reference length closest to the hypothesis length (ties → the shorter one). Smoothing as in
    :func:`_bleu_from_stats`. Matches ``nltk.translate.bleu_score.sentence_bleu`` with the corresponding
    ``SmoothingFunction`` method (none → method0 up to its float_info.min, epsilon → method1,
    add1 → method2).
    """
    _check_options(max_n, smoothing)
    matches, totals, ref_len = _pair_stats("sentence_bleu", "hypothesis", hypothesis, references, max_n)
    return _bleu_from_stats(matches, totals, len(hypothesis), ref_len, smoothing)


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]],
    references_per_hypothesis: Sequence[Sequence[Sequence[str]]],
    max_n: int = 4,
    smoothing: Smoothing = "epsilon",
) -> float:
    """Corpus BLEU (Papineni et al. 2002): clipped matches, n-gram totals and lengths summed, then one BLEU.

    ``references_per_hypothesis[i]`` is the (non-empty) reference list of ``hypotheses[i]``. The corpus
    brevity penalty uses c = Σ hypothesis lengths and r = Σ closest reference lengths. Unlike nltk's
    ``corpus_bleu``, which adds max(1, ·) per sentence, n-gram totals are summed raw, so hypotheses
    shorter than n add nothing to the order-n denominator (the two agree otherwise).
    """
    _check_options(max_n, smoothing)
    if isinstance(hypotheses, str) or len(hypotheses) == 0:
        raise DataError("corpus_bleu needs a non-empty list of tokenised hypotheses")
    if len(hypotheses) != len(references_per_hypothesis):
        raise DataError(
            f"corpus_bleu got {len(hypotheses)} hypotheses but {len(references_per_hypothesis)} reference lists"
        )
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hypothesis, references in zip(hypotheses, references_per_hypothesis, strict=True):
        m, t, closest = _pair_stats("corpus_bleu", "each hypothesis", hypothesis, references, max_n)
        matches = [a + b for a, b in zip(matches, m, strict=True)]
        totals = [a + b for a, b in zip(totals, t, strict=True)]
        hyp_len += len(hypothesis)
        ref_len += closest
    return _bleu_from_stats(matches, totals, hyp_len, ref_len, smoothing)


def bleu_against_references(
    samples: Sequence[str],
    references: Sequence[str],
    max_n: int = 4,
    smoothing: Smoothing = "epsilon",
) -> float:
    """The paper's test-set BLEU: mean over samples of sentence BLEU with *all* references at once.

    Both sides go through :func:`tokenize_for_bleu`. Exactly equal to
    ``mean(sentence_bleu(tok(s), [tok(r) for r in references]) for s in samples)``, but the reference
    side is built once: clipping only needs, per n-gram, its maximum count over the references, and the
    brevity penalty only needs the set of reference lengths (closest one found by bisection). So the cost
    is O(total reference n-grams + total sample n-grams), not O(samples × references).
    """
    _check_options(max_n, smoothing)
    _check_texts("samples", samples)
    _check_texts("references", references)
    ref_tokens = [tokenize_for_bleu(r) for r in references]
    ceilings = _max_counts(ref_tokens, max_n)
    lengths = sorted({len(r) for r in ref_tokens})
    scores = []
    for sample in samples:
        tokens = tokenize_for_bleu(sample)
        matches, totals = _clipped_stats(tokens, ceilings)
        ref_len = _closest_length(lengths, len(tokens))
        scores.append(_bleu_from_stats(matches, totals, len(tokens), ref_len, smoothing))
    return math.fsum(scores) / len(scores)


def self_bleu(samples: Sequence[str], max_n: int = 4, smoothing: Smoothing = "epsilon") -> float:
    """Mean over samples of sentence BLEU of sample i against every *other* sample (lower = more diverse).

    Exact leave-one-out in O(total n-grams): for each n-gram we keep the largest count over samples, which
    sample holds it, and the second-largest count over the remaining samples (equal to the largest when
    two samples tie). The clipping ceiling for sample i is then the second count if i holds the largest,
    else the largest. For the brevity penalty, the reference lengths are the length multiset minus one
    copy of sample i's length: if that length occurs again it is the closest (distance 0), otherwise the
    candidates are its neighbours in the sorted distinct lengths (ties → shorter). Samples are compared
    by position, so duplicated texts count as references for each other.
    """
    _check_options(max_n, smoothing)
    _check_texts("samples", samples, minimum=2)
    tokens = [tokenize_for_bleu(s) for s in samples]
    counts = [[_ngrams(t, n) for n in range(1, max_n + 1)] for t in tokens]

    # top[n][g] = [largest count, index of the sample holding it, largest count among the other samples]
    top: list[dict[NGram, list[int]]] = [{} for _ in range(max_n)]
    for i, per_order in enumerate(counts):
        for table, sample_counts in zip(top, per_order, strict=True):
            for g, c in sample_counts.items():
                entry = table.get(g)
                if entry is None:
                    table[g] = [c, i, 0]
                elif c > entry[0]:
                    entry[2], entry[0], entry[1] = entry[0], c, i
                elif c > entry[2]:
                    entry[2] = c

    length_counts = Counter(len(t) for t in tokens)
    lengths = sorted(length_counts)
    scores = []
    for i, (sample_tokens, per_order) in enumerate(zip(tokens, counts, strict=True)):
        matches = []
        for table, sample_counts in zip(top, per_order, strict=True):
            m = 0
            for g, c in sample_counts.items():
                best, holder, second = table[g]
                m += min(c, second if holder == i else best)
            matches.append(m)
        totals = [sum(c.values()) for c in per_order]
        hyp_len = len(sample_tokens)
        if length_counts[hyp_len] > 1:
            ref_len = hyp_len
        else:
            k = lengths.index(hyp_len)
            ref_len = _closest_length(lengths[:k] + lengths[k + 1 :], hyp_len)
        scores.append(_bleu_from_stats(matches, totals, hyp_len, ref_len, smoothing))
    return math.fsum(scores) / len(scores)


# ------------------------------------------------------------------------------------------- diversity


def distinct_n(samples: Sequence[str], n: int) -> float:
    """dist-n: distinct n-grams / total n-grams, pooled over all samples (n-grams never span two samples).

    Tokens from :func:`tokenize_for_bleu`. In (0, 1]; higher = more diverse.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"distinct_n: n must be an integer >= 1, got {n!r}")
    _check_texts("samples", samples)
    pooled: Counter[NGram] = Counter()
    for sample in samples:
        pooled.update(_ngrams(tokenize_for_bleu(sample), n))
    total = sum(pooled.values())
    if total == 0:
        raise DataError(f"distinct_n: no sample has {n} or more tokens")
    return len(pooled) / total


def unigram_entropy(samples: Sequence[str]) -> float:
    """Entropy in nats (natural log) of the pooled unigram distribution of the samples' tokens.

    H = −Σ_w p(w) log p(w) with p(w) = count(w) / total over :func:`tokenize_for_bleu` tokens; divide by
    log 2 for bits. Higher = a more spread-out vocabulary.
    """
    _check_texts("samples", samples)
    pooled: Counter[str] = Counter()
    for sample in samples:
        pooled.update(tokenize_for_bleu(sample))
    total = sum(pooled.values())
    if total == 0:
        raise DataError("unigram_entropy: the samples contain no tokens")
    return -math.fsum(c / total * math.log(c / total) for c in pooled.values())


# ------------------------------------------------------------------------------------------ perplexity


def perplexity(total_nll: float, count: int) -> float:
    """exp(total_nll / count): perplexity from a summed negative log-likelihood (nats) and a unit count.

    For per-word PPL pass ``count = per_word_count(texts, add_eos=True)``; for per-token PPL, the token
    count. Returns ``inf`` when the exponent overflows.
    """
    if count <= 0:
        raise DataError(f"perplexity needs a positive count, got {count}")
    if not math.isfinite(total_nll):
        raise DataError(f"perplexity needs a finite total NLL, got {total_nll}")
    try:
        return math.exp(total_nll / count)
    except OverflowError:
        return math.inf


def per_word_count(texts: Sequence[str], add_eos: bool) -> int:
    """Number of whitespace-separated words in ``texts``, plus one end-of-sentence per text if ``add_eos``.

    The denominator of per-word perplexity, "exp(total NLL / (whitespace words + one EOS per sentence))",
    so models with different subword tokenizers are compared per the same unit. Plain ``str.split()``
    on the raw text (no lowercasing, no punctuation splitting), which matches LM1B's own tokenisation.
    """
    _check_texts("texts", texts)
    return sum(len(t.split()) for t in texts) + (len(texts) if add_eos else 0)
