"""Semi-autoregressive block decoding (LLaDA): blocks left to right, each fully decoded before the next, the
plain loop when one block holds everything, and an early stop once a row has generated its end."""

from __future__ import annotations

import pytest
import torch

from diffusionbert.diffusion.objectives import DiffusionBertObjective
from diffusionbert.diffusion.schedules import LinearSchedule
from diffusionbert.errors import ConfigError
from diffusionbert.sampling import denoise, denoise_blocks
from diffusionbert.sampling.blocks import block_index
from diffusionbert.sampling.samplers import build_sampler

V, MASK, SEP = 12, 4, 3
FORBIDDEN = (0, 2, MASK)


END_ROW = 8  # a row whose first given token is this one ends at once: almost all its mass is on [SEP]


def random_denoiser(seed: int = 0):
    """Random logits; [SEP] is never drawn, except in a row that starts with END_ROW, where it is all but sure
    (the loop calls with the unfinished rows only, so a row is told by its content, not its index)."""
    gen = torch.Generator().manual_seed(seed)

    def call(x: torch.Tensor, time: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = 3.0 * torch.randn(int(positions.sum()), V, generator=gen)
        logits[:, list(FORBIDDEN)] = float("-inf")
        favoured = (x[:, 0] == END_ROW)[positions.nonzero()[:, 0]]
        logits[:, SEP] = torch.where(favoured, torch.tensor(50.0), torch.tensor(float("-inf")))
        return logits

    return call


def _setup(batch: int = 3, length: int = 14, given: int = 2):
    x = torch.full((batch, length), 7)
    generated = torch.zeros(batch, length, dtype=torch.bool)
    generated[:, given:] = True
    generators = [torch.Generator().manual_seed(100 + b) for b in range(batch)]
    return x, generated, generators


def _sampler(name: str):
    return build_sampler(name, DiffusionBertObjective(MASK, LinearSchedule(), num_steps=32))


def test_block_index_counts_only_generated_positions_left_to_right() -> None:
    generated = torch.tensor([[False, True, True, False, True, True, True], [True] * 7])
    assert block_index(generated, 2).tolist() == [[-1, 0, 0, -1, 1, 1, 2], [0, 0, 1, 1, 2, 2, 3]]
    with pytest.raises(ConfigError, match="block_length=0 is not valid"):
        block_index(generated, 0)


@pytest.mark.parametrize("name", ["confidence", "ancestral", "threshold"])
def test_blocks_are_decoded_left_to_right_each_before_the_next(name: str) -> None:
    x, generated, generators = _setup()
    sampler, steps, block = _sampler(name), 4, 5
    states: list[torch.Tensor] = []
    result = denoise_blocks(
        random_denoiser(),
        x,
        sampler,
        sampler.timesteps(steps),
        generators,
        generated=generated,
        blocks=block_index(generated, block),
        on_step=lambda state: states.append(state.clone()),
        return_trajectory=True,
    )
    blocks = block_index(generated, block)
    assert not (result.tokens == MASK).any()
    for state in states:
        masked = (state == MASK) & generated
        for k in range(1, int(blocks.max()) + 1):
            # nothing of block k is revealed while block k - 1 still has a masked position
            unfinished = (masked & (blocks == k - 1)).any(-1)
            revealed_later = (~masked & (blocks == k)).any(-1)
            assert not (unfinished & revealed_later).any()
    num_blocks = int(blocks.max()) + 1  # 12 generated positions in blocks of 5: 3 blocks
    assert num_blocks == 3 and result.trajectory.shape == (3, num_blocks * steps + 1, 14)
    assert torch.equal(result.trajectory[:, -1], result.tokens)
    assert bool((result.nfe <= num_blocks * steps).all())


def test_one_block_holding_everything_is_the_plain_loop() -> None:
    x, generated, generators = _setup()
    sampler = _sampler("ancestral")
    timesteps = sampler.timesteps(6)
    plain = denoise(random_denoiser(1), x, sampler, timesteps, generators, generated=generated)
    _, _, generators = _setup()
    blocked = denoise_blocks(
        random_denoiser(1),
        x,
        sampler,
        timesteps,
        generators,
        generated=generated,
        blocks=block_index(generated, 12),
    )
    assert torch.equal(plain.tokens, blocked.tokens) and torch.equal(plain.nfe, blocked.nfe)


def test_a_row_stops_after_the_block_where_it_generated_its_end() -> None:
    x, generated, generators = _setup()
    x[0, 0] = END_ROW
    sampler, steps = _sampler("confidence"), 3
    result = denoise_blocks(
        random_denoiser(2),
        x,
        sampler,
        sampler.timesteps(steps),
        generators,
        generated=generated,
        blocks=block_index(generated, 4),
        end_id=SEP,
    )
    # row 0 writes [SEP] everywhere in its first block and is then filled, without another network call;
    # the others never draw [SEP] and decode all three blocks
    assert result.tokens[0, 2:].eq(SEP).all()
    assert int(result.nfe[0]) <= steps < int(result.nfe[1])
    assert not result.tokens[1:, 2:].eq(SEP).any()
