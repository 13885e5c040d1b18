"""What several commands share, defined once: ``--device``, ``--no-progress``, the decoding options of
``sample`` and ``generate``, and how a bound is printed."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..training import BoundResult


def model_options(device: bool = True) -> list[argparse.ArgumentParser]:
    """Parent parsers of a command that runs a model: ``--device`` (when ``device``) and ``--no-progress``.

    ``--no-progress`` is also a top-level option (``diffusionbert --no-progress train …``); given after the
    command it means the same, and its default is left to the top level.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    if device:
        parent.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    return [parent]


def decoding_options() -> argparse.ArgumentParser:
    """Parent parser of the commands that decode texts (``sample``, ``generate``): the sampler and its
    settings, the window and where a text ends, guidance, the seed and the batch."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--sampler",
        help="the model's own by default: ancestral for diffusion models (or cached | tweedie | confidence | "
        "threshold | gibbs | routing), autoregressive for AR models (or greedy | beam | beam:N, left to right with a key-value cache)",
    )
    parent.add_argument(
        "--steps", type=positive_int, default=64, help="denoising steps (network calls at most)"
    )
    parent.add_argument(
        "--length",
        type=positive_int,
        help="generated positions (a generated [SEP] ends a text earlier); default 32, with a source the "
        "model's data.target_window when it has one",
    )
    parent.add_argument(
        "--end",
        choices=["generated", "predicted"],
        help="generated: a text ends at its first generated [SEP]; predicted: decode the length the model "
        "predicts from the source (a model trained with data.target_window, in that window); default: "
        "predicted where it applies, else generated",
    )
    parent.add_argument(
        "--block-length",
        type=positive_int,
        help="decode in blocks of this many positions, left to right, each in --steps steps "
        "(semi-autoregressive, LLaDA); a text stops after the block with its [SEP]",
    )
    parent.add_argument("--temperature", type=float, default=1.0)
    parent.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    parent.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    parent.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="classifier-free guidance weight, with a source (a model trained with source dropout)",
    )
    parent.add_argument("--seed", type=int, default=0)
    parent.add_argument(
        "--batch-size", type=positive_int, default=32, help="rows per network call (across sources)"
    )
    return parent


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def bound_line(bound: BoundResult) -> str:
    """A validation bound in one line: nats per token ± its standard error, and PPL per word when known."""
    word = f", PPL per word {bound.ppl_per_word:.2f}" if bound.ppl_per_word is not None else ""
    return f"validation NLL bound: {bound.nats_per_token:.4f} ± {bound.stderr_per_token:.4f} nats/token{word}"
