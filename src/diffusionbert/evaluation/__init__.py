"""Measuring models: the NLL bound on a text file and metrics of generated text (BLEU, self-BLEU, dist-n,
unigram entropy, generative perplexity), as ``diffusionbert evaluate`` reports them."""

from ..training.bound import BoundResult, nll_bound
from .report import EvaluationReport, SampleMetrics, evaluate_file

__all__ = ["BoundResult", "EvaluationReport", "SampleMetrics", "evaluate_file", "nll_bound"]
