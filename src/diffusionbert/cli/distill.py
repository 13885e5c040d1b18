"""``diffusionbert distill``: a teacher's texts for every source of a pair file (sequence-level distillation)."""

from __future__ import annotations

import argparse

from .common import decoding_options, decoding_overrides, model_options, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        parents=[*model_options(), decoding_options(exclude=("mbr",))],
        help="write a pair file whose targets a teacher model wrote, one per distinct source, to train on",
        description="Decode every distinct source of --data with --teacher (an AR teacher with beam search, "
        "4 beams, unless --sampler says otherwise) and write the pairs to --out (.csv or .jsonl) with the "
        "columns --source-field and --field; train a student on it with data.train_file=OUT.",
    )
    p.add_argument("--teacher", required=True, help="model directory of a model trained on pairs")
    p.add_argument("--data", required=True, help=".csv or .jsonl with a source column (E2E: train.csv)")
    p.add_argument("--source-field", required=True, help="the column of the sources (E2E: mr)")
    p.add_argument(
        "--field", default="ref", help="the column the teacher's texts go in (default: ref, as E2E's)"
    )
    p.add_argument("--max-sources", type=positive_int, help="only the first N distinct sources")
    p.add_argument(
        "--task",
        choices=["e2e"],
        help="e2e: a text with slot errors gives way to the MR's reference (--field) with the fewest, if fewer",
    )
    p.add_argument("--out", required=True, help="the distilled pair file to write (.csv or .jsonl)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..apps.distill import distill
    from ..evaluation.generation import SourceFile

    result = distill(
        args.teacher,
        SourceFile(args.data, args.source_field, None, args.max_sources),
        args.out,
        target_field=args.field,
        e2e=args.task == "e2e",
        device=args.device,
        progress=not args.no_progress,
        **decoding_overrides(args),
    )
    skipped = f", {result.empty} left out (every sample empty)" if result.empty else ""
    skipped += f", {result.replaced:,} replaced by a reference with fewer slot errors" if args.task else ""
    print(
        f"distilled {result.sources:,} sources into {result.rows:,} pairs{skipped} in {result.seconds:.0f} s "
        f"({result.nfe:.1f} network calls a source): {result.out}"
    )
