"""Measuring models: the NLL bound on a text file and metrics of generated text (BLEU, self-BLEU, dist-n,
unigram entropy, generative perplexity), as ``diffusionbert evaluate`` reports them; and conditional
generation over a file of sources scored against references (BLEU, NIST, ROUGE-L, CIDEr, E2E slot error
rate), as ``diffusionbert generate`` reports it."""

from ..training.bound import BoundResult, nll_bound
from .conditional import ConditionalScores, mbr_select, score_conditional
from .generation import (
    Generation,
    GenerationResult,
    SourceFile,
    generate_file,
    read_references,
    score_generations,
)
from .report import Evaluation, EvaluationReport, SampleMetrics, evaluate_file

__all__ = [
    "BoundResult",
    "ConditionalScores",
    "Evaluation",
    "EvaluationReport",
    "Generation",
    "GenerationResult",
    "SampleMetrics",
    "SourceFile",
    "evaluate_file",
    "generate_file",
    "mbr_select",
    "nll_bound",
    "read_references",
    "score_conditional",
    "score_generations",
]
