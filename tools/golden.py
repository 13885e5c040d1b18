"""Golden outputs: every family trained a few steps, then sampled, generated, evaluated, chatted and served,
all seeded, written to one JSON file; two such files from two versions of the code must be equal.

A refactor that promises "behaviour does not change" (issue 26: one decoding-options object, the pipelines
and the trainer split) is checked with it::

    git worktree add /tmp/before <old commit>
    PYTHONPATH=/tmp/before/src .venv/bin/python tools/golden.py --work /tmp/golden-before --out before.json
    .venv/bin/python tools/golden.py --work /tmp/golden-after --out after.json
    .venv/bin/python tools/golden.py --compare before.json after.json

Every call names all its decoding options, so a changed *default* does not show here (defaults are tested
where they are defined); what shows is any change of a loss, a sampled token, a score or a bound. The runs
use the packaged MiniLM-L6 (dropout on) on a few hundred lines of ``../shared/data``: about 10 minutes on
2 CPU cores. Only the command-line interface, ``pipe.chat`` and the live page's HTTP API are used, so the
script runs unchanged against the code before and after a change of the Python API.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
"""MKL's matrix products may round differently with the memory alignment of their operands (which the work
done earlier in the process decides); its conditional numerical reproducibility mode makes a result depend
on the operands only, so two versions of the code that do the same arithmetic give the same bits."""

DATA = Path("../shared/data")
"""The shared data, from the project root (where the script is run)."""

PLAIN_FAMILIES = {
    "spindle": ["diffusion.objective=diffusionbert", "diffusion.schedule=spindle"],
    "spindle-layerwise": [
        "diffusion.objective=diffusionbert",
        "diffusion.schedule=spindle",
        "model.time_conditioning=layerwise",
    ],
    "linear-prefix": [
        "diffusion.objective=diffusionbert",
        "diffusion.schedule=linear",
        "model.time_conditioning=prefix_token",
    ],
    "rdm": ["diffusion.objective=rdm"],
    "mdlm": ["diffusion.objective=mdlm"],
    "md4": ["diffusion.objective=md4"],
    "sedd": ["diffusion.objective=sedd"],
    "radd": ["diffusion.objective=radd"],
    "mlm": ["diffusion.objective=mlm"],
    "ar": ["diffusion.objective=ar"],
    "diffusion_lm": ["diffusion.objective=diffusion_lm"],
    "plaid": ["diffusion.objective=plaid", "diffusion.schedule=learned"],
}
"""Plain-text models: the overrides of each."""

PAIR_FAMILIES = {
    "pairs-dropout": [
        "diffusion.objective=diffusionbert",
        "diffusion.schedule=spindle",
        "training.source_dropout=0.3",
    ],
    "pairs-window": ["diffusion.objective=radd", "data.target_window=24"],
    "pairs-selfprompt": ["diffusion.objective=mdlm", "training.self_prompt=0.5"],
    "pairs-ar": ["diffusion.objective=ar"],
    "pairs-plaid": ["diffusion.objective=plaid", "diffusion.schedule=learned"],
}
"""Pair models (E2E MR → text)."""

SAMPLERS = {
    "spindle": ["ancestral", "confidence", "gibbs"],
    "spindle-layerwise": ["ancestral", "threshold"],
    "linear-prefix": ["ancestral"],
    "rdm": ["ancestral", "routing"],
    "mdlm": ["ancestral", "confidence"],
    "md4": ["ancestral"],
    "sedd": ["tweedie", "ancestral"],
    "radd": ["cached", "confidence", "threshold"],
    "mlm": ["gibbs", "ancestral"],
    "ar": ["autoregressive", "greedy", "beam:3"],
    "diffusion_lm": ["clamped", "ancestral"],
    "plaid": ["ancestral", "clamped"],
}


def cli(argv: list[str]) -> str:
    """Run ``diffusionbert argv`` in this process; its stdout (an error exits this script)."""
    from diffusionbert.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--no-progress"])
    if code != 0:
        raise SystemExit(f"golden: `diffusionbert {' '.join(argv)}` exited {code}")
    return out.getvalue()


def without_times(value: Any) -> Any:
    """``value`` with every key that measures wall time removed (the only thing allowed to differ)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if "second" not in k and k != "machine"}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_data(work: Path) -> dict[str, Path]:
    """A few hundred lines of LM1B, E2E and Alpaca, copied into ``work`` (the run's own files)."""
    work.mkdir(parents=True, exist_ok=True)
    files = {"lm1b": work / "lm1b.txt", "e2e": work / "e2e.csv", "e2e_test": work / "e2e_test.csv"}
    lines = (DATA / "lm1b" / "train.txt").read_text(encoding="utf-8").splitlines()
    files["lm1b"].write_text("\n".join(lines[:240]) + "\n", encoding="utf-8")
    for name, source, rows in (("e2e", "train.csv", 240), ("e2e_test", "test.csv", 40)):
        with open(DATA / "e2e" / source, encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f))[:rows]
        with open(files[name], "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["mr", "ref"])
            writer.writeheader()
            writer.writerows(records)
    alpaca = (DATA / "alpaca" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    kept = [line for line in alpaca if len(line) < 400][:160]
    files["alpaca"] = work / "alpaca.jsonl"
    files["alpaca"].write_text("\n".join(kept) + "\n", encoding="utf-8")
    return files


def base_config(work: Path, data: dict[str, Any]) -> Path:
    """A small MiniLM run: 6 steps of batch 8 with dropout, saved at step 3."""
    cfg = {
        "model": {"backbone": "minilm"},
        "diffusion": {"num_steps": 64},
        "data": {"max_length": 48, "cache_dir": str(work / "cache"), **data},
        "training": {
            "batch_size": 8,
            "max_steps": 6,
            "warmup_steps": 2,
            "lr": 3e-4,
            "head_lr": 1e-2,
            "save_every": 3,
            "log_every": 1,
            "eval_every": 6,
            "eval_batches": 2,
        },
    }
    path = work / f"config-{len(list(work.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def train(work: Path, name: str, config: Path, overrides: list[str]) -> tuple[Path, list[Any]]:
    """Train a model (its losses and validation bounds from ``log.jsonl``) and return its final/."""
    run = work / "runs" / name
    if not (run / "final").is_dir():
        cli(["train", "--config", str(config), f"training.output_dir={run}", *overrides])
    log = [without_times(r) for r in jsonl(run / "log.jsonl")]
    keep = ("step", "loss", "nll_per_token", "valid_nats_per_token", "grad_norm", "lr")
    return run / "final", [{k: r[k] for k in keep if k in r} for r in log if "step" in r]


def decoding(sampler: str, steps: int = 8, **more: object) -> list[str]:
    """Every decoding flag, named (the command's defaults may change; these do not)."""
    options = {
        "sampler": sampler,
        "steps": steps,
        "temperature": 1.0,
        "top-k": 0,
        "top-p": 1.0,
        "seed": 3,
        "batch-size": 4,
        **more,
    }
    return [f"--{k}={v}" for k, v in options.items() if v is not None]


def samples(model: Path, work: Path, argv: list[str]) -> list[Any]:
    out = work / "out.jsonl"
    cli(["sample", "--checkpoint", str(model), "--out", str(out), *argv])
    return jsonl(out)


def plain(work: Path, files: dict[str, Path]) -> dict[str, Any]:
    config = base_config(
        work, {"train_file": str(files["lm1b"]), "valid_file": str(files["lm1b"]), "field": None}
    )
    results: dict[str, Any] = {}
    for name, overrides in PLAIN_FAMILIES.items():
        print(f"golden: {name}", file=sys.stderr, flush=True)
        model, log = train(work, name, config, overrides)
        row: dict[str, Any] = {"log": log}
        for sampler in SAMPLERS[name]:
            count = "--num-samples=1" if sampler.startswith("beam") else "--num-samples=3"
            row[f"sample-{sampler}"] = samples(model, work, [count, "--length=12", *decoding(sampler)])
        first = SAMPLERS[name][0]
        sharp = ["--temperature=0.7", "--top-k=20"] if name not in ("diffusion_lm", "plaid") else []
        row["sample-sharp"] = samples(
            model, work, ["--num-samples=2", "--length=10", *decoding(first), *sharp]
        )
        if name not in ("ar", "diffusion_lm", "plaid"):
            row["prompt"] = samples(
                model,
                work,
                ["--num-samples=2", "--length=12", "--prompt=the market", *decoding(first), "--trajectory"],
            )
            row["infill"] = samples(
                model, work, ["--num-samples=2", "--infill=the [MASK] [MASK] said [MASK] .", *decoding(first)]
            )
            row["blocks"] = samples(
                model, work, ["--num-samples=2", "--length=12", "--block-length=4", *decoding(first, 3)]
            )
        if name in ("diffusion_lm", "plaid"):
            row["prompt"] = samples(
                model, work, ["--num-samples=2", "--length=10", "--prompt=the market", *decoding(first)]
            )
        report = work / "evaluate.json"
        cli(
            [
                "evaluate",
                "--checkpoint",
                str(model),
                "--data",
                str(files["lm1b"]),
                "--max-examples=24",
                "--batch-size=8",
                "--repeats=2",
                "--metrics=bound,bleu,self-bleu,dist,entropy",
                "--num-samples=4",
                "--steps=8",
                "--length=12",
                f"--sampler={first}",
                "--top-k=0",
                "--top-p=1.0",
                "--temperature=1.0",
                "--seed=1",
                "--out",
                str(report),
            ]
        )
        row["evaluate"] = without_times(json.loads(report.read_text(encoding="utf-8")))
        results[name] = row
    return results


def generate(model: Path, work: Path, files: dict[str, Path], argv: list[str]) -> dict[str, Any]:
    out, scores = work / "generations.jsonl", work / "scores.json"
    cli(
        [
            "generate",
            "--checkpoint",
            str(model),
            "--data",
            str(files["e2e_test"]),
            "--source-field=mr",
            "--field=ref",
            "--task=e2e",
            "--max-sources=8",
            "--out",
            str(out),
            "--scores-out",
            str(scores),
            *argv,
        ]
    )
    return {"texts": jsonl(out), "scores": without_times(json.loads(scores.read_text(encoding="utf-8")))}


def pairs(work: Path, files: dict[str, Path]) -> dict[str, Any]:
    config = base_config(
        work,
        {
            "train_file": str(files["e2e"]),
            "valid_file": str(files["e2e"]),
            "source_field": "mr",
            "field": "ref",
        },
    )
    results: dict[str, Any] = {}
    mr = "name[The Eagle], eatType[coffee shop], food[French], area[riverside]"
    for name, overrides in PAIR_FAMILIES.items():
        print(f"golden: {name}", file=sys.stderr, flush=True)
        model, log = train(work, name, config, overrides)
        row: dict[str, Any] = {"log": log}
        if name == "pairs-ar":
            row["greedy"] = generate(model, work, files, decoding("greedy", length=20))
            row["beam"] = generate(model, work, files, decoding("beam:2", length=20))
            row["mbr"] = generate(
                model,
                work,
                files,
                [*decoding("autoregressive", length=20), "--samples-per-source=3", "--mbr"],
            )
            row["source"] = samples(model, work, ["--num-samples=2", f"--source={mr}", *decoding("greedy")])
        elif name == "pairs-plaid":
            row["ancestral"] = generate(model, work, files, decoding("ancestral", length=16))
        else:
            row["confidence"] = generate(model, work, files, decoding("confidence", length=24))
            row["mbr"] = generate(
                model, work, files, [*decoding("confidence", length=24), "--samples-per-source=3", "--mbr"]
            )
            row["blocks"] = generate(
                model, work, files, decoding("confidence", 4, length=24, **{"block-length": 8})
            )
            row["source"] = samples(
                model, work, ["--num-samples=2", f"--source={mr}", *decoding("ancestral", length=16)]
            )
        if name == "pairs-dropout":
            row["guidance"] = generate(
                model, work, files, decoding("confidence", length=24, guidance=1.5, end="generated")
            )
            row["unconditional"] = samples(
                model, work, ["--num-samples=2", "--length=12", *decoding("ancestral")]
            )
        if name == "pairs-window":
            row["predicted"] = generate(
                model, work, files, decoding("confidence", length=24, end="predicted")
            )
            row["generated-end"] = generate(
                model, work, files, decoding("confidence", length=24, end="generated")
            )
        results[name] = row
    return results


def chat(work: Path, files: dict[str, Path]) -> dict[str, Any]:
    from diffusionbert.sampling import load_pipeline

    print("golden: chat", file=sys.stderr, flush=True)
    config = base_config(
        work,
        {
            "train_file": str(files["alpaca"]),
            "valid_file": str(files["alpaca"]),
            "format": "chat",
            "field": None,
            "max_length": 64,
            "target_window": 24,
        },
    )
    results: dict[str, Any] = {}
    for name, overrides in (
        ("chat-mdlm", ["diffusion.objective=mdlm"]),
        ("chat-ar", ["diffusion.objective=ar"]),
    ):
        model, log = train(work, name, config, overrides)
        pipe = load_pipeline(model, "cpu")
        messages = [{"role": "user", "content": "name three colours"}]
        second = [*messages, {"role": "assistant", "content": "red, green and blue"}]
        second.append({"role": "user", "content": "and three fruits?"})
        row: dict[str, Any] = {"log": log}
        sampler = "greedy" if name == "chat-ar" else "confidence"
        for label, conversation in (("one", messages), ("two", second)):
            seen: list[str] = []
            reply = pipe.chat(conversation, steps=8, sampler=sampler, seed=2, on_answer=seen.append)
            row[label] = {"text": reply.text, "nfe": reply.nfe, "dropped": reply.dropped, "seen": seen}
        if name == "chat-mdlm":
            reply = pipe.chat(messages, steps=4, sampler="confidence", block_length=8, seed=2)
            row["blocks"] = {"text": reply.text, "nfe": reply.nfe}
        results[name] = row
    return results


def serve(work: Path) -> dict[str, Any]:
    """The live page's API on the pair model with source dropout: every mode, its events."""
    from starlette.testclient import TestClient

    from diffusionbert.apps.web.server import Access, create_app
    from diffusionbert.sampling import load_pipeline

    print("golden: serve", file=sys.stderr, flush=True)
    pipe = load_pipeline(work / "runs" / "pairs-dropout" / "final", "cpu")
    common = {"steps": 8, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 4, "block_length": None}
    requests = {
        "source": {
            "mode": "source",
            "text": "name[Zizzi], food[Indian]",
            "sampler": "confidence",
            "length": 20,
        },
        "unconditional": {"mode": "unconditional", "sampler": "ancestral", "length": 12},
        "prompt": {"mode": "prompt", "text": "the eagle", "sampler": "ancestral", "length": 12},
        "infill": {"mode": "infill", "text": "the _ _ is a _ shop .", "sampler": "confidence"},
        "blocks": {"mode": "source", "text": "name[Zizzi]", "sampler": "confidence", "length": 16},
    }
    results: dict[str, Any] = {}
    access = Access.serving("127.0.0.1", 80)
    with TestClient(create_app(pipe, "golden", access), base_url="http://127.0.0.1:80") as client:
        for name, body in requests.items():
            body = {**common, **body}
            if name == "blocks":
                body["block_length"] = 8
            response = client.post("/api/generate", json=body)
            events = []
            for block in response.text.split("\n\n"):
                kind = [line[7:] for line in block.splitlines() if line.startswith("event: ")]
                data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
                if kind and kind[0] not in ("queued",):
                    events.append([kind[0], without_times(json.loads(data[0]))])
            results[name] = events
    return results


def compare(before: Path, after: Path) -> int:
    """Exit 0 when the two golden files are equal, else name the first differing entries."""
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (before, after))
    differing: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{where}.{key}")
        elif x != y:
            differing.append(where)

    walk(a, b, "")
    for where in differing[:20]:
        print(f"differs: {where}")
    print("identical" if not differing else f"{len(differing)} entries differ")
    return 0 if not differing else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a directory for the runs (reused when re-run)")
    parser.add_argument("--out", type=Path, help="the golden JSON to write")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.work or not args.out:
        parser.error("--work and --out are needed (or --compare BEFORE AFTER)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    files = write_data(args.work)
    golden = {
        "plain": plain(args.work, files),
        "pairs": pairs(args.work, files),
        "chat": chat(args.work, files),
        "serve": serve(args.work),
    }
    text = json.dumps(golden, indent=1, sort_keys=True).replace(str(args.work), "<work>")  # paths differ
    args.out.write_text(text, encoding="utf-8")
    print(f"golden: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
