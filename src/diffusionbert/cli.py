"""``diffusionbert`` command line: argument parsing and printing only; the work lives in the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .allocator import keep_freed_memory
from .errors import DiffusionBertError


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress: no hub access, no per-file bars from datasets/transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .training import train

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"training.output_dir={args.output_dir}")
    if args.max_steps is not None:
        overrides.append(f"training.max_steps={args.max_steps}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"trained {result.steps} steps; model in {result.final_dir}")
    if result.final_bound is not None:
        b = result.final_bound
        word = f", PPL per word {b.ppl_per_word:.2f}" if b.ppl_per_word is not None else ""
        print(f"validation NLL bound: {b.nats_per_token:.4f} ± {b.stderr_per_token:.4f} nats/token{word}")


def cmd_sample(args: argparse.Namespace) -> None:
    from .checkpoint import load_model_dir
    from .errors import ConfigError

    loaded = load_model_dir(args.checkpoint)
    sharpening = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    common = {"seed": args.seed, "batch_size": args.batch_size, "progress": not args.no_progress}
    if loaded.diffusion_cfg.objective == "ar":
        from .autoregressive import generate_left_to_right
        from .evaluation import AR_SAMPLER

        given = [f"--{k}" for k in ("prompt", "infill", "source", "trajectory") if getattr(args, k)]
        if given or args.sampler not in (None, AR_SAMPLER):
            what = ", ".join(given) or f"--sampler {args.sampler}"
            raise ConfigError(
                f"{what} does not apply to an autoregressive checkpoint; it samples left to right"
            )
        out = generate_left_to_right(
            loaded.model, loaded.tokenizer, args.num_samples, args.length, **sharpening, **common
        )
    else:
        from .pipeline import DiffusionPipeline

        out = DiffusionPipeline.from_loaded(loaded)(
            num_samples=args.num_samples,
            length=args.length,
            steps=args.steps,
            sampler=args.sampler or "ancestral",
            prompt=args.prompt,
            infill=args.infill,
            source=args.source,
            return_trajectory=args.trajectory,
            **sharpening,
            **common,
        )
    records = []
    for i, (text, length, nfe) in enumerate(zip(out.texts, out.lengths, out.nfe, strict=True)):
        record: dict[str, object] = {"text": text, "length": length, "nfe": nfe}
        if out.trajectories is not None:
            record["trajectory"] = [
                loaded.tokenizer.decode(state, skip_special_tokens=False) for state in out.trajectories[i]
            ]
        records.append(record)
    if args.out:
        path = Path(args.out)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {len(records)} samples to {path}")
    else:
        for record in records:
            print(record["text"] if not args.trajectory else json.dumps(record))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_file

    report = evaluate_file(
        args.checkpoint,
        args.data,
        field=args.field,
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        seed=args.seed,
        repeats=args.repeats,
        progress=not args.no_progress,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        num_samples=args.num_samples,
        sampler=args.sampler,
        steps=args.steps,
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        judge=args.judge,
    )
    print(report.table())
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        print(f"wrote {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    result = run_demo(args.config, tuple(args.overrides), fresh=args.fresh, progress=not args.no_progress)
    b = result.bound
    print(
        f"validation NLL bound: {b.nats_per_token:.4f} ± {b.stderr_per_token:.4f} nats/token"
        + (f", PPL per word {b.ppl_per_word:.2f}" if b.ppl_per_word is not None else "")
    )
    print("samples:")
    for text in result.samples:
        print(f"  {text}")
    print(f"report: {result.report}")


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench import (
        bench_sampling,
        bench_training,
        machine_description,
        sampling_report,
        training_report,
    )
    from .errors import CheckpointError

    if not (Path(args.checkpoint) / "diffusion.json").is_file():
        raise CheckpointError(
            f"sampling benchmark needs a trained model at {args.checkpoint}: run `make demo` first"
        )
    machine = machine_description()
    naive, ours, peak = bench_training(
        Path(args.data), num_sentences=args.sentences, steps=args.steps, seed=args.seed, rounds=args.rounds
    )
    sections = [
        training_report(
            naive,
            ours,
            peak,
            (
                f"Machine: {machine}. Packaged MiniLM-L6, spindle DiffusionBERT objective (T = 2048), batch 32 of the "
                f"first {args.sentences} sentences of `{args.data}`, {args.steps} timed steps after one warm-up, AdamW, "
                f"{args.rounds} rounds of each step kind, alternating, "
                f"seed {args.seed}."
            ),
        )
    ]
    print(sections[0])
    timings = bench_sampling(Path(args.checkpoint), num_samples=args.num_samples, seed=args.seed)
    sections.append(
        sampling_report(
            timings,
            (
                f"Machine: {machine}. Model `{args.checkpoint}` (the demo model), {args.num_samples} samples of "
                f"length 64 in one batch, seed {args.seed}; NFE counts network calls per sample."
            ),
        )
    )
    print(sections[1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Benchmarks\n\nEvery number below comes from `make bench` (`diffusionbert bench`), "
        "ratios measured within one run.\n\n" + "\n".join(sections),
        encoding="utf-8",
    )
    print(f"wrote {out}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from .reproduce import reproduce

    page = reproduce(args.plan, progress=not args.no_progress, train_only=args.train_only)
    print("trained every row" if page is None else f"wrote {page}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffusionbert", description="Train, sample from and evaluate diffusion language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train or fine-tune a model from a YAML config")
    p.add_argument("--config", required=True, help="YAML config file (see configs/)")
    p.add_argument("--output-dir", help="overrides training.output_dir")
    p.add_argument("--max-steps", type=int, help="overrides training.max_steps")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate texts from a trained model")
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument(
        "--length", type=int, default=32, help="generated positions (a [SEP] may end a text earlier)"
    )
    p.add_argument("--steps", type=int, default=64, help="denoising steps (network calls at most)")
    p.add_argument(
        "--sampler",
        help="ancestral (default) | cached | confidence | threshold | gibbs; an AR checkpoint samples left to "
        "right, its only sampler ('autoregressive'), as in `evaluate`",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt", help="fixed text right after [CLS]")
    group.add_argument("--infill", help="text with [MASK] placeholders; only those are generated")
    group.add_argument("--source", help="seq2seq source; the target is generated (pair-trained models)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="write JSONL (text, length, nfe[, trajectory]) here instead of printing")
    p.add_argument("--trajectory", action="store_true", help="include the denoising path")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="NLL bound of a model on a text file, per token and per word")
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
    p.add_argument("--data", required=True, help=".txt (one sentence per line), .jsonl or .csv")
    p.add_argument("--field", help="column / key holding the text (.csv / .jsonl)")
    p.add_argument("--max-examples", type=int, help="evaluate only the first N examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="Monte-Carlo draws of t per sentence")
    p.add_argument(
        "--metrics", default="bound", help="comma list of: bound, bleu, self-bleu, dist, entropy, gen-ppl"
    )
    p.add_argument("--num-samples", type=int, default=1000, help="samples generated for the sample metrics")
    p.add_argument(
        "--sampler",
        help="diffusion sampler (default ancestral); AR checkpoints sample with 'autoregressive' (default)",
    )
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=128, help="sampling steps for the sample metrics")
    p.add_argument("--length", type=int, default=64, help="sample length for the sample metrics")
    p.add_argument("--judge", help="autoregressive checkpoint (objective 'ar') for generative perplexity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="fine-tune MiniLM on E2E, sample, evaluate and write runs/demo/report.md")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--fresh", action="store_true", help="delete the previous demo run and train again")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks against naive references; writes docs/benchmarks.md")
    p.add_argument("--data", default="../shared/data/lm1b/train.txt")
    p.add_argument("--sentences", type=_positive_int, default=256)
    p.add_argument("--steps", type=_positive_int, default=4)
    p.add_argument(
        "--rounds", type=_positive_int, default=3, help="timings of each training step kind, alternating"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="runs/demo/final", help="trained model for the sampling benchmark")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--out", default="docs/benchmarks.md")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reproduce", help="train and evaluate every row of a plan; writes docs/results.md")
    p.add_argument("--plan", default="configs/reproduce.yaml", help="reproduction plan (YAML)")
    p.add_argument("--train-only", action="store_true", help="train the rows, evaluate nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)
    return parser


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: every expected failure becomes one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    keep_freed_memory()
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except DiffusionBertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
