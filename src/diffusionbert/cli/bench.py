"""``diffusionbert bench``: benchmarks against naive references; writes docs/benchmarks.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import model_options, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        parents=model_options(),
        help="benchmarks against naive references; writes docs/benchmarks.md",
    )
    p.add_argument(
        "--data", required=True, help="sentences for the training benchmark (make bench: LM1B train)"
    )
    p.add_argument("--sentences", type=positive_int, default=256)
    p.add_argument("--steps", type=positive_int, default=4)
    p.add_argument(
        "--rounds", type=positive_int, default=3, help="timings of each training step kind, alternating"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="runs/demo/final", help="trained model for the sampling benchmark")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument(
        "--e2e-plan",
        default="configs/reproduce-e2e.yaml",
        help="E2E plan whose results the speed comparison uses",
    )
    p.add_argument("--e2e-sources", type=positive_int, default=32, help="test MRs timed per decoder")
    p.add_argument(
        "--instruct-plan",
        default="configs/reproduce-instruct.yaml",
        help="instruction-tuning plan whose models the chat timing uses",
    )
    p.add_argument("--chat-prompts", type=positive_int, default=32, help="instructions answered per model")
    p.add_argument(
        "--soak-config",
        default="configs/demo.yaml",
        help="config of the soak run (resident memory over time)",
    )
    p.add_argument(
        "--soak-steps",
        type=step_list,
        default=(50, 500, 2000),
        help="steps at which the soak run's memory is read, comma-separated (empty: no soak run)",
    )
    p.add_argument(
        "--only",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        default=(),
        metavar="SECTION,...",
        help="measure only these sections (training, sampling, families, conditional, chat, memory) and keep "
        "the page's others",
    )
    p.add_argument("--out", default="docs/benchmarks.md")
    p.set_defaults(func=run)


def step_list(text: str) -> tuple[int, ...]:
    """``50,500,2000`` as increasing positive steps; an empty text is no steps."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of steps") from None
    if any(s <= 0 for s in steps) or list(steps) != sorted(set(steps)):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; allowed: increasing positive steps")
    return steps


def run(args: argparse.Namespace) -> None:
    from ..apps.bench import BenchSettings, run_bench

    settings = BenchSettings(
        Path(args.data),
        Path(args.checkpoint),
        sentences=args.sentences,
        steps=args.steps,
        rounds=args.rounds,
        seed=args.seed,
        num_samples=args.num_samples,
        e2e_plan=Path(args.e2e_plan),
        e2e_sources=args.e2e_sources,
        instruct_plan=Path(args.instruct_plan),
        chat_prompts=args.chat_prompts,
        soak_config=Path(args.soak_config),
        soak_steps=args.soak_steps,
        only=args.only,
    )
    out = run_bench(settings, Path(args.out), device=args.device)
    print(f"wrote {out}")
