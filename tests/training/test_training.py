"""The trainer: every objective runs, exact resume after SIGKILL, 2 processes = 1 process, bad input."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusionbert import checkpoint
from diffusionbert.checkpoint import list_checkpoints
from diffusionbert.config import load_config
from diffusionbert.errors import CheckpointError
from diffusionbert.training import lr_lambda, train

CLI = [sys.executable, "-m", "diffusionbert.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


KILLED_AT_STEP_14 = """
import os, signal, sys
from diffusionbert.cli import main
from diffusionbert.training.trainer import Trainer
step = Trainer.train_step
def killed_at_14(self, batch):
    if self.state.step == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, batch)
Trainer.train_step = killed_at_14
sys.exit(main(sys.argv[1:]))
"""
"""``python -c`` this, then the ``diffusionbert`` arguments: the command, killed as its 14th step begins."""


def _losses(run: Path) -> dict[int, float]:
    """The logged training loss of every step; each step is logged once, also across a resume."""
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [record for record in steps if "loss" in record]
    assert len({r["step"] for r in steps}) == len(steps), "a step is logged twice"
    return {record["step"]: record["loss"] for record in steps}


@pytest.mark.parametrize(
    ("objective", "schedule", "time_conditioning"),
    [
        ("diffusionbert", "spindle", "none"),
        ("diffusionbert", "linear", "layerwise"),
        ("rdm", "linear", "prefix_token"),
        ("mdlm", "loglinear", "none"),
        ("md4", "cosine", "layerwise"),
        ("sedd", "loglinear", "none"),
        ("radd", "linear", "none"),
        ("mlm", "linear", "none"),
        ("ar", "linear", "none"),
        ("diffusion_lm", "sqrt", "none"),
        ("plaid", "learned", "none"),
    ],
)
def test_every_objective_trains_and_writes_a_loadable_final_model(
    tiny_config, objective, schedule, time_conditioning
):
    path, out = tiny_config(
        diffusion={"objective": objective, "schedule": schedule},
        model={"time_conditioning": time_conditioning},
        training={"max_steps": 4, "save_every": 0},
    )
    result = train(load_config(path), progress=False)
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4] and all(v == v and v > 0 for v in losses.values())
    assert result.final_bound is not None and result.final_bound.nats_per_token > 0
    loaded = checkpoint.load_model_dir(out)
    assert (
        loaded.diffusion_cfg.objective == objective
        and loaded.model_cfg.time_conditioning == time_conditioning
    )
    assert (loaded.token_counts is not None) == (schedule == "spindle")


def test_scratch_init_trains_the_same_architecture_from_random_weights(tiny_config, tiny_backbone):
    # seed 1: the tiny backbone itself was initialised at random with seed 0
    path, out = tiny_config(model={"init": "scratch"}, training={"max_steps": 2, "save_every": 0, "seed": 1})
    train(load_config(path), progress=False)
    trained = load_file(str(out / "final" / "model.safetensors"))
    pretrained = load_file(str(tiny_backbone / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    assert trained[f"backbone.bert.{key}"].shape == pretrained[f"bert.{key}"].shape
    assert not torch.allclose(trained[f"backbone.bert.{key}"], pretrained[f"bert.{key}"], atol=1e-2)


def test_training_lowers_the_validation_bound(tiny_config):
    path, out = tiny_config(training={"max_steps": 40, "save_every": 0, "eval_every": 20, "lr": 3e-3})
    train(load_config(path), progress=False)
    bounds = [
        json.loads(x)["valid_nats_per_token"]
        for x in (out / "log.jsonl").read_text().splitlines()
        if "valid_nats_per_token" in x
    ]
    untrained = train(
        load_config(path, ["training.max_steps=1", f"training.output_dir={out}-0"]), progress=False
    )
    assert bounds[-1] < untrained.final_bound.nats_per_token - 0.3


def test_resume_after_sigkill_equals_uninterrupted_run_bit_for_bit(tiny_config):
    """The real backbone (MiniLM, dropout 0.1), killed in the middle of an epoch (20 batches each): every
    random stream resumes."""
    path, _ = tiny_config(
        model={"backbone": "minilm"},
        training={"max_steps": 24, "save_every": 5, "eval_every": 0, "keep_last": 2},
    )
    base = path.parent
    subprocess.run(
        [*CLI, "train", "--config", str(path), "--output-dir", str(base / "a"), "--no-progress"],
        check=True,
        env=ENV,
        capture_output=True,
    )
    victim = subprocess.run(  # killed by itself as step 14 begins: no race with a watcher on a busy machine
        [sys.executable, "-c", KILLED_AT_STEP_14, "train", "--config", str(path), "--output-dir",
         str(base / "b"), "--no-progress"],
        env=ENV,
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert victim.returncode == -signal.SIGKILL, victim.stderr.decode()
    assert max(_losses(base / "b")) == 13
    assert not (base / "b" / "final").exists()
    subprocess.run(
        [*CLI, "train", "--config", str(path), "--output-dir", str(base / "b"), "--resume", "--no-progress"],
        check=True,
        env=ENV,
        capture_output=True,
    )
    uninterrupted, resumed = _losses(base / "a"), _losses(base / "b")
    assert sorted(resumed) == list(range(1, 25))
    assert resumed == uninterrupted  # exact float equality, every step
    a = load_file(str(base / "a" / "final" / "model.safetensors"))
    b = load_file(str(base / "b" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_writes_a_checkpoint_at_the_next_step_and_says_how_to_resume(tiny_config):
    """What SLURM, Kubernetes and ``timeout`` send before a kill: the run stops at a step boundary with a
    checkpoint there (exit 143 and one line), and --resume continues from it, each step logged once."""
    path, out = tiny_config(training={"max_steps": 100_000, "save_every": 0, "eval_every": 0, "log_every": 1})
    victim = subprocess.Popen(
        [*CLI, "train", "--config", str(path), "--no-progress"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:  # the event: a trained step in the log
        if (out / "log.jsonl").exists() and _losses(out):
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it was stopped"
    victim.send_signal(signal.SIGTERM)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 143, err
    assert err.count("\n") == 1 and "training stopped by SIGTERM at step" in err and "--resume" in err
    stopped_at = max(_losses(out))
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [stopped_at]
    assert not (out / "final").exists()
    subprocess.run(
        [
            *CLI,
            "train",
            "--config",
            str(path),
            "--resume",
            f"training.max_steps={stopped_at + 3}",
            "--no-progress",
        ],
        check=True,
        env=ENV,
        capture_output=True,
    )
    assert sorted(_losses(out)) == list(range(1, stopped_at + 4)) and (out / "final").is_dir()


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``diffusionbert`` under torchrun with two CPU processes (a free port for the rendezvous)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rendezvous = ["--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port)]
    command = [str(torchrun), *rendezvous, "-m", "diffusionbert.cli", *args, "--no-progress"]
    proc = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_train_like_one(tiny_config):
    path, _ = tiny_config(
        training={"max_steps": 6, "save_every": 0, "eval_every": 0}, diffusion={"schedule": "linear"}
    )
    base = path.parent
    subprocess.run(
        [*CLI, "train", "--config", str(path), "--output-dir", str(base / "one"), "--no-progress"],
        check=True,
        env=ENV,
        capture_output=True,
    )
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "two"))
    records = [json.loads(line) for line in (base / "two" / "log.jsonl").read_text().splitlines()]
    assert {r["processes"] for r in records if "processes" in r} == {2}  # really two ranks, not two copies
    one, two = _losses(base / "one"), _losses(base / "two")
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:  # same data, same corruption; only the float reduction order differs
        assert two[step] == pytest.approx(one[step], rel=1e-4)
    a = load_file(str(base / "one" / "final" / "model.safetensors"))
    b = load_file(str(base / "two" / "final" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_with_dropout_resume_bit_for_bit(tiny_config, distributed):
    """Each process has its own dropout stream; a checkpoint keeps both, so a resumed 2-process run of the
    real backbone (MiniLM, dropout 0.1) repeats the uninterrupted one exactly (a constant LR, so stopping at
    step 3 and resuming to 6 with a larger max_steps changes nothing else), whole or sharded: writing a
    checkpoint draws nothing from the dropout streams."""
    path, _ = tiny_config(
        model={"backbone": "minilm"},
        training={
            "max_steps": 6,
            "save_every": 0,
            "eval_every": 0,
            "lr_decay": "constant",
            "distributed": distributed,
        },
    )
    base = path.parent
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "whole"))
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "parts"), "--max-steps", "3")
    resumed = _torchrun("train", "--config", str(path), "--output-dir", str(base / "parts"), "--resume")
    assert "training.max_steps 3 -> 6" in resumed.stdout
    setup = json.loads((base / "parts" / "log.jsonl").read_text().splitlines()[0])
    assert (setup["distributed"], setup["processes"]) == (distributed, 2)
    whole, parts = _losses(base / "whole"), _losses(base / "parts")
    assert sorted(parts) == list(range(1, 7)) and parts == whole  # exact float equality, every step
    rng = load_file(str(base / "parts" / "checkpoints" / "step-0000006" / "rng.safetensors"))
    streams = rng["rng.torch"]
    assert streams.shape[0] == 2 and not torch.equal(streams[0], streams[1])  # one stream per process
    a = load_file(str(base / "whole" / "final" / "model.safetensors"))
    b = load_file(str(base / "parts" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_shards_the_layers_trains_like_one_process_and_resumes_exactly(tiny_config):
    """``training.distributed=fsdp`` under two gloo processes: the same loss trajectory and final weights as
    one process (up to float reduction order), with gradient accumulation and EMA on (a tied embedding gets
    its average too); a run stopped at step 3 and resumed under FSDP repeats the uninterrupted FSDP run
    exactly, and its checkpoints are whole, in the layout a single process writes, so a DDP run resumes under
    FSDP too."""
    path, _ = tiny_config(
        training={
            "max_steps": 6,
            "save_every": 3,
            "eval_every": 0,
            "lr_decay": "constant",
            "grad_accum": 2,
            "ema_decay": 0.9,
            "distributed": "fsdp",
        },
        diffusion={"schedule": "linear"},
    )
    base = path.parent
    train(load_config(path, [f"training.output_dir={base / 'one'}"]), progress=False)
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "whole"))
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "parts"), "--max-steps", "3")
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "parts"), "--resume")
    ddp = ["training.distributed=ddp", "--output-dir", str(base / "mixed"), "--max-steps", "3"]
    _torchrun("train", "--config", str(path), *ddp)
    _torchrun("train", "--config", str(path), "--output-dir", str(base / "mixed"), "--resume")
    records = [json.loads(line) for line in (base / "whole" / "log.jsonl").read_text().splitlines()]
    assert {(r["distributed"], r["processes"]) for r in records if "distributed" in r} == {("fsdp", 2)}
    single, whole, parts = _losses(base / "one"), _losses(base / "whole"), _losses(base / "parts")
    assert sorted(single) == sorted(whole) == sorted(parts) == list(range(1, 7))
    for step in single:
        assert whole[step] == pytest.approx(single[step], rel=1e-4)
    assert parts == whole  # resumed under FSDP: exact float equality, every step
    mixed = _losses(
        base / "mixed"
    )  # three steps under DDP, resumed under FSDP from the same whole checkpoint
    assert sorted(mixed) == list(range(1, 7)) and all(
        mixed[s] == pytest.approx(whole[s], rel=1e-4) for s in whole
    )
    finals = {
        run: load_file(str(base / run / "final" / "model.safetensors")) for run in ("one", "whole", "parts")
    }
    assert finals["one"].keys() == finals["whole"].keys()
    assert max(float((finals["one"][k] - finals["whole"][k]).abs().max()) for k in finals["one"]) < 1e-4
    assert all(torch.equal(finals["whole"][k], finals["parts"][k]) for k in finals["whole"])
    checkpoint_dir = base / "whole" / "checkpoints" / "step-0000003"
    step_one = load_file(str(base / "one" / "checkpoints" / "step-0000003" / "optimizer.safetensors"))
    step_two = load_file(str(checkpoint_dir / "optimizer.safetensors"))
    assert step_one.keys() == step_two.keys()  # the same whole layout, whoever wrote it
    for key in step_one:
        assert step_two[key].shape == step_one[key].shape
        assert torch.allclose(step_two[key], step_one[key], rtol=1e-3, atol=1e-6)


def test_full_disk_while_checkpointing_leaves_no_partial_checkpoint(tiny_config, monkeypatch):
    path, out = tiny_config(training={"max_steps": 12, "save_every": 4, "eval_every": 0})
    real_save = checkpoint.save_file
    calls = {"n": 0}

    def failing_save(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if "step-0000008" in str(Path(filename).parent.name) or ".step-0000008" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(
        CheckpointError, match=r"could not write checkpoint .*step-0000008: No space left on device"
    ):
        train(load_config(path), progress=False)
    kept = [p.name for p in (out / "checkpoints").iterdir()]
    assert kept == ["step-0000004"]  # the earlier checkpoint is untouched, no temporary left behind
    assert (out / "checkpoints" / "step-0000004" / "optimizer.safetensors").exists()


def test_output_dir_with_checkpoints_needs_resume(tiny_config):
    path, _ = tiny_config(training={"max_steps": 4, "save_every": 2, "eval_every": 0})
    train(load_config(path), progress=False)
    proc = subprocess.run(
        [*CLI, "train", "--config", str(path), "--no-progress"], env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "pass --resume" in proc.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lrr=0.1", "unknown config key 'training.lrr'; did you mean 'training.lr'?"),
        ("diffusion.objective=mdlm", "diffusion.schedule='spindle' contradicts diffusion.objective='mdlm'"),
        ("model.time_conditioning=layer", "model.time_conditioning='layer' is not valid"),
        ("training.batch_size=7", "training.batch_size=7"),
        ("training.source_dropout=0.5", "training.source_dropout > 0 needs source/target pairs"),
        ("training.source_dropout=1.0", "training.source_dropout=1.0 is not valid"),
        ("data.target_window=8", "data.target_window needs source/target pairs"),
        ("training.distributed=zero3", "training.distributed='zero3' is not valid"),
    ],
)
def test_bad_config_is_one_line_and_nonzero(tiny_config, override, message):
    path, _ = tiny_config()
    extra = ["training.grad_accum=2"] if override.startswith("training.batch_size") else []
    proc = subprocess.run(
        [*CLI, "train", "--config", str(path), "--no-progress", override, *extra],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"", "empty"),
        (b"abc\x00\x01def\n", "binary"),
        (b"caf\xe9 au lait\n", "UTF-8"),
    ],
)
def test_bad_data_files_are_one_line_and_nonzero(tiny_config, tmp_path, content, message):
    data = tmp_path / "bad.txt"
    if content is not None:
        data.write_bytes(content)
    path, _ = tiny_config(data={"train_file": str(data)})
    proc = subprocess.run(
        [*CLI, "train", "--config", str(path), "--no-progress"], env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr and str(data) in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_lr_schedule_warms_up_then_decays():
    assert lr_lambda(0, 4, 20, "linear") == 0.25 and lr_lambda(3, 4, 20, "linear") == 1.0
    assert lr_lambda(20, 4, 20, "linear") == 0.0 and lr_lambda(20, 4, 20, "cosine") == pytest.approx(0.0)
    assert lr_lambda(12, 4, 20, "cosine") == pytest.approx(0.5) and lr_lambda(15, 4, 20, "constant") == 1.0
    assert lr_lambda(4, 4, 20, "inverse_sqrt") == 1.0 and lr_lambda(16, 4, 20, "inverse_sqrt") == 0.5
    assert lr_lambda(40_000, 10_000, 0, "inverse_sqrt") == pytest.approx(100 / 40_000**0.5)  # 100 / sqrt(n)


def test_resuming_a_finished_run_trains_no_further_step(tiny_config):
    path, out = tiny_config(training={"max_steps": 4, "save_every": 2, "eval_every": 2})
    train(load_config(path), progress=False)
    before = _losses(out)
    again = train(load_config(path), resume=True, progress=False)
    assert again.steps == 4 and _losses(out) == before
    bounds = [
        json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if "valid_nats_per_token" in x
    ]
    assert [b["step"] for b in bounds] == [
        2,
        4,
        4,
    ]  # in-loop at 2, final at 4 (twice: two runs), none doubled


def test_time_free_objectives_contradict_a_time_input(tiny_config):
    from diffusionbert.errors import ConfigError
    from diffusionbert.methods import check_config

    for objective in ("mlm", "radd", "ar"):
        path, _ = tiny_config(
            diffusion={"objective": objective, "schedule": "linear"},
            model={"time_conditioning": "prefix_token"},
        )
        match = f"model.time_conditioning='prefix_token' contradicts diffusion.objective='{objective}'"
        with pytest.raises(ConfigError, match=match):
            check_config(load_config(path))
        with pytest.raises(ConfigError, match=match):
            train(load_config(path), progress=False)


def test_validation_batches_are_the_first_examples_in_file_order(tiny_config, tmp_path):
    """Not length-sorted: the first eval_batches batches must be a fair sample of the file, not its shortest."""
    from diffusionbert.training import Trainer

    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away"]
    lines = [" ".join(words[: 1 + (7 * i) % 10]) for i in range(40)]  # lengths in no order
    valid = tmp_path / "valid_varied.txt"
    valid.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path, _ = tiny_config(data={"valid_file": str(valid)}, training={"eval_every": 4})
    trainer = Trainer(load_config(path), progress=False)
    first = trainer.valid_batches[0]
    expected = [1 + 1 + (7 * i) % 10 + 1 for i in range(8)]  # [CLS] + words + [SEP]
    assert first["attention_mask"].sum(1).tolist() == expected
