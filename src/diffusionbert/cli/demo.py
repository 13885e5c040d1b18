"""``diffusionbert demo``: fine-tune MiniLM into a data-to-text model on E2E, generate, score, write
runs/demo/report.md."""

from __future__ import annotations

import argparse

from .common import model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        parents=model_options(),
        help="fine-tune MiniLM on E2E (MR -> text), generate, score and write runs/demo/report.md",
    )
    p.add_argument("--config", default="configs/demo.yaml", help="run config (default: the checkout's demo)")
    p.add_argument(
        "--examples",
        help="file of the MRs the report describes, first 6 (default ../shared/data/e2e/test.csv)",
    )
    p.add_argument("--fresh", action="store_true", help="delete the previous demo run and train again")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..apps.demo import run_demo

    result = run_demo(
        args.config,
        tuple(args.overrides),
        fresh=args.fresh,
        progress=not args.no_progress,
        device=args.device,
        examples=args.examples,
    )
    if result.valid_nats_per_token is not None:
        print(f"validation NLL bound: {result.valid_nats_per_token:.4f} nats per target token")
    print(result.scores.table())
    print("descriptions of test MRs:")
    for generation in result.examples:
        print(f"  {generation.source}\n    -> {generation.text}")
    print("written without an MR:")
    for text in result.samples:
        print(f"  {text}")
    print(f"report: {result.report}")
