import math

import pytest
import torch

from diffusionbert.diffusion.token_info import corpus_centre, reference_token_values, token_information
from diffusionbert.errors import DataError


def test_reference_values_are_normalised_log_counts():
    counts = torch.tensor([0, 9, 99])
    values = reference_token_values(counts)
    expected = [0.0, math.log(10) / math.log(100), 1.0]
    assert values.tolist() == pytest.approx(expected)


def test_token_information_is_add_one_surprisal_and_centre_is_entropy():
    counts = torch.tensor([3, 1, 0])
    info = token_information(counts)
    p = torch.tensor([4, 2, 1], dtype=torch.float64) / 7
    torch.testing.assert_close(info, -p.log())
    assert corpus_centre(info, counts) == pytest.approx((3 * info[0] + info[1]).item() / 4)


@pytest.mark.parametrize("bad", [torch.tensor([0, 0]), torch.tensor([1, -1]), torch.zeros(2, 2)])
def test_bad_counts_are_rejected(bad):
    with pytest.raises(DataError, match="token counts"):
        reference_token_values(bad)
