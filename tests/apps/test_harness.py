"""``diffusionbert lm-eval``: any model in EleutherAI's lm-evaluation-harness (:mod:`diffusionbert.apps.harness`)."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance

from diffusionbert.apps.harness import DiffusionBertLM, run_harness, task_specs
from diffusionbert.apps.plans import DISCUSSION_END
from diffusionbert.checkpoint import load_model_dir
from diffusionbert.cli.main import main
from diffusionbert.config import load_config
from diffusionbert.errors import ConfigError
from diffusionbert.evaluation import Evaluation, evaluate_file
from diffusionbert.sampling.pipelines import Conditioning
from diffusionbert.training import train
from e2e_pairs import MRS, REFS

MORE_MRS = ["name[The Phoenix], area[city centre]", "name[Zizzi], eatType[pub], food[French]"]
MORE_REFS = {MORE_MRS[0]: ["the phoenix is in the city centre"], MORE_MRS[1]: ["zizzi is a french pub"]}


def _write_pairs(path: Path, refs: dict[str, list[str]], repeat: int = 1) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["mr", "ref"])
        writer.writerows([(mr, ref) for mr, texts in refs.items() for ref in texts] * repeat)
    return path


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory) -> Path:
    """A data dir with a tiny ``e2e/test.csv`` of five MRs (the local tasks' layout)."""
    base = tmp_path_factory.mktemp("data")
    (base / "e2e").mkdir()
    _write_pairs(base / "e2e" / "test.csv", {**REFS, **MORE_REFS})
    return base


def _train(base: Path, make_tiny_config, objective: dict, data: dict | None = None, **sections) -> Path:
    config, out = make_tiny_config(
        base,
        **({"data": data} if data else {}),
        diffusion=objective,
        training={"max_steps": 3, "save_every": 0, "eval_every": 0},
        **sections,
    )
    train(load_config(config), progress=False)
    return out / "final"


@pytest.fixture(scope="module")
def pair_models(tmp_path_factory, make_tiny_config, pairs_data) -> dict[str, Path]:
    """Tiny MDLM, RADD and AR models trained on (MR, reference) pairs, and their pair file."""
    base = tmp_path_factory.mktemp("pair-models")
    data = _write_pairs(base / "pairs.csv", {**REFS, **MORE_REFS}, repeat=3)
    models = {"data": data}
    for name, objective in (
        ("mdlm", {"objective": "mdlm", "schedule": "loglinear"}),
        ("radd", {"objective": "radd", "schedule": "linear"}),
        ("ar", {"objective": "ar", "schedule": None}),
    ):
        (base / name).mkdir()
        models[name] = _train(
            base / name, make_tiny_config, objective, pairs_data(data), sampling={"steps": 4}
        )
    return models


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory, make_tiny_config) -> Path:
    """A tiny MDLM model of plain texts (the conftest grammar)."""
    base = tmp_path_factory.mktemp("plain-model")
    return _train(base, make_tiny_config, {"objective": "mdlm", "schedule": "loglinear"})


def test_a_diffusion_loglikelihood_is_minus_evaluates_bound_with_the_same_draws(
    pair_models, tmp_path
) -> None:
    """mc_draws = 2C draws in 2 calls of C copies are evaluate's 2 repeats of a batch of the pair C times (MDLM
    draws the times of a batch stratified in evaluate too)."""
    lm = DiffusionBertLM(checkpoint=str(pair_models["mdlm"]), mc_draws=6, seed=7, progress=False)
    (logprob, greedy), *_ = lm.loglikelihood(_requests("loglikelihood", [(MRS[0], " the eagle is a pub")]))
    data = _write_pairs(tmp_path / "one.csv", {MRS[0]: ["the eagle is a pub"]}, repeat=3)
    report = evaluate_file(
        pair_models["mdlm"], data, Evaluation(field="ref", source_field="mr", repeats=2), batch_size=3, seed=7
    )
    assert report.bound is not None
    assert logprob == pytest.approx(-report.bound.total_nats / 3, rel=1e-6)
    assert greedy is False  # no greedy text of a diffusion to compare with (module doc)
    assert len(lm.stderrs) == 1 and lm.stderrs[0] > 0


def test_rolling_loglikelihood_is_minus_evaluates_bound_of_the_text(plain_model, tmp_path) -> None:
    text = "the big cat sat on a red mat"
    lm = DiffusionBertLM(checkpoint=str(plain_model), mc_draws=4, seed=3, progress=False)
    rolling = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(text,)]))
    (tmp_path / "one.txt").write_text(f"{text}\n{text}\n", encoding="utf-8")
    report = evaluate_file(plain_model, tmp_path / "one.txt", Evaluation(repeats=2), batch_size=2, seed=3)
    assert report.bound is not None
    assert rolling[0] == pytest.approx(-report.bound.total_nats / 2, rel=1e-6)
    # a plain model conditions on a clean prefix: the continuation alone is scored, so less than the whole
    (prefixed, _), (whole, _) = lm.loglikelihood(
        _requests("loglikelihood", [("the big cat", " sat on a red mat"), ("", text)])
    )
    assert whole == pytest.approx(rolling[0], rel=1e-6) and prefixed > whole


def test_a_block_diffusion_loglikelihood_is_its_block_bound_as_evaluate_reports_it(
    tmp_path, make_tiny_config
) -> None:
    """BD3-LM: the rolling loglikelihood is minus evaluate's block bound with the same draws, and a prefix
    (kept clean, as its first blocks) leaves less to score than the whole text."""
    model = _train(tmp_path, make_tiny_config, {"objective": "bd3lm", "schedule": None, "block_size": 4})
    text = "the big cat sat on a red mat"
    lm = DiffusionBertLM(checkpoint=str(model), mc_draws=4, seed=2, progress=False)
    (rolling,) = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(text,)]))
    (tmp_path / "one.txt").write_text(f"{text}\n{text}\n", encoding="utf-8")
    report = evaluate_file(model, tmp_path / "one.txt", Evaluation(repeats=2), batch_size=2, seed=2)
    assert report.bound is not None
    assert rolling == pytest.approx(-report.bound.total_nats / 2, rel=1e-6)
    (prefixed, _), (whole, _) = lm.loglikelihood(
        _requests("loglikelihood", [("the big cat", " sat on a red mat"), ("", text)])
    )
    assert whole == pytest.approx(rolling, rel=1e-6) and prefixed > whole


def test_generation_decodes_a_pair_models_sources_in_batches_as_its_pipeline_does(pair_models) -> None:
    """generate_until: the sources of one length in one pipeline call (as ``generate`` decodes a file),
    ``max_gen_toks`` shortening the window for its own group, each text cut at its ``until``."""
    lm = DiffusionBertLM(checkpoint=str(pair_models["mdlm"]), batch_size=2, progress=False)
    pipe = lm.pipe
    decoding = pipe.resolve(None, {"batch_size": 2}, Conditioning(source=MRS[0]))
    sources = [MRS[0], MORE_MRS[0], MORE_MRS[1]]
    full = pipe(config=decoding, length=decoding.length, source=[MRS[0], MORE_MRS[1]]).texts
    short = pipe(config=decoding, length=4, source=[MORE_MRS[0]]).texts
    stop = full[1].split()[1]
    texts = lm.generate_until(
        _requests(
            "generate_until",
            [(sources[0], {}), (sources[1], {"max_gen_toks": 4}), (sources[2], {"until": [stop]})],
        )
    )
    assert texts == [full[0], short[0], full[1].split(stop, 1)[0]]


def test_the_standard_error_table_compares_independent_draws_where_training_draws_so(
    pair_models, e2e_dir
) -> None:
    """RADD draws its mask counts independently in training: its runs say so, and ``stratified=false``
    changes its estimates; MDLM's times are stratified either way."""
    options = {"data_dir": e2e_dir, "limit": 2}
    radd = run_harness(pair_models["radd"], ["e2e_choice"], model_args={"mc_draws": 8}, **options)
    same = run_harness(pair_models["radd"], ["e2e_choice"], model_args={"mc_draws": 8}, **options)
    free = run_harness(
        pair_models["radd"], ["e2e_choice"], model_args={"mc_draws": 8, "stratified": False}, **options
    )
    mdlm = run_harness(pair_models["mdlm"], ["e2e_choice"], model_args={"mc_draws": 8}, **options)
    assert radd.independent_in_training and not mdlm.independent_in_training
    assert radd.stderrs == same.stderrs and radd.stderrs != free.stderrs  # seeded, and drawn otherwise


def test_an_ar_loglikelihood_is_its_exact_log_probability(pair_models) -> None:
    lm = DiffusionBertLM(checkpoint=str(pair_models["ar"]), progress=False)
    continuation = " the eagle is a pub"
    (logprob, greedy), *_ = lm.loglikelihood(_requests("loglikelihood", [(MRS[0], continuation)]))
    loaded = load_model_dir(pair_models["ar"])
    ids = loaded.tokenizer(MRS[0], continuation, return_tensors="pt")["input_ids"]
    target_start = int((ids[0] == loaded.tokenizer.sep_token_id).nonzero()[0]) + 1
    with torch.no_grad():
        log_p = loaded.model(ids, torch.ones_like(ids)).logits[0].log_softmax(-1)
    expected = sum(float(log_p[i - 1, ids[0, i]]) for i in range(target_start, ids.shape[1]))
    assert logprob == pytest.approx(expected, abs=1e-4)
    argmax = all(int(log_p[i - 1].argmax()) == int(ids[0, i]) for i in range(target_start, ids.shape[1]))
    assert greedy is argmax
    assert lm.stderrs == []  # exact: nothing drawn


def test_the_local_tasks_run_end_to_end_in_the_harness(pair_models, e2e_dir) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model

    assert (
        get_model("diffusionbert") is DiffusionBertLM
    )  # `--model diffusionbert` once the module is imported
    lm = DiffusionBertLM(checkpoint=str(pair_models["mdlm"]), mc_draws=2, progress=False)
    out = simple_evaluate(
        model=lm, tasks=task_specs(["e2e_choice", "e2e_gen"], e2e_dir), bootstrap_iters=0, log_samples=False
    )
    assert out is not None
    choice, gen = out["results"]["e2e_choice"], out["results"]["e2e_gen"]
    assert 0.0 <= choice["acc,none"] <= 1.0 and 0.0 <= choice["acc_norm,none"] <= 1.0
    assert gen["bleu,none"] >= 0.0 and 0.0 <= gen["rouge_l,none"] <= 100.0
    assert len(lm.stderrs) == 5 * 4  # every candidate of every MR


def test_make_lm_eval_evaluates_the_models_and_writes_the_report(
    pair_models, e2e_dir, tmp_path, capsys
) -> None:
    """The command ``make lm-eval`` runs (read with ``make -n``), on the tiny models and data; by default it
    first trains (or reuses) the E2E plan's four models, given checkpoints it trains nothing."""

    def dry_run(*variables: str) -> list[str]:
        dry = subprocess.run(
            ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "lm-eval", *variables],
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
        )  # under make test (CI) the outer make's flags would reach this one
        return [shlex.split(x) for x in dry.stdout.replace("\\\n", " ").splitlines() if "diffusionbert" in x]

    train, evaluate = dry_run()
    assert train[train.index("reproduce-e2e") :] == ["reproduce-e2e", "--models", "ar,spindle,mdlm,radd"]
    assert [evaluate[i + 1] for i, word in enumerate(evaluate) if word == "--checkpoint"] == [
        f"runs/reproduce-e2e/{name}/final" for name in ("ar", "spindle", "mdlm", "radd")
    ]
    report, out = tmp_path / "results.md", tmp_path / "results.json"
    options = f"--tasks e2e_choice --limit 2 --data-dir {e2e_dir} --no-progress --draws 4,8 --out {out}"
    (command,) = dry_run(
        f"LM_EVAL_CHECKPOINTS={pair_models['ar']} {pair_models['mdlm']}",
        f"LM_EVAL_REPORT={report}",
        f"LM_EVAL_ARGS={options} --model-args mc_draws=2",
    )
    assert main(command[command.index("lm-eval") :]) == 0, capsys.readouterr().err
    page = report.read_text(encoding="utf-8")
    assert "| ar | e2e_choice | acc |" in page and "| mdlm | e2e_choice | acc_norm |" in page
    table = page.split("4 draws | 8 draws")[-1]
    assert f"| {pair_models['mdlm']} |" in table  # stratified in training too: no second row
    assert "independent draws" not in table
    assert "nan" not in page and "sample_len" not in page and "machine = " in page
    assert page.rstrip().endswith(DISCUSSION_END)  # the hand-written discussion, kept when regenerated
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 2


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ("mc_draw=4", "model_args='mc_draw' is not valid (did you mean 'mc_draws'?)"),
        ("mc_draws=many", "mc_draws='many' is not valid; allowed: an even integer >= 2"),
        ("mc_draws=3", "mc_draws=3 is not valid; allowed: an even integer >= 2"),
        ("stratified=maybe", "stratified='maybe' is not valid; allowed: true, false"),
    ],
)
def test_bad_model_args_are_one_line_and_exit_2(pair_models, e2e_dir, capsys, model_args, message) -> None:
    command = ["lm-eval", "--checkpoint", str(pair_models["mdlm"]), "--tasks", "e2e_choice"]
    code = main([*command, "--data-dir", str(e2e_dir), "--model-args", model_args, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_a_missing_checkpoint_or_task_is_one_line_and_exit_2(pair_models, e2e_dir, tmp_path, capsys) -> None:
    base = ["lm-eval", "--data-dir", str(e2e_dir), "--no-progress"]
    assert main([*base, "--checkpoint", str(tmp_path / "none"), "--tasks", "e2e_choice"]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(pair_models["mdlm"]), "--tasks", "e2e_choise"]) == 2
    assert "did you mean 'e2e_choice'" in capsys.readouterr().err
    empty = ["--data-dir", str(tmp_path)]
    assert main([*base, *empty, "--checkpoint", str(pair_models["mdlm"]), "--tasks", "e2e_gen"]) == 2
    assert "e2e_gen: data file not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="checkpoint=DIR is missing"):
        DiffusionBertLM(mc_draws=4)
