"""Draw the attention masks behind the exact caches (docs/img/attention.png), read from the model itself.

Three panels, each query (row) against the keys (columns) it may read, as
:class:`~diffusionbert.models.DiffusionBertForMaskedLM` builds them: isolated source attention for a pair
``[CLS] source [SEP] answer``; block diffusion's decoding mask (a context, then blocks of 3); and block
diffusion's training mask over x_t ⊕ x_0. Usage::

    .venv/bin/python tools/attention_masks.py --out docs/img/attention.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from diffusionbert.models import DiffusionBertForMaskedLM
from diffusionbert.testing import tiny_random

SEP, MASK, WORD = 3, 4, 10


def mask_of(**settings: object) -> DiffusionBertForMaskedLM:
    sizes = {"intermediate_size": 64}
    return tiny_random(DiffusionBertForMaskedLM, None, 64, "bert", 64, 0, sizes, **settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/attention.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pair = torch.tensor([[2, WORD, WORD, SEP, *[MASK] * 6]])  # [CLS] source [SEP] answer
    isolated = mask_of(source_attention="isolated")._visible(pair)[0]
    text = torch.tensor([[2, *[MASK] * 9]])  # [CLS] and three blocks of 3
    block = mask_of(block_size=3)
    decoding = block._visible(text)[0]
    _, _, _, training = block._noisy_and_clean(text, text, torch.ones_like(text), None)
    panels = (
        ("isolated source attention\n[CLS] s s [SEP] | answer", isolated, ["C", "s", "s", "S", *"aaaaaa"]),
        ("block diffusion, decoding\n[CLS] | blocks of 3", decoding, ["C", *"111222333"]),
        ("block diffusion, training\nx_t (noisy) ⊕ x_0 (clean)", training[0], ["C", *"111222333"] * 2),
    )
    fig, axes = plt.subplots(1, 3, figsize=(11, 4), dpi=110, gridspec_kw={"width_ratios": [10, 10, 20]})
    for axis, (title, visible, ticks) in zip(axes, panels, strict=True):
        axis.imshow(visible.numpy(), cmap="Blues", vmin=0, vmax=1.3)
        axis.set_title(title, fontsize=9)
        axis.set_xticks(range(len(ticks)), ticks, fontsize=7)
        axis.set_yticks(range(len(ticks)), ticks, fontsize=7)
        axis.set_xlabel("key (what is read)", fontsize=8)
        axis.set_ylabel("query", fontsize=8)
    axes[2].axhline(9.5, color="k", lw=0.8)
    axes[2].axvline(9.5, color="k", lw=0.8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
