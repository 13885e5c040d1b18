"""The live page's server against careless and hostile requests: foreign hosts and origins, bodies too long
(announced or chunked), values beyond the model, conversations too long; each a 4xx with one line, before
any work."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from conftest import WORDS
from diffusionbert.apps.web.jobs import MAX_MESSAGES
from diffusionbert.apps.web.server import MAX_BODY, Access, create_app
from diffusionbert.diffusion.schedules import LinearSchedule
from diffusionbert.errors import ConfigError
from diffusionbert.methods import build_objective
from diffusionbert.sampling import DiffusionPipeline
from diffusionbert.testing import build_tiny_tokenizer, tiny_model

LOCAL = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def client():
    tokenizer = build_tiny_tokenizer(WORDS)
    objective = build_objective("mdlm", tokenizer.mask_token_id, LinearSchedule())
    pipe = DiffusionPipeline(tiny_model(tokenizer=tokenizer), tokenizer, objective, trained_on_pairs=False)
    app = create_app(pipe, "tiny (mdlm model)", Access.serving("127.0.0.1", 7860))
    with TestClient(app, base_url=LOCAL) as client:
        yield client


def one_line_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error


def test_the_page_answers_its_own_host_and_origin(client) -> None:
    assert client.get("/api/model").status_code == 200
    ok = client.post(
        "/api/generate", json={"mode": "unconditional", "length": 4, "steps": 2}, headers={"Origin": LOCAL}
    )
    assert ok.status_code == 200 and "event: done" in ok.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Host": "evil.example"}, "host 'evil.example' is not this server's"),
        ({"Host": "evil.example:7860"}, "is not this server's"),  # DNS rebinding: a foreign name, our address
        ({"Origin": "http://evil.example"}, "origin 'http://evil.example' may not use this server"),
        ({"Origin": "http://127.0.0.1:9999"}, "may not use this server"),
    ],
)
def test_a_foreign_host_or_origin_is_refused_before_any_work(client, headers, message) -> None:
    for method, path in (
        ("GET", "/api/model"),
        ("GET", "/api/status"),
        ("POST", "/api/generate"),
        ("GET", "/"),
    ):
        body = {"json": {"mode": "unconditional"}} if method == "POST" else {}
        one_line_error(client.request(method, path, headers=headers, **body), 403, message)


def test_the_model_description_names_no_path(client) -> None:
    info = client.get("/api/model").json()
    assert info["title"] == "tiny (mdlm model)" and "/" not in str(info)


def test_a_body_too_long_is_refused_unread_announced_or_chunked(client) -> None:
    import asyncio

    from starlette.requests import Request as HttpRequest

    from diffusionbert.apps.web.server import _body

    received = []

    async def endless() -> dict:  # a chunked body without a length, as the ASGI server hands it over
        received.append(1)
        return {"type": "http.request", "body": b" " * 4096, "more_body": True}

    http = HttpRequest({"type": "http", "method": "POST", "headers": [], "path": "/api/generate"}, endless)
    with pytest.raises(ConfigError, match=f"longer than {MAX_BODY} bytes"):
        asyncio.run(_body(http))
    assert len(received) == MAX_BODY // 4096 + 1  # read up to the cap, no further
    announced = {"Content-Length": str(10**9), "Content-Type": "application/json"}
    one_line_error(client.post("/api/generate", content=b"{}", headers=announced), 400, "longer than")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"mode": "unconditional", "length": 10**9},
            "length=1000000000 is not valid; allowed: an integer <= ",
        ),
        ({"mode": "unconditional", "block_length": 10**9}, "block_length=1000000000 is not valid"),
        (
            {"mode": "unconditional", "seed": 2**70},
            "is not valid; allowed: an integer <= 9223372036854775807",
        ),
        ({"mode": "unconditional", "steps": 10**12}, "steps=1000000000000 is not valid"),
        ({"mode": "unconditional", "temperature": 1e-40}, "temperature=1e-40 is not valid"),
        ({"mode": "unconditional", "num_samples": 10**9}, "field='num_samples' is not valid"),
    ],
)
def test_values_beyond_the_model_are_refused_before_any_work(client, body, message) -> None:
    one_line_error(client.post("/api/generate", json=body), 400, message)


def test_a_conversation_too_long_is_refused_and_a_long_one_fits_in_few_renders(
    chat_model, monkeypatch
) -> None:
    from diffusionbert.apps.web import Request
    from diffusionbert.sampling import chat as chat_module
    from diffusionbert.sampling import load_pipeline

    pipe = load_pipeline(chat_model)
    messages = [{"role": "user", "content": "describe the cat"}] * (MAX_MESSAGES + 1)
    with pytest.raises(
        ConfigError, match=f"has {MAX_MESSAGES + 1} messages; allowed: at most {MAX_MESSAGES}"
    ):
        Request.parse({"mode": "chat", "messages": messages}, pipe)
    renders = []
    render = chat_module.render_prompt
    monkeypatch.setattr(chat_module, "render_prompt", lambda *a: renders.append(1) or render(*a))
    conversation = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "describe the big cat"}
        for i in range(MAX_MESSAGES - 1)
    ]
    prompt, dropped = chat_module.fit_conversation(pipe.tokenizer, conversation, 24)
    assert dropped > 0 and len(renders) <= 12  # a bisection, not one render per dropped message
    assert len(pipe.tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 24


def test_an_allowed_origin_names_a_deliberate_deployment() -> None:
    access = Access.serving("0.0.0.0", 7860, ("https://box.example:8443",))
    assert "box.example" in access.hosts and "0.0.0.0" not in access.hosts
    assert "https://box.example:8443" in access.origins and "http://localhost:7860" in access.origins
    with pytest.raises(ConfigError, match=r"--allowed-origin 'box\.example' is not valid"):
        Access.serving("127.0.0.1", 7860, ("box.example",))
