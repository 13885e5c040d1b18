"""Files written atomically and read without unpickling: safetensors for tensors, JSON for the rest.

Every writer here writes under a temporary name beside the target (``.NAME.tmp-…``), flushes it to disk and
then moves it into place in one step, so a crash, a kill or a full disk never leaves a half-written file or
directory, and what was there before is untouched. Replacing an existing directory swaps the two in one
``renameat2(RENAME_EXCHANGE)`` where the kernel has it, so there is no moment without the target. Temporaries
a killed writer left behind keep the same naming, and :func:`remove_temporaries` clears them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, OutputError, first_line

_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-[^/]+$")
"""Names of the temporaries this module writes: ``.NAME.tmp-XXXX`` (being written), ``.NAME.old-XXXX``."""
_WRITE_ERRORS = (OSError, SafetensorError)
"""What a writer raises when the disk is full or read-only (safetensors has its own error type for it)."""


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (and ``root`` itself) to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_renameat2() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
        return None


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot (then nothing changed)."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries that killed writers left in ``directory``; returns what was removed.

    Call it only while no writer is at work there (a run holds its directory's lock)."""
    if not directory.is_dir():
        return []
    removed = [p for p in directory.iterdir() if _TEMPORARY.match(p.name)]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` in one step.

    The new content is fsynced before it replaces the old, and an existing ``target`` is swapped out
    atomically where the system allows (see :func:`exchange_paths`). On any error (a full disk included) the
    temporary directory is removed, ``target`` is left as it was, and the error is re-raised as a one-line
    :class:`CheckpointError`.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {target}: {_reason(exc)}") from None
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.exists() and not exchange_paths(tmp, target):
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(old / target.name)  # the fallback: a short moment without target
            tmp.rename(target)
            tmp = old
        elif not target.exists():
            tmp.rename(target)
        _fsync_path(target.parent)
    except _WRITE_ERRORS as exc:
        raise CheckpointError(f"could not write checkpoint {target}: {_reason(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap: the old content


def atomic_file(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``target``, then move it onto ``target`` in one step.

    Only a regular file is ever replaced: a ``target`` that is a directory, a symbolic link or anything else
    (a device such as ``/dev/null``, a pipe), or a parent that cannot hold files, is a one-line
    :class:`OutputError`; on any error the temporary file is removed and ``target`` is left as it was. The
    new file keeps the mode of the file it replaces, else gets the process's umask (``mkstemp`` alone would
    make it private to the owner).
    """
    if target.is_symlink() or (target.exists() and not target.is_file()):
        kind = "a directory" if target.is_dir() and not target.is_symlink() else "not a regular file"
        kind = "a symbolic link" if target.is_symlink() else kind
        raise OutputError(
            f"cannot write {target}: it is {kind}, which is never replaced; allowed: a file path"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        _fsync_path(tmp)
        os.replace(tmp, target)
        _fsync_path(target.parent)
    except _WRITE_ERRORS as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's file-creation mask (read without changing it where /proc has it)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text(encoding="utf-8").splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: BaseException) -> str:
    """The one-line cause of a write error (``strerror`` of an OSError, first line of anything else).

    The OutputError of an :func:`atomic_file` inside an :func:`atomic_directory` (a checkpoint's JSON files)
    gives the cause it wraps, kept as its ``__context__`` (it is raised ``from None`` only to keep tracebacks
    short), so a checkpoint's error names the same cause whichever of its files failed.
    """
    if isinstance(exc, OutputError) and exc.__context__ is not None:
        return _reason(exc.__context__)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc)


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` as JSON indented by 2 with :func:`atomic_file`: a reader never sees half a file.

    ``sort_keys`` orders every mapping by key (checkpoints: a state's file depends on its content only, not
    on the order it was built in); without it keys keep their order (the records a person reads).
    """
    text = json.dumps(data, indent=2, sort_keys=sort_keys)
    atomic_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


MAX_JSON_BYTES = 32 * 2**20
"""The largest JSON file read (a tokenizer.json of a big vocabulary is a few MB): a file linked to a device
that never ends, or a huge one, is refused before it is read."""


def read_json(path: Path) -> Any:
    """A JSON file (of a checkpoint or model directory), a regular one of at most :data:`MAX_JSON_BYTES`, or a
    one-line CheckpointError naming it."""
    if path.exists() and not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is not a regular file")
    if path.is_file() and path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(
            f"checkpoint file {path} is larger than {MAX_JSON_BYTES} bytes; allowed: smaller"
        )
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
    write_json(directory / f"{name}.json", skeleton, sort_keys=True)


def load_state(directory: Path, name: str) -> Any:
    return tensors_to_state(
        read_tensors(directory / f"{name}.safetensors"), read_json(directory / f"{name}.json")
    )
