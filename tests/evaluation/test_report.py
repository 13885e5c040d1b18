"""evaluate_file: the bound per token and per word, sample metrics, a judge, and wrong-kind errors."""

from __future__ import annotations

import math

import pytest

from diffusionbert.config import DecodingConfig, load_config
from diffusionbert.errors import CheckpointError, ConfigError
from diffusionbert.evaluation import Evaluation, evaluate_file
from diffusionbert.evaluation.metrics import bleu_against_references, distinct_n
from diffusionbert.training import train


@pytest.fixture()
def models(tiny_config, tmp_path):
    """A tiny diffusion model and a tiny autoregressive judge, trained a few steps on the same text."""
    out = {}
    for name, objective, schedule in (("diffusion", "diffusionbert", "spindle"), ("judge", "ar", "linear")):
        path, run = tiny_config(
            diffusion={"objective": objective, "schedule": schedule},
            training={"max_steps": 3, "save_every": 0, "output_dir": str(tmp_path / name)},
        )
        train(load_config(path), progress=False)
        out[name] = run / "final"
    return out


def test_bound_counts_words_plus_one_eos_per_sentence(models, tiny_texts):
    report = evaluate_file(models["diffusion"], tiny_texts["valid"], Evaluation(metrics=("bound",)))
    lines = tiny_texts["valid"].read_text().splitlines()
    b = report.bound
    assert b.n_words == sum(len(line.split()) for line in lines) + len(lines)
    assert b.ppl_per_word == pytest.approx(math.exp(b.total_nats / b.n_words))
    assert b.ppl_per_token == pytest.approx(math.exp(b.total_nats / b.n_tokens))
    judged = evaluate_file(models["judge"], tiny_texts["valid"], Evaluation(metrics=("bound",)))
    again = evaluate_file(models["judge"], tiny_texts["valid"], seed=5)
    assert judged.bound.total_nats == pytest.approx(again.bound.total_nats, rel=1e-6)  # AR NLL is exact
    assert "exact NLL" in judged.table() and "PPL / word" in judged.table()


def test_sample_metrics_and_generative_perplexity(models, tiny_texts):
    report = evaluate_file(
        models["diffusion"],
        tiny_texts["valid"],
        Evaluation(metrics=("bleu", "self-bleu", "dist", "gen-ppl"), samples=6, judge=models["judge"]),
        steps=8,
        length=10,
    )
    m = report.samples
    assert report.bound is None and m.num_samples == 6
    assert 0 <= m.bleu <= 1 and 0 <= m.self_bleu <= 1 and all(0 < d <= 1 for d in m.dist)
    assert m.gen_ppl > 1 and m.entropy > 0
    for key in ("BLEU-4", "self-BLEU-4", "dist-1/2/3", "generative PPL"):
        assert key in report.table()


def test_bleu_of_samples_is_the_metric_of_those_samples(models, tiny_texts):
    from diffusionbert.sampling import DiffusionPipeline

    report = evaluate_file(
        models["diffusion"],
        tiny_texts["valid"],
        Evaluation(metrics=("bleu", "dist"), samples=4),
        steps=8,
        length=10,
        seed=3,
    )
    texts = DiffusionPipeline.from_pretrained(models["diffusion"])(
        num_samples=4, length=10, steps=8, seed=3
    ).texts
    references = tiny_texts["valid"].read_text().splitlines()
    assert report.samples.bleu == pytest.approx(bleu_against_references(texts, references))
    assert report.samples.dist[1] == pytest.approx(distinct_n(texts, 2))


def test_wrong_kind_of_checkpoint_or_missing_judge_is_rejected(models, tiny_texts):
    with pytest.raises(ConfigError, match="metric 'gen-ppl' needs --judge"):
        Evaluation(metrics=("gen-ppl",))
    with pytest.raises(CheckpointError, match="is not an autoregressive checkpoint"):
        evaluate_file(
            models["diffusion"],
            tiny_texts["valid"],
            Evaluation(metrics=("gen-ppl",), judge=models["diffusion"], samples=2),
            steps=4,
            length=6,
        )
    bleu = Evaluation(metrics=("bleu",))
    with pytest.raises(ConfigError, match="sampler='cached' does not apply to an autoregressive model"):
        evaluate_file(models["judge"], tiny_texts["valid"], bleu, sampler="cached")
    with pytest.raises(ConfigError, match="sampler='autoregressive' is not valid; allowed: ancestral"):
        evaluate_file(models["diffusion"], tiny_texts["valid"], bleu, sampler="autoregressive")
    with pytest.raises(ConfigError, match="metrics='perplexity' is not valid"):
        Evaluation(metrics=("perplexity",))


def test_autoregressive_checkpoint_samples_left_to_right(models, tiny_texts):
    from diffusionbert.checkpoint import load_model_dir
    from diffusionbert.sampling import generate_left_to_right

    report = evaluate_file(
        models["judge"],
        tiny_texts["valid"],
        Evaluation(metrics=("bleu", "gen-ppl"), samples=5, judge=models["judge"]),
        length=10,
        top_k=3,
        seed=2,
    )
    loaded = load_model_dir(models["judge"])
    out = generate_left_to_right(
        loaded.model, loaded.tokenizer, DecodingConfig(length=10, top_k=3, num_samples=5, seed=2)
    )
    m = report.samples
    assert m.sampler == "autoregressive" and m.texts == tuple(out.texts)
    assert m.mean_length == pytest.approx(sum(out.lengths) / 5) and m.sharpening["top_k"] == 3
    assert "top_k 3" in report.table()


def test_plain_mlm_checkpoint_is_evaluated_as_the_linear_diffusion(tiny_config, tiny_texts, tmp_path):
    from diffusionbert.checkpoint import load_model_dir
    from diffusionbert.data import load_texts
    from diffusionbert.diffusion.objectives import ContinuousObjective
    from diffusionbert.diffusion.schedules import LinearSchedule
    from diffusionbert.evaluation import nll_bound
    from diffusionbert.evaluation.report import text_batches

    path, run = tiny_config(
        diffusion={"objective": "mlm", "schedule": "linear"}, training={"max_steps": 2, "save_every": 0}
    )
    train(load_config(path), progress=False)
    report = evaluate_file(run / "final", tiny_texts["valid"], seed=4)
    loaded = load_model_dir(run / "final")
    texts = load_texts(tiny_texts["valid"])
    batches, _ = text_batches(texts, loaded.tokenizer, loaded.model.max_input_length, 32, "examples")
    linear = ContinuousObjective(loaded.tokenizer.mask_token_id, LinearSchedule())
    assert report.bound.total_nats == pytest.approx(
        nll_bound(loaded.model, linear, batches, seed=4).total_nats
    )


def test_lines_longer_than_the_model_are_counted_and_warned(models, tmp_path, capsys):
    long_file = tmp_path / "long.txt"
    long_file.write_text("the cat sat\n" + " ".join(["the big cat"] * 40) + "\n")
    report = evaluate_file(models["diffusion"], long_file)
    assert report.n_truncated == 1
    assert "1 of 2 examples were longer than the model's" in capsys.readouterr().err
