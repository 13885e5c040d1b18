"""Instruction tuning and chat: the template, response-only pairs, variable-length answers, a second stage from
a trained model, ``pipe.chat`` and ``diffusionbert chat`` driven through a pseudo-terminal."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import CHAT_WORDS, chat_config, train_run
from diffusionbert.checkpoint import load_model_dir
from diffusionbert.cli.main import main
from diffusionbert.config import load_config
from diffusionbert.data import collate, templates, tokenize_dataset
from diffusionbert.data.chat import (
    DEFAULT_CHAT_TEMPLATE,
    chat_template_of,
    check_messages,
    instruction_messages,
    load_chat,
    render_prompt,
)
from diffusionbert.errors import ConfigError, DataError
from diffusionbert.evaluation import Evaluation, evaluate_file
from diffusionbert.models.loading import load_tokenizer
from diffusionbert.sampling import load_pipeline
from diffusionbert.sampling.chat import BLANK, fit_conversation, forming_answer
from diffusionbert.testing import build_tiny_tokenizer


@pytest.fixture()
def chat_tokenizer(chat_backbone):
    tokenizer = build_tiny_tokenizer(CHAT_WORDS)
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


# --------------------------------------------------------------------------------------------- the template


def test_the_default_template_writes_one_line_per_message_and_asks_the_assistant(chat_tokenizer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": " describe the cat "},
        {"role": "assistant", "content": "the cat sat"},
        {"role": "user", "content": "where is the dog"},
    ]
    assert render_prompt(chat_tokenizer, messages) == (
        "system: be brief\nuser: describe the cat\nassistant: the cat sat\nuser: where is the dog\nassistant:"
    )
    question = instruction_messages("describe the cat", "be brief", "the cat sat")
    assert question == [
        {"role": "user", "content": "describe the cat\n\nbe brief"},
        {"role": "assistant", "content": "the cat sat"},
    ]
    assert instruction_messages("describe", "  ", "x")[0]["content"] == "describe"


def test_a_template_is_chosen_and_checked(chat_tokenizer) -> None:
    plain = build_tiny_tokenizer(CHAT_WORDS)
    assert chat_template_of(plain, None) == DEFAULT_CHAT_TEMPLATE
    own = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    plain.chat_template = own
    assert chat_template_of(plain, None) == own  # the tokenizer's own wins over the default
    assert chat_template_of(plain, DEFAULT_CHAT_TEMPLATE) == DEFAULT_CHAT_TEMPLATE
    with pytest.raises(
        ConfigError, match=r"data\.chat_template cannot render a conversation: TemplateSyntaxError"
    ):
        chat_template_of(plain, "{% for m in messages %}")
    with pytest.raises(ConfigError, match="no chat template"):
        render_prompt(build_tiny_tokenizer(CHAT_WORDS), [{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "robot", "content": "hi"}], "role 'robot' is not valid"),
        ([{"role": "user", "content": "  "}], "the user message is empty"),
        ([{"role": "user", "content": 3}], "the user message is empty"),
        ([{"role": "user", "content": "hi", "name": "x"}], "expected"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message is from"),
    ],
)
def test_bad_messages_are_one_line_errors(messages, message) -> None:
    with pytest.raises(DataError, match=message):
        check_messages(messages, last="user")


# ------------------------------------------------------------------------------------ data: prompt → answer


def test_chat_records_become_prompt_answer_pairs(chat_data, chat_tokenizer) -> None:
    pairs = load_chat(chat_data, chat_tokenizer)
    assert len(pairs) == 48 + 2  # one per instruction, one per answer of the conversation
    first = json.loads(chat_data.read_text().splitlines()[0])
    assert pairs[0]["source"] == render_prompt(
        chat_tokenizer, instruction_messages(**{"input": None, **first})[:1]
    )
    assert pairs[0]["target"] == first["output"]
    # the conversation's second answer reads the whole history before it
    assert pairs[-1]["source"] == (
        "system: be brief\nuser: describe the cat\nassistant: the cat sat on the mat\nuser: where is the dog\n"
        "assistant:"
    )
    assert pairs[-1]["target"] == "the dog ran to the house"


def test_bad_chat_files_are_one_line_errors(tmp_path, chat_tokenizer) -> None:
    unanswered = tmp_path / "unanswered.jsonl"
    unanswered.write_text(
        '{"instruction": "describe", "output": "x"}\n{"instruction": "describe", "output": ""}\n'
    )
    assert load_chat(unanswered, chat_tokenizer)["target"] == ["x"]  # an empty output is dropped
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "describe", "output": "x"}\n{"instruction": "describe"}\n')
    with pytest.raises(DataError, match="record 2: expected an instruction record"):
        load_chat(bad, chat_tokenizer)
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "the cat"}\n')
    with pytest.raises(DataError, match="no chat records"):
        load_chat(other, chat_tokenizer)
    turns = tmp_path / "turns.jsonl"
    turns.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match="record 1: messages: the last message is from user"):
        load_chat(turns, chat_tokenizer)
    with pytest.raises(ConfigError, match="no chat template"):
        load_chat(bad, build_tiny_tokenizer(CHAT_WORDS))
    text = tmp_path / "notes.txt"
    text.write_text("the cat\n")
    with pytest.raises(DataError, match="unknown extension"):
        load_chat(text, chat_tokenizer)


def test_only_the_answer_and_its_window_are_noised_and_a_long_prompt_loses_its_oldest_tokens(
    chat_tokenizer,
) -> None:
    import datasets

    long_history = (
        "user: " + " ".join(["the big cat sat on the mat"] * 6) + "\nuser: describe the dog\nassistant:"
    )
    pairs = datasets.Dataset.from_dict(
        {
            "source": ["user: describe the cat\nassistant:", long_history],
            "target": ["the cat sat", "the dog ran"],
        }
    )
    rows = tokenize_dataset(pairs, chat_tokenizer, max_length=24, target_window=6, source_cut="start").dataset
    batch = collate([rows[0], rows[1]], chat_tokenizer.pad_token_id)
    sep, answer = (
        chat_tokenizer.sep_token_id,
        chat_tokenizer("the cat sat", add_special_tokens=False)["input_ids"],
    )
    ids = batch["input_ids"][0]
    start = rows[0]["noise_start"]
    assert ids[start - 1] == sep and ids[start : start + 3].tolist() == answer
    assert ids[start + 3 : start + 6].tolist() == [sep] * 3  # the window: the answer, then [SEP] filler
    for row in range(2):  # noised: exactly the 6 window positions, never the prompt
        assert batch["noise_mask"][row].sum() == 6
        assert not batch["noise_mask"][row, : rows[row]["noise_start"]].any()
    kept = chat_tokenizer.decode(rows[1]["input_ids"][1 : rows[1]["noise_start"] - 1])
    assert kept.endswith("user : describe the dog assistant :")  # the question survives the cut
    assert len(rows[1]["input_ids"]) == 24
    with pytest.raises(ConfigError, match="source_cut"):
        tokenize_dataset(pairs, chat_tokenizer, max_length=24, source_cut="middle")


# -------------------------------------------------------------------------------------- training and stages


def test_a_chat_run_stores_its_template_and_trains_on_pairs(chat_model) -> None:
    # stored as Hugging Face stores it (chat_template.jinja beside the tokenizer), read back with it
    assert load_tokenizer(chat_model).chat_template == DEFAULT_CHAT_TEMPLATE
    meta = json.loads((chat_model / "diffusion.json").read_text())
    assert meta["data"]["pairs"] is True and meta["data"]["target_window"] == 16
    loaded = load_model_dir(chat_model)
    assert loaded.trained_on_pairs and loaded.chat and loaded.max_length == 40


def test_the_bound_scores_the_answer_windows_only(chat_model, chat_data) -> None:
    report = evaluate_file(chat_model, chat_data, batch_size=10)
    assert report.n_examples == 50
    assert report.bound.n_tokens == 50 * 16  # every answer window, no prompt token
    with pytest.raises(ConfigError, match="is a chat model"):
        evaluate_file(chat_model, chat_data, Evaluation(source_field="instruction", field="output"))


def test_a_second_stage_starts_from_the_first_stages_weights(
    tmp_path, chat_model, chat_backbone, chat_data
) -> None:
    config = chat_config(
        tmp_path,
        chat_backbone,
        chat_data,
        model={"init_from": str(chat_model)},
        training={"max_steps": 1, "lr": 1e-12, "head_lr": 1e-12, "warmup_steps": 0},
    )
    train_run(config)
    first = load_model_dir(chat_model).model.state_dict()
    second = load_model_dir(tmp_path / "run" / "final").model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)  # lr ~ 0: the same weights
    assert load_model_dir(tmp_path / "run" / "final").model.config.new_parameter_names == []
    with pytest.raises(
        ConfigError, match=r"model.init_from=.* holds a model with diffusion.objective='mdlm'"
    ):
        _config_error(
            tmp_path / "other", chat_backbone, chat_data, chat_model, diffusion={"objective": "radd"}
        )
    with pytest.raises(ConfigError, match=r"model\.init=pretrained"):
        load_config(None, [f"model.init_from={chat_model}", "model.init=scratch"])


def _config_error(directory: Path, backbone: Path, data: Path, init: Path, **sections: dict) -> None:
    from diffusionbert.training import Trainer

    directory.mkdir()
    path = chat_config(directory, backbone, data, model={"init_from": str(init)}, **sections)
    Trainer(load_config(path), progress=False).close()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.format=dialogue", "data.format='dialogue' is not valid"),
        ("data.source_field=mr", "data.source_field does not apply to data.format=chat"),
        ("data.layout=packed", "needs data.layout=sentence"),
    ],
)
def test_bad_chat_options_are_one_line_errors(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.format=chat", override])
    with pytest.raises(ConfigError, match=r"data\.chat_template applies to data\.format=chat only"):
        load_config(None, ["data.chat_template=x"])


# ---------------------------------------------------------------------------------------------- pipe.chat


def test_fit_conversation_drops_the_oldest_messages_but_keeps_the_system_one(chat_tokenizer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "describe the big red cat"},
        {"role": "assistant", "content": "the big red cat sat on the mat"},
        {"role": "user", "content": "where is the dog"},
    ]
    whole, dropped = fit_conversation(chat_tokenizer, messages, 100)
    assert dropped == 0 and whole == render_prompt(chat_tokenizer, messages)
    size = len(
        chat_tokenizer(render_prompt(chat_tokenizer, [messages[0], messages[3]]), add_special_tokens=False)[
            "input_ids"
        ]
    )
    prompt, dropped = fit_conversation(chat_tokenizer, messages, size)
    assert dropped == 2 and prompt == "system: be brief\nuser: where is the dog\nassistant:"
    with pytest.raises(
        ConfigError, match=f"its prompt takes {size} tokens and the model reads at most {size - 1}"
    ):
        fit_conversation(chat_tokenizer, messages, size - 1)


def test_a_forming_answer_shows_blanks_and_stops_at_its_end(chat_tokenizer) -> None:
    tok = chat_tokenizer
    ids = tok("the cat sat", add_special_tokens=False)["input_ids"]
    state = [ids[0], tok.mask_token_id, ids[2], tok.sep_token_id, ids[1]]
    assert forming_answer(tok, state) == f"the {BLANK} sat"


def test_pipe_chat_answers_in_the_window_and_streams_the_forming_answer(chat_model) -> None:
    pipe = load_pipeline(chat_model)
    seen: list[str] = []
    messages = [{"role": "user", "content": "describe the big cat"}]
    reply = pipe.chat(messages, steps=8, seed=1, on_answer=seen.append)
    assert seen[-1] == reply.text and any(BLANK in text for text in seen[:-1])
    assert reply.dropped == 0 and 1 <= reply.nfe <= 8 + 1  # at most one call per step, plus the length call
    # the same call through __call__: the chat is the pipeline's own decoding of the rendered prompt
    out = pipe(num_samples=1, length=16, steps=8, source=render_prompt(pipe.tokenizer, messages), seed=1)
    assert out.texts[0] == reply.text
    blocks = pipe.chat(messages, steps=4, block_length=4, seed=1, sampler="confidence")
    assert isinstance(blocks.text, str) and blocks.nfe <= 4 * 4 + 1
    with pytest.raises(ConfigError, match="length=40 is not valid"):
        pipe.chat(messages, length=40)
    with pytest.raises(DataError, match="the user message is empty"):
        pipe.chat([{"role": "user", "content": " "}])


def test_a_model_without_a_chat_template_cannot_chat(tmp_path, make_tiny_config, capsys) -> None:
    config, out = make_tiny_config(tmp_path, training={"max_steps": 1, "save_every": 0})
    train_run(config)
    with pytest.raises(ConfigError, match="has no chat template"):
        load_pipeline(out / "final").chat([{"role": "user", "content": "hi"}])
    capsys.readouterr()
    assert main(["chat", "--checkpoint", str(out / "final")]) == 2
    assert "has no chat template" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}", "takes over 1 s"),
        ("{{ messages[1]['content'] + 1 }}", "TypeError: can only concatenate str"),
        ("{{ messages.__class__.__mro__ }}", "SecurityError: access to attribute '__class__'"),
    ],
)
def test_a_model_whose_template_fails_starts_no_chat_and_no_server(
    chat_model, tmp_path, capsys, monkeypatch, template, message
) -> None:
    monkeypatch.setattr(templates, "RENDER_SECONDS", 1.0)
    model = Path(shutil.copytree(chat_model, tmp_path / "model"))
    (model / "chat_template.jinja").write_text(template)
    for command in ("chat", "serve"):
        capsys.readouterr()
        assert (
            main([command, "--checkpoint", str(model), "--port", "0"][: 3 if command == "chat" else 5]) == 2
        )
        err = capsys.readouterr().err.strip()
        assert "the model's chat template cannot render a conversation" in err and message in err, err
        assert len(err.splitlines()) == 1


def test_the_ar_baseline_chats_too(tmp_path, chat_backbone, chat_data, capsys) -> None:
    train_run(
        chat_config(
            tmp_path,
            chat_backbone,
            chat_data,
            diffusion={"objective": "ar", "schedule": None},
            training={"max_steps": 2},
        )
    )
    pipe = load_pipeline(tmp_path / "run" / "final")
    seen: list[str] = []
    reply = pipe.chat([{"role": "user", "content": "describe the cat"}], on_answer=seen.append)
    assert seen == [reply.text] and reply.nfe <= 16
    with pytest.raises(ConfigError, match="block_length does not apply to an autoregressive model"):
        pipe.chat([{"role": "user", "content": "describe the cat"}], block_length=4)
    capsys.readouterr()
    final = str(tmp_path / "run" / "final")
    assert main(["chat", "--checkpoint", final, "--block-length", "4"]) == 2  # before any prompt
    assert "block_length does not apply" in capsys.readouterr().err
    assert main(["chat", "--checkpoint", final, "--length", "500"]) == 2
    assert "length=500 is not valid" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the terminal conversation


def _spawn(chat_model: Path, *args: str):
    """``diffusionbert chat`` in a pseudo-terminal. Ctrl-C is restored to its default in the child: a test run
    started in the background of a non-interactive shell ignores SIGINT, and an ignored signal stays ignored
    across exec (Python would then never raise KeyboardInterrupt)."""
    import signal

    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TERM": "xterm"}
    command = [sys.executable, "-m", "diffusionbert.cli", "chat", "--checkpoint", str(chat_model), *args]
    return pexpect.spawn(
        command[0],
        command[1:],
        env=env,
        timeout=120,
        encoding="utf-8",
        codec_errors="replace",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_chat_in_a_terminal_answers_resets_and_survives_bad_lines(chat_model) -> None:
    child = _spawn(chat_model, "--steps", "8", "--block-length", "8", "--sampler", "confidence")
    child.expect("you>")
    child.sendline("describe the big cat")
    child.expect(r"bot> ")
    child.expect(r"\(NFE (\d+), [\d.]+ s\)")
    assert 1 <= int(child.match.group(1)) <= 2 * 8 + 1
    child.expect("you>")
    os.write(child.child_fd, b"describe \xff the cat\n")  # not UTF-8
    child.expect("not UTF-8")
    child.expect("you>")
    child.sendline("   ")
    child.expect("the message is empty")
    child.expect("you>")
    child.sendline("describe " + "the big cat " * 20)
    child.expect("the message is too long")
    child.expect("you>")
    child.sendline("/reset")
    child.expect(r"conversation reset")
    child.expect("you>")
    child.sendline("/quit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


@pytest.fixture(scope="module")
def timed_chat_model(tmp_path_factory, chat_backbone, chat_data) -> Path:
    """The tiny chat model with layer-wise time: its logits change with t, so every step is a network call."""
    base = tmp_path_factory.mktemp("timed-chat")
    train_run(chat_config(base, chat_backbone, chat_data, model={"time_conditioning": "layerwise"}))
    return base / "run" / "final"


def test_ctrl_c_discards_the_answer_and_the_conversation_goes_on(chat_model, timed_chat_model) -> None:
    # a time-conditioned model calls the network at every one of its 20,000 ancestral steps (minutes of work,
    # however fast the machine): the interrupt is sent once the answer is seen forming (an event of the
    # command, not a clock), long before it could end
    child = _spawn(timed_chat_model, "--steps", "20000", "--sampler", "ancestral", "--length", "16")
    child.expect("you>")
    child.sendline("describe the big cat")
    child.expect(BLANK)  # a masked position of the forming answer is on screen
    child.sendintr()
    child.expect(r"interrupted: the answer was discarded")
    child.expect("you>")
    child.sendline("/quit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
    # on a pipe (no terminal) the same conversation prints final answers only; end of input ends it
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "diffusionbert.cli", "chat", "--checkpoint", str(chat_model), "--steps", "4"],
        input=b"describe the cat\n",
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "bot>" in done.stdout.decode() and BLANK not in done.stdout.decode()


def pexpect_eof():
    import pexpect

    return pexpect.EOF
