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
    e2e = sub.add_parser(
        "reproduce-e2e",
        parents=model_options(),
        help="train the E2E data-to-text models and score every decoder; writes docs/results-e2e.md",
    )
    e2e.add_argument("--plan", default="configs/reproduce-e2e.yaml", help="E2E reproduction plan (YAML)")
    e2e.add_argument("--train-only", action="store_true", help="train the models, decode nothing")
    e2e.add_argument(
        "--models",
        type=_names,
        metavar="NAME,...",
        help="train only these models of the plan, decode nothing (the plan's folders, reused by a whole run)",
    )
    e2e.set_defaults(func=run_e2e)
    instruct = sub.add_parser(
        "reproduce-instruct",
        parents=model_options(),
        help="adapt, instruction-tune and score a diffusion and an AR model; writes docs/results-instruct.md",
    )
    instruct.add_argument(
        "--plan", default="configs/reproduce-instruct.yaml", help="instruction-tuning plan (YAML)"
    )
    instruct.add_argument("--train-only", action="store_true", help="train the models, score nothing")
    instruct.set_defaults(func=run_instruct)


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of model names."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no model; expected NAME[,NAME...]")
    return names


def run(args: argparse.Namespace) -> None:
    from ..apps.reproduce import reproduce

    page = reproduce(args.plan, progress=not args.no_progress, train_only=args.train_only, device=args.device)
    print("trained every row" if page is None else f"wrote {page}")


def run_e2e(args: argparse.Namespace) -> None:
    from ..apps.reproduce_e2e import reproduce_e2e

    page = reproduce_e2e(
        args.plan,
        progress=not args.no_progress,
        train_only=args.train_only,
        device=args.device,
        models=args.models,
    )
    if page is not None:
        print(f"wrote {page}")
    else:
        print("trained every model" if args.models is None else f"trained {', '.join(args.models)}")


def run_instruct(args: argparse.Namespace) -> None:
    from ..apps.reproduce_instruct import reproduce_instruct

    page = reproduce_instruct(
        args.plan, progress=not args.no_progress, train_only=args.train_only, device=args.device
    )
    print("trained every model" if page is None else f"wrote {page}")
