"""The one way the package reads a model directory: local files, safetensors weights, and never its code.

A Hugging Face directory can ask the loader to import Python files that ship beside it (an ``auto_map`` in
``config.json`` or ``tokenizer_config.json``), and weights can come as pickle files (``pytorch_model.bin``,
also as the shards a ``model.safetensors.index.json`` names), which run code when unpickled. Its files can
also be symbolic links to files elsewhere (a vocabulary linked to a system file) or to devices that never end.
Every model, config and tokenizer the package loads goes through the functions here: they refuse such a
directory with a one-line :class:`~diffusionbert.errors.CheckpointError` before any loader sees it (no prompt,
nothing imported), pass ``trust_remote_code=False`` and ask for safetensors only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import CheckpointError, first_line
from ..utils.io import read_json

_CODE_FILES = ("config.json", "tokenizer_config.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
"""A directory holds a tokenizer when it has one of these (fast, WordPiece, BPE or SentencePiece vocabularies)."""
_Model = TypeVar("_Model", bound=PreTrainedModel)


def check_no_code(directory: str | Path) -> Path:
    """``directory`` as a Path, refused (one line naming the file) when one of its files asks to run Python
    code that ships with it, leads outside it, is not a regular file, or names pickle weight shards."""
    directory = Path(directory)
    root = directory.resolve()
    # a Hugging Face hub cache keeps a revision's files as links from snapshots/<revision>/ to its blobs/
    blobs = root.parent.parent / "blobs" if root.parent.name == "snapshots" else None
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():
        target = path.resolve()
        if not target.is_relative_to(root) and not (blobs is not None and target.is_relative_to(blobs)):
            raise CheckpointError(
                f"{path} leads outside the model directory (to {target}); allowed: files inside it"
            )
        if not (target.is_file() or target.is_dir()):
            raise CheckpointError(f"{path} is not a regular file; allowed: files inside the model directory")
    for name in _CODE_FILES:
        path = directory / name
        if not path.is_file():
            continue
        content = read_json(path)
        if isinstance(content, dict) and content.get("auto_map"):
            raise CheckpointError(
                f"{path} asks to run Python code from the model directory (auto_map); diffusionbert never "
                "runs code from a model directory: use a directory without auto_map"
            )
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        content = read_json(index)
        shards = content.get("weight_map") if isinstance(content, dict) else None
        names = sorted({str(s) for s in shards.values()}) if isinstance(shards, dict) else ["(no weight_map)"]
        if not all(name.endswith(".safetensors") for name in names):
            raise CheckpointError(
                f"{index} names weight shards that are not safetensors ({', '.join(names[:2])}); allowed: "
                ".safetensors shards only, which load without running code"
            )
    return directory


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local ``directory``; a directory without tokenizer files is an error (the
    Hugging Face loader would otherwise build a tiny default vocabulary from the config alone)."""
    directory = check_no_code(directory)
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"model directory {directory} has no tokenizer (none of {', '.join(_TOKENIZER_FILES[:2])}, ...); "
            "allowed: a directory saved together with its tokenizer"
        )
    with _one_line(directory):
        return AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)


def load_config(directory: str | Path) -> PretrainedConfig:
    """The model config saved in a local ``directory``."""
    directory = check_no_code(directory)
    with _one_line(directory):
        return AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)


def load_weights(loader: type[_Model] | Any, directory: str | Path, **kwargs: Any) -> _Model:
    """``loader.from_pretrained(directory)`` (a model class or an Auto class) from safetensors weights only.

    A directory with pickle weights and no ``model.safetensors`` is refused: those are never unpickled.
    """
    directory = check_no_code(directory)
    if not any(directory.glob("*.safetensors")) and any((directory / n).exists() for n in _PICKLE_WEIGHTS):
        raise CheckpointError(
            f"model directory {directory} has only pickle weights ({', '.join(_PICKLE_WEIGHTS[:1])}); "
            "allowed: safetensors weights (model.safetensors), which load without running code"
        )
    with _one_line(directory):
        return loader.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, use_safetensors=True, **kwargs
        )


@contextlib.contextmanager
def _one_line(directory: Path) -> Iterator[None]:
    """Turn what a loader raises on a missing, truncated or corrupt file into a one-line CheckpointError."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:  # tokenizers and safetensors raise their own types, or a bare Exception
        raise CheckpointError(f"model directory {directory} could not be loaded: {first_line(exc)}") from None
