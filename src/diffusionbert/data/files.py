"""Step 1 of the data pipeline: local text files (or a hub dataset id) → a :class:`datasets.Dataset`.

Files are checked *before* ``datasets`` sees them (missing, empty, binary, not UTF-8) so that the user gets a
one-line :class:`~diffusionbert.errors.DataError` naming the file, line and byte instead of a pyarrow trace.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import datasets

from ..errors import ConfigError, DataError, first_line

logger = logging.getLogger(__name__)

# Reader of each supported extension: the ``datasets`` packaged builder that parses it.
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv"}
# ``owner/name`` or ``name``, with an optional ``:split``; anything else is treated as a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?(?::[\w.-]+)?$")
_CHECK_CHUNK = 1 << 20


def load_texts(
    path: str | os.PathLike[str],
    field: str | None = None,
    *,
    target_field: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """Read a text corpus into a :class:`datasets.Dataset` with a ``text`` column (or ``source``/``target``).

    ``path`` is a local file, read by the ``datasets`` builder for its extension (no hub access):

    * ``.txt``: one example per line; blank (whitespace-only) lines are dropped; CRLF/CR line ends are
      accepted. ``field``/``target_field`` must not be given.
    * ``.jsonl`` / ``.json`` (JSON lines, or a JSON array of records) and ``.csv`` (header row; CRLF
      accepted): ``field`` names the text column. Without it, a column called ``text`` is used, or the only
      column. Rows whose selected values are empty or null are dropped (like blank lines), with a logged
      warning.

    With ``target_field`` the result is a pair dataset: ``field`` becomes ``source`` and ``target_field``
    becomes ``target`` (e.g. QQP ``src``/``trg``, E2E ``mr``/``ref``), for conditional training (see
    :func:`tokenize_dataset`).

    A *string* that is not an existing path but looks like a hub dataset id — ``owner/name`` or ``name``, with
    an optional ``:split`` (default ``train``) and no file extension — is loaded with
    :func:`datasets.load_dataset` (needs network access unless cached); a :class:`os.PathLike` is always
    local. ``cache_dir`` is the ``datasets`` cache for the Arrow files (default: the Hugging Face cache).

    Raises:
        DataError: one line naming the file and the problem: file not found, directory, unknown extension,
            empty file / no examples, NUL byte (binary), invalid UTF-8 (with line and byte offset), a JSON
            line or CSV row that does not parse (with its line: :func:`_check_json`, :func:`_csv_header`),
            missing or non-text field (listing the available ones).
        ConfigError: ``field``/``target_field`` given for a ``.txt`` file.
    """
    fields = [f for f in (field, target_field) if f is not None]
    if target_field is not None and field is None:
        raise ConfigError("load_texts: target_field needs field (the source column) as well")
    name = os.fspath(path)
    local = Path(name)
    if not local.exists():
        if isinstance(path, str) and _looks_like_hub_id(name):
            return _load_hub(name, field, target_field, cache_dir)
        raise DataError(f"{name}: file not found")
    suffix, encoding = _checked_file(local, tuple(_BUILDERS))
    kwargs: dict[str, Any] = {}
    if suffix == ".txt":
        if fields:
            raise ConfigError(
                f"{name}: field/target_field do not apply to a .txt file (one example per line)"
            )
    elif suffix == ".csv":
        header = _csv_header(local, encoding)
        fields = _select_fields(name, header, field, target_field)
        # Read only the wanted columns, all as strings, and keep "NA"/"null" as literal text.
        kwargs = {
            "usecols": fields,
            "na_filter": False,
            "features": datasets.Features({f: datasets.Value("string") for f in fields}),
        }
    ds = _parse(local, suffix, encoding, cache_dir, **kwargs)
    if suffix == ".txt":
        ds = ds.filter(_nonblank_rows, batched=True, fn_kwargs={"columns": ["text"]})
        if len(ds) == 0:
            raise DataError(f"{name}: no examples (only blank lines)")
        return ds
    if suffix != ".csv":
        fields = _select_fields(name, ds.column_names, field, target_field)
    return _finish_columns(name, ds, fields)


def load_records(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> datasets.Dataset:
    """Read a local ``.jsonl`` / ``.json`` file of records with all their fields (nested ones too), after the
    same checks as :func:`load_texts` (missing, empty, binary, not UTF-8: a one-line DataError)."""
    local = Path(path)
    if not local.exists():
        raise DataError(f"{local}: file not found")
    suffix, encoding = _checked_file(local, (".jsonl", ".json"))
    return _parse(local, suffix, encoding, cache_dir)


def _parse(
    local: Path, suffix: str, encoding: str, cache_dir: str | os.PathLike[str] | None, **options: Any
) -> datasets.Dataset:
    """A checked local file read by the ``datasets`` builder of its extension (``options`` are the
    builder's); any parser failure is a one-line DataError."""
    try:
        return datasets.load_dataset(
            _BUILDERS[suffix],
            data_files={"train": str(local)},
            split="train",
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            encoding=encoding,
            **options,
        )
    except Exception as exc:  # any parser failure becomes a one-line DataError
        raise DataError(f"{local}: could not be parsed as {suffix}: {first_line(exc)}") from exc


def _checked_file(local: Path, suffixes: tuple[str, ...]) -> tuple[str, str]:
    """The extension and text encoding of an existing file, after checking it is a readable text file of one
    of ``suffixes`` (not a directory, not empty, no NUL byte, valid UTF-8; a BOM is allowed) and, for JSON,
    that it holds objects (:func:`_check_json`)."""
    if local.is_dir():
        raise DataError(f"{local}: is a directory, expected a {', '.join(suffixes)} file")
    suffix = local.suffix.lower()
    if suffix not in suffixes:
        raise DataError(
            f"{local}: unknown extension {suffix or '(none)'!r}; expected one of {', '.join(suffixes)}"
        )
    encoding = "utf-8-sig" if _check_text_file(local) else "utf-8"
    if suffix in (".jsonl", ".json"):
        _check_json(local, suffix, encoding)
    return suffix, encoding


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name[:split]`` or ``name[:split]`` with no file extension (``x/y.txt`` is a missing file)."""
    return bool(_HUB_ID.match(name)) and not PurePath(name.split(":", 1)[0]).suffix


def _load_hub(
    name: str, field: str | None, target_field: str | None, cache_dir: str | os.PathLike[str] | None
) -> datasets.Dataset:
    """Load ``owner/name[:split]`` from the Hugging Face hub; pick text column(s) as for a local file."""
    repo, _, split = name.partition(":")
    try:
        ds = datasets.load_dataset(
            repo, split=split or "train", cache_dir=None if cache_dir is None else os.fspath(cache_dir)
        )
    except Exception as exc:  # network/hub failures: one-line DataError
        raise DataError(
            f"{name}: not a local file, and loading it as a hub dataset failed: {first_line(exc)}"
        ) from exc
    fields = _select_fields(name, ds.column_names, field, target_field)
    return _finish_columns(name, ds, fields)


def _check_text_file(path: Path) -> bool:
    """Reject empty, binary (NUL byte) and non-UTF-8 files; return whether the file starts with a UTF-8 BOM.

    Read in 1 MiB chunks so large corpora are not loaded whole; a multi-byte character split across two chunks
    is carried over to the next one. Line numbers are 1-based, byte offsets 0-based.
    """
    offset = 0  # absolute offset of the first byte not yet validated
    line = 1
    carry = b""
    with path.open("rb") as fh:
        first = fh.read(_CHECK_CHUNK)
        if not first.strip() and len(first) < _CHECK_CHUNK:
            raise DataError(f"{path}: empty file (no examples)")
        has_bom = first.startswith(codecs.BOM_UTF8)
        chunk = first
        while chunk or carry:
            buf = carry + chunk
            final = not chunk
            nul = buf.find(b"\0")
            if nul >= 0:
                at = line + buf.count(b"\n", 0, nul)
                raise DataError(
                    f"{path}: binary file, NUL byte at line {at}, byte offset {offset + nul} (expected UTF-8)"
                )
            try:
                buf.decode("utf-8")
                good, carry = len(buf), b""
            except UnicodeDecodeError as exc:
                # An incomplete character at the very end of a chunk may be completed by the next chunk.
                if not final and exc.end == len(buf) and exc.reason == "unexpected end of data":
                    good, carry = exc.start, buf[exc.start :]
                else:
                    at = line + buf.count(b"\n", 0, exc.start)
                    raise DataError(
                        f"{path}: invalid UTF-8 at line {at}, byte offset {offset + exc.start}: {exc.reason}"
                    ) from None
            line += buf.count(b"\n", 0, good)
            offset += good
            chunk = b"" if final else fh.read(_CHECK_CHUNK)
    return has_bom


def _csv_header(path: Path, encoding: str) -> list[str]:
    """The column names in the first row of a CSV file, after reading the whole file strictly.

    ``pandas`` (behind ``datasets``) reads a stray quote by merging the rows up to the next quote into one
    field, and pads a short row with empty values; here each such row is a one-line DataError naming its line:
    text after a closing quote, a quote left open to the end of the file, a quoted field whose later lines
    read as rows of their own (:func:`_swallowed_row`), and a row whose number of fields is not the
    header's. A blank line is skipped, as ``pandas`` does; a quoted text with line breaks is kept.
    """
    with path.open(encoding=encoding, newline="") as fh:
        rows = csv.reader(fh, strict=True)
        line = 1  # where the row being read starts
        try:
            header = next(rows, [])
            if not any(h.strip() for h in header):
                raise DataError(f"{path}: CSV file has no header row")
            has_data = False
            for row in rows:
                swallowed = _swallowed_row(row, len(header)) if rows.line_num > line + 1 else None
                if swallowed is not None:
                    raise DataError(
                        f"{path}: line {line + 1}: a quoted field runs on to line {line + 1 + swallowed}, which "
                        "reads as a row of its own; is a quote left open?"
                    )
                if row and len(row) != len(header):
                    raise DataError(
                        f"{path}: line {rows.line_num}: {len(row)} field(s), but the header has {len(header)}"
                    )
                has_data = has_data or any(cell.strip() for cell in row)
                line = rows.line_num
        except csv.Error as exc:
            reason = (
                "a quote is left open to the end of the file"
                if str(exc) == "unexpected end of data"
                else f"malformed quoting ({exc})"
            )
            raise DataError(f"{path}: line {line + 1}: {reason}") from None
        if not has_data:
            raise DataError(f"{path}: no examples (CSV file has a header but no data rows)")
    return header


def _swallowed_row(row: list[str], columns: int) -> int | None:
    """How many lines into a multi-line ``row`` a line starts that reads as a whole row of ``columns``
    fields (the mark of a stray quote that swallowed the rows after it), or None.

    A text that merely has line breaks (E2E's training file has two) rarely splits into exactly the
    header's number of fields; with a single column nothing can be told apart, so None."""
    if columns < 2:
        return None
    breaks = 0  # line breaks in the fields before this one
    for cell in row:
        lines = cell.splitlines() or [cell]
        for offset, line in enumerate(lines[1:], 1):
            if len(next(csv.reader([line]), [])) == columns:
                return breaks + offset
        breaks += len(lines) - 1
    return None


def _check_json(path: Path, suffix: str, encoding: str) -> None:
    """Check that a ``.jsonl`` / ``.json`` file holds JSON objects, before ``datasets`` reads it.

    A ``.json`` file that starts with ``[`` is one array of objects; anything else is JSON lines, one object
    per (non-blank) line. ``datasets`` reports a bad line in two lines without its number; here it is one
    DataError naming the line (and column).
    """
    with path.open(encoding=encoding) as fh:
        if suffix == ".json" and fh.read(_CHECK_CHUNK).lstrip().startswith("["):
            fh.seek(0)
            try:
                records = json.loads(fh.read())
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: line {exc.lineno}: not JSON ({exc.msg}, column {exc.colno})"
                ) from None
            for index, record in enumerate(records, 1):
                if not isinstance(record, dict):
                    raise DataError(
                        f"{path}: item {index} of the array is {_json_type(record)}, expected an object"
                    )
            return
        fh.seek(0)
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))  # so an error's column is on this line
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number}: not JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}: line {number} is {_json_type(record)}, expected an object (one record a line)"
                )


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type with its article ("an array"), for messages."""
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    names[type(None)] = "null"
    return names.get(type(value), type(value).__name__)


def _select_fields(
    name: str, available: Sequence[str], field: str | None, target_field: str | None
) -> list[str]:
    """Validate the requested column names against ``available``; default to ``text`` or the only column."""
    available = list(available)
    if field is None:
        if "text" in available:
            return ["text"]
        if len(available) == 1:
            return available
        raise DataError(
            f"{name}: several columns and no field given; pass field= one of {', '.join(available)}"
        )
    wanted = [field] if target_field is None else [field, target_field]
    for f in wanted:
        if f not in available:
            raise DataError(f"{name}: field {f!r} not found; available fields: {', '.join(available)}")
    return wanted


def _finish_columns(name: str, ds: datasets.Dataset, fields: list[str]) -> datasets.Dataset:
    """Keep ``fields`` as ``text`` (or ``source``/``target``), check they hold strings, drop empty rows."""
    for f in fields:
        feature = ds.features[f]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"{name}: field {f!r} does not hold text (found {feature})")
    targets = ["text"] if len(fields) == 1 else ["source", "target"]
    ds = ds.select_columns(fields)
    if fields != targets:
        # Two steps so that e.g. fields ["target", "source"] do not collide while renaming.
        ds = ds.rename_columns({f: f"__{t}" for f, t in zip(fields, targets, strict=True)})
        ds = ds.rename_columns({f"__{t}": t for t in targets})
    before = len(ds)
    ds = ds.filter(_nonblank_rows, batched=True, fn_kwargs={"columns": targets})
    if len(ds) == 0:
        raise DataError(f"{name}: no examples (no row with non-empty {', '.join(fields)})")
    if len(ds) < before:
        logger.warning(
            "%s: dropped %d of %d rows with an empty or null %s",
            name,
            before - len(ds),
            before,
            "/".join(fields),
        )
    return ds


def _nonblank_rows(batch: dict[str, list[str | None]], columns: list[str]) -> list[bool]:
    """Batched filter predicate: every one of ``columns`` holds a non-blank string."""
    return [
        all(v is not None and v.strip() for v in row)
        for row in zip(*(batch[c] for c in columns), strict=True)
    ]
