"""Left-to-right sampling of a causal LM (the AR baseline), drawn like the diffusion samplers draw."""

from __future__ import annotations

import torch
from rich.progress import Progress
from transformers import PreTrainedTokenizerBase

from ..errors import ConfigError
from ..models.causal_lm import CausalLMForComparison
from .draws import RowRandom, Sharpening, check_sample_request, gumbel_argmax, sample_generator
from .output import SampleOutput


@torch.inference_mode()
def generate_left_to_right(
    model: CausalLMForComparison,
    tokenizer: PreTrainedTokenizerBase,
    num_samples: int,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> SampleOutput:
    """Ancestral sampling of the causal LM: ``[CLS]``, then one token at a time until ``[SEP]`` or ``length``.

    Draws use the diffusion samplers' machinery (float64 Gumbel-max, temperature / top-k / top-p, one
    generator per sample from ``seed`` and its index), so samples do not depend on ``batch_size`` and the
    AR row of a comparison is sampled like the others. ``nfe`` is the number of tokens drawn (one network
    call each; the prefix is recomputed per call, there is no key-value cache).
    """
    check_sample_request(num_samples, batch_size, seed)
    if not 1 <= length <= model.max_input_length - 1:
        raise ConfigError(
            f"length={length} is not valid; allowed: 1 <= length <= {model.max_input_length - 1} (the model's "
            "positions, [CLS] included)"
        )
    sharpening = Sharpening(temperature, top_k, top_p)
    device = next(model.parameters()).device
    model.eval()
    sep = tokenizer.sep_token_id
    rows_out: list[list[int]] = []
    nfe: list[int] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("sampling (autoregressive)", total=num_samples)
        for start in range(0, num_samples, batch_size):
            size = min(batch_size, num_samples - start)
            random = RowRandom([sample_generator(seed, i, device) for i in range(start, start + size)], size)
            x = torch.full((size, 1), tokenizer.cls_token_id, dtype=torch.long, device=device)
            active = torch.ones(size, dtype=torch.bool, device=device)
            calls = torch.zeros(size, dtype=torch.long, device=device)
            for _ in range(length):
                rows = active.nonzero().squeeze(-1)
                last = torch.zeros(x[rows].shape, dtype=torch.bool, device=device)
                last[:, -1] = True
                logits = model(x[rows], t=None, positions=last).logits
                log_p = sharpening(torch.log_softmax(logits.float(), -1))
                drawn = torch.full((size,), sep, dtype=torch.long, device=device)
                drawn[rows] = gumbel_argmax(log_p, rows, random)
                x = torch.cat([x, drawn.unsqueeze(-1)], dim=1)
                calls += active.long()
                active &= drawn != sep
                if not active.any():
                    break
            rows_out += [row[1:].tolist() for row in x.cpu()]
            nfe += calls.tolist()
            bar.advance(task, size)
    ends = [row.index(sep) if sep in row else len(row) for row in rows_out]
    texts = tokenizer.batch_decode(
        [row[:end] for row, end in zip(rows_out, ends, strict=True)], skip_special_tokens=True
    )
    width = max(len(r) for r in rows_out)
    token_ids = torch.tensor([[tokenizer.cls_token_id, *r, *[sep] * (width - len(r))] for r in rows_out])
    return SampleOutput(texts=texts, token_ids=token_ids, lengths=ends, nfe=nfe)
