"""A run's output directory, protected: one writer at a time, no silent replacement of a run, no stale temporaries.

A run directory holds ``config.yaml``, ``log.jsonl``, ``tb/``, ``checkpoints/step-N/`` and ``final/``. While a
run writes there it holds ``.lock`` (an ``flock``, released by the kernel when the process dies, so a killed
run never leaves a stale lock); the file says who holds it. Training into a directory that already holds a
run needs ``resume`` (continue it) or ``overwrite`` (delete what it wrote first): nothing is replaced silently.
Resuming picks the newest checkpoint that loads and refuses settings that would make the resumed run a
different one than the checkpoint's.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..checkpoint import DIFFUSION_FILE, RUN_CONFIG_FILE, checkpoint_problem, list_checkpoints
from ..config import Config, config_from_dict
from ..errors import ConfigError, OutputError
from ..methods import check_config
from ..utils.io import read_json, remove_temporaries

LOCK_FILE = ".lock"
RUN_CONTENT = ("checkpoints", "final", "log.jsonl", "tb", "config.yaml")
"""Everything a run writes into its directory (``overwrite`` deletes these names and nothing else)."""


class RunLock:
    """The exclusive lock of a run directory, taken on construction; :meth:`release` gives it back."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.created = not out.exists()  # an empty directory this lock made is removed on release
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd = self._take()
            if fd is not None:
                holder = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(sys.argv),
                }
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(holder).encode())
        except OSError as exc:
            raise OutputError(f"output dir {out} is not usable: {exc.strerror or exc}") from None
        if fd is None:
            raise OutputError(
                f"output dir {out} is in use by another run ({self._holder()}); wait for it to end, or "
                "choose another --output-dir"
            )
        self.fd: int | None = fd

    def _take(self) -> int | None:
        """The locked descriptor of the lock file, or None when another process holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            if self.path.exists() and self.path.stat().st_ino == os.fstat(fd).st_ino:
                return fd
            os.close(fd)  # a releasing run unlinked the file we opened: lock the new one

    def _holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"see {self.path}"

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None
        if self.created and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> list[tuple[int, Path]]:
    """Check what ``out`` holds against ``resume``/``overwrite`` and tidy it; returns its checkpoints.

    Called with the run's lock held. Temporaries of killed writers are removed; with ``overwrite`` the
    previous run's content (:data:`RUN_CONTENT`) is deleted first.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; allowed: at most one of them")
    remove_temporaries(out)
    remove_temporaries(out / "checkpoints")
    found = [name for name in RUN_CONTENT if name != "config.yaml" and (out / name).exists()]
    if (out / "config.yaml").exists() and not found:
        raise OutputError(
            f"output dir {out} holds a config.yaml that no run wrote (no log.jsonl, checkpoints/ or final/ "
            "beside it), which a run would replace; allowed: another --output-dir"
        )
    if overwrite:
        for name in RUN_CONTENT:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return []
    checkpoints = list_checkpoints(out / "checkpoints")
    if resume and not checkpoints:
        raise ConfigError(
            f"--resume: output dir {out} has no checkpoint to continue from; allowed: the directory of a "
            "run with checkpoints/step-N, or no --resume to start a new run"
        )
    if not resume and found:
        raise ConfigError(
            f"output dir {out} already holds a run ({', '.join(found)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --output-dir"
        )
    return checkpoints


MAY_CHANGE_ON_RESUME = (
    "training.output_dir",
    "training.max_steps",
    "training.eval_every",
    "training.eval_batches",
    "training.save_every",
    "training.keep_last",
    "training.log_every",
    "training.max_nonfinite_in_row",
    "training.distributed",
    "data.valid_file",
    "data.max_valid_examples",
    "data.cache_dir",
    "sampling.*",
)
"""Settings a resumed run may change: how long it runs, how often it evaluates, logs and saves, what it
validates on, and how its processes share the model (checkpoints are whole either way). Every other one shapes
the model, the objective or the optimisation, and a change is refused."""


def resume_changes(saved: Config, requested: Config, checkpoint: Path) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between the checkpoint's run config and the requested one, as
    ``{"section.key": (old, new)}``; a difference in a setting not in :data:`MAY_CHANGE_ON_RESUME` is a
    :class:`ConfigError` naming the key and both values."""
    old, new = _flatten(saved.to_dict()), _flatten(requested.to_dict())
    changes = {key: (old[key], new[key]) for key in old if old[key] != new[key]}
    for key, (before, after) in changes.items():
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in MAY_CHANGE_ON_RESUME):
            raise ConfigError(
                f"{key}={after!r} differs from {before!r} in the checkpoint to resume ({checkpoint}); a resumed "
                f"run keeps the settings that shape its model, objective and optimisation; allowed to change: "
                f"{', '.join(MAY_CHANGE_ON_RESUME)} (or start a new run in another --output-dir)"
            )
    return changes


def _flatten(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()
    }


def resume_point(checkpoints: list[tuple[int, Path]], cfg: Config) -> tuple[Path, dict[str, Any]]:
    """The newest of ``checkpoints`` that loads (printing which were skipped and why), and what a resumed
    run logs: the settings ``cfg`` changes since that checkpoint (see :func:`resume_changes`) and the
    skipped checkpoints."""
    skipped = []
    for _, path in reversed(checkpoints):
        problem = checkpoint_problem(path)
        if problem is None:
            break
        skipped.append(path)
        print(f"skipping checkpoint {path}: {problem}")
    else:
        raise ConfigError(
            f"--resume: no checkpoint in {Path(cfg.training.output_dir) / 'checkpoints'} loads (skipped "
            f"{len(skipped)}, reasons above); allowed: a run with a complete checkpoint, or --overwrite to start again"
        )
    changes = resume_changes(_saved_config(path, cfg), cfg, path)
    if changes:
        described = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
        print(f"resuming {path} with changed settings: {described}")
    return path, {"changed": changes, "skipped_checkpoints": [p.name for p in skipped]}


def _saved_config(checkpoint: Path, cfg: Config) -> Config:
    """The config the checkpoint was written with; for checkpoints from before run configs were saved, ``cfg``
    with the model and diffusion settings of its model directory (only those can be compared)."""
    saved_file = checkpoint / RUN_CONFIG_FILE
    if saved_file.is_file():
        return check_config(config_from_dict(read_json(saved_file)))
    meta = read_json(checkpoint / "model" / DIFFUSION_FILE)
    return check_config(
        config_from_dict({**cfg.to_dict(), "model": meta["model"], "diffusion": meta["diffusion"]})
    )
