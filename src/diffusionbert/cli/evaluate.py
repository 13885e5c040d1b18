"""``diffusionbert evaluate``: a model's NLL bound on a text file, and metrics of samples it generates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import decoding_options, decoding_overrides, model_options, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[*model_options(), decoding_options(exclude=("num_samples", "mbr"))],
        help="NLL bound of a model on a text file, per token and per word",
    )
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
    p.add_argument("--data", required=True, help=".txt (one sentence per line), .jsonl or .csv")
    p.add_argument("--field", help="column / key holding the text (.csv / .jsonl); for pairs the targets'")
    p.add_argument("--source-field", help="column of the sources, for a model trained on pairs (E2E: mr)")
    p.add_argument("--max-examples", type=positive_int, help="evaluate only the first N examples")
    p.add_argument("--repeats", type=positive_int, default=1, help="Monte-Carlo draws of t per sentence")
    p.add_argument(
        "--metrics", default="bound", help="comma list of: bound, bleu, self-bleu, dist, entropy, gen-ppl"
    )
    p.add_argument(
        "--num-samples", type=positive_int, default=1000, help="samples generated for the sample metrics"
    )
    p.add_argument("--judge", help="autoregressive checkpoint (objective 'ar') for generative perplexity")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import Evaluation, evaluate_file
    from ..utils.io import atomic_file

    evaluation = Evaluation(
        field=args.field,
        source_field=args.source_field,
        max_examples=args.max_examples,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        repeats=args.repeats,
        samples=args.num_samples,
        judge=args.judge,
    )
    report = evaluate_file(
        args.checkpoint,
        args.data,
        evaluation,
        device=args.device,
        progress=not args.no_progress,
        **decoding_overrides(args),
    )
    print(report.table())
    if args.out:
        text = json.dumps(report.to_dict(), indent=2)
        atomic_file(Path(args.out), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"wrote {args.out}")
