"""One exception family, so the CLI can turn any expected failure into a one-line message and exit code.

Every class also derives from ``ValueError`` (or ``OSError`` for I/O), so library callers can catch the
builtin they expect while the CLI catches :class:`DiffusionBertError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DiffusionBertError(Exception):
    """Base of every error this package raises on purpose (bad input, not a bug)."""


class ConfigError(DiffusionBertError, ValueError):
    """An option, config key or value is invalid or contradicts another."""


class DataError(DiffusionBertError, ValueError):
    """A data file is missing, empty, unreadable or of the wrong shape."""


class CheckpointError(DiffusionBertError, ValueError):
    """A checkpoint directory is missing, corrupt, of the wrong kind, or could not be written."""


class OutputError(DiffusionBertError, OSError):
    """An output file or directory cannot be written (a directory in its place, a read-only or full disk)."""


class TrainingError(DiffusionBertError, RuntimeError):
    """Training cannot go on: its losses or gradients stayed non-finite (the run diverged)."""


class RunStopped(DiffusionBertError, RuntimeError):
    """A run stopped on request (SIGTERM, Ctrl-C) after writing a checkpoint; ``exit_code`` is the shell's
    code for the signal (143, 130)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def invalid_choice(field: str, value: object, allowed: Iterable[str]) -> ConfigError:
    """A ConfigError for ``field=value`` that lists what is allowed and suggests the nearest name."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{field}={value!r} is not valid{hint}; allowed: {', '.join(allowed)}")


def first_line(exc: BaseException) -> str:
    """First non-empty line of an exception message, so wrapped errors stay one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
