"""An autoregressive baseline on the same backbone: a causal LM trained and scored like the diffusion models.

:class:`CausalLMForComparison` wraps the backbone family's ``AutoModelForCausalLM`` (``BertLMHeadModel`` for
BERT, ``RobertaForCausalLM``, ``ElectraForCausalLM``) with ``is_decoder=True``, so self-attention is causal,
and starts it from the same pre-trained encoder checkpoint as the diffusion denoiser. Its ``forward`` takes
the denoiser's call, ``model(x_t, attention_mask, t=..., positions=...)``, so the trainer and the evaluator
drive it through :func:`diffusionbert.training.step.denoiser_terms` unchanged: ``t`` is ignored and
``positions`` selects the rows that go through the vocabulary projection. Its objective is
:class:`~diffusionbert.diffusion.autoregressive.AutoregressiveObjective`, and it is sampled left to right
(:mod:`diffusionbert.sampling.left_to_right`).

The model is registered with ``AutoConfig`` and ``AutoModelForCausalLM`` in :mod:`diffusionbert.models`, so
``AutoModelForCausalLM.from_pretrained(dir)`` loads a saved one without ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.dataclasses import strict
from torch import Tensor
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutput

from .backbone import BackboneWrapperConfig, BackboneWrapperModel

# Modules applied in order to the base model's hidden states to get vocabulary logits, per causal-LM family.
_CAUSAL_LM_HEADS: tuple[tuple[str, ...], ...] = (
    ("cls",),  # BERT
    ("lm_head",),  # RoBERTa, XLM-R, CamemBERT
    ("generator_predictions", "generator_lm_head"),  # ELECTRA
)
_CAUSAL_FAMILIES = "BERT-family encoders with a causal-LM class such as bert, roberta, electra"


@strict
class CausalLMConfig(BackboneWrapperConfig):
    """Config of a :class:`CausalLMForComparison`: the backbone's own config (as a decoder) plus special ids.

    ``backbone_config.is_decoder`` is always True (causal self-attention) and cross-attention is off.
    ``forbidden_token_ids`` always contains the mask, pad and cls ids (when known): they never follow a
    token of a sentence, so the model must never predict them. ``new_parameter_names`` lists the parameters
    that did not come from the pre-trained checkpoint (a freshly created LM head); it is stored so a resumed
    run builds the same optimizer groups as the original one.
    """

    model_type = "diffusionbert-causal-lm"

    def __post_init__(self, **kwargs: object) -> None:
        super().__post_init__(**kwargs)
        self.backbone_config.is_decoder = True
        self.backbone_config.add_cross_attention = False
        self._derive_forbidden_token_ids()


class CausalLMForComparison(BackboneWrapperModel):
    """Left-to-right LM on a BERT-family backbone, called like the diffusion denoiser (see the module doc)."""

    config_class = CausalLMConfig
    _backbone_auto_class = AutoModelForCausalLM
    _backbone_kind = "causal-LM"
    _backbone_families = _CAUSAL_FAMILIES
    _head_layouts = _CAUSAL_LM_HEADS
    _head_kind = "LM"
    _head_families = _CAUSAL_FAMILIES

    def __init__(self, config: CausalLMConfig, backbone: PreTrainedModel | None = None) -> None:
        """Build the model; ``backbone`` is a loaded ``AutoModelForCausalLM`` (see :meth:`from_backbone`)."""
        super().__init__(config, backbone)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        t: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> CausalLMOutput:
        """Next-token logits: row ``i`` is the distribution of token ``i + 1`` given tokens ``0..i``.

        ``t`` is accepted for the denoiser's call signature and ignored (an AR model has no time). Returns
        ``.logits`` of shape [n, V] for the ``n`` True entries of the bool mask ``positions`` (in the
        row-major order of ``positions.nonzero()``), else [B, L, V]. Only the selected rows go through the
        vocabulary projection. Forbidden token ids get logit ``-inf``. Padding must be on the right.
        """
        self._check_inputs(input_ids, positions)
        hidden = self.backbone.base_model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        )[0]
        return CausalLMOutput(logits=self._head_logits(hidden, positions))

    def next_token_logits(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: Cache | None = None
    ) -> tuple[Tensor, Cache]:
        """Logits [B, V] of the token after each row's last one, and the key-value ``cache`` grown by ``input_ids``.

        The decoding step of a key-value cache: the first call passes whole prefixes (``cache`` None starts
        one), each later call the newest token of every row. ``attention_mask`` [B, cached + new] covers
        the cached and new tokens (0 at left padding) and ``position_ids`` [B, new] are the new tokens'
        positions, so left-padded prefixes of different lengths share one batch. Forbidden ids get ``-inf``.
        """
        if cache is None:
            cache = DynamicCache(config=self.backbone.config)
        out = self.backbone.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        return self._head_logits(out.last_hidden_state[:, -1], None), out.cache

    @classmethod
    def from_backbone(
        cls, path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
    ) -> CausalLMForComparison:
        """Start from a local pre-trained checkpoint, with or without an MLM head (never downloads).

        ``path`` holds a plain encoder such as ``BertModel`` (the LM head is created: transform freshly
        initialised, decoder tied to the word embeddings) or a masked LM such as ``BertForMaskedLM`` (its
        head is kept: a BERT LM head has the same shape either way). The encoder weights load into the
        causal model unchanged; only the attention mask becomes causal. The tokenizer (default: the one in
        ``path``) supplies the pad, cls and mask ids. Parameters that did not come from the checkpoint are
        listed in :attr:`newly_initialized_keys`. Weights are loaded in float32.
        """
        return cls._from_local_backbone(path, tokenizer)
