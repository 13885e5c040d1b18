"""``diffusionbert generate``: conditional generation over a file of sources, scored when it has references."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import decoding_options, decoding_overrides, model_options, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        parents=[*model_options(), decoding_options()],
        help="generate a text for every source of a file (a model trained on pairs), and score it",
    )
    p.add_argument("--checkpoint", required=True, help="model directory of a model trained on pairs")
    p.add_argument("--data", required=True, help=".jsonl or .csv with a source column (and references)")
    p.add_argument("--source-field", required=True, help="the column of the sources (E2E: mr)")
    p.add_argument("--field", help="the column of the references (E2E: ref); given, the texts are scored")
    p.add_argument(
        "--task", choices=["e2e"], help="e2e: also the slot error rate of the meaning representations"
    )
    p.add_argument("--max-sources", type=positive_int, help="only the first N distinct sources")
    p.add_argument("--out", help="write one JSON per source here (source, text, nfe[, candidates])")
    p.add_argument("--scores-out", help="write the scores as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from ..errors import ConfigError
    from ..evaluation.generation import SourceFile, generate_file
    from ..utils.io import atomic_file

    if args.scores_out and not args.field:
        raise ConfigError("--scores-out needs references to score against; allowed: with --field")
    result = generate_file(
        args.checkpoint,
        SourceFile(args.data, args.source_field, args.field, args.max_sources),
        e2e=args.task == "e2e",
        device=args.device,
        progress=not args.no_progress,
        **decoding_overrides(args),
    )
    lines = "".join(g.to_json() + "\n" for g in result.generations)
    if args.out:
        atomic_file(Path(args.out), lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        print(f"wrote {len(result.generations)} generations to {args.out}")
    else:
        for generation in result.generations:
            print(f"{generation.source}\t{generation.text}")
    if result.scores is not None:
        print(result.scores.table())
        if args.scores_out:
            text = json.dumps(asdict(result.scores), indent=2)
            atomic_file(Path(args.scores_out), lambda tmp: tmp.write_text(text, encoding="utf-8"))
            print(f"wrote {args.scores_out}")
