"""A pre-trained BERT-family encoder as the denoiser of Gaussian diffusion on word embeddings (Diffusion-LM, Plaid).

:class:`EmbeddingDiffusionLM` keeps its own small embedding table E [V, D] (D = ``embedding_dim``, 16 by
default as in Diffusion-LM and Plaid), learned end to end and initialised from the backbone's word embeddings
(their first D principal directions, scaled to unit variance per dimension). Its network reads a sequence of
vectors z [B, L, D] (noisy embeddings where generated, clean embeddings of given tokens elsewhere), projects them
to the encoder's width, adds an embedding of the diffusion time, and runs the pre-trained encoder through
``inputs_embeds`` (the backbone's positions and LayerNorm apply as for token ids). Its output, at every
position asked for, is one of (``output``):

* ``embedding`` — a linear read-out f [D] from which the objective forms x̂ (Diffusion-LM). Rounding,
  p(w | z) = softmax_w(z · E_w), reads the same table (Diffusion-LM ties its rounding weights to it); the
  backbone's own word embeddings and vocabulary head are not used, so they are frozen.
* ``logits`` — the backbone's pre-trained vocabulary head, logits [V] over the clean word (Plaid's
  categorical parameterisation; the objective averages E under their softmax).

With ``self_conditioning`` (Plaid) the network also reads its previous estimate x̂ [D] at each position,
concatenated to z. With ``learned_schedule`` (Plaid) the model holds its log-SNR schedule γ(t)
(:class:`~diffusionbert.diffusion.gaussian.LearnedSchedule`), trained and saved with the weights.

The model is registered with ``AutoConfig`` and ``AutoModel`` in :mod:`diffusionbert.models`, so a saved one
loads without ``trust_remote_code``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from ..diffusion.gaussian import LearnedSchedule
from ..errors import ConfigError, invalid_choice
from .backbone import BackboneWrapperConfig
from .masked_lm import MaskedLMBackboneModel, TimeEmbedding


@strict
class EmbeddingDiffusionConfig(BackboneWrapperConfig):
    """Config of an :class:`EmbeddingDiffusionLM`: the backbone's config, the special ids, D, the kind of
    output, and whether it self-conditions and learns its noise schedule (see the module doc)."""

    model_type = "diffusionbert-embedding"

    embedding_dim: int = 16
    output: str = "embedding"
    self_conditioning: bool = False
    learned_schedule: bool = False

    def __post_init__(self, **kwargs: object) -> None:
        super().__post_init__(**kwargs)
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim={self.embedding_dim} is not valid; allowed: embedding_dim >= 1")
        if self.output not in OUTPUTS:
            raise invalid_choice("output", self.output, OUTPUTS)
        self._derive_forbidden_token_ids()


OUTPUTS = ("embedding", "logits")
LEARNED_GAMMA_0, LEARNED_GAMMA_1 = -13.3, 5.0  # VDM's initial end points of a learned log-SNR schedule


@dataclass
class EmbeddingDiffusionOutput(ModelOutput):
    """``prediction``: the network's output at the positions asked for, [n, D] (``output='embedding'``) or
    [n, V] logits (``output='logits'``); [B, L, …] without positions."""

    prediction: Tensor | None = None


class EmbeddingDiffusionLM(MaskedLMBackboneModel):
    """The denoiser of Gaussian embedding diffusion: a pre-trained encoder reading noisy embeddings (module doc)."""

    config_class = EmbeddingDiffusionConfig

    def __init__(self, config: EmbeddingDiffusionConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config, backbone)
        hidden = self.backbone.config.hidden_size
        dim = config.embedding_dim
        self.token_embedding = nn.Embedding(self.backbone.config.vocab_size, dim)
        self.input_projection = nn.Linear(dim * (2 if config.self_conditioning else 1), hidden)
        self.time_embedding = TimeEmbedding(hidden)
        if config.output == "embedding":
            self.output_projection = nn.Linear(hidden, dim)
        if config.learned_schedule:
            self.noise_schedule = LearnedSchedule(gamma_0=LEARNED_GAMMA_0, gamma_1=LEARNED_GAMMA_1)
        self._freeze_unused()
        self._finish_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, LearnedSchedule):  # its own initialisation sets the end points
            return
        super()._init_weights(module)

    def _freeze_unused(self) -> None:
        """With ``output='embedding'`` the backbone's word embeddings and vocabulary head are neither read nor
        trained (rounding reads :attr:`token_embedding`): no gradient, so that data-parallel training does
        not wait for one. (With logits the head is the read-out, and its decoder is tied to them.)"""
        if self.config.output != "embedding":
            return
        for name in self.head_path:
            getattr(self.backbone, name).requires_grad_(False)
        self.backbone.get_input_embeddings().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """Hugging Face loading, with the unused backbone parts frozen again (loading makes new parameters)."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze_unused()
        return loaded

    def embed(self, input_ids: Tensor) -> Tensor:
        """The clean embeddings E[ids] [..., D]."""
        return self.token_embedding(input_ids)

    def rounding_logits(self, z: Tensor) -> Tensor:
        """Logits of p(w | z) = softmax_w(z · E_w) [..., V] for vectors z [..., D]; forbidden ids get −inf."""
        return self._without_forbidden(z @ self.token_embedding.weight.T)

    def likelihood_logits(self, z: Tensor, alpha: Tensor, variance: Tensor) -> Tensor:
        """log N(z; α E_w, variance · I) over the words w [..., V], up to a constant in w:
        (α / variance) z · E_w − α² ‖E_w‖² / (2 variance); ``alpha`` and ``variance`` broadcast as [..., 1].
        Forbidden ids get −inf."""
        table = self.token_embedding.weight
        logits = (alpha / variance) * (z @ table.T) - (alpha**2 / (2 * variance)) * table.pow(2).sum(-1)
        return self._without_forbidden(logits)

    def _without_forbidden(self, logits: Tensor) -> Tensor:
        forbidden = torch.tensor(self.config.forbidden_token_ids, device=logits.device)
        return logits.index_fill(-1, forbidden, float("-inf"))

    def forward(
        self,
        latents: Tensor,
        attention_mask: Tensor | None = None,
        t: Tensor | None = None,
        positions: Tensor | None = None,
        self_condition: Tensor | None = None,
    ) -> EmbeddingDiffusionOutput:
        """The network's output for the vectors ``latents`` [B, L, D] at diffusion time ``t`` [B] (in [0, 1]).

        Returns ``.prediction`` at the n True entries of the bool mask ``positions`` [B, L] (row-major), [n, D]
        or [n, V] (see :class:`EmbeddingDiffusionOutput`). A self-conditioning model reads
        ``self_condition`` [B, L, D], its previous x̂ (zeros when None: no estimate yet)."""
        batch, length, dim = latents.shape
        if dim != self.config.embedding_dim:
            raise ConfigError(
                f"latents have {dim} dimensions; allowed: embedding_dim={self.config.embedding_dim}"
            )
        self._check_inputs(latents[..., 0], positions)
        if t is None or t.shape != (batch,):
            got = None if t is None else tuple(t.shape)
            raise ConfigError(f"t={got} is not valid; allowed: a float tensor of shape ({batch},) in [0, 1]")
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=latents.device)
        if self.config.self_conditioning:
            previous = torch.zeros_like(latents) if self_condition is None else self_condition
            latents = torch.cat([latents, previous.to(latents.dtype)], dim=-1)
        elif self_condition is not None:
            raise ConfigError("self_condition was given to a model trained without self-conditioning")
        inputs = self.input_projection(latents) + self.time_embedding(t.to(latents.device))[:, None]
        hidden = self.backbone.base_model(inputs_embeds=inputs, attention_mask=attention_mask)[0]
        if self.config.output == "logits":
            return EmbeddingDiffusionOutput(prediction=self._head_logits(hidden, positions))
        if positions is not None:
            hidden = hidden[positions]
        return EmbeddingDiffusionOutput(prediction=self.output_projection(hidden))

    @torch.no_grad()
    def init_embedding_from_backbone(self) -> None:
        """E from the backbone's word embeddings: their top D principal directions, unit variance per column,
        so tokens the encoder finds alike start close together."""
        words = self.backbone.get_input_embeddings().weight.detach().double()
        if self.config.embedding_dim > min(words.shape):
            raise ConfigError(
                f"diffusion.embedding_dim={self.config.embedding_dim} is larger than the backbone's word "
                f"embeddings ({words.shape[1]}); allowed: at most {min(words.shape)}"
            )
        centred = words - words.mean(0)
        _, _, directions = torch.linalg.svd(centred, full_matrices=False)
        projected = centred @ directions[: self.config.embedding_dim].T
        projected = projected / projected.std(0).clamp_min(1e-12)
        self.token_embedding.weight.copy_(projected.to(self.token_embedding.weight.dtype))

    @classmethod
    def from_backbone(
        cls,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase | None = None,
        **settings: Any,
    ) -> EmbeddingDiffusionLM:
        """Start from a local pre-trained checkpoint (never downloads); E from its word embeddings.
        ``settings`` are config fields (``embedding_dim``, ``output``, ``self_conditioning``,
        ``learned_schedule``)."""
        model = cls._from_local_backbone(path, tokenizer, **settings)
        model.init_embedding_from_backbone()
        return model
