"""Generating text: samplers (one reverse step each, never calling the model), the one denoising loop that
calls it (whole, or in semi-autoregressive blocks), left-to-right sampling for AR models, and the pipelines that put a trained model behind one call."""

from .blocks import denoise_blocks
from .chat import ChatReply
from .draws import RowRandom, Sharpening, gumbel_argmax, sample_generator
from .left_to_right import generate_left_to_right
from .loop import DenoiseResult, denoise
from .output import SampleOutput
from .pipelines import (
    AutoregressivePipeline,
    DiffusionPipeline,
    EmbeddingDiffusionPipeline,
    Pipeline,
    load_pipeline,
    pipeline_for,
)
from .samplers import SAMPLERS, Sampler, build_sampler

__all__ = [
    "SAMPLERS",
    "AutoregressivePipeline",
    "ChatReply",
    "DenoiseResult",
    "DiffusionPipeline",
    "EmbeddingDiffusionPipeline",
    "Pipeline",
    "RowRandom",
    "SampleOutput",
    "Sampler",
    "Sharpening",
    "build_sampler",
    "denoise",
    "denoise_blocks",
    "generate_left_to_right",
    "gumbel_argmax",
    "load_pipeline",
    "pipeline_for",
    "sample_generator",
]
