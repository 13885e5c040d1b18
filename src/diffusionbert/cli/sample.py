"""``diffusionbert sample``: generate texts from a trained model, with the sampler its method allows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import decoding_options, decoding_overrides, model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        parents=[*model_options(), decoding_options(exclude=("mbr",))],
        help="generate texts from a trained model",
    )
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
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
        prompt=args.prompt,
        infill=args.infill,
        source=args.source,
        return_trajectory=args.trajectory,
        progress=not args.no_progress,
        **decoding_overrides(args),
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
