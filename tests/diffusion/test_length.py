"""The length of a target read off a target-window model's [SEP] marginals (``diffusion.length``), by hand."""

from __future__ import annotations

import pytest
import torch

from diffusionbert.diffusion.length import length_cdf, likely_lengths, median_length


def test_the_distribution_function_is_the_running_maximum_ending_at_one() -> None:
    p = torch.tensor([[0.1, 0.6, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0, 0.0], [0.7, 0.1, 0.9, 0.2, 0.1]])
    cdf = length_cdf(p.clamp_min(1e-30).log())
    expected = torch.tensor([[0.1, 0.6, 0.6, 0.6, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0], [0.7, 0.7, 0.9, 0.9, 1.0]])
    assert torch.allclose(cdf, expected)
    assert bool((cdf.diff(dim=-1) >= 0).all())


def test_the_median_is_the_first_position_where_the_function_reaches_one_half() -> None:
    cdf = torch.tensor([[0.1, 0.6, 0.6, 0.6, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0], [0.7, 0.7, 0.9, 0.9, 1.0]])
    assert median_length(cdf).tolist() == [1, 4, 0]
    # exactly one half counts as reached: P(n <= 2) = 1/2 makes 2 a median
    assert median_length(torch.tensor([[0.2, 0.4, 0.5, 1.0]])).tolist() == [2]
    # a hand-made length distribution P(n = 0..3) = (0.1, 0.2, 0.3, 0.4): median 2 (F = 0.1, 0.3, 0.6, 1)
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert median_length(length_cdf(probabilities.cumsum(0).log()[None])).tolist() == [2]


def test_a_length_beam_holds_the_median_then_the_most_probable_lengths() -> None:
    # P(n = 0..4) = (0.1, 0.5, 0, 0, 0.4): median 1, then 4, then the ties 2 and 3 (the shorter first)
    cdf = torch.tensor([[0.1, 0.6, 0.6, 0.6, 1.0]])
    assert likely_lengths(cdf, 1).tolist() == [[1]]
    assert likely_lengths(cdf, 3).tolist() == [[1, 4, 2]]
    # the median is first even where another length is more probable, and n = 0 is never a candidate
    skewed = torch.tensor([[0.45, 0.5, 0.5, 0.55, 1.0]])  # P = (0.45, 0.05, 0, 0.05, 0.45): median 1
    assert likely_lengths(skewed, 4).tolist() == [[1, 4, 3, 2]]
    assert likely_lengths(torch.tensor([[0.9, 0.9, 1.0]]), 1).tolist() == [[1]]  # median 0 becomes 1
    with pytest.raises(ValueError, match="outside"):
        likely_lengths(cdf, 5)
