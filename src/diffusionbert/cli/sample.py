"""``diffusionbert sample``: generate texts from a trained model, with the sampler its method allows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import decoding_options, model_options, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", parents=[*model_options(), decoding_options()], help="generate texts from a trained model"
    )
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
    p.add_argument("--num-samples", type=positive_int, default=8)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt", help="fixed text right after [CLS]")
    group.add_argument("--infill", help="text with [MASK] placeholders; only those are generated")
    group.add_argument("--source", help="seq2seq source; the target is generated (pair-trained models)")
    p.add_argument("--out", help="write JSONL (text, length, nfe[, trajectory]) here instead of printing")
    p.add_argument("--trajectory", action="store_true", help="include the denoising path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..checkpoint import load_model_dir
    from ..sampling import pipeline_for
    from ..utils.io import atomic_file
    from ..utils.runtime import default_device

    loaded = load_model_dir(args.checkpoint, device=default_device(args.device))
    out = pipeline_for(loaded)(
        num_samples=args.num_samples,
        length=args.length if args.length is not None else (args.source and loaded.target_window) or 32,
        steps=args.steps,
        sampler=args.sampler,
        prompt=args.prompt,
        infill=args.infill,
        source=args.source,
        return_trajectory=args.trajectory,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance=args.guidance,
        end=args.end,
        block_length=args.block_length,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
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
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"wrote {len(records)} samples to {path}")
    else:
        for record in records:
            print(record["text"] if not args.trajectory else json.dumps(record))
