"""``diffusionbert train``: train or fine-tune a model from a YAML config."""

from __future__ import annotations

import argparse

from .common import bound_line, model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", parents=model_options(), help="train or fine-tune a model from a YAML config")
    p.add_argument("--config", required=True, help="YAML config file (see configs/)")
    p.add_argument("--output-dir", help="overrides training.output_dir")
    p.add_argument("--max-steps", type=int, help="overrides training.max_steps")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue exactly from the newest checkpoint that loads"
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already in the output directory (checkpoints, final/, logs) and start anew",
    )
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..config import load_config
    from ..sampling.pipelines import check_trained_decoding
    from ..training import train

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"training.output_dir={args.output_dir}")
    if args.max_steps is not None:
        overrides.append(f"training.max_steps={args.max_steps}")
    cfg = load_config(args.config, overrides)
    check_trained_decoding(cfg)
    result = train(
        cfg, resume=args.resume, progress=not args.no_progress, device=args.device, overwrite=args.overwrite
    )
    print(f"trained {result.steps} steps; model in {result.final_dir}")
    if result.final_bound is not None:
        print(bound_line(result.final_bound))
