"""Text metrics against hand-computed values on tiny examples, and the fast paths against brute force.

nltk is not installed in this environment, so every expected value is worked out in the comments.
"""

from __future__ import annotations

import math
import random

import pytest

from diffusionbert.errors import ConfigError, DataError
from diffusionbert.evaluation.metrics import (
    bleu_against_references,
    corpus_bleu,
    distinct_n,
    per_word_count,
    perplexity,
    self_bleu,
    sentence_bleu,
    tokenize_for_bleu,
    unigram_entropy,
)

SMOOTHINGS = ("epsilon", "add1", "none")


def toks(text: str) -> list[str]:
    return text.split()


# ------------------------------------------------------------------------------------------- tokenise


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize_for_bleu("Don't stop, OK?") == ["don", "'", "t", "stop", ",", "ok", "?"]
    assert tokenize_for_bleu("  The  cat\tsat\n") == ["the", "cat", "sat"]
    assert tokenize_for_bleu("") == []
    # A BERT-decoded sample and the LM1B-tokenised reference agree; already-split text is unchanged.
    assert tokenize_for_bleu("He said, \u201chi\u201d.") == tokenize_for_bleu("he said , \u201c hi \u201d .")
    assert tokenize_for_bleu("$5 + 3") == ["$", "5", "+", "3"]
    assert tokenize_for_bleu("Café") == ["café"]


# ------------------------------------------------------------------------------------- sentence BLEU


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_perfect_match_is_one(smoothing: str) -> None:
    hyp = toks("the quick brown fox jumps")
    assert sentence_bleu(hyp, [hyp], smoothing=smoothing) == pytest.approx(1.0)
    assert sentence_bleu(hyp, [toks("something else entirely"), hyp], smoothing=smoothing) == pytest.approx(
        1.0
    )


# hyp "the cat sat on the mat" vs ref "the cat is on the mat" (both 6 tokens):
#   1-grams: the×2 cat sat on mat — clipped matches the 2, cat 1, on 1, mat 1, sat 0      → p1 = 5/6
#   2-grams: the·cat cat·sat sat·on on·the the·mat — matches the·cat on·the the·mat        → p2 = 3/5
#   3-grams: the·cat·sat cat·sat·on sat·on·the on·the·mat — matches on·the·mat            → p3 = 1/4
#   4-grams: 3 of them, none in the reference                                              → p4 = 0/3
#   BP: c = r = 6 → exp(1 − 6/6) = 1
HYP = toks("the cat sat on the mat")
REF = toks("the cat is on the mat")


def test_partial_overlap_by_hand() -> None:
    # no smoothing: p4 = 0 → BLEU-4 = 0; BLEU-3 = (5/6 · 3/5 · 1/4)^(1/3) = (1/8)^(1/3) = 1/2
    assert sentence_bleu(HYP, [REF], smoothing="none") == 0.0
    assert sentence_bleu(HYP, [REF], max_n=3, smoothing="none") == pytest.approx(0.5)
    # BLEU-2 = (5/6 · 3/5)^(1/2) = (1/2)^(1/2)
    assert sentence_bleu(HYP, [REF], max_n=2, smoothing="none") == pytest.approx(math.sqrt(0.5))
    # BLEU-1 = 5/6
    assert sentence_bleu(HYP, [REF], max_n=1, smoothing="none") == pytest.approx(5 / 6)
    # epsilon: p4 = 0.1/3 → (5/6 · 3/5 · 1/4 · 0.1/3)^(1/4) = (1.5/360)^(1/4) = (1/240)^(1/4) ≈ 0.2541
    assert sentence_bleu(HYP, [REF], smoothing="epsilon") == pytest.approx((1 / 240) ** 0.25)
    # add1 (n ≥ 2): p2 = 4/6, p3 = 2/5, p4 = 1/4 → (5/6 · 2/3 · 2/5 · 1/4)^(1/4) = (1/18)^(1/4)
    assert sentence_bleu(HYP, [REF], smoothing="add1") == pytest.approx((1 / 18) ** 0.25)


def test_clipping_the_the_the() -> None:
    # Papineni's example: "the"×7 vs refs "the cat is on the mat" / "there is a cat on the mat".
    # "the" occurs at most 2 times in one reference → clipped unigram precision 2/7.
    # Reference lengths 6 and 7, c = 7 → closest r = 7 → BP = exp(1 − 7/7) = 1.
    hyp = ["the"] * 7
    refs = [REF, toks("there is a cat on the mat")]
    assert sentence_bleu(hyp, refs, max_n=1) == pytest.approx(2 / 7)
    # BLEU-2: bigram the·the never occurs → p2 = 0; epsilon → 0.1/6; BLEU = (2/7 · 0.1/6)^(1/2)
    assert sentence_bleu(hyp, refs, max_n=2) == pytest.approx(math.sqrt(2 / 7 * 0.1 / 6))


def test_brevity_penalty_closest_reference_length() -> None:
    # c = 4, reference lengths 5 and 8 → r = 5; every n-gram of "a b c d" is in a reference, p_n = 1
    # → BLEU = exp(1 − 5/4) = exp(−1/4) ≈ 0.7788 (with r = 8 it would be exp(−1)).
    hyp = toks("a b c d")
    refs = [toks("a b c d e"), toks("a b c d e f g h")]
    assert sentence_bleu(hyp, refs) == pytest.approx(math.exp(-0.25))
    assert sentence_bleu(hyp, refs[::-1]) == pytest.approx(math.exp(-0.25))


def test_brevity_penalty_ties_go_to_shorter_reference() -> None:
    # c = 3, reference lengths 2 and 4 are both at distance 1 → shorter r = 2 → c > r → BP = 1.
    # Unigram ceilings a 1, b 1, c 1 → p1 = 3/3 → BLEU-1 = 1 (with r = 4 it would be exp(−1/3) ≈ 0.72).
    hyp = toks("a b c")
    assert sentence_bleu(hyp, [toks("a b"), toks("a b c d")], max_n=1) == pytest.approx(1.0)
    assert sentence_bleu(hyp, [toks("a b c d"), toks("a b")], max_n=1) == pytest.approx(1.0)


def test_short_hypothesis_and_zero_cases() -> None:
    # "a b" vs "a b", BLEU-4: p1 = 2/2, p2 = 1/1, no 3-/4-grams → 0/1 each (as nltk) → epsilon 0.1/1
    # → (1 · 1 · 0.1 · 0.1)^(1/4) = 0.1^(1/2); add1 → (1 · 1 · 1/2 · 1/2)^(1/4) = 0.5^(1/2); none → 0.
    hyp = toks("a b")
    assert sentence_bleu(hyp, [hyp]) == pytest.approx(math.sqrt(0.1))
    assert sentence_bleu(hyp, [hyp], smoothing="add1") == pytest.approx(math.sqrt(0.5))
    assert sentence_bleu(hyp, [hyp], smoothing="none") == 0.0
    for smoothing in SMOOTHINGS:
        assert sentence_bleu([], [REF], smoothing=smoothing) == 0.0  # empty hypothesis: BP = 0
        assert sentence_bleu(toks("x y z"), [REF], smoothing=smoothing) == 0.0  # no shared word


# ----------------------------------------------------------------------------------------- corpus BLEU


def test_corpus_bleu_sums_counts_then_scores() -> None:
    # hyp1 = HYP vs REF: unigrams 5/6, bigrams 3/5, c 6, r 6.  hyp2 "a dog" vs "a dog barked": 2/2, 1/1, c 2, r 3.
    # Corpus: p1 = 7/8, p2 = 4/6, c = 8, r = 9 → exp(1 − 9/8) · (7/8 · 2/3)^(1/2)
    got = corpus_bleu([HYP, toks("a dog")], [[REF], [toks("a dog barked")]], max_n=2, smoothing="none")
    assert got == pytest.approx(math.exp(-1 / 8) * math.sqrt(7 / 8 * 2 / 3))
    # A one-token hypothesis adds nothing to the bigram total (Papineni; nltk would add 1):
    # p1 = (5 + 1)/(6 + 1) = 6/7, p2 = 3/5, c = r = 7 → (6/7 · 3/5)^(1/2)
    got = corpus_bleu([HYP, ["dog"]], [[REF], [["dog"]]], max_n=2, smoothing="none")
    assert got == pytest.approx(math.sqrt(6 / 7 * 3 / 5))


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_corpus_of_one_is_sentence_bleu(smoothing: str) -> None:
    refs = [REF, toks("a cat sat on a mat")]
    assert corpus_bleu([HYP], [refs], smoothing=smoothing) == sentence_bleu(HYP, refs, smoothing=smoothing)


# ------------------------------------------------------------------------ fast paths vs brute force


def random_corpus(rng: random.Random, size: int, vocab: str = "abcdef", max_len: int = 8) -> list[str]:
    """Short texts over a tiny vocabulary: lots of shared n-grams, duplicate texts and equal lengths."""
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, max_len))) for _ in range(size)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("max_n", [1, 2, 4])
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_bleu_against_references_equals_brute_force(seed: int, max_n: int, smoothing: str) -> None:
    rng = random.Random(seed)
    samples, references = random_corpus(rng, 20), random_corpus(rng, 30)
    refs = [tokenize_for_bleu(r) for r in references]
    brute = [sentence_bleu(tokenize_for_bleu(s), refs, max_n, smoothing) for s in samples]
    expected = math.fsum(brute) / len(brute)
    assert bleu_against_references(samples, references, max_n, smoothing) == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("max_n", [1, 2, 4])
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_self_bleu_equals_leave_one_out(seed: int, max_n: int, smoothing: str) -> None:
    rng = random.Random(100 + seed)
    samples = [*random_corpus(rng, 25, vocab="abcd", max_len=7), "a b c", "a b c"]  # exact duplicates
    tokens = [tokenize_for_bleu(s) for s in samples]
    brute = [sentence_bleu(t, tokens[:i] + tokens[i + 1 :], max_n, smoothing) for i, t in enumerate(tokens)]
    expected = math.fsum(brute) / len(brute)
    assert self_bleu(samples, max_n, smoothing) == pytest.approx(expected, rel=1e-12)


def test_self_bleu_by_hand() -> None:
    # "a b" vs {"a b", "c d"} → 1; the duplicate likewise → 1; "c d" vs {"a b", "a b"} → no shared word → 0.
    assert self_bleu(["a b", "a b", "c d"], max_n=1) == pytest.approx(2 / 3)
    assert self_bleu(["a b", "a b", "c d"], max_n=2, smoothing="none") == pytest.approx(2 / 3)
    # The leave-one-out must not let a sample match itself: all distinct words → 0.
    assert self_bleu(["a b", "c d", "e f"], max_n=1) == 0.0
    # Leave-one-out length: "a" (len 1) sees lengths {3}; "x y z" sees {1, 3} → r 3;
    # "a b c" sees {1, 3} → r 3.  BLEU-1: "a" vs {"x y z", "a b c"}: p1 1/1, c 1 < r 3 → exp(1 − 3) = e^−2;
    # "x y z" → 0; "a b c" vs {"a", "x y z"}: p1 = 1/3, c = r = 3 → 1/3.  Mean (e^−2 + 1/3)/3.
    got = self_bleu(["a", "x y z", "a b c"], max_n=1)
    assert got == pytest.approx((math.exp(-2) + 1 / 3) / 3)


def test_identical_samples_have_self_bleu_one() -> None:
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)


def test_fast_paths_scale() -> None:
    """300 samples × 1,000 references of ~25 words (well under a second here: the test durations show it; no
    clock is asserted, so a busy machine cannot fail it)."""
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(500)]
    samples = [" ".join(rng.choices(vocab, k=rng.randint(15, 35))) for _ in range(300)]
    references = [" ".join(rng.choices(vocab, k=rng.randint(15, 35))) for _ in range(1000)]
    b = bleu_against_references(samples, references)
    s = self_bleu(samples)
    assert 0.0 < s < b < 1.0  # 300 other samples are a smaller reference set than 1,000


def test_paper_scale_runs() -> None:
    """The paper's setting: 1,000 samples against 5,000 references, and self-BLEU over the 1,000 (< 1 s here)."""
    rng = random.Random(8)
    vocab = [f"w{i}" for i in range(5000)]
    samples = [" ".join(rng.choices(vocab, k=25)) for _ in range(1000)]
    references = [" ".join(rng.choices(vocab, k=25)) for _ in range(5000)]
    b = bleu_against_references(samples, references)
    s = self_bleu(samples)
    assert 0.0 < b < 1.0 and 0.0 < s < 1.0


# ---------------------------------------------------------------------------------------- diversity


def test_distinct_n_by_hand() -> None:
    samples = ["a b a b", "c a"]
    # unigrams: a b a b c a → 6 total, {a, b, c} → 3/6
    assert distinct_n(samples, 1) == pytest.approx(0.5)
    # bigrams: ab ba ab | ca → 4 total, {ab, ba, ca} → 3/4 (a cross-sample "b c" would make it 4/5)
    assert distinct_n(samples, 2) == pytest.approx(0.75)
    # trigrams: aba bab | (none) → 2/2
    assert distinct_n(samples, 3) == pytest.approx(1.0)
    # Tokenisation applies: "A," → "a", ","
    assert distinct_n(["A, a"], 1) == pytest.approx(2 / 3)


def test_unigram_entropy_by_hand() -> None:
    # counts a 2, b 1, c 1 (total 4): H = −(½ ln ½ + 2 · ¼ ln ¼) = ½ ln 2 + ln 2 = 1.5 ln 2 nats
    assert unigram_entropy(["a a b", "c"]) == pytest.approx(1.5 * math.log(2))
    assert unigram_entropy(["a b c d"]) == pytest.approx(math.log(4))
    assert unigram_entropy(["x x x"]) == 0.0


# --------------------------------------------------------------------------------------- perplexity


def test_perplexity_and_word_count() -> None:
    assert perplexity(10.0, 5) == pytest.approx(math.exp(2.0))
    assert perplexity(0.0, 3) == 1.0
    assert perplexity(1e6, 1) == math.inf
    texts = ["a b c", "d  e", ""]
    assert per_word_count(texts, add_eos=False) == 5  # 3 + 2 + 0 whitespace words
    assert per_word_count(texts, add_eos=True) == 8  # + one EOS for each of the 3 texts
    # Per-word PPL as in MATH: exp(total NLL / (words + EOS)) — 16 nats over 8 units → e^2
    assert perplexity(16.0, per_word_count(texts, add_eos=True)) == pytest.approx(math.exp(2.0))


@pytest.mark.parametrize("count", [0, -3])
def test_perplexity_rejects_non_positive_count(count: int) -> None:
    with pytest.raises(DataError, match="positive count"):
        perplexity(1.0, count)


def test_perplexity_rejects_non_finite_nll() -> None:
    with pytest.raises(DataError):
        perplexity(math.nan, 3)


# ------------------------------------------------------------------------------------------- errors


def test_errors_are_one_line_and_typed() -> None:
    cases = [
        (DataError, lambda: bleu_against_references([], ["a"])),
        (DataError, lambda: bleu_against_references(["a"], [])),
        (DataError, lambda: bleu_against_references("a b", ["a"])),
        (DataError, lambda: self_bleu([])),
        (DataError, lambda: self_bleu(["only one"])),
        (DataError, lambda: distinct_n([], 1)),
        (DataError, lambda: distinct_n(["a b"], 3)),
        (DataError, lambda: unigram_entropy([])),
        (DataError, lambda: unigram_entropy(["", " "])),
        (DataError, lambda: per_word_count([], add_eos=True)),
        (DataError, lambda: sentence_bleu(HYP, [])),
        (DataError, lambda: sentence_bleu("the cat", [REF])),
        (DataError, lambda: corpus_bleu([], [])),
        (DataError, lambda: corpus_bleu([HYP], [])),
        (DataError, lambda: corpus_bleu([HYP], [[]])),
        (ConfigError, lambda: sentence_bleu(HYP, [REF], smoothing="epsilonn")),
        (ConfigError, lambda: sentence_bleu(HYP, [REF], max_n=0)),
        (ConfigError, lambda: self_bleu(["a", "b"], max_n=True)),
        (ConfigError, lambda: distinct_n(["a"], 0)),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert "\n" not in str(info.value), str(info.value)
