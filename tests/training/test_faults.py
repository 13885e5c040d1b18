"""Fault injection: what a careful user (or a crash) does to a run, and what must survive it.

Classes of faults: a kill at random points of a checkpoint write; a full disk (an ``OSError`` and
safetensors' own error type); a read-only output; corrupt, truncated or missing files of every kind a run or
model directory holds; two runs in one directory; a finished run trained into again; edited settings on
resume; non-finite losses; bad paths and values on the command line. Every fault must end in one line on
stderr and exit code 2, with nothing lost or half-written. (Hostile model folders: ``test_model_folders``.)
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffusionbert.checkpoint import checkpoint_problem, list_checkpoints
from diffusionbert.cli.main import main
from diffusionbert.config import load_config
from diffusionbert.errors import OutputError
from diffusionbert.training import train
from diffusionbert.training import trainer as trainer_module
from diffusionbert.training.run_dir import RunLock
from diffusionbert.utils import io

CLI = [sys.executable, "-m", "diffusionbert.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _losses(run: Path) -> dict[int, float]:
    """The last logged training loss of every step."""
    return {
        r["step"]: r["loss"]
        for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
        if "loss" in r
    }


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop what the test printed before (progress of in-process training)
    try:
        code = main([*args, "--no-progress"])
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    for fragment in fragments:
        assert fragment in err, err


def _temporaries(*directories: Path) -> list[str]:
    return [
        p.name
        for d in directories
        if d.is_dir()
        for p in d.iterdir()
        if ".tmp-" in p.name or ".old-" in p.name
    ]


# ------------------------------------------------------------------------------------ run directories


def test_a_finished_run_is_replaced_only_with_overwrite(tiny_config, capsys):
    path, out = tiny_config(training={"max_steps": 3, "save_every": 0, "eval_every": 0})
    train(load_config(path), progress=False)
    code, _, err = _cli(capsys, "train", "--config", str(path))
    _one_line_error(code, err, "already holds a run", "--resume", "--overwrite")
    shutil.rmtree(out / "checkpoints")  # a finished run without checkpoints: final/ alone is protected too
    before = (out / "final" / "model.safetensors").read_bytes()
    code, _, err = _cli(capsys, "train", "--config", str(path))
    _one_line_error(code, err, "already holds a run (final, log.jsonl, tb)")
    assert (out / "final" / "model.safetensors").read_bytes() == before
    code, _, err = _cli(capsys, "train", "--config", str(path), "--overwrite")
    assert code == 0, err
    assert [r["step"] for r in _records(out) if "loss" in r] == [1, 2, 3]  # one run in the log, not two
    code, _, err = _cli(capsys, "train", "--config", str(path), "--overwrite", "--resume")
    assert code == 2 and "not allowed with argument" in err


def test_resume_needs_a_checkpoint_and_creates_nothing(tiny_config, capsys, tmp_path):
    path, _ = tiny_config()
    typo = tmp_path / "rnu"
    code, _, err = _cli(capsys, "train", "--config", str(path), "--output-dir", str(typo), "--resume")
    _one_line_error(code, err, f"--resume: output dir {typo} has no checkpoint to continue from")
    assert not typo.exists()


def test_a_busy_directory_is_refused_naming_its_holder_and_a_killed_holder_frees_it(tiny_config, capsys):
    path, out = tiny_config(training={"max_steps": 100000, "save_every": 0, "eval_every": 0})
    holder = subprocess.Popen(
        [*CLI, "train", "--config", str(path), "--no-progress"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "log.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        code, _, err = _cli(capsys, "train", "--config", str(path), "--resume")
        _one_line_error(code, err, f"output dir {out} is in use by another run (pid {holder.pid} on ")
        code, _, err = _cli(capsys, "train", "--config", str(path), "--overwrite")
        _one_line_error(code, err, "is in use by another run")  # --overwrite never deletes a live run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").exists()  # a killed run leaves the file, but the kernel has dropped its lock
    code, _, err = _cli(capsys, "train", "--config", str(path), "--overwrite", "--max-steps", "2")
    assert code == 0, err
    assert not (out / ".lock").exists()


def test_two_locks_on_one_directory_exclude_each_other(tmp_path):
    first = RunLock(tmp_path / "run")
    with pytest.raises(OutputError, match=f"in use by another run \\(pid {os.getpid()} on "):
        RunLock(tmp_path / "run")
    first.release()
    RunLock(tmp_path / "run").release()
    assert not (tmp_path / "run").exists()  # the lock made the directory, and removes it empty


def test_replacing_a_directory_never_leaves_a_moment_without_it(tmp_path, monkeypatch):
    """``final/`` is swapped with its replacement in one step: no rename ever leaves the target missing."""
    target = tmp_path / "final"
    with io.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("old")
    if not io.exchange_paths(tmp_path, tmp_path):  # swapping a path with itself: a no-op where supported
        pytest.skip("this system has no renameat2(RENAME_EXCHANGE)")
    gaps = []
    real_rename = Path.rename

    def watched_rename(self: Path, new: Path) -> Path:
        result = real_rename(self, new)
        gaps.append(not target.exists())
        return result

    monkeypatch.setattr(Path, "rename", watched_rename)
    for version in ("new", "newer"):
        with io.atomic_directory(target) as tmp:
            (tmp / "weights").write_text(version)
        assert (target / "weights").read_text() == version
    assert not any(gaps)
    assert _temporaries(tmp_path) == []


def test_atomic_writes_are_flushed_to_disk_before_they_replace_anything(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    with io.atomic_directory(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "a.json").write_text("{}")
        (tmp / "sub" / "b.bin").write_bytes(b"x")
    names = {Path(p).name for p in synced}
    assert {"a.json", "b.bin", "sub", tmp.name, tmp_path.name} <= names
    io.atomic_file(tmp_path / "out.jsonl", lambda p: p.write_text("x"))
    assert any(".out.jsonl.tmp-" in p for p in synced)


def test_temporaries_of_killed_writes_are_removed_when_a_run_starts(tiny_config):
    path, out = tiny_config(training={"max_steps": 4, "save_every": 2, "eval_every": 0})
    train(load_config(path), progress=False)
    leftovers = [
        out / ".final.tmp-abc123",
        out / ".final.old-xyz",
        out / "checkpoints" / ".step-0000006.tmp-k1ll3d",
    ]
    for directory in leftovers:
        directory.mkdir()
        (directory / "model.safetensors").write_bytes(b"\0" * 4096)
    (out / ".config.yaml.tmp-q9").write_text("half")
    train(load_config(path), resume=True, progress=False)
    assert _temporaries(out, out / "checkpoints") == []


# --------------------------------------------------------------------------------- resume and config


@pytest.mark.parametrize(
    ("override", "key", "old", "new"),
    [
        ("training.lr=0.0003", "training.lr", "0.001", "0.0003"),
        ("diffusion.schedule=linear", "diffusion.schedule", "'spindle'", "'linear'"),
        ("model.time_conditioning=layerwise", "model.time_conditioning", "'none'", "'layerwise'"),
        ("data.max_length=12", "data.max_length", "16", "12"),
        ("training.seed=3", "training.seed", "0", "3"),
    ],
)
def test_resume_refuses_settings_that_shape_the_model_or_its_optimisation(
    tiny_config, capsys, override, key, old, new
):
    path, out = tiny_config(training={"max_steps": 2, "save_every": 0, "eval_every": 0})
    train(load_config(path), progress=False)
    code, _, err = _cli(capsys, "train", "--config", str(path), "--resume", "--max-steps", "4", override)
    _one_line_error(code, err, f"{key}={new} differs from {old} in the checkpoint to resume")
    assert max(_losses(out)) == 2  # nothing trained


def test_resume_applies_and_logs_the_settings_that_may_change(tiny_config, capsys):
    path, out = tiny_config(training={"max_steps": 4, "save_every": 2, "eval_every": 0})
    train(load_config(path), progress=False)
    code, stdout, err = _cli(
        capsys, "train", "--config", str(path), "--resume", "--max-steps", "6", "training.log_every=2"
    )
    assert code == 0, err
    assert "training.max_steps 4 -> 6" in stdout and "training.log_every 1 -> 2" in stdout
    resumed = [r for r in _records(out) if "resumed_from" in r]
    assert resumed == [
        {
            "step": 4,
            "resumed_from": "step-0000004",
            "changed": {"training.max_steps": [4, 6], "training.log_every": [1, 2]},
            "skipped_checkpoints": [],
        }
    ]
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["training"]["max_steps"] == 6 and written["training"]["log_every"] == 2
    code, _, err = _cli(capsys, "train", "--config", str(path), "--resume", "--max-steps", "3")
    _one_line_error(code, err, "training.max_steps=3 is below the step of the checkpoint to resume (6")


# ------------------------------------------------------------------------------------- non-finite


def test_a_diverging_run_stops_before_saving_anything_diverged(tiny_config, capsys):
    path, out = tiny_config(training={"max_steps": 12, "save_every": 1, "eval_every": 0})
    code, _, err = _cli(
        capsys, "train", "--config", str(path), "training.lr=3.0e+4", "training.head_lr=3.0e+4"
    )
    _one_line_error(code, err, "training diverged", "5 batches in a row", "no final/ was written")
    assert not (out / "final").exists()
    checkpoints = list_checkpoints(out / "checkpoints")
    assert checkpoints and f"the newest checkpoint is {checkpoints[-1][1]}" in err
    for _, directory in checkpoints:
        assert checkpoint_problem(directory) is None
        weights = load_file(str(directory / "model" / "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())
    skipped = [r for r in _records(out) if "skipped_nonfinite" in r]
    assert [r["skipped_nonfinite"] for r in skipped] == [1, 2, 3, 4, 5]


def test_a_lone_non_finite_batch_is_skipped_counted_and_logged(tiny_config, monkeypatch):
    path, out = tiny_config(training={"max_steps": 5, "save_every": 0, "eval_every": 0})
    real_terms = trainer_module.denoiser_terms
    calls = {"n": 0}

    def terms_with_one_nan(*args, **kwargs):
        terms = real_terms(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            return terms._replace(loss=terms.loss * float("nan"))
        return terms

    monkeypatch.setattr(trainer_module, "denoiser_terms", terms_with_one_nan)
    result = train(load_config(path), progress=False)
    assert result.steps == 5 and sorted(_losses(out)) == [1, 2, 3, 4, 5]
    assert [r for r in _records(out) if "skipped_nonfinite" in r] == [{"step": 2, "skipped_nonfinite": 1}]
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    last = list_checkpoints(out / "checkpoints")[-1][1]
    assert io.load_state(last, "trainer")["skipped_steps"] == 1


def test_evaluate_exits_non_zero_on_a_non_finite_bound(trained_run, tiny_texts, tmp_path, capsys):
    final = tmp_path / "final"
    shutil.copytree(trained_run / "final", final)
    weights = load_file(str(final / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name][:] = float("nan")
    save_file(weights, str(final / "model.safetensors"), metadata={"format": "pt"})
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", str(final), "--data", str(tiny_texts["valid"]))
    _one_line_error(code, err, "is not finite (nan)")


# ------------------------------------------------------------------------------ kills and full disks


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, make_tiny_config) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4 (copy it before damaging it)."""
    path, out = make_tiny_config(
        tmp_path_factory.mktemp("trained"), training={"max_steps": 4, "save_every": 2}
    )
    train(load_config(path), progress=False)
    return out


def _copy_run(run: Path, to: Path) -> Path:
    """A copy of ``run`` and a config that points at it."""
    shutil.copytree(run, to / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["training"]["output_dir"] = str(to / "run")
    (to / "config.yaml").write_text(yaml.safe_dump(cfg))
    return to / "config.yaml"


KILLER = """
import os, signal, sys
from diffusionbert import checkpoint
from diffusionbert.cli.main import main
from diffusionbert.utils import io

kill_at, count = int(os.environ["KILL_AT"]), [0]

def killing(real):
    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper

for module, name in ((io, "save_file"), (io, "write_json"), (io, "_fsync_tree"), (io, "exchange_paths"),
                     (checkpoint, "save_file"), (checkpoint, "write_json"), (checkpoint, "prune_checkpoints")):
    setattr(module, name, killing(getattr(module, name)))
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def six_steps(trained_run: Path) -> tuple[Path, dict[int, float]]:
    """A config of 6 steps with checkpoints every 2 (the trained run's, to a new directory), and the losses of
    its uninterrupted run."""
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    cfg["training"].update(
        max_steps=6, save_every=2, eval_every=0, output_dir=str(trained_run.parent / "six")
    )
    path = trained_run.parent / "six.yaml"
    path.write_text(yaml.safe_dump(cfg))
    subprocess.run(
        [*CLI, "train", "--config", str(path), "--no-progress"], check=True, env=ENV, capture_output=True
    )
    return path, _losses(trained_run.parent / "six")


@pytest.mark.parametrize("kill_at", sorted(random.Random(12).sample(range(1, 43), 4)))
def test_a_kill_anywhere_in_a_checkpoint_write_leaves_only_whole_checkpoints(six_steps, tmp_path, kill_at):
    """Killed at the n-th write or commit step of a run's checkpoints (a seeded random n of the 42 that three
    checkpoints and final/ take), the run directory holds only complete checkpoints and no final/, and
    resuming reaches the same losses."""
    path, whole = six_steps
    run = tmp_path / "killed"
    train_args = ["train", "--config", str(path), "--no-progress", "--output-dir", str(run)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *train_args],
        env={**ENV, "KILL_AT": str(kill_at)},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-2000:])
    assert not (run / "final").exists()
    checkpoints = list_checkpoints(run / "checkpoints")
    assert all(checkpoint_problem(directory) is None for _, directory in checkpoints)
    again = "--resume" if checkpoints else "--overwrite"
    subprocess.run([*CLI, *train_args, again], check=True, env=ENV, capture_output=True)
    assert _losses(run) == whole
    assert _temporaries(run, run / "checkpoints") == []


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["oserror", "safetensors-error"],
)
def test_a_full_disk_while_checkpointing_keeps_earlier_checkpoints_and_final(
    trained_run, tmp_path, capsys, monkeypatch, error
):
    config = _copy_run(trained_run, tmp_path)
    real_save = io.save_file

    def full_disk(tensors, filename, *args, **kwargs):
        if "step-0000006" in str(filename):
            raise error
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(io, "save_file", full_disk)
    code, _, err = _cli(capsys, "train", "--config", str(config), "--resume", "--max-steps", "6")
    _one_line_error(code, err, "could not write checkpoint", "step-0000006", "No space left on device")
    run = tmp_path / "run"
    assert [p.name for _, p in list_checkpoints(run / "checkpoints")] == ["step-0000002", "step-0000004"]
    assert _temporaries(run, run / "checkpoints") == []
    assert (run / "final" / "model.safetensors").exists()  # the old final/ stays whole


def test_a_read_only_or_file_output_is_one_line(trained_run, tiny_config, tmp_path, capsys, monkeypatch):
    path, _ = tiny_config()
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    code, _, err = _cli(capsys, "train", "--config", str(path), "--output-dir", str(a_file))
    _one_line_error(code, err, f"output dir {a_file} is not usable")
    assert a_file.read_text() == "mine"
    read_only = tmp_path / "ro" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs):
        if str(self).startswith(str(read_only.parent)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, _, err = _cli(capsys, "train", "--config", str(path), "--output-dir", str(read_only))
    _one_line_error(code, err, "is not usable: Read-only file system")
    out_file = tmp_path / "ro" / "samples.jsonl"
    final = str(trained_run / "final")
    code, _, err = _cli(capsys, "sample", "--checkpoint", final, "--num-samples", "1", "--out", str(out_file))
    _one_line_error(code, err, f"cannot write {out_file}: Read-only file system")


# ------------------------------------------------------------------------------------ corrupt files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _garble(path: Path) -> None:
    path.write_text("{not json", encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model/model.safetensors", _truncate),
        ("model/model.safetensors", Path.unlink),
        ("model/token_counts.safetensors", _truncate),
        ("model/config.json", _garble),
        ("model/diffusion.json", _garble),
        ("model/tokenizer.json", _garble),
        ("optimizer.safetensors", _truncate),
        ("optimizer.json", Path.unlink),
        ("scheduler.json", _garble),
        ("rng.safetensors", _truncate),
        ("trainer.json", _garble),
        ("run_config.json", _garble),
    ],
)
def test_resume_skips_a_damaged_checkpoint_for_the_newest_that_loads(
    trained_run, tmp_path, capsys, name, damage
):
    config = _copy_run(trained_run, tmp_path)
    run = tmp_path / "run"
    damage(run / "checkpoints" / "step-0000004" / name)
    code, stdout, err = _cli(capsys, "train", "--config", str(config), "--resume", "--max-steps", "6")
    assert code == 0, err
    assert f"skipping checkpoint {run / 'checkpoints' / 'step-0000004'}: " in stdout
    assert name.split("/")[-1] in stdout
    resumed = [r for r in _records(run) if "resumed_from" in r]
    assert resumed[-1]["resumed_from"] == "step-0000002"
    assert resumed[-1]["skipped_checkpoints"] == ["step-0000004"]
    assert sorted(_losses(run)) == [1, 2, 3, 4, 5, 6]


def test_resume_with_no_loadable_checkpoint_is_one_line(trained_run, tmp_path, capsys):
    config = _copy_run(trained_run, tmp_path)
    for _, directory in list_checkpoints(tmp_path / "run" / "checkpoints"):
        _truncate(directory / "optimizer.safetensors")
    code, _, err = _cli(capsys, "train", "--config", str(config), "--resume", "--max-steps", "6")
    _one_line_error(code, err, "no checkpoint in", "loads (skipped 2")


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("model.safetensors", _truncate, "could not be loaded"),
        ("model.safetensors", Path.unlink, "could not be loaded"),
        ("config.json", _garble, "is corrupt"),
        ("diffusion.json", _garble, "is corrupt"),
        ("tokenizer.json", _garble, "could not be loaded"),
        ("tokenizer.json", Path.unlink, "has no tokenizer"),
        ("token_counts.safetensors", _truncate, "is corrupt"),
    ],
)
def test_a_damaged_model_directory_is_one_line(trained_run, tmp_path, capsys, name, damage, message):
    final = tmp_path / "final"
    shutil.copytree(trained_run / "final", final)
    damage(final / name)
    code, _, err = _cli(capsys, "sample", "--checkpoint", str(final), "--num-samples", "1")
    _one_line_error(code, err, message)


@pytest.mark.parametrize(
    ("damage", "message"),
    [(_truncate, "could not be loaded"), ("tokenizer", "has no tokenizer")],
    ids=["truncated-weights", "no-tokenizer"],
)
def test_a_damaged_backbone_directory_is_one_line(
    tiny_config, tiny_backbone, tmp_path, capsys, damage, message
):
    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_backbone, backbone)
    if damage == "tokenizer":
        for path in backbone.glob("tokenizer*"):
            path.unlink()
    else:
        damage(backbone / "model.safetensors")
    path, out = tiny_config(model={"backbone": str(backbone)})
    code, _, err = _cli(capsys, "train", "--config", str(path))
    _one_line_error(code, err, str(backbone), message)
    assert not out.exists()


# ------------------------------------------------------------------------------ bad paths and values


def test_bad_checkpoint_paths_and_values_are_one_line(
    trained_run, tiny_backbone, tiny_texts, tiny_config, tmp_path, capsys
):
    final, valid = str(trained_run / "final"), str(tiny_texts["valid"])
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", str(tiny_backbone), "--data", valid)
    _one_line_error(code, err, "plain Hugging Face model directory (no diffusion.json)")
    code, _, err = _cli(
        capsys, "evaluate", "--checkpoint", str(tiny_backbone / "config.json"), "--data", valid
    )
    _one_line_error(code, err, "is a file; allowed: a model directory")
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", final, "--data", valid, "--max-examples", "0")
    _one_line_error(code, err, "--max-examples: 0 is not a positive integer")
    path, _ = tiny_config()
    for value in (".nan", ".inf"):
        code, _, err = _cli(capsys, "train", "--config", str(path), f"training.lr={value}")
        _one_line_error(code, err, "training.lr=", "it must be a finite number")


def test_out_paths_are_checked_and_leave_no_temporaries(trained_run, tmp_path, capsys):
    final = str(trained_run / "final")
    directory = tmp_path / "a-dir"
    directory.mkdir()
    code, _, err = _cli(
        capsys, "sample", "--checkpoint", final, "--num-samples", "1", "--out", str(directory)
    )
    _one_line_error(code, err, f"cannot write {directory}: it is a directory")
    nested = tmp_path / "new" / "samples.jsonl"
    code, _, err = _cli(capsys, "sample", "--checkpoint", final, "--num-samples", "1", "--out", str(nested))
    assert code == 0 and len(nested.read_text().splitlines()) == 1
    assert _temporaries(tmp_path, tmp_path / "new") == []


def test_only_a_regular_file_is_ever_replaced_and_new_files_follow_the_umask(tmp_path):
    target = tmp_path / "report.json"
    io.write_json(target, {"a": 1})
    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.json"
        io.write_json(fresh, {"a": 1})
        assert fresh.stat().st_mode & 0o777 == 0o640  # the umask, not mkstemp's private 0600
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o666 & ~old
    target.chmod(0o600)
    io.write_json(target, {"a": 2})
    assert target.stat().st_mode & 0o777 == 0o600  # a replaced file keeps its mode
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("mine")
    link = tmp_path / "link.json"
    link.symlink_to(elsewhere)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((link, "a symbolic link"), (fifo, "not a regular file"), (tmp_path, "a directory")):
        with pytest.raises(OutputError, match=f"cannot write {path}: it is {kind}, which is never replaced"):
            io.write_json(path, {"a": 3})
    assert link.is_symlink() and elsewhere.read_text() == "mine" and fifo.exists()
    assert _temporaries(tmp_path) == []


def test_a_run_never_replaces_a_config_it_did_not_write(tiny_config, tmp_path, capsys):
    path, out = tiny_config(training={"max_steps": 1, "save_every": 0, "eval_every": 0})
    out.mkdir(parents=True)
    mine = out / "config.yaml"
    mine.write_text("# my own notes\n")
    for extra in ((), ("--overwrite",)):
        code, _, err = _cli(capsys, "train", "--config", str(path), *extra)
        _one_line_error(code, err, "holds a config.yaml that no run wrote", "another --output-dir")
        assert mine.read_text() == "# my own notes\n"


def test_a_failing_writer_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        io.atomic_file(target, full)
    assert target.read_text() == "old" and _temporaries(tmp_path) == []


# --------------------------------------------------------------------------- numbers and conditioning


def test_per_word_perplexity_counts_only_the_scored_words_of_long_texts(trained_run, tmp_path, capsys):
    words = ["the", "big", "cat", "sat", "on", "a", "small", "red", "mat"]
    lines = [" ".join(random.Random(i).choice(words) for _ in range(100)) for i in range(3)]
    data = tmp_path / "long.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.json"
    code, _, err = _cli(
        capsys, "evaluate", "--checkpoint", str(trained_run / "final"), "--data", str(data), "--out", str(out)
    )
    assert code == 0 and "truncated" in err
    bound = json.loads(out.read_text())["bound"]
    window = 64 - 2  # the tiny model's positions minus [CLS] and [SEP]; one word per token in its vocabulary
    assert bound["n_words"] == 3 * window + 3  # scored words + one end of sentence each, not 3 * 100 + 3


def test_a_source_for_a_model_trained_on_plain_texts_is_an_error(trained_run, tiny_config, tmp_path, capsys):
    code, _, err = _cli(capsys, "sample", "--checkpoint", str(trained_run / "final"), "--source", "the cat")
    _one_line_error(code, err, "trained on plain texts")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"src": "a cat", "ref": "the big cat sat"}) + "\n" for _ in range(16))
    )
    path, out = tiny_config(
        data={"train_file": str(pairs), "valid_file": None, "source_field": "src", "field": "ref"},
        training={"max_steps": 1, "save_every": 0, "eval_every": 0},
    )
    train(load_config(path), progress=False)
    code, stdout, err = _cli(
        capsys, "sample", "--checkpoint", str(out / "final"), "--source", "a cat", "--num-samples", "2"
    )
    assert code == 0, err
    assert len(stdout.splitlines()) == 2
