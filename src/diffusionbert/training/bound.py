"""The NLL bound of a model over batches, per token and per word: the trainer's validation and ``evaluate``'s.

Units (see docs/concepts.md): nats per scored token, where scored tokens are the noisable ones (every
WordPiece token of a sentence and its final [SEP], which is modelled as end-of-sentence; never [CLS] or
padding); perplexity per word = exp(total NLL / (whitespace words + one end-of-sentence per sentence)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..diffusion.objectives import Objective
from ..diffusion.self_prompt import SelfPrompt
from .step import denoiser_terms


@dataclass(frozen=True)
class BoundResult:
    """A Monte-Carlo estimate of the NELBO over a data set (t and x_t drawn once per sentence).

    ``batch_nats_per_token`` keeps each batch's estimate: two models evaluated on the same file with the same
    seed see the same sentences and random draws batch by batch, so their difference can be judged by its
    paired standard error, far smaller than the two ± combined.
    """

    nats_per_token: float
    stderr_per_token: float
    ppl_per_token: float
    ppl_per_word: float | None
    total_nats: float
    n_tokens: int
    n_words: int | None
    n_sequences: int
    batch_nats_per_token: tuple[float, ...]  # per batch and repeat: for paired comparisons of two models

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()  # not inference mode: a learned schedule's γ'(t) is taken by autograd
def nll_bound(
    model: torch.nn.Module,
    objective: Objective,
    batches: list[dict[str, Tensor]] | torch.utils.data.DataLoader,
    seed: int = 0,
    max_batches: int | None = None,
    repeats: int = 1,
    self_prompt: SelfPrompt | None = None,
    stratified: bool = False,
) -> BoundResult:
    """Estimate the NELBO of ``model`` on ``batches`` with the objective's own t and x_t draws.

    The estimate is ``objective.bound_objective``'s (a plain MLM is scored as the diffusion it defines).
    ``repeats`` draws t and x_t that many times per sentence (lower variance). ``stratified`` draws each
    batch's times stratified over its rows (``Objective.corrupt_stratified``: the same expectation, less
    variance for a batch of copies of one sequence; a continuous-time family draws so either way). The
    standard error is over batch-level estimates. Per-word perplexity needs word counts (sentence layout);
    otherwise it is None.
    A self-prompting model (``self_prompt``) is scored with the empty prompt: a bound of that denoiser.
    """
    objective = objective.bound_objective
    corrupt = objective.corrupt_stratified if stratified else objective.corrupt
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals: list[tuple[float, int]] = []
    n_words, n_sequences, words_known = 0, 0, True
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        x0 = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        noise_mask = batch["noise_mask"].to(device)
        tokens = int(noise_mask.sum())
        for _ in range(repeats):
            corrupted = corrupt(x0, noise_mask, generator)
            nats = float(denoiser_terms(model, objective, x0, attention_mask, corrupted, self_prompt).nll)
            totals.append((nats, tokens))
        words = batch["n_words"]
        words_known = words_known and bool((words >= 0).all())
        n_words += int(words.sum()) + int(words.numel())  # + one end-of-sentence ([SEP]) per sentence
        n_sequences += int(x0.shape[0])
    model.train(was_training)
    if not totals:
        raise ValueError("nll_bound got no batches to evaluate")
    total_nats = sum(n for n, _ in totals) / repeats
    n_tokens = sum(t for _, t in totals) // repeats
    per_batch = torch.tensor([n / max(t, 1) for n, t in totals], dtype=torch.float64)
    stderr = float(per_batch.std() / math.sqrt(len(per_batch))) if len(per_batch) > 1 else float("nan")
    per_token = total_nats / max(n_tokens, 1)
    return BoundResult(
        nats_per_token=per_token,
        stderr_per_token=stderr,
        ppl_per_token=_exp(per_token),
        ppl_per_word=_exp(total_nats / n_words) if words_known and n_words else None,
        total_nats=total_nats,
        n_tokens=n_tokens,
        n_words=n_words if words_known else None,
        n_sequences=n_sequences,
        batch_nats_per_token=tuple(per_batch.tolist()),
    )


def _exp(nats: float) -> float:
    """e^nats, or inf past float range (an untrained model's bound can exceed 709 nats per token)."""
    return math.exp(nats) if nats < 709.0 else math.inf
