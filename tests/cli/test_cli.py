"""The command line end to end on a tiny model: sample, evaluate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from diffusionbert.config import load_config
from diffusionbert.errors import ConfigError
from diffusionbert.sampling import SampleOutput
from diffusionbert.training import train

CLI = [sys.executable, "-m", "diffusionbert.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def trained(tiny_config):
    path, out = tiny_config(training={"max_steps": 3, "save_every": 0})
    train(load_config(path), progress=False)
    return out


def test_sample_writes_jsonl_with_text_length_nfe_and_trajectory(trained, tmp_path):
    out_file = tmp_path / "samples.jsonl"
    for sampler in ("ancestral", "cached"):
        proc = run(
            "sample",
            "--checkpoint",
            str(trained / "final"),
            "--num-samples",
            "3",
            "--length",
            "10",
            "--steps",
            "16",
            "--sampler",
            sampler,
            "--out",
            str(out_file),
            "--trajectory",
            "--no-progress",
        )
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(line) for line in out_file.read_text().splitlines()]
        assert len(records) == 3
        for r in records:
            assert set(r) == {"text", "length", "nfe", "trajectory"} and 0 <= r["length"] <= 10
            assert 1 <= r["nfe"] <= (16 if sampler == "ancestral" else 10)
            assert r["trajectory"][0].count("[MASK]") == 10


def test_evaluate_prints_bound_per_token_and_per_word(trained, tiny_texts, tmp_path):
    out = tmp_path / "eval.json"
    proc = run(
        "evaluate",
        "--checkpoint",
        str(trained),
        "--data",
        str(tiny_texts["valid"]),
        "--out",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "nats / token" in proc.stdout and "PPL / word" in proc.stdout
    bound = json.loads(out.read_text())["bound"]
    assert bound["nats_per_token"] > 0 and bound["n_words"] > 0 and bound["n_tokens"] > bound["n_sequences"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--checkpoint", "{missing}"], "checkpoint directory not found"),
        (["sample", "--checkpoint", "{garbage}"], "(no diffusion.json), not a trained diffusionbert model"),
        (["sample", "--checkpoint", "{final}", "--sampler", "nucleus"], "sampler='nucleus' is not valid"),
        (["sample", "--checkpoint", "{final}", "--steps", "0"], "steps=0 is not valid; allowed: steps >= 1"),
        (["sample", "--checkpoint", "{final}", "--steps", "65"], "steps=65 is not valid"),
        (["sample", "--checkpoint", "{final}", "--length", "2", "--prompt", "the big cat"], "prompt has"),
        (["evaluate", "--checkpoint", "{final}", "--data", "{missing}"], "file not found"),
        (["demo", "--config", "{config}", "data.train_file={missing}"], "not found: the demo needs"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(trained, tiny_config, tmp_path, args, message):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    config, _ = tiny_config()
    values = {
        "missing": str(tmp_path / "nope"),
        "garbage": str(garbage),
        "final": str(trained / "final"),
        "config": str(config),
    }
    proc = run(*[a.format(**values) for a in args], "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_an_autoregressive_checkpoint_samples_left_to_right(tiny_config, tmp_path):
    path, out = tiny_config(diffusion={"objective": "ar"}, training={"max_steps": 2, "save_every": 0})
    train(load_config(path), progress=False)
    out_file = tmp_path / "ar.jsonl"
    args = ["sample", "--checkpoint", str(out / "final"), "--num-samples", "3", "--length", "6"]
    proc = run(*args, "--top-k", "3", "--out", str(out_file), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(records) == 3 and all(r["nfe"] == min(r["length"] + 1, 6) for r in records)
    proc = run(*args, "--prompt", "the cat", "--no-progress")
    assert proc.returncode == 2 and "prompt does not apply to an autoregressive model" in proc.stderr
    proc = run(*args, "--sampler", "ancestral", "--no-progress")  # as `evaluate`: only its own sampler
    assert proc.returncode == 2 and "sampler='ancestral' does not apply" in proc.stderr
    assert run(*args, "--sampler", "autoregressive", "--no-progress").returncode == 0


def test_version_and_env_answer_for_a_bug_report(tmp_path):
    from diffusionbert import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"diffusionbert {__version__}"
    (tmp_path / "e2e").mkdir()
    proc = run("env", "--data-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines() if " " in line)
    assert rows["diffusionbert"].strip() == __version__
    assert {"torch", "transformers", "tokenizers", "datasets", "machine"} <= set(rows)
    assert f"{tmp_path} (found: e2e)" in proc.stdout
    assert "not found" in run("env", "--data-dir", str(tmp_path / "missing")).stdout


def test_version_is_the_installed_distributions(capsys):
    """``--version`` reads the package metadata, so it cannot drift from pyproject.toml's version."""
    from importlib.metadata import version

    from diffusionbert.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"diffusionbert {version('diffusionbert')}\n"


def test_device_is_chosen_once_and_checked(trained):
    import torch

    args = ["sample", "--checkpoint", str(trained / "final"), "--num-samples", "2", "--length", "4"]
    proc = run(*args, "--device", "cpu", "--no-progress")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2, proc.stderr
    proc = run(*args, "--device", "tpu7")
    assert proc.returncode == 2 and proc.stderr.startswith("error: device='tpu7' is not valid"), proc.stderr
    if not torch.cuda.is_available():
        proc = run(*args, "--device", "cuda")
        assert proc.returncode == 2 and "has no CUDA device" in proc.stderr


def test_the_demo_describes_mrs_scores_them_and_marks_texts_without_an_mr_that_contradict_themselves(
    tiny_config, pairs_data, tmp_path, monkeypatch
):
    """The demo trains a data-to-text model, describes MRs with their slot check, scores validation MRs,
    marks each self-contradicting text written without an MR, and reuses its run."""
    import json

    from diffusionbert.apps import demo

    data = tmp_path / "pairs.jsonl"
    rows = [
        {"mr": "name[the cat], eatType[pub]", "ref": "the cat is a pub"},
        {"mr": "name[a dog]", "ref": "a dog"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    pairs = pairs_data(data, valid=True, max_length=24)
    path, _ = tiny_config(
        data=pairs,
        training={"max_steps": 2, "save_every": 0, "eval_every": 2, "source_dropout": 0.5},
        sampling={"sampler": "confidence", "num_samples": 3, "length": 8, "steps": 4, "guidance": 1.0},
    )
    stated = ["the pub is kid friendly and not kid friendly", "a cheap pub", "cheap and expensive and cheap"]
    fixed = SampleOutput(
        texts=stated, token_ids=torch.zeros(3, 1, dtype=torch.long), lengths=[1] * 3, nfe=[1] * 3
    )

    real = demo.load_pipeline

    def pipeline_with_fixed_texts(*args, **kwargs):  # the texts written without an MR are ``stated``
        pipe = real(*args, **kwargs)

        class Fixed(type(pipe)):
            def __call__(self, **request):
                return super().__call__(**request) if request.get("source") else fixed

        pipe.__class__ = Fixed
        return pipe

    monkeypatch.setattr(demo, "load_pipeline", pipeline_with_fixed_texts)
    result = demo.run_demo(path, progress=False, examples=data)
    report = result.report.read_text()
    assert [g.source for g in result.examples] == [r["mr"] for r in rows]
    for generation in result.examples:
        assert f"| {generation.source} | {generation.text} |" in report
    assert result.scores.sources == 2 and result.scores.ser is not None and "BLEU" in report
    assert "guidance 1" in report and result.valid_nats_per_token is not None
    assert (
        "1. the pub is kid friendly and not kid friendly *(contradicts itself on: familyFriendly)*" in report
    )
    assert "2. a cheap pub\n" in report and "priceRange" in report
    assert "2 of 3 texts state two incompatible values" in report
    again = demo.run_demo(
        path, progress=False, examples=data
    )  # the finished run is reused, not trained again
    assert again.valid_nats_per_token == result.valid_nats_per_token
    path, _ = tiny_config(data=pairs, training={"max_steps": 1})
    with pytest.raises(ConfigError, match=r"needs training\.source_dropout > 0"):
        demo.run_demo(path, progress=False, examples=data)


def test_overrides_are_taken_wherever_they_stand_on_the_command_line(tiny_config, capsys):
    from diffusionbert.cli import main
    from diffusionbert.cli.main import parse

    args = parse(["train", "--config", "c.yaml", "training.lr=0.1", "--overwrite", "training.seed=3"])
    assert args.overwrite and args.overrides == ["training.lr=0.1", "training.seed=3"]
    path, out = tiny_config(training={"max_steps": 1, "save_every": 0, "eval_every": 0})
    argv = ["train", "--config", str(path), "training.seed=7", "--no-progress", "training.log_every=5"]
    assert main(argv) == 0
    ran = load_config(out / "config.yaml")
    assert ran.training.seed == 7 and ran.training.log_every == 5
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path), "training.seed=7", "--overwrite", "stray"])
    assert exit_info.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err
