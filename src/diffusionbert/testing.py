"""Tiny models and tokenizers for tests and toy runs: built in memory, no files, no downloads.

They live here, not in the library modules, so that nothing a user trains or samples depends on them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .models import (
    BackboneWrapperConfig,
    BackboneWrapperModel,
    CausalLMForComparison,
    DiffusionBertForMaskedLM,
)

_Wrapper = TypeVar("_Wrapper", bound=BackboneWrapperModel)
_TINY_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Families whose tiny config needs other size fields than BERT's ``intermediate_size``.
_TINY_FAMILY_SIZES: dict[str, dict[str, int]] = {
    "distilbert": {"hidden_dim": 64},
    "electra": {"intermediate_size": 64, "embedding_size": 32},
    "albert": {"intermediate_size": 64, "embedding_size": 32},
}


def build_tiny_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer over ``words`` with ids [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.

    Built in memory (no files, no downloads) for tests and toy runs; encodes as ``[CLS] ... [SEP]``.
    """
    vocab = {token: i for i, token in enumerate(_TINY_SPECIALS)}
    for word in sorted({w.lower() for w in words} - set(vocab)):
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_model(
    time_conditioning: str = "none",
    vocab_size: int = 64,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    model_type: str = "bert",
    max_position_embeddings: int = 64,
    seed: int = 0,
    source_attention: str = "full",
) -> DiffusionBertForMaskedLM:
    """A tiny random model (2 layers, hidden 32, 2 heads) for tests; deterministic for a given ``seed``.

    With ``tokenizer`` the vocabulary size and special ids come from it, otherwise the
    :func:`build_tiny_tokenizer` layout is assumed (pad 0, cls 2, sep 3, mask 4).
    """
    sizes = _TINY_FAMILY_SIZES.get(model_type, {"intermediate_size": 64})
    return tiny_random(
        DiffusionBertForMaskedLM,
        tokenizer,
        vocab_size,
        model_type,
        max_position_embeddings,
        seed,
        sizes,
        time_conditioning=time_conditioning,
        source_attention=source_attention,
    )


def tiny_causal_model(
    vocab_size: int = 64,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    model_type: str = "bert",
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> CausalLMForComparison:
    """A tiny random causal LM (2 layers, hidden 32, 2 heads) for tests.

    Vocabulary, special ids and ``seed`` are handled as in :func:`tiny_model`.
    """
    sizes = {"intermediate_size": 64}
    return tiny_random(
        CausalLMForComparison, tokenizer, vocab_size, model_type, max_position_embeddings, seed, sizes
    )


def tiny_random(
    cls: type[_Wrapper],
    tokenizer: PreTrainedTokenizerBase | None,
    vocab_size: int,
    model_type: str,
    max_position_embeddings: int,
    seed: int,
    sizes: dict[str, int],
    **settings: Any,
) -> _Wrapper:
    """A tiny random model (2 layers, hidden 32, 2 heads, plus the family's ``sizes``) for tests.

    With ``tokenizer`` the vocabulary size and special ids come from it, otherwise the
    :func:`build_tiny_tokenizer` layout is assumed (pad 0, cls 2, sep 3, mask 4). ``settings`` are further
    config fields. Deterministic for a given ``seed``; the global RNG is left as it was.
    """
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        ids = BackboneWrapperConfig.special_token_ids(tokenizer)
    else:
        ids = {"mask_token_id": 4, "pad_token_id": 0, "cls_token_id": 2, "sep_token_id": 3}
    backbone_config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=ids["pad_token_id"],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        **sizes,
    )
    config = cls.config_class(backbone_config=backbone_config, **ids, **settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)
