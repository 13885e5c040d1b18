"""``diffusionbert serve``: the live page, driven in a real headless Chromium (Playwright on the system
browser) against the real server process, and the request checks behind it.

The browser tests skip (with the reason) only when no Chromium is installed; ``make test`` installs
Debian's first (``tools/install_browser.sh``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import train_run
from diffusionbert.apps.web import Request, describe, generate
from diffusionbert.apps.web.jobs import MAX_STEPS
from diffusionbert.cli.main import main
from diffusionbert.errors import ConfigError
from diffusionbert.sampling import load_pipeline
from diffusionbert.sampling.pipelines import Conditioning

LONG = MAX_STEPS
"""A request's most steps: several seconds of Gibbs steps (a network call each) with the tiny model."""
PAIRS = {
    "red cat": ["the red cat sat on the mat", "a red cat ran to the house"],
    "blue dog": ["the blue dog ran to a house", "a blue dog sat on the mat"],
    "green mat": ["the cat sat on the green mat"],
}


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory, tiny_backbone) -> Path:
    """A tiny MDLM pair model trained with source dropout: it generates from nothing, a prompt, an infill
    template or a source (continuous time, so a request may take any number of steps); its saved decoding
    (the page's defaults) is confidence, 12 steps, guidance 1."""
    base = tmp_path_factory.mktemp("serve-pairs")
    data = base / "pairs.jsonl"
    rows = [{"mr": mr, "ref": ref} for mr, refs in PAIRS.items() for ref in refs]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 8), encoding="utf-8")
    cfg = {
        "model": {"backbone": str(tiny_backbone)},
        "diffusion": {"objective": "mdlm", "schedule": "loglinear"},
        "data": {"train_file": str(data), "source_field": "mr", "field": "ref", "max_length": 24},
        "training": {
            "output_dir": str(base / "run"),
            "batch_size": 8,
            "max_steps": 20,
            "save_every": 0,
            "lr": 3e-3,
            "head_lr": 3e-3,
            "source_dropout": 0.5,
        },
        "sampling": {"sampler": "confidence", "steps": 12, "guidance": 1.0},
    }
    (base / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    train_run(base / "config.yaml")
    return base / "run" / "final"


@contextlib.contextmanager
def _server(checkpoint: Path, log: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``diffusionbert serve`` on a free port as its own process; yields the page's address and the process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # the test process runs one thread
    command = [sys.executable, "-m", "diffusionbert.cli", "serve", "--checkpoint", str(checkpoint)]
    with log.open("w") as errors:
        process = subprocess.Popen(
            [*command, "--port", "0", "--device", "cpu", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        try:
            line = process.stdout.readline() if process.stdout else ""
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            assert found, f"serve did not start: {line!r} {log.read_text()}"
            yield found.group(0), process
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def pair_server(pair_model, tmp_path_factory) -> Iterator[str]:
    with _server(pair_model, tmp_path_factory.mktemp("serve-log") / "stderr.txt") as (url, _):
        yield url


@pytest.fixture(scope="module")
def chat_server(chat_model, tmp_path_factory) -> Iterator[str]:
    with _server(chat_model, tmp_path_factory.mktemp("serve-log") / "stderr.txt") as (url, _):
        yield url


def _chromium() -> str | None:
    found = os.environ.get("DIFFUSIONBERT_CHROMIUM")
    return (
        found or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    )


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's) under Playwright."""
    path = _chromium()
    if path is None:
        pytest.skip(
            "no Chromium on this machine: install Debian's (bash tools/install_browser.sh, run by make test)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the dev extras: pip install -e .[dev]"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path)
        yield chromium
        chromium.close()


def _open(browser, url: str):
    """A new tab on the page, ready, with states shown as fast as they come."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-phase=idle]")
    page.select_option("#pace", "0")
    return page


def _start(page, mode: str, text: str | None = None, **controls: object) -> None:
    """Fill the page's inputs for ``mode`` and press Generate."""
    page.click(f"#mode-{mode}")
    if text is not None:
        page.fill(f"#{mode}-text", text)
    for name, value in controls.items():
        selector = "#" + name.replace("_", "-")
        if name == "sampler":
            page.select_option(selector, str(value))
        else:
            page.fill(selector, str(value))
    page.click("#generate")


def _finish(page, timeout: float = 60_000) -> str:
    """Wait for the request to end; the final text (or the error shown)."""
    page.wait_for_selector("body[data-phase=done], body[data-phase=error]", timeout=timeout)
    if page.get_attribute("body", "data-phase") == "error":
        return "error: " + page.inner_text("#error")
    return page.inner_text("#final-text")


def _reference(pipe, mode: str, text: str | None, **options) -> tuple[str, int]:
    """The pipeline's own text for the request, and how many states its loop reported."""
    states = []
    conditioning = {mode: text} if text else {}
    out = pipe(num_samples=1, on_step=lambda x: states.append(x), **conditioning, **options)
    return out.texts[0], len(states)


def _status(url: str) -> dict:
    with urllib.request.urlopen(url + "api/status") as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------------------------------- in a browser


@pytest.mark.parametrize(
    ("mode", "text", "page_text"),
    [
        ("unconditional", None, None),
        ("prompt", "the blue", None),
        ("infill", "the [MASK] cat [MASK] on the [MASK]", "the _ cat _ on the _"),
        ("source", "red cat", None),
    ],
)
def test_each_mode_streams_its_states_and_ends_with_the_pipelines_text(
    browser, pair_server, pair_model, mode, text, page_text
) -> None:
    pipe = load_pipeline(pair_model, device="cpu")
    page = _open(browser, pair_server)
    assert [tab.get_attribute("id") for tab in page.query_selector_all("#modes button")] == [
        f"mode-{m}" for m in pipe.modes
    ]
    _start(page, mode, page_text or text, steps=12, length=10, seed=7, sampler="confidence")
    final = _finish(page)
    expected, states = _reference(pipe, mode, text, length=10, steps=12, sampler="confidence", seed=7)
    assert final == expected
    assert page.get_attribute("#step-slider", "max") == str(states) and states > 1
    page.fill("#step-slider", "0")  # replay: the first state, every generated position blank
    ids, start = pipe.text_template(10, Conditioning(**({mode: text} if text else {})))
    assert page.locator("#canvas .blank").count() == ids[start:].count(pipe.tokenizer.mask_token_id) > 0
    assert page.locator("#canvas .given").count() == len(ids) - start - ids[start:].count(
        pipe.tokenizer.mask_token_id
    )
    page.fill("#step-slider", str(states))
    assert page.locator("#canvas .blank").count() == 0
    shown = page.locator("#canvas .tok:not(.end):not(.after-end)").all_inner_texts()
    assert " ".join(shown) == final
    page.close()


def test_the_page_opens_on_the_models_own_mode_and_decoding(browser, pair_server, pair_model) -> None:
    """A pair model's page opens on "source → text" with its saved decoding (confidence, 12 steps, guidance
    1) in every control; generating without touching them gives ``pipe(source=text)``, guidance included,
    and guidance is offered only where there is a source."""
    pipe = load_pipeline(pair_model, device="cpu")
    page = _open(browser, pair_server)
    assert page.get_attribute("#mode-source", "aria-selected") == "true"
    assert page.input_value("#sampler") == "confidence" and page.input_value("#steps") == "12"
    assert page.is_visible("#guidance") and page.input_value("#guidance") == "1"
    page.fill("#source-text", "blue dog")
    page.click("#generate")
    assert _finish(page) == pipe(source="blue dog").texts[0]
    page.click("#mode-unconditional")
    assert not page.is_visible("#guidance")  # guidance contrasts a source with none
    page.close()


def test_a_chat_keeps_its_conversation_and_answers_like_pipe_chat(browser, chat_server, chat_model) -> None:
    pipe = load_pipeline(chat_model, device="cpu")
    page = _open(browser, chat_server)
    assert [tab.get_attribute("id") for tab in page.query_selector_all("#modes button")] == ["mode-chat"]
    conversation = []
    for turn, question in enumerate(("describe the red cat", "where is the dog")):
        conversation.append({"role": "user", "content": question})
        if turn == 0:
            _start(page, "chat", question, steps=8, seed=3)
        else:  # Enter sends too
            page.fill("#chat-text", question)
            page.press("#chat-text", "Enter")
        answer = _finish(page)
        assert answer == pipe.chat(conversation, steps=8, seed=3).text
        conversation.append({"role": "assistant", "content": answer})
    assert page.locator("#chat-log li").all_inner_texts() == [
        f"{'you' if m['role'] == 'user' else 'model'}{m['content']}" for m in conversation
    ]
    page.click("#chat-reset")
    assert page.locator("#chat-log li").count() == 0
    page.close()


def test_two_tabs_queue_and_keep_their_own_streams(browser, pair_server, pair_model) -> None:
    """The second tab waits behind the first's long request and gets its own text once the first is stopped
    (stopped, not waited for: how long its steps take depends on the machine, and no step here waits on it)."""
    pipe = load_pipeline(pair_model, device="cpu")
    first, second = _open(browser, pair_server), _open(browser, pair_server)
    _start(first, "unconditional", steps=LONG, length=12, seed=1, sampler="gibbs")
    first.wait_for_selector("body[data-phase=running]")
    _start(second, "prompt", "a red", steps=10, length=12, seed=2, sampler="confidence")
    second.wait_for_function(
        "document.getElementById('status').textContent.includes('1 request ahead')", polling=50
    )
    assert first.get_attribute("body", "data-phase") == "running"  # the second waits on it, not on the clock
    first.click("#stop")
    first.wait_for_selector("body[data-phase=stopped]")
    short_text = _finish(second)
    expected, states = _reference(pipe, "prompt", "a red", length=12, steps=10, sampler="confidence", seed=2)
    assert short_text == expected and second.get_attribute("#step-slider", "max") == str(states)
    assert int(first.get_attribute("#step-slider", "max") or 0) < LONG  # its own stream, cut where it stopped
    first.close()
    second.close()


def test_a_closed_tab_or_stop_ends_its_generation_and_frees_the_queue(browser, pair_server) -> None:
    before = _status(pair_server)
    leaving, waiting = _open(browser, pair_server), _open(browser, pair_server)
    _start(leaving, "unconditional", steps=LONG, length=12, seed=1, sampler="gibbs")
    leaving.wait_for_selector("body[data-phase=running]")
    _start(waiting, "unconditional", steps=8, length=8, seed=4)
    waiting.wait_for_function("document.getElementById('status').textContent.includes('ahead')", polling=50)
    leaving.close()  # before its steps are done: it ends as cancelled, not done
    assert not _finish(waiting, timeout=15_000).startswith("error")
    assert _status(pair_server)["cancelled"] == before["cancelled"] + 1

    _start(waiting, "unconditional", steps=LONG, length=12, seed=5, sampler="gibbs")
    waiting.wait_for_selector("body[data-phase=running]")
    waiting.click("#stop")
    waiting.wait_for_selector("body[data-phase=stopped]")
    for _ in range(100):
        status = _status(pair_server)
        if not status["running"]:
            break
        waiting.wait_for_timeout(100)
    assert status["cancelled"] == before["cancelled"] + 2 and not status["running"]
    waiting.close()


@pytest.mark.parametrize(
    ("mode", "text", "controls", "message"),
    [
        ("infill", "", {}, "the infill text is empty"),
        ("infill", "the cat sat", {}, "has no [MASK] placeholder"),
        ("unconditional", None, {"length": 0}, "length=0 is not valid"),
        ("unconditional", None, {"length": 5000}, "length=5000 is not valid; allowed: an integer <="),
        ("prompt", "the cat", {"steps": 20000}, "steps=20000 is not valid"),
        ("source", "red cat", {"top_p": 0}, "top_p=0.0 is not valid"),
    ],
)
def test_bad_input_is_a_message_on_the_page_and_the_server_goes_on(
    browser, pair_server, mode, text, controls, message
) -> None:
    page = _open(browser, pair_server)
    _start(page, mode, text, **controls)
    shown = _finish(page)
    assert shown.startswith("error: ") and message in shown and "\n" not in shown
    assert page.is_enabled("#generate")
    _start(page, "unconditional", length=6, steps=4, top_p=1)  # the bad value corrected
    assert not _finish(page).startswith("error")
    page.close()


def test_an_unknown_sampler_or_mode_is_refused_before_the_queue(pair_server) -> None:
    for body, message in (
        ({"mode": "unconditional", "sampler": "nope"}, "sampler='nope' is not valid"),
        ({"mode": "chat", "messages": []}, "mode='chat' is not valid"),
        ("not json", "is not JSON"),
        ("x" * 70_000, "longer than 65536 bytes"),
    ):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(pair_server + "api/generate", data=data, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request)
        assert caught.value.code == 400 and message in json.loads(caught.value.read())["error"]


def test_ctrl_c_stops_the_server_while_it_generates(pair_model, tmp_path) -> None:
    """SIGINT during a long generation: the server cancels it and exits cleanly within seconds."""
    import signal
    import threading

    with _server(pair_model, tmp_path / "stderr.txt") as (url, server):
        body = json.dumps({"mode": "unconditional", "steps": LONG, "sampler": "gibbs", "length": 40}).encode()
        request = urllib.request.Request(url + "api/generate", data=body, method="POST")
        opened = threading.Event()  # set at the first step

        def client() -> None:
            with contextlib.suppress(OSError), urllib.request.urlopen(request) as response:
                for line in response:
                    if line.startswith(b"event: step"):  # denoising has begun
                        opened.set()

        threading.Thread(target=client, daemon=True).start()
        assert opened.wait(20)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) == 0
    log = (tmp_path / "stderr.txt").read_text()
    assert "request 1: cancelled" in log and "Traceback" not in log
    assert "cache: none (every step runs the whole sequence" in log  # the log says which cache it has


# ----------------------------------------------------------------------------------------- without a browser


def test_the_page_offers_what_each_model_supports(pair_model, chat_model) -> None:
    pair, chat = load_pipeline(pair_model), load_pipeline(chat_model)
    assert pair.modes == ("unconditional", "prompt", "infill", "source")
    assert chat.modes == ("chat",)  # a chat model trained without source dropout needs its conversation
    info = describe(pair, "tiny")
    assert info["samplers"][0] == pair.default_sampler == "confidence" and "cached" in info["samplers"]
    assert info["main_mode"] == "source" and describe(chat, "tiny")["main_mode"] == "chat"
    assert info["decoding"]["steps"] == 12 and info["decoding"]["guidance"] == 1.0
    supports = info["supports"]
    assert supports["live"] and supports["sharpening"] and supports["blocks"] and supports["guidance"]
    assert info["window"] == pair.model.max_input_length
    assert describe(chat, "tiny")["default_length"] == {"chat": chat.target_window}
    assert not describe(chat, "tiny")["supports"]["guidance"]  # trained without source dropout


def test_an_ar_model_offers_left_to_right_decoding_without_states() -> None:
    from conftest import WORDS
    from diffusionbert.sampling import AutoregressivePipeline
    from diffusionbert.testing import build_tiny_tokenizer, tiny_causal_model

    tokenizer = build_tiny_tokenizer(WORDS)
    plain = AutoregressivePipeline(tiny_causal_model(tokenizer=tokenizer), tokenizer, trained_on_pairs=False)
    paired = AutoregressivePipeline(tiny_causal_model(tokenizer=tokenizer), tokenizer, trained_on_pairs=True)
    assert plain.modes == ("unconditional",) and paired.modes == ("source",)
    info = describe(plain, "ar")
    assert info["samplers"] == ["autoregressive", "greedy", "beam"] and not info["supports"]["live"]
    assert not info["supports"]["steps"] and not info["supports"]["guidance"]
    with pytest.raises(ConfigError, match="block_length does not apply"):
        Request.parse({"mode": "unconditional", "block_length": 4}, plain)
    events = []
    generate(
        plain,
        Request.parse({"mode": "unconditional", "length": 6, "seed": 2}, plain),
        lambda *e: events.append(e),
    )
    assert [kind for kind, _ in events] == ["start", "done"] and events[0][1]["tokens"] == []
    assert events[1][1]["text"] == plain(length=6, seed=2).texts[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "is not a JSON object"),
        ({"mode": "unconditional", "colour": 1}, "field='colour' is not valid"),
        ({"mode": "prompt"}, "the prompt text is empty"),
        ({"mode": "unconditional", "steps": 1.5}, "steps=1.5 is not valid"),
        ({"mode": "unconditional", "steps": True}, "steps=True is not valid"),
        ({"mode": "unconditional", "seed": -1}, "seed=-1 is not valid"),
        ({"mode": "unconditional", "temperature": "hot"}, "temperature='hot' is not valid"),
        ({"mode": "unconditional", "block_length": 0}, "block_length=0 is not valid"),
        ({"mode": "unconditional", "sampler": "cachd"}, "did you mean 'cached'"),
    ],
)
def test_a_request_is_checked_field_by_field(pair_model, body, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Request.parse(body, load_pipeline(pair_model))


def test_generate_reports_each_state_as_changes_of_the_first(pair_model) -> None:
    """Replaying the ``step`` changes over the ``start`` tokens gives every state of the pipeline's loop."""
    pipe = load_pipeline(pair_model)
    request = Request.parse({"mode": "infill", "text": "a _ _ sat on _ mat", "steps": 6, "seed": 3}, pipe)
    events = []
    generate(pipe, request, lambda kind, data: events.append((kind, data)))
    states = []
    template = "a [MASK] [MASK] sat on [MASK] mat"
    out = pipe(infill=template, steps=6, seed=3, on_step=lambda x: states.append(x[0].tolist()))
    ids, start = pipe.text_template(0, Conditioning(infill=template))
    assert [kind for kind, _ in events] == ["start", *["step"] * len(states), "done"]
    tokens = events[0][1]["tokens"]
    assert tokens == pipe.tokenizer.convert_ids_to_tokens(ids[start:])
    for (_, data), state in zip(events[1:-1], states, strict=True):
        for position, token in data["changes"]:
            tokens[position] = token
        assert tokens == pipe.tokenizer.convert_ids_to_tokens(state[start:])
    assert events[-1][1]["text"] == out.texts[0] and events[-1][1]["nfe"] == out.nfe[0]


def test_serve_refuses_a_busy_port_and_a_bad_one(pair_model, capsys) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--checkpoint", str(pair_model), "--port", str(port), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--checkpoint", str(pair_model), "--port", "70000"])
    assert caught.value.code == 2 and "70000 is not a port" in capsys.readouterr().err
