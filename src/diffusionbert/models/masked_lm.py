"""A pre-trained BERT-family masked LM wrapped as the denoiser of absorbing-state discrete diffusion.

:class:`DiffusionBertForMaskedLM` wraps any ``AutoModelForMaskedLM`` backbone (BERT, RoBERTa, DistilBERT,
ELECTRA generator, ALBERT) and adds two things the diffusion trainer and sampler need:

* optional conditioning on the diffusion time ``t``, the three variants the DiffusionBERT paper compares:
  none (time-agnostic), a time "prefix token" inserted after ``[CLS]``, or a per-layer additive time
  embedding that is zero at initialisation;
* logits only where asked (``positions``), with special tokens that must never be sampled set to ``-inf``;
  on backbones of BERT's layer layout such calls run the encoder on real tokens only and its last layer only
  at those positions (:mod:`.unpadded`: same outputs, less work);
* optionally, *block-causal attention* (``block_size`` B, the network of block diffusion, BD3-LM): after the
  context (``[CLS]``, or a pair's whole source), the text is cut into blocks of B positions, and a position
  attends to its own block and every earlier one; trained in one pass over x_t ⊕ x_0 (``forward(...,
  clean=x0)``: each noisy block reads itself and the clean blocks before it);
* optionally, *isolated source attention* for a pair model (``source_attention="isolated"``, UniLM's
  sequence-to-sequence mask): the source, everything up to and including the first ``[SEP]`` (``[CLS] source
  [SEP] target``), attends only to itself, while the target attends to both.

With either, what precedes a span (the source, or the context and the finished blocks) never reads the span, so
its keys and values do not depend on it: a decoder computes them once
(:meth:`DiffusionBertForMaskedLM.encode_prefix`) and every step runs only the span (``forward(...,
prefix=...)``), with the same logits.

Dropout layers of the backbone draw their CPU masks from 16-bit integers (:class:`~diffusionbert.models.unpadded.FastDropout`).

The wrapper is a regular ``PreTrainedModel``, registered with the Auto classes in :mod:`diffusionbert.models`,
so ``AutoModelForMaskedLM.from_pretrained(dir)`` works on a saved checkpoint without ``trust_remote_code``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForMaskedLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers import initialization as init
from transformers.modeling_outputs import MaskedLMOutput

from ..config import SOURCE_ATTENTIONS
from ..errors import ConfigError, invalid_choice
from .backbone import BackboneWrapperConfig, BackboneWrapperModel
from .unpadded import PrefixKeys, encode_after_prefix, encode_real_tokens, has_bert_layers, prefix_keys

TIME_CONDITIONINGS = ("none", "prefix_token", "layerwise")

# Modules applied in order to encoder hidden states to get vocabulary logits, per masked-LM family.
_MLM_HEADS: tuple[tuple[str, ...], ...] = (
    ("cls",),  # BERT
    ("lm_head",),  # RoBERTa, XLM-R, CamemBERT
    ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),  # DistilBERT
    ("generator_predictions", "generator_lm_head"),  # ELECTRA generator
    ("predictions",),  # ALBERT
)
# Where the per-layer module list lives inside the base encoder.
_LAYER_LISTS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
_TIME_FREQUENCIES = 64


@strict
class DiffusionBertConfig(BackboneWrapperConfig):
    """Config of a :class:`DiffusionBertForMaskedLM`: the backbone's own config plus the diffusion settings.

    ``forbidden_token_ids`` always contains the mask, pad and cls ids (when known): the denoiser must never
    predict them. ``new_parameter_names`` lists the parameters that did not come from the pre-trained
    checkpoint (a freshly created MLM head, the time modules); it is stored so a resumed run builds the same
    optimizer groups as the original one.
    """

    model_type = "diffusionbert"

    time_conditioning: str = "none"
    source_attention: str = "full"
    block_size: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.time_conditioning not in TIME_CONDITIONINGS:
            raise invalid_choice("time_conditioning", self.time_conditioning, TIME_CONDITIONINGS)
        if self.source_attention not in SOURCE_ATTENTIONS:
            raise invalid_choice("source_attention", self.source_attention, SOURCE_ATTENTIONS)
        if self.source_attention == "isolated" and (
            self.sep_token_id is None or self.time_conditioning != "none"
        ):
            raise ConfigError(
                "source_attention='isolated' needs the tokenizer's [SEP] (where a source ends) and a "
                f"time-agnostic model (time_conditioning={self.time_conditioning!r}); allowed: both"
            )
        if self.block_size is not None and (self.block_size < 1 or self.time_conditioning != "none"):
            raise ConfigError(
                f"block_size={self.block_size} is not valid with time_conditioning={self.time_conditioning!r}; "
                "allowed: block_size >= 1 on a time-agnostic model"
            )
        self._derive_forbidden_token_ids()


class TimeEmbedding(nn.Module):
    """Maps t in [0, 1] to a vector: sinusoidal features of ``1000 t`` followed by a two-layer SiLU MLP."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * _TIME_FREQUENCIES, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        exponents = torch.arange(_TIME_FREQUENCIES, device=t.device, dtype=torch.float32) / _TIME_FREQUENCIES
        angles = 1000.0 * t.float()[:, None] * torch.exp(-math.log(10_000.0) * exponents)[None, :]
        features = torch.cat([angles.cos(), angles.sin()], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class ZeroInitLinear(nn.Linear):
    """A linear layer initialised to zero, so a new residual branch starts as the identity."""


class MaskedLMBackboneModel(BackboneWrapperModel):
    """A wrapper whose backbone is an ``AutoModelForMaskedLM`` with its vocabulary head (the diffusion
    denoisers: this one's, and the embedding-diffusion one's in :mod:`.embedding_lm`)."""

    _backbone_auto_class = AutoModelForMaskedLM
    _backbone_kind = "masked-LM"
    _backbone_families = "BERT-family encoders such as bert, roberta, distilbert, electra, albert"
    _head_layouts = _MLM_HEADS
    _head_kind = "MLM"
    _head_families = "bert, roberta, distilbert, electra, albert and families sharing their head layout"


class DiffusionBertForMaskedLM(MaskedLMBackboneModel):
    """Time-(optionally-)conditioned masked LM used as the reverse process of absorbing-state diffusion."""

    config_class = DiffusionBertConfig
    source_attentions: ClassVar[tuple[str, ...]] = SOURCE_ATTENTIONS

    def __init__(self, config: DiffusionBertConfig, backbone: PreTrainedModel | None = None) -> None:
        """Build the model; ``backbone`` is an already loaded ``AutoModelForMaskedLM`` (see :meth:`from_backbone`)."""
        super().__init__(config, backbone)
        backbone = self.backbone
        self._layer_time: torch.Tensor | None = None
        self._bert_layers = has_bert_layers(backbone.base_model)
        if config.time_conditioning == "prefix_token":
            self.time_embedding = TimeEmbedding(backbone.get_input_embeddings().embedding_dim)
        elif config.time_conditioning == "layerwise":
            layers = _find_encoder_layers(backbone.base_model)
            hidden = backbone.config.hidden_size
            self.time_embedding = TimeEmbedding(hidden)
            self.layer_time_projections = nn.ModuleList(ZeroInitLinear(hidden, hidden) for _ in layers)
            for index, layer in enumerate(layers):
                layer.register_forward_pre_hook(
                    functools.partial(self._add_layer_time, index), with_kwargs=True
                )
        self._finish_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, ZeroInitLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @property
    def max_input_length(self) -> int:
        """Longest ``input_ids`` accepted: the backbone's positions, minus one for the time prefix token."""
        return super().max_input_length - (self.config.time_conditioning == "prefix_token")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        prefix: PrefixKeys | None = None,
        clean: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        """Denoiser logits for ``input_ids`` [B, L] at diffusion time ``t`` [B] (fraction of masked steps).

        Returns ``.logits`` of shape [n, V] for the ``n`` True entries of the bool mask ``positions`` (in the
        row-major order of ``positions.nonzero()``), else [B, L, V]. Only the selected rows go through the
        vocabulary projection. Forbidden token ids get logit ``-inf``.

        With ``prefix`` (:meth:`encode_prefix` of the rows' prefixes) ``input_ids`` are only the span that
        follows each prefix (a pair's answer, or the block being decoded), and their logits are those of the
        whole sequence's. With ``clean``
        (x_0 [B, L]; a block-causal model in training) the network reads x_t ⊕ x_0, each block of x_t seeing
        itself and the clean blocks before it, and ``positions`` select logits of x_t.
        """
        mode = self.config.time_conditioning
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if prefix is not None:
            return self._after_prefix(input_ids, attention_mask, positions, prefix)
        self._check_inputs(input_ids, positions, f" with time_conditioning={mode!r}")
        visible = self._visible(input_ids)
        time = None if mode == "none" else self._embed_time(t, input_ids.shape[0], input_ids.device)

        base = self.backbone.base_model
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
        selected = positions
        if clean is not None:
            input_ids, attention_mask, positions, visible = self._noisy_and_clean(
                input_ids, clean, attention_mask, positions
            )
            at = torch.arange(clean.shape[1], device=clean.device).repeat(2)[None].expand(clean.shape[0], -1)
            inputs, selected = {"input_ids": input_ids, "position_ids": at}, positions
        if mode == "prefix_token":
            embeds = self.get_input_embeddings()(input_ids)
            inputs = {
                "inputs_embeds": torch.cat([embeds[:, :1], time[:, None].to(embeds.dtype), embeds[:, 1:]], 1)
            }
            attention_mask = torch.cat(
                [attention_mask[:, :1], attention_mask[:, :1], attention_mask[:, 1:]], 1
            )
            if positions is not None:
                selected = torch.cat(
                    [positions[:, :1], torch.zeros_like(positions[:, :1]), positions[:, 1:]], 1
                )
        if self._runs_real_tokens_only(selected, attention_mask):
            offsets = functools.partial(self._layer_time_offset, time) if mode == "layerwise" else None
            hidden = encode_real_tokens(
                base.encoder.layer, base.embeddings(**inputs), attention_mask, selected, offsets, visible
            )
            return MaskedLMOutput(logits=self._head_logits(hidden, None))
        self._layer_time = time if mode == "layerwise" else None
        if visible is not None:  # a 4D additive mask, which the backbone takes as it is
            blocked = ~(visible & attention_mask.bool()[:, None, :])[:, None]
            dtype = base.embeddings.word_embeddings.weight.dtype
            attention_mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill_(
                blocked, torch.finfo(dtype).min
            )
        try:
            hidden = base(**inputs, attention_mask=attention_mask)[0]
        finally:
            self._layer_time = None
        if mode == "prefix_token":
            hidden = torch.cat([hidden[:, :1], hidden[:, 2:]], dim=1)
        return MaskedLMOutput(logits=self._head_logits(hidden, positions))

    @property
    def caches_prefix(self) -> bool:
        """Whether :meth:`encode_prefix` applies: isolated source attention or block-causal attention (what
        comes before a span never reads it) on a BERT-layout encoder."""
        return self.blocks_apply and self._bert_layers

    @property
    def blocks_apply(self) -> bool:
        """Whether attention is cut into :meth:`blocks` (isolated source attention or block diffusion)."""
        return self.config.source_attention == "isolated" or self.config.block_size is not None

    def source_length(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per row [B], how many leading positions form its source: ``[CLS] source [SEP]``, up to and including
        the first [SEP] (a row without one is all source)."""
        sep = input_ids == self.config.sep_token_id
        return torch.where(sep.any(-1), sep.long().argmax(-1) + 1, input_ids.shape[1])

    def blocks(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """The attention block of every position [B, L]: 0 for the context (``[CLS]``, or with isolated source
        attention the whole ``[CLS] source [SEP]``), then 1, 2, … for each ``block_size`` positions after it
        (1 for everything after the context without blocks); None for full attention. A position attends to
        its own block and every earlier one."""
        size, isolated = self.config.block_size, self.config.source_attention == "isolated"
        if not self.blocks_apply:
            return None
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)
        context = self.source_length(input_ids) if isolated else torch.ones_like(input_ids[:, 0])
        after = columns[None] - context[:, None]
        later = 1 + after.div(size, rounding_mode="floor") if size is not None else torch.ones_like(after)
        return torch.where(after < 0, 0, later)

    def _visible(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Which keys each query may read [B, L, L] (:meth:`blocks`), or None for full attention."""
        blocks = self.blocks(input_ids)
        return None if blocks is None else blocks[:, None, :] <= blocks[:, :, None]

    def _noisy_and_clean(
        self,
        x_t: torch.Tensor,
        x0: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Block diffusion's training input: ids x_t ⊕ x_0 [B, 2L], their padding mask, the selected positions
        (of x_t only) and BD3-LM's attention mask [B, 2L, 2L]: a block of x_t reads itself and the blocks of
        x_0 before it, a block of x_0 reads itself and the blocks of x_0 before it."""
        if self.config.block_size is None:
            raise ConfigError("clean= is block diffusion's training input; allowed: a model with block_size")
        blocks = self.blocks(x0)
        query, key = blocks[:, :, None], blocks[:, None, :]
        noisy_to = torch.cat([key == query, key < query], 2)
        clean_to = torch.cat([torch.zeros_like(noisy_to[..., : x0.shape[1]]), key <= query], 2)
        visible = torch.cat([noisy_to, clean_to], 1)
        selected = None if positions is None else torch.cat([positions, torch.zeros_like(positions)], 1)
        return torch.cat([x_t, x0], 1), attention_mask.repeat(1, 2), selected, visible

    @torch.no_grad()
    def encode_prefix(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> PrefixKeys:
        """Every layer's keys and values of the prefixes ``input_ids`` [B, P] (right-padded; ``attention_mask``
        marks the real tokens): a pair's ``[CLS] source [SEP]``, or the context and finished blocks of block
        diffusion. Nothing in a prefix attends to what follows it, so they are computed once for every later
        call that reads them (``forward(..., prefix=...)``). Needs :attr:`caches_prefix`."""
        if not self.caches_prefix:
            raise ConfigError(
                "encode_prefix needs isolated source attention or block diffusion on a BERT-layout encoder "
                f"(this model: source_attention={self.config.source_attention!r}, block_size="
                f"{self.config.block_size}); allowed: the whole forward"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        base = self.backbone.base_model
        embeddings = base.embeddings(input_ids=input_ids)
        return prefix_keys(base.encoder.layer, embeddings, attention_mask, self._visible(input_ids))

    def _after_prefix(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor | None,
        prefix: PrefixKeys,
    ) -> MaskedLMOutput:
        """Logits of a span that follows cached prefixes (see :meth:`forward`)."""
        if positions is None:
            positions = attention_mask.bool()
        at = prefix.length[:, None] + torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        if int(at.max()) >= super().max_input_length:
            raise ConfigError(
                f"a prefix and the span after it take {int(at.max()) + 1} positions; allowed: at most "
                f"{super().max_input_length} for this backbone"
            )
        base = self.backbone.base_model
        embeddings = base.embeddings(input_ids=input_ids, position_ids=at)
        hidden = encode_after_prefix(base.encoder.layer, embeddings, attention_mask, positions, prefix)
        return MaskedLMOutput(logits=self._head_logits(hidden, None))

    def _runs_real_tokens_only(self, positions: torch.Tensor | None, attention_mask: torch.Tensor) -> bool:
        """Whether this call can take :func:`encode_real_tokens`: logits at some positions, all of them real
        tokens, a BERT-layout encoder and no gradient checkpointing or FSDP sharding (both live in the
        backbone's layers' own forward, which that path does not call)."""
        return (
            positions is not None
            and self._bert_layers
            and not any(
                getattr(layer, "gradient_checkpointing", False) or isinstance(layer, FSDPModule)
                for layer in self.backbone.base_model.encoder.layer
            )
            and not bool((positions & ~attention_mask.bool()).any())
        )

    def _embed_time(self, t: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if t is None or t.shape != (batch,):
            got = None if t is None else tuple(t.shape)
            raise ConfigError(
                f"t={got} but time_conditioning={self.config.time_conditioning!r} needs it; "
                f"allowed: a float tensor of shape ({batch},) with values in [0, 1]"
            )
        return self.time_embedding(t.to(device))

    def _layer_time_offset(self, time: torch.Tensor, index: int) -> torch.Tensor:
        """What layer-wise time conditioning adds to every token of a row before encoder layer ``index``: [B, H]."""
        return self.layer_time_projections[index](nn.functional.silu(time))

    def _add_layer_time(
        self, index: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Forward pre-hook of encoder layer ``index``: add its projection of the time embedding."""
        if self._layer_time is None:  # the backbone was called directly, outside forward()
            return None
        delta = self._layer_time_offset(self._layer_time, index)[:, None, :]
        if args:
            return (args[0] + delta.to(args[0].dtype), *args[1:]), kwargs
        kwargs["hidden_states"] = kwargs["hidden_states"] + delta.to(kwargs["hidden_states"].dtype)
        return args, kwargs

    @classmethod
    def from_backbone(
        cls,
        path: str | Path,
        time_conditioning: str = "none",
        tokenizer: PreTrainedTokenizerBase | None = None,
        source_attention: str = "full",
        block_size: int | None = None,
    ) -> DiffusionBertForMaskedLM:
        """Start from a local pre-trained checkpoint, with or without an MLM head (never downloads).

        ``path`` holds an ``AutoModelForMaskedLM`` (head kept) or a plain encoder such as ``BertModel`` (the
        head is created: transform freshly initialised, decoder tied to the word embeddings). The tokenizer
        (default: the one in ``path``) supplies the mask, pad and cls ids. Parameters that did not come from
        the checkpoint are listed in :attr:`newly_initialized_keys`. Weights are loaded in float32.
        """
        return cls._from_local_backbone(
            path,
            tokenizer,
            time_conditioning=time_conditioning,
            source_attention=source_attention,
            block_size=block_size,
        )

    @classmethod
    def _check_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> None:
        if tokenizer.mask_token_id is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has no mask token; absorbing-state diffusion needs one, "
                "allowed: a tokenizer with a [MASK]/<mask> token"
            )


def _find_encoder_layers(base: nn.Module) -> nn.ModuleList:
    """The base encoder's list of transformer layers, wherever the family keeps it."""
    for path in _LAYER_LISTS:
        try:
            layers = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise ConfigError(
        f"time_conditioning='layerwise' needs a backbone with accessible encoder layers; {type(base).__name__} "
        f"has none at {', '.join(_LAYER_LISTS)}; allowed: none, prefix_token"
    )
