"""Shared fixtures: a tiny BERT backbone directory and tiny text files, built once per test session."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig, BertForMaskedLM, BertModel

from diffusionbert.cli.main import main
from diffusionbert.testing import build_tiny_tokenizer, tiny_model

# Tests use tiny models, which run fastest (and least disturbed by other work) on one thread.
torch.set_num_threads(1)

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "to",
    "house",
    "big",
    "small",
    "red",
    "green",
    "blue",
    "and",
]


def _sentence(rng: random.Random) -> str:
    """A sentence of a tiny grammar: learnable structure, so training visibly lowers the bound."""

    def noun() -> str:
        adjective = rng.choice(["big", "small", "red", "green", "blue"])
        return f"{rng.choice(['the', 'a'])} {adjective} {rng.choice(['cat', 'dog', 'mat', 'house'])}"

    return f"{noun()} {rng.choice(['sat on', 'ran to'])} {noun()}"


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny BertForMaskedLM + tokenizer, without dropout so runs are comparable across processes."""
    path = tmp_path_factory.mktemp("backbone")
    tokenizer = build_tiny_tokenizer(WORDS)
    model = tiny_model("none", tokenizer=tokenizer)
    model.backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def tiny_texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    path = tmp_path_factory.mktemp("texts")
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 160), ("valid", 32)):
        lines = [_sentence(rng) for _ in range(n)]
        files[split] = path / f"{split}.txt"
        files[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


@pytest.fixture(scope="session")
def make_tiny_config(tiny_backbone: Path, tiny_texts: dict[str, Path]):
    """``make(directory, **sections)``: write a tiny run config in ``directory`` (its output dir
    ``directory/run``) and return (path, output dir); ``**sections`` patch the defaults."""

    def make(directory: Path, **sections: dict) -> tuple[Path, Path]:
        cfg = {
            "model": {"backbone": str(tiny_backbone)},
            "diffusion": {"objective": "diffusionbert", "schedule": "spindle", "num_steps": 64},
            "data": {
                "train_file": str(tiny_texts["train"]),
                "valid_file": str(tiny_texts["valid"]),
                "field": None,
                "max_length": 16,
                "cache_dir": str(directory / "cache"),
            },
            "training": {
                "output_dir": str(directory / "run"),
                "batch_size": 8,
                "max_steps": 12,
                "warmup_steps": 2,
                "save_every": 4,
                "log_every": 1,
                "eval_batches": 2,
                "lr": 1e-3,
                "head_lr": 1e-3,
            },
        }
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        path = directory / "config.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return path, Path(cfg["training"]["output_dir"])

    return make


@pytest.fixture()
def tiny_config(tmp_path: Path, make_tiny_config):
    """Write a tiny run config in the test's tmp dir and return (path, output dir); ``**sections`` patch
    the defaults (see ``make_tiny_config``)."""
    return lambda **sections: make_tiny_config(tmp_path, **sections)


@pytest.fixture()
def save_tiny_bert() -> Callable[[Path, list[str], bool], Path]:
    """Save a tiny BERT plus tokenizer like a downloaded checkpoint: ``save(path, words, with_head)`` -> path.

    The tokenizer is :func:`build_tiny_tokenizer` over ``words``; the model a seeded 2-layer ``BertModel``,
    or a ``BertForMaskedLM`` whose head bias is made distinguishable from a fresh initialisation.
    """

    def save(path: Path, words: list[str], with_head: bool) -> Path:
        tokenizer = build_tiny_tokenizer(words)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        torch.manual_seed(3)
        model = BertForMaskedLM(config) if with_head else BertModel(config)
        if with_head:
            with torch.no_grad():
                model.cls.predictions.bias.normal_()
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    return save


@pytest.fixture(scope="session")
def pairs_data():
    """The data section of an (mr -> ref) pair run on one file: ``pairs_data(file, valid=False, **more)``."""

    def section(data: Path, valid: bool = False, **more: object) -> dict[str, object]:
        file = str(data)
        pairs = {
            "train_file": file,
            "valid_file": file if valid else None,
            "source_field": "mr",
            "field": "ref",
        }
        return {**pairs, "max_length": 32, **more}

    return section


# ------------------------------------------------------------------ chat models (test_chat, test_serve)

CHAT_WORDS = [*WORDS, "user", "assistant", "system", ":", "describe", "where", "is", "be", "brief"]
NOUNS = ["cat", "dog", "mat", "house"]


def chat_record(rng: random.Random) -> dict[str, str]:
    """An instruction record of the tiny grammar: describe a noun, the answer starts with it."""
    noun = f"the {rng.choice(['big', 'small', 'red'])} {rng.choice(NOUNS)}"
    verb = rng.choice(["sat on", "ran to"])
    answer = f"{noun} {verb} the {rng.choice(NOUNS)}" + (" and the dog ran" if rng.random() < 0.5 else "")
    record = {"instruction": f"describe {noun}", "output": answer}
    if rng.random() < 0.3:
        record["input"] = "be brief"
    return record


@pytest.fixture(scope="session")
def chat_backbone(tmp_path_factory) -> Path:
    """A tiny backbone whose vocabulary has the default template's role words."""
    path = tmp_path_factory.mktemp("chat-backbone")
    tokenizer = build_tiny_tokenizer(CHAT_WORDS)
    tiny_model("none", tokenizer=tokenizer).backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat-data") / "train.jsonl"
    rng = random.Random(0)
    records = [chat_record(rng) for _ in range(48)]
    records.append(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "describe the cat"},
                {"role": "assistant", "content": "the cat sat on the mat"},
                {"role": "user", "content": "where is the dog"},
                {"role": "assistant", "content": "the dog ran to the house"},
            ]
        }
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def chat_config(directory: Path, backbone: Path, data: Path, **sections: dict) -> Path:
    """A tiny MDLM chat run config in ``directory`` (its output ``directory/run``); ``**sections`` patch it."""
    cfg = {
        "model": {"backbone": str(backbone)},
        "diffusion": {"objective": "mdlm", "schedule": "loglinear"},
        "data": {"train_file": str(data), "format": "chat", "max_length": 40, "target_window": 16},
        "training": {
            "output_dir": str(directory / "run"),
            "batch_size": 8,
            "max_steps": 30,
            "warmup_steps": 2,
            "save_every": 0,
            "lr": 3e-3,
            "head_lr": 3e-3,
        },
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def train_run(config: Path) -> None:
    """Train a run config through the CLI."""
    assert main(["train", "--config", str(config), "--no-progress"]) == 0


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory, chat_backbone, chat_data) -> Path:
    """A tiny MDLM chat model with a 16-token answer window."""
    base = tmp_path_factory.mktemp("chat-run")
    train_run(chat_config(base, chat_backbone, chat_data))
    return base / "run" / "final"
