"""Peak memory of reading a corpus 1×, 10× and 100× as large: streamed (``data.streaming``) against in memory.

Builds synthetic corpora by repeating a text file (default: ``../shared/data/lm1b/train.txt``, 1.7 MB) into
files of the base size, then, in a fresh process per measurement, reads one whole epoch with the MiniLM
tokenizer and reports the process's peak resident memory (``ru_maxrss``), the rows read and the seconds. The
streamed reader is :class:`diffusionbert.data.PackedStream`; the in-memory one is ``load_texts`` +
``tokenize_dataset(layout="packed")``, what a run without ``data.streaming`` does. Prints a Markdown table
(docs/scaling.md quotes it).

    .venv/bin/python tools/measure_streaming.py [--scales 1 10 100] [--work /tmp/stream-corpus]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
from diffusionbert.models.backbone import default_backbone_path
from diffusionbert.models.loading import load_tokenizer
mode, folder = sys.argv[1], Path(sys.argv[2])
tokenizer = load_tokenizer(default_backbone_path())
files = sorted(folder.glob("*.txt"))
start = time.perf_counter()
if mode == "stream":
    from diffusionbert.data import PackedStream
    stream = PackedStream(files, tokenizer, 128, shuffle_rows=1024)
    rows = 0
    while stream.epoch == 0:
        stream.next_row()
        rows += 1
    rows += len(stream.buffer) + len(stream.carry) // 128  # read, waiting in the buffer or still unpacked
else:
    import datasets
    from diffusionbert.data import load_texts, tokenize_dataset
    texts = datasets.concatenate_datasets([load_texts(f, cache_dir=folder / ".cache") for f in files])
    rows = len(tokenize_dataset(texts, tokenizer, "packed", 128).dataset)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start, "peak_mib": peak}))
"""


def build(source: Path, folder: Path, scale: int) -> int:
    """``scale`` files, each a copy of ``source``, in ``folder``; their total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    text = source.read_bytes()
    for index in range(scale):
        target = folder / f"part-{index:04d}.txt"
        if not target.exists():
            target.write_bytes(text)
    return scale * len(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/lm1b/train.txt")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--in-memory-scales", type=int, nargs="*", default=[1, 10, 100])
    parser.add_argument("--work", default="/tmp/diffusionbert-stream-corpus")
    args = parser.parse_args()
    print("| corpus | reader | rows of 128 tokens | peak RSS (MiB) | seconds |")
    print("|---|---|---|---|---|")
    for scale in args.scales:
        folder = Path(args.work) / f"x{scale}"
        size = build(Path(args.source), folder, scale)
        for mode in ("stream", "memory"):
            if mode == "memory" and scale not in args.in_memory_scales:
                continue
            shutil.rmtree(
                folder / ".cache", ignore_errors=True
            )  # the in-memory reader builds its Arrow files
            began = time.perf_counter()
            child = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(folder)], capture_output=True, text=True, check=False
            )
            if child.returncode != 0:
                print(child.stderr[-2000:], file=sys.stderr)
                return 1
            result = json.loads(child.stdout.strip().splitlines()[-1])
            reader = "streamed" if mode == "stream" else "in memory"
            print(
                f"| {scale}× ({size / 2**20:.0f} MiB) | {reader} | {result['rows']:,} | "
                f"{result['peak_mib']:.0f} | {result['seconds']:.0f} (wall {time.perf_counter() - began:.0f}) |",
                flush=True,
            )
    print(f"\nmeasured with {Path(args.source)}; peak RSS is ru_maxrss of the reading process", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
