"""Cheaper forward+backward passes of a BERT-layout encoder that change no math.

* **Real tokens only.** Tokens travel through the layers as one [N, H] matrix of the batch's N real tokens;
  padding rows never reach a linear layer. They are laid out as [B, heads, L, d] only inside attention, with
  padding keys masked out. The last layer runs its output projection and feed-forward block only at the
  positions the vocabulary head reads (the masked ones), since nothing else of it is used.
* **Dropout from 16-bit draws.** On CPU, torch's dropout draws one float Bernoulli per element. Four 16-bit
  uniform integers per 64-bit generator draw make the mask about four times cheaper; the drop probability is
  rounded to a multiple of 2⁻¹⁶ (0.1 → 0.1000061), the kept values are scaled to stay unbiased.

The pass reuses the backbone's own modules (projections, attention output blocks, feed-forward blocks,
LayerNorms, dropout probabilities), so it reads the same weights as the backbone's forward. It applies to
encoders with BERT's layer layout (BERT, RoBERTa, ELECTRA and their copies in ``transformers``);
:func:`has_bert_layers` says whether a backbone has it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_MASK_RESOLUTION = 1 << 16  # a 16-bit draw decides each element's fate


def fast_dropout(x: Tensor, p: float) -> Tensor:
    """``x`` with each element zeroed with probability p rounded to k / 2¹⁶ and the rest scaled by
    1 / (1 − k / 2¹⁶); the default generator of ``x``'s device supplies the bits (so RNG state checkpoints
    cover it, as they cover torch's dropout)."""
    dropped = round(p * _MASK_RESOLUTION)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    keep = words.view(torch.int16)[:n].view(x.shape) >= dropped - _MASK_RESOLUTION // 2
    return x * keep.to(x.dtype).mul_(_MASK_RESOLUTION / (_MASK_RESOLUTION - dropped))


def _takes_fast_dropout(x: Tensor, p: float) -> bool:
    """Where :func:`fast_dropout` replaces torch's: a real drop rate on a CPU tensor (CUDA's is fused)."""
    return 0.0 < p < 1.0 and x.device.type == "cpu"


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks come from :func:`fast_dropout`; elsewhere torch's own (fused on CUDA)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _takes_fast_dropout(x, self.p):
            return fast_dropout(x, self.p)
        return super().forward(x)


def use_fast_dropout(module: nn.Module) -> None:
    """Replace every plain ``nn.Dropout`` inside ``module`` by a :class:`FastDropout` of the same p.

    Dropout has no parameters, so state dicts and saved checkpoints are the same as before.
    """
    plain = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Dropout
    ]
    for parent, name, child in plain:
        setattr(parent, name, FastDropout(child.p))


def has_bert_layers(base: nn.Module) -> bool:
    """Whether ``base`` (a backbone's base model) is a bidirectional encoder of BERT's layer layout with
    absolute positions, the one :func:`encode_real_tokens` can run."""
    config = base.config
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if (
        not isinstance(getattr(base, "embeddings", None), nn.Module)
        or not isinstance(layers, nn.ModuleList)
        or len(layers) == 0
        or getattr(config, "is_decoder", False)
        or getattr(config, "chunk_size_feed_forward", 0)
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
    ):
        return False
    return all(_has_bert_layout(layer) for layer in layers)


def _has_bert_layout(layer: nn.Module) -> bool:
    attention = getattr(layer, "attention", None)
    self_attention = getattr(attention, "self", None)
    blocks = (
        getattr(attention, "output", None),
        getattr(layer, "intermediate", None),
        getattr(layer, "output", None),
    )
    return (
        all(isinstance(getattr(self_attention, name, None), nn.Linear) for name in ("query", "key", "value"))
        and isinstance(getattr(self_attention, "dropout", None), nn.Dropout)
        and isinstance(getattr(self_attention, "scaling", None), float)
        and isinstance(getattr(self_attention, "num_attention_heads", None), int)
        and all(isinstance(getattr(block, "dense", None), nn.Linear) for block in blocks)
        and not getattr(layer, "add_cross_attention", False)
    )


@dataclass(frozen=True)
class PrefixKeys:
    """What every layer's attention reads of a batch of prefixes (a source, or a context and the finished
    blocks of block diffusion): keys and values [B, heads, P, d] per layer (zeros at padding), which prefix
    positions are real [B, P], and each prefix's length [B] (the position of the first token after it). When
    no prefix position attends to what follows it, they do not depend on it, so they are computed once
    (:func:`prefix_keys`) and read by every later call (:func:`encode_after_prefix`)."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    mask: Tensor
    length: Tensor

    def select(self, rows: Tensor) -> PrefixKeys:
        """The prefixes of ``rows`` [b] (an index per row)."""
        return PrefixKeys(
            tuple(k[rows] for k in self.keys),
            tuple(v[rows] for v in self.values),
            self.mask[rows],
            self.length[rows],
        )


def encode_real_tokens(
    layers: nn.ModuleList,
    embeddings: Tensor,
    attention_mask: Tensor,
    positions: Tensor,
    layer_offsets: Callable[[int], Tensor] | None = None,
    visible: Tensor | None = None,
) -> Tensor:
    """The encoder's last hidden states [n, H] at the n True entries of ``positions`` [B, L] (row-major).

    ``embeddings`` [B, L, H] is the embedding layer's output, ``attention_mask`` [B, L] marks the real tokens
    (``positions`` must lie among them); only real tokens are computed. ``layer_offsets(i)`` [B, H], if given,
    is added to every token of a row before layer i (layer-wise time conditioning). ``visible`` [B, L, L], if
    given, says which keys each query may attend to (isolated source attention), among the real ones.
    """
    real = attention_mask.bool()
    key_mask = real[:, None, None, :] if visible is None else (visible & real[:, None, :])[:, None]
    slots = real.flatten().nonzero().squeeze(1)  # each real token's row in the flattened [B·L] layout
    rows = slots // real.shape[1]
    tokens = embeddings.flatten(0, 1).index_select(0, slots)
    keep = positions.flatten()[slots]
    last = len(layers) - 1
    for index, layer in enumerate(layers):
        if layer_offsets is not None:
            tokens = tokens + layer_offsets(index).to(tokens.dtype)[rows]
        q, k, v = _project(layer, tokens, slots, real.shape)
        tokens = _bert_layer(layer, tokens, slots, q, k, v, key_mask, keep if index == last else None)
    return tokens


def prefix_keys(
    layers: nn.ModuleList, embeddings: Tensor, attention_mask: Tensor, visible: Tensor | None = None
) -> PrefixKeys:
    """Every layer's keys and values of a batch of prefixes (``embeddings`` [B, P, H] of their tokens,
    ``attention_mask`` [B, P] the real ones), each attending only to itself (and within it as ``visible``
    [B, P, P] says, if given: block-causal blocks)."""
    real = attention_mask.bool()
    key_mask = real[:, None, None, :] if visible is None else (visible & real[:, None, :])[:, None]
    slots = real.flatten().nonzero().squeeze(1)
    tokens = embeddings.flatten(0, 1).index_select(0, slots)
    keys, values = [], []
    for index, layer in enumerate(layers):
        q, k, v = _project(layer, tokens, slots, real.shape)
        keys.append(k)
        values.append(v)
        if index < len(layers) - 1:  # the last layer's output is never read
            tokens = _bert_layer(layer, tokens, slots, q, k, v, key_mask, None)
    return PrefixKeys(tuple(keys), tuple(values), real, real.sum(-1))


def encode_after_prefix(
    layers: nn.ModuleList, embeddings: Tensor, attention_mask: Tensor, positions: Tensor, prefix: PrefixKeys
) -> Tensor:
    """:func:`encode_real_tokens` of a span that follows cached prefixes (``embeddings`` [B, T, H] of its
    tokens, embedded at their positions after the prefix, ``attention_mask`` [B, T]), each token attending to
    its row's prefix and to every real token of the span: exactly the states the whole sequence's encoder
    gives those tokens when nothing in the span is hidden from another and nothing after it is seen, at a
    fraction of its work."""
    real = attention_mask.bool()
    key_mask = torch.cat([prefix.mask, real], 1)[:, None, None, :]
    slots = real.flatten().nonzero().squeeze(1)
    tokens = embeddings.flatten(0, 1).index_select(0, slots)
    keep = positions.flatten()[slots]
    last = len(layers) - 1
    for index, layer in enumerate(layers):
        q, k, v = _project(layer, tokens, slots, real.shape)
        k, v = torch.cat([prefix.keys[index], k], 2), torch.cat([prefix.values[index], v], 2)
        tokens = _bert_layer(layer, tokens, slots, q, k, v, key_mask, keep if index == last else None)
    return tokens


def _project(
    layer: nn.Module, tokens: Tensor, slots: Tensor, shape: torch.Size
) -> tuple[Tensor, Tensor, Tensor]:
    """The layer's queries, keys and values of the real tokens [N, H] at ``slots`` of a padded batch of
    ``shape`` [B, L], laid out [B, heads, L, d] with zeros at padding."""
    attention = layer.attention.self
    batch, length = shape
    projections = (attention.query, attention.key, attention.value)
    qkv = F.linear(
        tokens, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
    )  # one matmul for the three projections
    laid_out = qkv.new_zeros(batch * length, qkv.shape[-1]).index_copy_(0, slots, qkv)  # zeros at padding
    q, k, v = laid_out.view(batch, length, 3, attention.num_attention_heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def _bert_layer(
    layer: nn.Module,
    tokens: Tensor,
    slots: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor,
    keep: Tensor | None,
) -> Tensor:
    """The rest of one BERT layer on the real tokens [N, H] at ``slots`` of the padded batch, from their
    queries ``q`` and the keys and values it attends to; with ``keep`` [N] only those rows leave attention."""
    attention = layer.attention.self
    batch, length = q.shape[0], q.shape[2]
    dropout = attention.dropout.p if attention.training else 0.0
    context = _attend(q, k, v, key_mask, attention.scaling, dropout)
    context = context.transpose(1, 2).reshape(batch * length, -1).index_select(0, slots)
    if keep is not None:
        context, tokens = context[keep], tokens[keep]
    hidden = layer.attention.output(context, tokens)
    return layer.output(layer.intermediate(hidden), hidden)


def _attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, scale: float, dropout: float) -> Tensor:
    """Scaled dot-product attention over the unmasked keys; on CPU with dropout, with :func:`fast_dropout`."""
    if not _takes_fast_dropout(q, dropout):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout, scale=scale)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).masked_fill_(~key_mask, float("-inf"))
    return torch.matmul(fast_dropout(scores.softmax(-1), dropout), v)
