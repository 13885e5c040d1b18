"""The ``diffusionbert`` entry point: a parser with one sub-command per module of this package.

Command modules import the library only when their command runs, so ``--help`` and ``--version`` answer
without loading torch. Every expected failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import DiffusionBertError
from . import bench, chat, demo, distill, env, evaluate, generate, harness, reproduce, sample, serve, train

_COMMANDS = (train, sample, generate, evaluate, harness, distill, chat, serve, demo, bench, reproduce, env)


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress: no per-file bars or warnings from datasets/transformers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (with where to find help) and exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="diffusionbert", description="Train, sample from and evaluate diffusion language models."
    )
    parser.add_argument("--version", action="version", version=f"diffusionbert {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (any command)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with a command's ``section.key=value`` overrides taken wherever they stand (argparse
    reads positionals only as one run, so ``train --config c a.b=1 --resume c.d=2`` would leave the second
    behind); anything else unknown is the usual one-line error."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [token for token in unknown if _OVERRIDE.fullmatch(token)]
        unknown = [token for token in unknown if not _OVERRIDE.fullmatch(token)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


_OVERRIDE = re.compile(r"[A-Za-z_]\w*\.[A-Za-z_]\w*=.*", re.DOTALL)
"""A config override, ``section.key=value``."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: every expected failure becomes one line on stderr and exit code 2."""
    args = parse(argv)
    from ..utils.runtime import keep_freed_memory

    _quiet_libraries()
    keep_freed_memory()
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except DiffusionBertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
