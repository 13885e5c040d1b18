"""Files written atomically and read without unpickling: safetensors for tensors, JSON for the rest.

Every writer here writes under a temporary name beside the target and renames it into place, so a crash or a
full disk never leaves a half-written file or directory, and what was there before is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` in one rename.

    On any error (a full disk included) the temporary directory is removed, ``target`` is left as it was,
    and the error is re-raised as a one-line :class:`CheckpointError`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {target}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_file(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``target``, then move it onto ``target`` in one step.

    On any error the temporary file is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint file {path} is corrupt: {exc}") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no pickle involved), with a one-line error when missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"checkpoint file {path} is corrupt: {str(exc).splitlines()[0]}") from None


def state_to_tensors(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, numbers) into flat tensors and a JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, list | tuple):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(obj)]
        return obj

    return tensors, walk(state, prefix)


def tensors_to_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`state_to_tensors`."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {k: tensors_to_state(tensors, v) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [tensors_to_state(tensors, v) for v in skeleton]
    return skeleton


def save_state(directory: Path, name: str, state: Any) -> None:
    """Write a nested state as ``name.safetensors`` + ``name.json``."""
    tensors, skeleton = state_to_tensors(state, name)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    write_json(directory / f"{name}.json", skeleton)


def load_state(directory: Path, name: str) -> Any:
    return tensors_to_state(
        read_tensors(directory / f"{name}.safetensors"), read_json(directory / f"{name}.json")
    )
