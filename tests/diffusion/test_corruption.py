import torch

from diffusionbert.diffusion.corruption import (
    group_mass,
    mask_sources,
    mask_tokens,
    reverse_stay,
    reverse_step,
    sample_posterior,
    unmask_probability,
)

MASK = 99


def test_mask_tokens_rate_matches_alpha_and_respects_noise_mask():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.arange(6).repeat(20000, 1)
    noise_mask = torch.tensor([False, True, True, True, True, False]).expand_as(x0)
    alpha = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.0, 0.0], dtype=torch.float64).expand(x0.shape)
    x_t = mask_tokens(x0, alpha, noise_mask, MASK, gen)
    masked = x_t == MASK
    assert not masked[:, 0].any() and not masked[:, 5].any()  # outside noise_mask never masked
    assert bool((x_t[~masked] == x0[~masked]).all())
    rate = masked.double().mean(0)
    torch.testing.assert_close(rate[1:5], 1 - alpha[0, 1:5], atol=0.015, rtol=0)
    again = mask_tokens(x0, alpha, noise_mask, MASK, torch.Generator().manual_seed(0))
    assert torch.equal(x_t, again)


def test_unmask_probability_values_and_degenerate_case():
    u = unmask_probability(torch.tensor([0.75, 1.0, 0.3]), torch.tensor([0.5, 1.0, 0.3]))
    torch.testing.assert_close(u, torch.tensor([0.5, 1.0, 0.0]))


def test_posterior_composes_to_the_forward_marginal():
    """x_t ~ q(x_t|x_0) then x_s ~ q(x_s|x_t,x_0) must be distributed as q(x_s|x_0)."""
    gen = torch.Generator().manual_seed(1)
    n = 40000
    x0 = torch.full((n, 1), 7)
    noise_mask = torch.ones_like(x0, dtype=torch.bool)
    alpha_s, alpha_t = (
        torch.full((n, 1), 0.6, dtype=torch.float64),
        torch.full((n, 1), 0.2, dtype=torch.float64),
    )
    x_t = mask_tokens(x0, alpha_t, noise_mask, MASK, gen)
    x_s = sample_posterior(x_t, x0, unmask_probability(alpha_s, alpha_t), MASK, gen)
    assert bool(((x_s == 7) | (x_s == MASK)).all())
    assert bool((x_s[x_t == 7] == 7).all())  # revealed tokens stay
    assert abs((x_s == 7).double().mean().item() - 0.6) < 0.01


def test_reverse_step_is_a_distribution_and_handles_extremes():
    gen = torch.Generator().manual_seed(2)
    log_p = torch.log_softmax(torch.randn(5, 7, generator=gen, dtype=torch.float64), -1)
    rows = torch.tensor([0, 0, 1, 2, 2])  # five masked positions in three sentences
    for u in (torch.rand(3, 1, generator=gen, dtype=torch.float64), torch.rand(3, 7, generator=gen).double()):
        step = reverse_step(log_p, u, rows)
        total = step.log_reveal().exp().sum(-1) + step.log_stay.exp()
        torch.testing.assert_close(total, torch.ones(5, dtype=torch.float64))
        naive_stay = (log_p.exp() * (1 - u[rows])).sum(-1).log()
        torch.testing.assert_close(step.log_stay, naive_stay)
        targets = torch.tensor([1, 6, 0, 3, 3])
        torch.testing.assert_close(
            step.log_reveal_at(targets), step.log_reveal().gather(1, targets[:, None])[:, 0]
        )
    ones, zeros = torch.ones(3, 1, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)
    assert bool((reverse_step(log_p, ones, rows).log_stay == float("-inf")).all())
    assert bool((reverse_step(log_p, zeros, rows).log_stay.abs() < 1e-12).all())


def test_reverse_stay_from_group_masses_is_reverse_steps_stay():
    """The sampler's O(n·G) stay probability equals reverse_step's sum over the vocabulary."""
    gen = torch.Generator().manual_seed(0)
    log_p = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    log_p[:, 5] = float("-inf")  # a forbidden id
    log_p = log_p.log_softmax(-1)
    rows = torch.tensor([0, 0, 1, 1, 1])
    groups = torch.tensor([0, 1, 1, 2, 0, 2])  # tokens sharing u
    u = torch.rand(2, 3, generator=gen, dtype=torch.float64)
    u[0, 1] = 1.0
    mass = group_mass(log_p.exp(), groups, 3)
    torch.testing.assert_close(mass.sum(-1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(reverse_stay(mass, u, rows), reverse_step(log_p, u[:, groups], rows).log_stay)
    one = u[:, :1]  # a single group: the same bits as reverse_step's token-independent formula
    assert torch.equal(
        reverse_stay(group_mass(log_p.exp(), None), one, rows), reverse_step(log_p, one, rows).log_stay
    )
    assert bool((reverse_stay(mass, torch.ones(2, 3, dtype=torch.float64), rows) == float("-inf")).all())


def test_mask_sources_hides_exactly_the_source_of_the_chosen_rows():
    cls, sep, mask = 2, 3, 4
    x = torch.tensor([[cls, 10, 11, sep, 20, 21, sep], [cls, 12, sep, 22, sep, 0, 0]])
    hidden = mask_sources(x, torch.tensor([True, False]), sep, mask)
    assert hidden.tolist() == [[cls, mask, mask, sep, 20, 21, sep], [cls, 12, sep, 22, sep, 0, 0]]
    both = mask_sources(x, torch.tensor([True, True]), sep, mask)
    assert both[1].tolist() == [cls, mask, sep, 22, sep, 0, 0]  # the target, its [SEP]s and padding stay
