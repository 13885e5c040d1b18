"""The networks: Hugging Face ``PreTrainedModel`` wrappers of a BERT-family backbone.

Importing this package registers them with the Auto classes, so ``AutoModelForMaskedLM.from_pretrained(dir)``
and ``AutoModelForCausalLM.from_pretrained(dir)`` load a saved one without ``trust_remote_code``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .backbone import (
    BackboneWrapperConfig,
    BackboneWrapperModel,
    backbone_dir,
    default_backbone_path,
    parameter_groups,
)
from .causal_lm import CausalLMConfig, CausalLMForComparison
from .embedding_lm import EmbeddingDiffusionConfig, EmbeddingDiffusionLM
from .masked_lm import TIME_CONDITIONINGS, DiffusionBertConfig, DiffusionBertForMaskedLM

AutoConfig.register("diffusionbert", DiffusionBertConfig, exist_ok=True)
AutoModelForMaskedLM.register(DiffusionBertConfig, DiffusionBertForMaskedLM, exist_ok=True)
AutoConfig.register("diffusionbert-causal-lm", CausalLMConfig, exist_ok=True)
AutoModelForCausalLM.register(CausalLMConfig, CausalLMForComparison, exist_ok=True)
AutoConfig.register("diffusionbert-embedding", EmbeddingDiffusionConfig, exist_ok=True)
AutoModel.register(EmbeddingDiffusionConfig, EmbeddingDiffusionLM, exist_ok=True)

__all__ = [
    "TIME_CONDITIONINGS",
    "BackboneWrapperConfig",
    "BackboneWrapperModel",
    "CausalLMConfig",
    "CausalLMForComparison",
    "DiffusionBertConfig",
    "DiffusionBertForMaskedLM",
    "EmbeddingDiffusionConfig",
    "EmbeddingDiffusionLM",
    "backbone_dir",
    "default_backbone_path",
    "parameter_groups",
]
