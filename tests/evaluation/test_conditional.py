"""Metrics of conditional generation against hand-computed values (and nltk's NIST as a second opinion)."""

from __future__ import annotations

import math

import pytest

from diffusionbert.errors import ConfigError, DataError
from diffusionbert.evaluation.conditional import (
    corpus_bleu,
    corpus_cider,
    corpus_nist,
    corpus_rouge_l,
    group_references,
    tokenize,
)


def test_references_are_grouped_by_source_in_order_of_first_appearance():
    sources, refs = group_references(["m1", "m2", "m1", "m3"], ["a", "b", "c", "d"])
    assert sources == ["m1", "m2", "m3"] and refs == [["a", "c"], ["b"], ["d"]]
    with pytest.raises(DataError, match="2 sources but 1 references"):
        group_references(["m1", "m2"], ["a"])


def test_tokens_are_lowercased_with_punctuation_split_like_mteval():
    assert tokenize("The Eagle, near Café Brazil.") == ["the", "eagle", ",", "near", "café", "brazil", "."]


def test_bleu_uses_every_reference_of_a_source():
    hyps = ["the cat sat on the mat", "a dog ran to the house"]
    refs = [["the cat sat on the mat", "a cat was on a mat"], ["a dog ran to the big house"]]
    score, signature = corpus_bleu(hyps, refs)
    assert "nrefs:var" in signature and "case:lc" in signature and "tok:13a" in signature
    # hand count: 11 hypothesis tokens; matches per order 11/11, 9/9, 7/7, 5/5 except the dog sentence:
    # "a dog ran to the house" vs "a dog ran to the big house": 1-grams 6/6, 2-grams 4/5, 3-grams 3/4, 4-grams 2/3
    precisions = [(6 + 6) / 12, (5 + 4) / 10, (4 + 3) / 8, (3 + 2) / 6]
    brevity = math.exp(1 - 13 / 12)  # hypothesis 12 tokens, closest reference lengths 6 + 7 = 13
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert score == pytest.approx(expected, rel=1e-9)
    perfect = corpus_bleu(["the cat sat on the mat"], [["a cat was on a mat", "the cat sat on the mat"]])[0]
    assert perfect == pytest.approx(100.0)


def test_nist_of_a_tiny_corpus_by_hand():
    # reference "a b": info(a) = info(b) = log2(2 / 1) = 1, info(a b) = log2(count(a) / count(a b)) = 0
    assert corpus_nist(["a b"], [["a b"]]) == pytest.approx(1.0)
    # hypothesis "a": unigram info 1 over 1 n-gram; length ratio 1/2 < 2/3, so the penalty is below 0.5
    beta = -math.log(0.5) / math.log(1.5) ** 2
    assert corpus_nist(["a"], [["a b"]]) == pytest.approx(math.exp(-beta * math.log(0.5) ** 2))
    assert corpus_nist(["c"], [["a b"]]) == 0.0


def test_nist_agrees_with_nltk_where_their_conventions_meet():
    """With one reference per source (nltk scores the best single reference of several, mteval and we clip
    by the most frequent count over all references and use the mean reference length)."""
    nist_score = pytest.importorskip("nltk.translate.nist_score")
    hyps = ["the eagle is a cheap coffee shop near burger king .", "blue spice is a pub in the city centre ."]
    refs = [
        ["near burger king is the eagle , a cheap coffee shop ."],
        ["blue spice is a pub located in the city centre ."],
    ]
    ours = corpus_nist(hyps, refs)
    theirs = nist_score.corpus_nist([[r.split() for r in rs] for rs in refs], [h.split() for h in hyps], n=5)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_rouge_l_takes_the_best_reference():
    # LCS("the cat sat", "the cat ran") = 2: P = R = 2/3; against the identical reference F = 1
    assert corpus_rouge_l(["the cat sat"], [["the cat ran"]]) == pytest.approx(2 / 3)
    assert corpus_rouge_l(["the cat sat"], [["the cat ran", "the cat sat"]]) == pytest.approx(1.0)


def test_cider_d_by_hand():
    refs = [["a b"], ["c d"]]
    # every n-gram is in one of two sources: idf = log 2; orders 1 and 2 have cosine 1, orders 3 and 4 none
    assert corpus_cider(["a b", "c d"], refs) == pytest.approx(10 * (1 + 1 + 0 + 0) / 4)
    # hypothesis "a" against "a b": cosine 1 / sqrt 2 on unigrams, length penalty exp(-1 / (2 * 36))
    first = 10 * (math.exp(-1 / 72) / math.sqrt(2)) / 4
    assert corpus_cider(["a", "c d"], refs) == pytest.approx((first + 5.0) / 2)
    # clipping (CIDEr-D): repeating a reference word does not raise the score past the reference's count
    assert corpus_cider(["a a b", "c d"], refs) < corpus_cider(["a b", "c d"], refs)
    assert corpus_cider(["a b"], [["a b"]]) == 0.0  # one source: every n-gram in all documents, idf 0


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ConfigError, match="2 hypotheses for 1 sources"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(ConfigError, match="no hypotheses"):
        corpus_nist([], [])
    with pytest.raises(DataError, match="a source has no reference"):
        corpus_cider(["a"], [[]])
