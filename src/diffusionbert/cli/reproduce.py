"""``diffusionbert reproduce``: train and evaluate every row of a plan; writes docs/results.md."""

from __future__ import annotations

import argparse

from .common import model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        parents=model_options(),
        help="train and evaluate every row of a plan; writes docs/results.md",
    )
    p.add_argument("--plan", default="configs/reproduce.yaml", help="reproduction plan (YAML)")
    p.add_argument("--train-only", action="store_true", help="train the rows, evaluate nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..apps.reproduce import reproduce

    page = reproduce(args.plan, progress=not args.no_progress, train_only=args.train_only, device=args.device)
    print("trained every row" if page is None else f"wrote {page}")
