"""Pipelines: a trained model, its tokenizer and its default decoding, ready to generate text in one call.

Python API::

    pipe = load_pipeline("runs/demo/final")            # the pipeline the model's method samples with
    out = pipe(num_samples=4, steps=16)                 # the model's saved decoding, two options changed
    print(out.texts)

One file per pipeline: the shared base and call (:mod:`.base`), masked diffusion with any sampler
(:mod:`.masked`), Gaussian embedding diffusion (:mod:`.embedding`) and left-to-right decoding of an AR model
(:mod:`.autoregressive`); where a text sits and where it ends is :mod:`.layout`. All take the same call, so
a comparison decodes every row the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...checkpoint import LoadedModel, load_model_dir
from ...config import Config
from ...errors import ConfigError
from ...methods import get_method
from .autoregressive import AutoregressivePipeline
from .base import MODES, PIPELINES, Outputs, Pipeline, Supports, TemplatePipeline
from .embedding import EmbeddingDiffusionPipeline
from .layout import Conditioning
from .masked import DiffusionPipeline, guided_logits


def pipeline_for(loaded: LoadedModel, device: torch.device | str | None = None) -> Pipeline:
    """The pipeline an already loaded model's method samples with."""
    return PIPELINES[loaded.method.sampling].from_loaded(loaded, device)


def check_trained_decoding(cfg: Config) -> None:
    """Refuse a run whose ``sampling:`` section (saved with the model as its default decoding) the pipeline of
    its method could not decode with: one line naming the section, before any training (an AR run of a
    config written for diffusion keeps its ``sampling.sampler=confidence`` otherwise, and no command could
    load the model it trains)."""
    pipeline = PIPELINES[get_method(cfg.diffusion.objective).sampling]
    try:
        pipeline.check_default_decoding(cfg.sampling)
    except ConfigError as exc:
        raise ConfigError(f"sampling (the model's default decoding): {exc}") from None


def load_pipeline(directory: str | Path, device: torch.device | str | None = None) -> Pipeline:
    """Load a model directory (or a run directory with ``final/``) into the pipeline its method samples with."""
    return pipeline_for(load_model_dir(directory, device), device)


__all__ = [
    "MODES",
    "PIPELINES",
    "AutoregressivePipeline",
    "Conditioning",
    "DiffusionPipeline",
    "EmbeddingDiffusionPipeline",
    "Outputs",
    "Pipeline",
    "Supports",
    "TemplatePipeline",
    "check_trained_decoding",
    "guided_logits",
    "load_pipeline",
    "pipeline_for",
]
