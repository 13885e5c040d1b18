"""Model directories are data, never code: a folder that asks to run its own Python, or holds only pickle
weights, is refused with one line, before any loader sees it, and nothing from it runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffusionbert.config import load_config
from diffusionbert.training import train

CLI = [sys.executable, "-m", "diffusionbert.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _plant_code(directory: Path, file: str, marker: Path) -> None:
    """Make ``file`` (config.json or tokenizer_config.json) ask for code that would write ``marker``."""
    (directory / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertTokenizerFast\n"
        "class EvilConfig(BertConfig):\n    pass\n"
        "class EvilTokenizer(BertTokenizerFast):\n    pass\n"
    )
    content = json.loads((directory / file).read_text())
    content["auto_map"] = (
        {"AutoConfig": "evil.EvilConfig"}
        if file == "config.json"
        else {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    )
    (directory / file).write_text(json.dumps(content))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with its standard input held open: a prompt would wait for an answer that never comes."""
    with subprocess.Popen(
        [*CLI, *args],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the command waited (a prompt?) instead of refusing the model directory")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_backbone_that_asks_to_run_its_code_is_refused(tiny_config, tiny_backbone, tmp_path, file):
    hostile = tmp_path / "hostile"
    shutil.copytree(tiny_backbone, hostile)
    marker = tmp_path / "code-ran"
    _plant_code(hostile, file, marker)
    path, out = tiny_config(model={"backbone": str(hostile)})
    proc = _run("train", "--config", str(path), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {hostile / file} asks to run Python code from the model directory")
    assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists() and not out.exists()


def test_a_checkpoint_that_asks_to_run_its_code_is_refused(tiny_config, tmp_path):
    path, out = tiny_config(training={"max_steps": 1, "save_every": 0})
    train(load_config(path), progress=False)
    marker = tmp_path / "code-ran"
    _plant_code(out / "final", "config.json", marker)
    for args in (["sample", "--num-samples", "1"], ["evaluate", "--data", str(path)]):
        proc = _run(args[0], "--checkpoint", str(out / "final"), *args[1:], "--no-progress")
        assert proc.returncode == 2 and "asks to run Python code from the model directory" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()


def test_a_backbone_with_only_pickle_weights_is_refused(tiny_config, tiny_backbone, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_backbone, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    path, _ = tiny_config(model={"backbone": str(pickled)})
    proc = _run("train", "--config", str(path), "--no-progress")
    assert proc.returncode == 2 and "has only pickle weights" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained_final(tmp_path_factory, make_tiny_config) -> Path:
    """A tiny trained model directory (copy it before damaging it)."""
    base = tmp_path_factory.mktemp("folders")
    path, out = make_tiny_config(base, training={"max_steps": 1, "save_every": 0, "eval_every": 0})
    train(load_config(path), progress=False)
    return out / "final"


def _damaged(trained_final: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "final"
    shutil.copytree(trained_final, copy)
    return copy


def _refused(directory: Path, message: str) -> None:
    from diffusionbert.checkpoint import load_model_dir
    from diffusionbert.errors import CheckpointError

    with pytest.raises(CheckpointError, match=message) as err:
        load_model_dir(directory)
    assert "\n" not in str(err.value)


def test_files_that_lead_outside_the_folder_or_are_not_regular_are_refused(trained_final, tmp_path) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("[PAD]\n[UNK]\n")
    linked = _damaged(trained_final, tmp_path / "a")
    (linked / "vocab.txt").unlink(missing_ok=True)
    (linked / "vocab.txt").symlink_to(outside)  # a vocabulary that is a file elsewhere
    _refused(linked, "vocab.txt leads outside the model directory")
    endless = _damaged(trained_final, tmp_path / "b")
    (endless / "decoding.json").unlink()
    (endless / "decoding.json").symlink_to("/dev/zero")  # a config that never ends
    _refused(endless, "decoding.json leads outside the model directory")
    fifo = _damaged(trained_final, tmp_path / "c")
    os.mkfifo(fifo / "notes")
    _refused(fifo, "notes is not a regular file")


def test_an_index_naming_pickle_shards_is_refused(trained_final, tmp_path) -> None:
    directory = _damaged(trained_final, tmp_path)
    index = {"metadata": {}, "weight_map": {"backbone.x": "pytorch_model-00001.bin"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(directory, r"names weight shards that are not safetensors \(pytorch_model-00001.bin\)")


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("diffusion.json", "[1, 2]", "diffusion.json is corrupt: expected a JSON object, got list"),
        ("diffusion.json", None, "data.target_window='five' is not valid; expected int"),
        ("decoding.json", '{"steps": "many"}', "decoding.json: steps='many' is not valid; expected int"),
        ("decoding.json", '{"stpes": 3}', "decoding.json: unknown DecodingConfig option 'stpes'"),
        ("config.json", "[]", "config.json is corrupt: expected a JSON object, got list"),
    ],
)
def test_a_malformed_value_names_its_file_and_key(trained_final, tmp_path, file, content, message) -> None:
    directory = _damaged(trained_final, tmp_path)
    if content is None:  # a string where a number belongs
        meta = json.loads((directory / file).read_text())
        meta["data"]["target_window"] = "five"
        content = json.dumps(meta)
    (directory / file).write_text(content)
    _refused(directory, message)


def test_a_json_file_too_large_is_refused_unread(trained_final, tmp_path, monkeypatch) -> None:
    from diffusionbert.utils import io

    directory = _damaged(trained_final, tmp_path)
    monkeypatch.setattr(io, "MAX_JSON_BYTES", 100)
    _refused(directory, "is larger than 100 bytes")
