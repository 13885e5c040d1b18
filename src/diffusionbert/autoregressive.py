"""An autoregressive baseline on the same backbone: a causal LM trained and scored like the diffusion models.

:class:`CausalLMForComparison` wraps the backbone family's ``AutoModelForCausalLM`` (``BertLMHeadModel`` for
BERT, ``RobertaForCausalLM``, ``ElectraForCausalLM``) with ``is_decoder=True``, so self-attention is causal,
and starts it from the same pre-trained encoder checkpoint as the diffusion denoiser. Its ``forward`` takes
the denoiser's call, ``model(x_t, attention_mask, t=..., positions=...)``, so the trainer and the evaluator
drive it through :func:`diffusionbert.evaluation.denoiser_terms` unchanged: ``t`` is ignored and
``positions`` selects the rows that go through the vocabulary projection.

:class:`AutoregressiveObjective` turns a batch into next-token prediction: nothing is masked, position ``i``
predicts token ``i + 1``, and the loss is the exact negative log-likelihood by the chain rule, scored on the
same tokens the diffusion bounds score. So the per-token and per-word perplexities of the AR row and of the
diffusion rows come out of the same evaluator and are directly comparable (the AR number is exact, the
diffusion numbers are upper bounds).

The model is registered with ``AutoConfig`` and ``AutoModelForCausalLM`` at import, so
``AutoModelForCausalLM.from_pretrained(dir)`` loads a saved one without ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutput

from .errors import CheckpointError, ConfigError
from .losses import LossTerms, cross_entropy
from .modeling import BackboneWrapperConfig, BackboneWrapperModel, DiffusionBertConfig
from .objectives import Corrupted, Objective

if TYPE_CHECKING:
    from .pipeline import SampleOutput

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
        path, tokenizer = cls._local_checkpoint(path, tokenizer)
        backbone_config = AutoConfig.from_pretrained(path, local_files_only=True)
        if isinstance(backbone_config, CausalLMConfig | DiffusionBertConfig):
            raise CheckpointError(
                f"backbone path={str(path)!r} is already a trained {backbone_config.model_type!r} model; "
                "allowed: a pre-trained encoder here, or load this one with from_pretrained"
            )
        config = CausalLMConfig(
            backbone_config=backbone_config, **CausalLMConfig.special_token_ids(tokenizer)
        )
        backbone, config.new_parameter_names = cls._load_backbone(path, config)
        return cls(config, backbone=backbone)


def tiny_causal_model(
    vocab_size: int = 64,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    model_type: str = "bert",
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> CausalLMForComparison:
    """A tiny random causal LM (2 layers, hidden 32, 2 heads) for tests.

    Vocabulary, special ids and ``seed`` are handled as in :func:`diffusionbert.modeling.tiny_model`.
    """
    sizes = {"intermediate_size": 64}
    return CausalLMForComparison._tiny_random(
        tokenizer, vocab_size, model_type, max_position_embeddings, seed, sizes
    )


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
    from rich.progress import Progress

    from .pipeline import SampleOutput, check_sample_request, sample_generator
    from .samplers import RowRandom, Sharpening, gumbel_argmax

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


class AutoregressiveObjective(Objective):
    """Next-token prediction scored on the diffusion's noisable tokens: the exact NLL by the chain rule.

    Scored tokens are exactly those of ``noise_mask``: in the sentence layout every token after ``[CLS]``,
    including the final ``[SEP]`` as end-of-sentence (for pairs, the target and its ``[SEP]``, conditioned
    on the source). That is the count the diffusion bounds divide by, so per-token and per-word perplexities
    are comparable. Token ``i + 1`` is predicted at position ``i``, hence
    ``masked[:, i] = noise_mask[:, i + 1]`` and nothing is corrupted (``x_t = x_0``, ``t = 0``).
    ``mask_id`` is kept for the uniform constructor and unused. The objective is only meaningful with a
    causal model such as :class:`CausalLMForComparison`: a bidirectional masked LM would see the token it is
    asked to predict.
    """

    name: ClassVar[str] = "ar"
    time_agnostic_only: ClassVar[bool] = True

    def corrupt(self, x0: Tensor, noise_mask: Tensor, generator: torch.Generator) -> Corrupted:
        """The scored positions; draws nothing (``generator`` is accepted for the common signature)."""
        if bool(noise_mask[:, 0].any()):
            raise ConfigError(
                f"noise_mask marks position 0 in {int(noise_mask[:, 0].sum())} row(s), which an "
                "autoregressive model cannot score (nothing precedes it); allowed: noise_mask False in "
                "column 0, e.g. data.layout='sentence' (not 'packed')"
            )
        masked = torch.cat([noise_mask[:, 1:], torch.zeros_like(noise_mask[:, :1])], dim=1)
        time = torch.zeros(x0.shape[0], device=x0.device)
        return Corrupted(x_t=x0, noise_mask=noise_mask, masked=masked, time=time)

    def loss(self, logits: Tensor, x0: Tensor, corrupted: Corrupted) -> LossTerms:
        """Summed cross-entropy of ``logits`` [n, V] (at ``corrupted.masked``) against the next tokens."""
        targets = x0[:, 1:][corrupted.masked[:, :-1]]
        nll = cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets).sum()
        return LossTerms(nll, nll)


AutoConfig.register("diffusionbert-causal-lm", CausalLMConfig, exist_ok=True)
AutoModelForCausalLM.register(CausalLMConfig, CausalLMForComparison, exist_ok=True)
