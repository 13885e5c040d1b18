"""``diffusionbert generate``: conditional generation over a file of sources, scored when it has references."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import decoding_options, model_options, positive_int


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
    p.add_argument(
        "--samples-per-source", type=positive_int, default=1, metavar="K", help="samples per source"
    )
    p.add_argument("--mbr", action="store_true", help="keep the minimum-Bayes-risk sample (BLEU) of the K")
    p.add_argument("--max-sources", type=positive_int, help="only the first N distinct sources")
    p.add_argument("--out", help="write one JSON per source here (source, text, nfe[, candidates])")
    p.add_argument("--scores-out", help="write the scores as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from ..errors import ConfigError
    from ..evaluation.generation import generate_file
    from ..utils.io import atomic_file

    if args.scores_out and not args.field:
        raise ConfigError("--scores-out needs references to score against; allowed: with --field")
    result = generate_file(
        args.checkpoint,
        args.data,
        args.source_field,
        reference_field=args.field,
        samples_per_source=args.samples_per_source,
        mbr=args.mbr,
        e2e=args.task == "e2e",
        max_sources=args.max_sources,
        sampler=args.sampler,
        steps=args.steps,
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance=args.guidance,
        end=args.end,
        block_length=args.block_length,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
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
