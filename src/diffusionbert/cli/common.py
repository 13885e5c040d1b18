"""What several commands share, defined once: ``--device``, ``--no-progress``, the decoding options (built
from :class:`~diffusionbert.config.DecodingConfig`), and how a bound is printed."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

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


FLAG_ALIASES = {"num_samples": ("--samples-per-source",)}
"""Other flags of a decoding option (``generate`` has always called K samples per source so)."""


def decoding_options(exclude: Collection[str] = ()) -> argparse.ArgumentParser:
    """Parent parser of the commands that decode texts: one flag per field of
    :class:`~diffusionbert.config.DecodingConfig` (``--block-length`` for ``block_length``), its help text
    the field's, but those in ``exclude``. A flag not given is left out of :func:`decoding_overrides`, so the
    model's saved decoding holds; a bad value is the config's one-line error."""
    from ..config import ENDS, DecodingConfig

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "decoding (default: the model's saved decoding, its decoding.json; the library default in brackets)"
    )
    hints = typing.get_type_hints(DecodingConfig)
    for f in dataclasses.fields(DecodingConfig):
        if f.name in exclude:
            continue
        hint = hints[f.name]
        library = "" if f.default in (None, dataclasses.MISSING) else f" [{f.default}]"
        options: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f.metadata["help"] + library,
        }
        if typing.get_origin(hint) is dict:  # NAME=VALUE pairs
            options.update(nargs="+", type=name_value, metavar="NAME=VALUE")
        elif hint is bool:
            options["action"] = "store_true"
        elif bool in typing.get_args(hint):  # yes, no, or the model's own: --flag / --no-flag
            options["action"] = argparse.BooleanOptionalAction
        else:  # a number or a name, or None
            kind = next(t for t in (int, float, str) if t in (hint, *typing.get_args(hint)))
            options.update(type=kind, metavar="|".join(ENDS) if f.name == "end" else f.name.upper())
        flag = "--" + f.name.replace("_", "-")
        group.add_argument(flag, *FLAG_ALIASES.get(f.name, ()), **options)
    return parent


def decoding_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options given on the command line (those of :func:`decoding_options`), by field name."""
    from ..config import DecodingConfig

    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(DecodingConfig) if hasattr(args, f.name)
    }
    if "sampler_options" in given:
        given["sampler_options"] = dict(given["sampler_options"])
    return given


def name_value(text: str) -> tuple[str, Any]:
    """An argparse type: ``NAME=VALUE``, the value read as YAML (``0.8`` a number, ``linear`` a name)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, yaml.safe_load(value)
    except yaml.YAMLError:
        return name, value


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
