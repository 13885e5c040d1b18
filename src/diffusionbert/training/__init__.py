"""Training: the loop (:mod:`.trainer`), the step where a loss meets the model (:mod:`.step`), the bound the
trainer validates with (:mod:`.bound`) and the run's logs (:mod:`.logger`)."""

from .bound import BoundResult, nll_bound
from .step import denoiser_terms
from .trainer import EMA, Trainer, TrainResult, lr_lambda, run_finished, train, train_or_reuse

__all__ = [
    "EMA",
    "BoundResult",
    "TrainResult",
    "Trainer",
    "denoiser_terms",
    "lr_lambda",
    "nll_bound",
    "run_finished",
    "train",
    "train_or_reuse",
]
