"""Training: the loop (:mod:`.trainer`), the run's objects it is built from (:mod:`.build`), the state it carries
from step to step (:mod:`.state`), its checkpoints (:mod:`.checkpointing`), the step where a loss meets the model
(:mod:`.step`), the bound the trainer validates with (:mod:`.bound`) and the run's logs (:mod:`.logger`)."""

from .bound import BoundResult, nll_bound
from .build import lr_lambda
from .checkpointing import run_finished
from .state import EMA
from .step import denoiser_terms
from .trainer import Trainer, TrainResult, train, train_or_reuse

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
