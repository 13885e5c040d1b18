"""The one denoising loop: it calls the network, and lets a sampler turn each prediction into the next state.

The loop never knows a sampler's rule and a sampler never calls the model (:mod:`.samplers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.reverse import Time
from ..diffusion.self_prompt import SelfPrompt
from ..errors import ConfigError
from .draws import Generators
from .samplers import Sampler
from .step import Prediction, StepInput

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t [b, L], time input [b], positions [b, L] bool) → logits [n, V] at the positions, row-major."""


@dataclass(frozen=True)
class DenoiseResult:
    """Final tokens [B, L], network calls per row [B], every state [B, K + 1, L] when asked for, and
    ``scores`` [B, L] (float64): log p_θ of each generated token at the step that last revealed it (what
    Mask-Predict ranks texts and positions by; None where a loop has no such score)."""

    tokens: Tensor
    nfe: Tensor
    trajectory: Tensor | None
    scores: Tensor | None = None


def denoise(
    denoiser: Denoiser,
    x: Tensor,
    sampler: Sampler,
    timesteps: Sequence[tuple[Time, Time]],
    generator: Generators,
    *,
    generated: Tensor,
    noise_mask: Tensor | None = None,
    cache: bool = False,
    return_trajectory: bool = False,
    advance: Callable[[int], None] | None = None,
    self_prompt: SelfPrompt | None = None,
    on_step: Callable[[Tensor], None] | None = None,
) -> DenoiseResult:
    """Walk ``timesteps`` from x (``generated`` [B, L] positions set to [MASK]) to clean tokens.

    Each iteration calls ``denoiser`` on the rows that still have masked positions, only at those positions,
    and lets ``sampler`` draw x_s. What the sampler derives from the logits alone (:meth:`Sampler.prepare`)
    is computed once per call and kept per position in a :class:`Prediction`. With ``cache`` (exact only for
    a time-agnostic network) a row whose x_t did not change since its last call reuses it instead of a
    call, so such a step costs no O(V) work per masked position.

    Every row keeps its own clock (steps taken). Rows advance together, one step per iteration, unless
    ``cache`` is on, the sampler can jump (:meth:`AncestralSampler.jump`) and every row has its own
    generator: then each row jumps over the steps where its x_t stays the same, straight to its next change,
    and the rows that changed are called together in one batch, whatever step each is at. The draws are
    the stepping loop's, so the samples are identical; only the network calls are batched better. A row
    stops once nothing in it is masked (samplers leave such a state unchanged). ``noise_mask`` (default
    ``generated``) is the sentence's noisable positions as in training; ``advance(n)`` reports n more steps
    done by the slowest row; ``on_step(x)`` sees the state [B, L] after every iteration (a live display; it
    must not change it).

    With ``self_prompt`` (a self-prompting network; ``cache`` must be off, as the prompt changes the input
    while x_t stays) each call reads the prompt of the row's previous estimate of x_0: x_t where revealed,
    the last call's most likely token where still masked, [MASK] before the first call
    (:mod:`~diffusionbert.diffusion.self_prompt`).
    """
    if self_prompt is not None and cache:
        raise ConfigError(
            "a self-prompting network cannot reuse logits; allowed: cache=False with self_prompt"
        )
    mask_id, num_steps, batch = sampler.mask_id, len(timesteps), x.shape[0]
    noise_mask = generated if noise_mask is None else noise_mask
    x = x.masked_fill(generated, mask_id)
    scores = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    nfe = torch.zeros(batch, dtype=torch.long, device=x.device)
    clock = [0] * batch  # steps taken by each row
    jumping = cache and sampler.can_jump and not isinstance(generator, torch.Generator)
    trajectory = x.unsqueeze(1).repeat(1, num_steps + 1, 1) if return_trajectory else None
    prediction = Prediction(x.shape)  # the sampler's prepared logits, valid where x_t is unchanged
    changed = torch.ones(batch, dtype=torch.bool, device=x.device)  # since the row's last call
    estimate = None if self_prompt is None else self_prompt.empty(x, noise_mask)
    reported = 0
    while True:
        masked = generated & (x == mask_id)
        active = masked.any(-1) & torch.tensor([c < num_steps for c in clock], device=x.device)
        if not active.any():
            break
        need = active & changed if cache else active
        if need.any():
            nfe += need.long()
            times = [sampler.time_input(timesteps[clock[b]][0]) for b in need.nonzero()[:, 0].tolist()]
            time = torch.tensor(times, dtype=torch.float32, device=x.device)
            called = masked & need.unsqueeze(-1)
            if estimate is None:
                logits = denoiser(x[need], time, masked[need])
            else:
                prompt = torch.where(masked[need], estimate[need], x[need])
                ids, positions, _ = self_prompt.inputs(x[need], noise_mask[need], prompt, masked[need], None)
                logits = denoiser(ids, time, positions)
                estimate[called] = logits.argmax(-1)
            prediction.write(called, sampler.prepare(logits))
        before, started = x, list(clock)
        if jumping:
            x, scores = x.clone(), scores.clone()
            for b in active.nonzero()[:, 0].tolist():
                rows = slice(b, b + 1)
                t, s = timesteps[clock[b]]
                inp = StepInput(
                    None, x[rows], masked[rows], generated[rows], noise_mask[rows], scores[rows],
                    t, s, clock[b], num_steps, prediction.row(b),
                )  # fmt: skip
                taken, (x[rows], scores[rows]) = sampler.jump(inp, timesteps, generator[b])
                clock[b] += taken
        else:  # every row that is not finished is at the same step
            index = clock[int(active.nonzero()[0, 0])]
            t, s = timesteps[index]
            inp = StepInput(
                None, x, masked, generated, noise_mask, scores, t, s, index, num_steps, prediction
            )
            x, scores = sampler.step(inp, generator)
            clock = [index + 1] * batch
        changed = (x != before).any(-1)
        if trajectory is not None:
            for b, (start, stop) in enumerate(zip(started, clock, strict=True)):
                trajectory[b, start + 1 : stop] = before[b]  # steps jumped over: unchanged
                trajectory[b, stop] = x[b]
        if on_step is not None:
            on_step(x)
        slowest = min(c for c, a in zip(clock, active.tolist(), strict=True) if a)
        if advance is not None and slowest > reported:
            advance(slowest - reported)
            reported = slowest
    if advance is not None and reported < num_steps:
        advance(num_steps - reported)
    if trajectory is not None:
        for b, start in enumerate(clock):  # steps after a row's end leave it as it is
            trajectory[b, start + 1 :] = x[b]
    return DenoiseResult(x, nfe, trajectory, scores)
