"""A pre-trained BERT-family masked LM wrapped as the denoiser of absorbing-state discrete diffusion.

:class:`DiffusionBertForMaskedLM` wraps any ``AutoModelForMaskedLM`` backbone (BERT, RoBERTa, DistilBERT,
ELECTRA generator, ALBERT) and adds two things the diffusion trainer and sampler need:

* optional conditioning on the diffusion time ``t``, the three variants the DiffusionBERT paper compares:
  none (time-agnostic), a time "prefix token" inserted after ``[CLS]``, or a per-layer additive time
  embedding that is zero at initialisation;
* logits only where asked (``positions``), with special tokens that must never be sampled set to ``-inf``;
  on backbones of BERT's layer layout such calls run the encoder on real tokens only and its last layer only
  at those positions (:mod:`.unpadded`: same outputs, less work).

Dropout layers of the backbone draw their CPU masks from 16-bit integers (:class:`~diffusionbert.models.unpadded.FastDropout`).

The wrapper is a regular ``PreTrainedModel``, registered with the Auto classes in :mod:`diffusionbert.models`,
so ``AutoModelForMaskedLM.from_pretrained(dir)`` works on a saved checkpoint without ``trust_remote_code``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForMaskedLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers import initialization as init
from transformers.modeling_outputs import MaskedLMOutput

from ..errors import ConfigError, invalid_choice
from .backbone import BackboneWrapperConfig, BackboneWrapperModel
from .unpadded import encode_real_tokens, has_bert_layers

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

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.time_conditioning not in TIME_CONDITIONINGS:
            raise invalid_choice("time_conditioning", self.time_conditioning, TIME_CONDITIONINGS)
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
    ) -> MaskedLMOutput:
        """Denoiser logits for ``input_ids`` [B, L] at diffusion time ``t`` [B] (fraction of masked steps).

        Returns ``.logits`` of shape [n, V] for the ``n`` True entries of the bool mask ``positions`` (in the
        row-major order of ``positions.nonzero()``), else [B, L, V]. Only the selected rows go through the
        vocabulary projection. Forbidden token ids get logit ``-inf``.
        """
        mode = self.config.time_conditioning
        self._check_inputs(input_ids, positions, f" with time_conditioning={mode!r}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        time = None if mode == "none" else self._embed_time(t, input_ids.shape[0], input_ids.device)

        base = self.backbone.base_model
        inputs = {"input_ids": input_ids}
        selected = positions
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
                base.encoder.layer, base.embeddings(**inputs), attention_mask, selected, offsets
            )
            return MaskedLMOutput(logits=self._head_logits(hidden, None))
        self._layer_time = time if mode == "layerwise" else None
        try:
            hidden = base(**inputs, attention_mask=attention_mask)[0]
        finally:
            self._layer_time = None
        if mode == "prefix_token":
            hidden = torch.cat([hidden[:, :1], hidden[:, 2:]], dim=1)
        return MaskedLMOutput(logits=self._head_logits(hidden, positions))

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
    ) -> DiffusionBertForMaskedLM:
        """Start from a local pre-trained checkpoint, with or without an MLM head (never downloads).

        ``path`` holds an ``AutoModelForMaskedLM`` (head kept) or a plain encoder such as ``BertModel`` (the
        head is created: transform freshly initialised, decoder tied to the word embeddings). The tokenizer
        (default: the one in ``path``) supplies the mask, pad and cls ids. Parameters that did not come from
        the checkpoint are listed in :attr:`newly_initialized_keys`. Weights are loaded in float32.
        """
        return cls._from_local_backbone(path, tokenizer, time_conditioning=time_conditioning)

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
