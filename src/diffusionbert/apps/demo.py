"""``make demo``: fine-tune the packaged MiniLM on E2E references, sample, evaluate, write a report.

Re-running is safe: a finished run is reused, an interrupted one resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import load_config
from ..errors import ConfigError, DataError
from ..evaluation import evaluate_file
from ..evaluation.slots import self_contradictions
from ..sampling import load_pipeline
from ..training import BoundResult, train_or_reuse
from ..utils.runtime import default_device, machine_description


@dataclass(frozen=True)
class DemoResult:
    report: Path
    bound: BoundResult
    samples: list[str]


def _contradiction_note(text: str) -> str:
    """`` (contradicts itself on: slot, ...)`` for a sample that states two values of one slot, else empty."""
    slots = self_contradictions(text)
    return f" *(contradicts itself on: {', '.join(slots)})*" if slots else ""


def _loss_curve(log_file: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "nll_per_token" in record:
            steps.append(record["step"])
            losses.append(record["nll_per_token"])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, losses, lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training NELBO estimate (nats/token)")
    ax.set_title("DiffusionBERT fine-tuning on E2E references")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def run_demo(
    config: str | Path = "configs/demo.yaml",
    overrides: tuple[str, ...] = (),
    fresh: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> DemoResult:
    """Train (or reuse / resume), sample a handful of texts, evaluate the bound, write ``report.md``.

    The demo runs offline on local files: it turns off hub access for this process (a user's own runs keep
    theirs, e.g. for hub datasets).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cfg = load_config(config, overrides)
    if not cfg.data.valid_file:
        raise ConfigError("the demo needs data.valid_file to evaluate the bound")
    for name, path in (("data.train_file", cfg.data.train_file), ("data.valid_file", cfg.data.valid_file)):
        if path and not Path(path).exists():
            raise DataError(
                f"{name} {path} not found: the demo needs the shared data directory (../shared/data)"
            )
    out = Path(cfg.training.output_dir)
    started = time.perf_counter()
    if not train_or_reuse(cfg, progress=progress, device=device, overwrite=fresh):
        print("(pass --fresh to train again)")
    train_seconds = time.perf_counter() - started

    s = cfg.sampling
    pipe = load_pipeline(out / "final", default_device(device))
    started = time.perf_counter()
    sampled = pipe(
        num_samples=s.num_samples,
        length=s.length,
        steps=s.steps,
        sampler=s.sampler,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        seed=s.seed,
        progress=progress,
    )
    sample_seconds = time.perf_counter() - started
    evaluated = evaluate_file(
        out / "final",
        cfg.data.valid_file,
        field=cfg.data.field,
        max_examples=cfg.data.max_valid_examples,
        seed=cfg.training.seed,
        progress=progress,
        device=device,
    )
    _loss_curve(out / "log.jsonl", out / "loss_curve.png")
    report = out / "report.md"
    b = evaluated.bound
    lines = [
        "# diffusionbert demo report",
        "",
        f"Fine-tuned `{cfg.model.backbone}` ({cfg.model.init}, time conditioning `{cfg.model.time_conditioning}`) "
        f"with objective `{cfg.diffusion.objective}`, schedule `{cfg.diffusion.schedule}` "
        f"(T = {cfg.diffusion.num_steps}, λ = {cfg.diffusion.spindle_lambda}) on `{cfg.data.train_file}` "
        f"(field `{cfg.data.field}`) for {cfg.training.max_steps} steps of batch {cfg.training.batch_size}, "
        f"seed {cfg.training.seed}.",
        f"Machine: {machine_description()}. Training wall time (this invocation): {train_seconds:.0f} s.",
        "",
        "## Training curve",
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## NLL bound on the validation file",
        "",
        f"`{evaluated.data}`, first {evaluated.n_examples} examples, one Monte-Carlo draw of t per sentence "
        f"(seed {cfg.training.seed}):",
        "",
        "| nats / token | ± s.e. | PPL / token | PPL / word | tokens | words + EOS |",
        "|---|---|---|---|---|---|",
        f"| {b.nats_per_token:.4f} | {b.stderr_per_token:.4f} | {b.ppl_per_token:.2f} | "
        f"{'n/a' if b.ppl_per_word is None else f'{b.ppl_per_word:.2f}'} | {b.n_tokens} | {b.n_words} |",
        "",
        f"## Samples ({s.sampler}, {s.steps} steps, length ≤ {s.length}, seed {s.seed}, {sample_seconds:.1f} s)",
        "",
        *[f"{i + 1}. {text}{_contradiction_note(text)}" for i, text in enumerate(sampled.texts)],
        "",
        f"{sum(bool(self_contradictions(t)) for t in sampled.texts)} of {len(sampled.texts)} samples state two "
        "incompatible values of one E2E slot (`diffusionbert.evaluation.slots.self_contradictions`).",
        "",
        "Regenerate with `make demo` (reuses the run) or `make demo DEMO_ARGS=--fresh`.",
        "",
    ]
    report.write_text("\n".join(lines), encoding="utf-8")
    return DemoResult(report, b, list(sampled.texts))
