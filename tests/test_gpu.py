"""The GPU smoke path (``make test-gpu``): a few training steps of every objective on CUDA, sampling, and the
bound in bf16 against fp32. Skipped, saying so, where no CUDA device is present (``make test`` on a CPU)."""

from __future__ import annotations

import pytest
import torch

from diffusionbert.config import load_config
from diffusionbert.methods import METHODS
from diffusionbert.sampling import load_pipeline
from diffusionbert.training import Trainer, train
from diffusionbert.training.build import resolve_precision

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: make test-gpu runs these on a GPU machine"
)


@pytest.mark.parametrize("objective", sorted(METHODS))
def test_every_objective_trains_and_samples_on_cuda(tiny_config, objective) -> None:
    path, out = tiny_config(
        diffusion={"objective": objective, "schedule": None},
        training={"max_steps": 3, "save_every": 0, "eval_every": 0},
    )
    result = train(load_config(path), progress=False, device="cuda")
    assert result.steps == 3
    pipe = load_pipeline(out / "final", device="cuda")
    texts = pipe(num_samples=2, length=8, steps=8, seed=0).texts
    assert (
        len(texts) == 2 and pipe(num_samples=2, length=8, steps=8, seed=0).texts == texts
    )  # seeded on the GPU too


def test_the_bf16_bound_agrees_with_fp32(tiny_config) -> None:
    """``precision: auto`` picks bf16 autocast on a GPU that has it, and that changes the bound by rounding
    only (within 2 %) on the same weights."""
    assert resolve_precision("auto", torch.device("cuda")) == (
        "bf16" if torch.cuda.is_bf16_supported() else "no"
    )
    path, _ = tiny_config(training={"max_steps": 4, "save_every": 0, "eval_every": 0, "precision": "fp32"})
    trainer = Trainer(load_config(path), progress=False, device="cuda")
    try:
        fp32 = trainer.evaluate().nats_per_token
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = trainer.evaluate().nats_per_token
    finally:
        trainer.close()
    assert bf16 == pytest.approx(fp32, rel=0.02) and bf16 != fp32
