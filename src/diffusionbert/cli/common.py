"""What several commands share, defined once: ``--device``, ``--no-progress``, and how a bound is printed."""

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
