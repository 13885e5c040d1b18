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
