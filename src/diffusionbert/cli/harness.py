"""``diffusionbert lm-eval``: models in EleutherAI's lm-evaluation-harness, on its tasks or the local E2E ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import model_options, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lm-eval",
        parents=model_options(),
        help="evaluate models with lm-evaluation-harness (local tasks: e2e_choice, e2e_gen)",
        description="Run harness tasks on each --checkpoint: loglikelihood is minus the model's NLL bound "
        "(exact for AR), generation its saved decoding. The local tasks read DATA_DIR/e2e/test.csv.",
    )
    p.add_argument("--checkpoint", required=True, action="append", help="model directory (repeatable)")
    p.add_argument("--tasks", required=True, help="comma list of harness tasks (local: e2e_choice, e2e_gen)")
    p.add_argument(
        "--model-args",
        default="",
        help="k=v,... : mc_draws (32, even), stratified (true), seed (the model's)",
    )
    p.add_argument("--batch-size", type=positive_int, help="sources per generation batch (the model's)")
    p.add_argument("--limit", type=positive_int, help="only the first N documents of each task")
    p.add_argument("--data-dir", default="../shared/data", help="where e2e/test.csv is (../shared/data)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--report", help="write a Markdown results page here (with --draws' table)")
    p.add_argument(
        "--draws",
        default="4,16,64",
        help="draws of the standard-error table of --report (4,16,64; even, >= 2)",
    )
    p.add_argument(
        "--draws-limit",
        type=positive_int,
        default=25,
        help="documents of e2e_choice the standard-error table scores at each number of draws (25)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lm_eval.utils import make_table, simple_parse_args_string

    from ..apps.harness import draws_table, report_markdown, run_harness
    from ..errors import ConfigError
    from ..utils.io import atomic_file
    from ..utils.runtime import machine_description

    model_args = simple_parse_args_string(args.model_args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        draws = [int(n) for n in args.draws.split(",") if n.strip()]
    except ValueError:
        raise ConfigError(
            f"--draws={args.draws!r} is not valid; allowed: a comma list of even integers"
        ) from None
    options = {
        "data_dir": args.data_dir,
        "limit": args.limit,
        "device": args.device,
        "batch_size": args.batch_size,
        "progress": not args.no_progress,
    }
    runs = []
    for checkpoint in args.checkpoint:
        result = run_harness(checkpoint, tasks, model_args=model_args, **options)
        print(f"{checkpoint} ({result.objective})")
        print(make_table({"results": result.results, "versions": {}, "n-shot": {}, "higher_is_better": {}}))
        if (error := result.mean_stderr()) is not None:
            print(f"Monte Carlo standard error of a loglikelihood: {error:.4f} nats (root mean square)")
        runs.append(result)
    if args.out:
        text = json.dumps([r.__dict__ for r in runs], indent=2, default=str)
        atomic_file(Path(args.out), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"wrote {args.out}")
    if args.report:
        table = {}
        for r in (r for r in runs if r.stderrs):
            ways = [(True, r.checkpoint)]
            if r.independent_in_training:
                ways.append((False, f"{r.checkpoint}, independent draws"))
            for stratified, label in ways:
                table[label] = draws_table(
                    r.checkpoint,
                    draws,
                    model_args={**model_args, "stratified": stratified},
                    **{**options, "limit": args.draws_limit},
                )
        settings = {
            "tasks": ",".join(tasks),
            "limit": args.limit or "all",
            "seed": "each model's decoding seed",
            **model_args,
            "standard-error table": f"the first {args.draws_limit} e2e_choice documents",
            "machine": machine_description(),
        }
        page = report_markdown(runs, settings, table, args.report)
        atomic_file(Path(args.report), lambda tmp: tmp.write_text(page, encoding="utf-8"))
        print(f"wrote {args.report}")
