import pytest
import torch
import torch.nn.functional as F

from diffusionbert.diffusion.losses import (
    cross_entropy,
    d3pm_hybrid_loss,
    discrete_bound_kl,
    rdm_loss,
    score_entropy_loss,
    weighted_cross_entropy_loss,
)


def _inputs(n=6, vocab=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, vocab, generator=gen, dtype=torch.float64)
    logits[:, -1] = float("-inf")  # a forbidden id ([MASK])
    targets = torch.randint(0, vocab - 1, (n,), generator=gen)
    return logits, targets, gen


def test_cross_entropy_matches_torch():
    logits, targets, _ = _inputs()
    torch.testing.assert_close(
        cross_entropy(logits, targets), F.cross_entropy(logits, targets, reduction="none")
    )


def naive_kl(logits, targets, u_q, u_p):
    """KL between two-atom q and the (V+1)-atom reverse step, in probability space."""
    p = logits.softmax(-1)
    reveal = p * u_p
    stay = 1 - reveal.sum(-1)
    p_target = reveal.gather(-1, targets[:, None])[:, 0]
    kl = u_q * torch.log(u_q / p_target)
    keep = 1 - u_q
    return kl + torch.where(keep > 0, keep * torch.log(keep / stay), torch.zeros_like(keep))


def test_discrete_bound_kl_matches_probability_space_kl():
    logits, targets, gen = _inputs()
    u_q = torch.rand(6, generator=gen, dtype=torch.float64)
    for u_p in (u_q[:, None], torch.rand(6, 9, generator=gen, dtype=torch.float64)):
        torch.testing.assert_close(
            discrete_bound_kl(logits.log_softmax(-1), targets, u_q, u_p, torch.arange(6)),
            naive_kl(logits, targets, u_q, u_p),
        )


def test_discrete_bound_kl_reduces_to_weighted_cross_entropy():
    logits, targets, gen = _inputs()
    u = torch.rand(6, generator=gen, dtype=torch.float64)
    ce = cross_entropy(logits, targets)
    torch.testing.assert_close(
        discrete_bound_kl(logits.log_softmax(-1), targets, u, u[:, None], torch.arange(6)), u * ce
    )
    ones = torch.ones(6, dtype=torch.float64)
    torch.testing.assert_close(
        discrete_bound_kl(logits.log_softmax(-1), targets, ones, ones[:, None], torch.arange(6)), ce
    )  # reconstruction
    assert bool(
        (
            discrete_bound_kl(
                logits.log_softmax(-1), targets, u, torch.rand(6, 9, generator=gen).double(), torch.arange(6)
            )
            >= 0
        ).all()
    )


def test_hybrid_loss_is_bound_times_T_plus_weighted_ce():
    logits, targets, gen = _inputs()
    u = torch.rand(6, generator=gen, dtype=torch.float64)
    terms = d3pm_hybrid_loss(
        logits.log_softmax(-1), targets, u, u[:, None], torch.arange(6), num_steps=10, hybrid_weight=0.01
    )
    ce = cross_entropy(logits, targets)
    assert terms.nll.item() == pytest.approx(10 * (u * ce).sum().item())
    assert terms.loss.item() == pytest.approx(terms.nll.item() + 0.01 * ce.sum().item())


def test_weighted_and_rdm_losses():
    logits, targets, gen = _inputs()
    w, w2 = (
        torch.rand(6, generator=gen, dtype=torch.float64),
        torch.rand(6, generator=gen, dtype=torch.float64),
    )
    ce = cross_entropy(logits, targets)
    assert weighted_cross_entropy_loss(logits, targets, w).nll.item() == pytest.approx((w * ce).sum().item())
    terms = rdm_loss(logits, targets, w, w2)
    assert terms.loss.item() == pytest.approx((w * ce).sum().item())
    assert terms.nll.item() == pytest.approx((w2 * ce).sum().item())


def test_score_entropy_nonnegative_and_equals_nelbo_for_normalised_scores():
    logits, targets, gen = _inputs()
    w = torch.rand(6, generator=gen, dtype=torch.float64)
    assert score_entropy_loss(logits, targets, w).nll.item() >= 0
    normalised = torch.log_softmax(logits, -1)
    torch.testing.assert_close(
        score_entropy_loss(normalised, targets, w).nll,
        weighted_cross_entropy_loss(normalised, targets, w).nll,
    )
    perfect = torch.full_like(logits, float("-inf")).scatter(-1, targets[:, None], 0.0)
    assert score_entropy_loss(perfect, targets, w).nll.item() == pytest.approx(0.0, abs=1e-12)
