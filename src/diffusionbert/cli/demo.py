"""``diffusionbert demo``: fine-tune MiniLM on E2E, sample, evaluate, write runs/demo/report.md."""

from __future__ import annotations

import argparse

from .common import bound_line, model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        parents=model_options(),
        help="fine-tune MiniLM on E2E, sample, evaluate and write runs/demo/report.md",
    )
    p.add_argument("--config", default="configs/demo.yaml", help="run config (default: the checkout's demo)")
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
    )
    print(bound_line(result.bound))
    print("samples:")
    for text in result.samples:
        print(f"  {text}")
    print(f"report: {result.report}")
