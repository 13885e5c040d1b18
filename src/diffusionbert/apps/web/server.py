"""The live page's server: a small ASGI app (Starlette, served by uvicorn) that streams each denoising step to
the browser as server-sent events.

Why not Gradio: the page draws every state itself (tokens coloured by the step that revealed them, a replay
slider), so it needs the raw token changes of each step, which an SSE stream carries in a few bytes; Starlette
and uvicorn add about 1 MB of pure-Python dependencies against Gradio's hundreds, fetch nothing from the
internet, and let a closed tab be seen at once (the response is cancelled), so its generation stops.

Routes: ``GET /`` the page; ``GET /api/model`` what the model offers (:func:`~.jobs.describe`);
``POST /api/generate`` a request (:class:`~.jobs.Request`) answered by an event stream (``queued``,
``start``, ``step``…, then ``done`` or ``error``), or 400 with ``{"error": message}`` for a malformed one;
``GET /api/status`` the queue (:meth:`~.scheduler.Scheduler.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...errors import ConfigError, DiffusionBertError, first_line
from ...sampling import Pipeline
from .jobs import Request, describe, generate
from .scheduler import Job, Scheduler

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
"""The largest request body accepted (a long conversation fits many times over)."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CACHES = {
    "prompt": "each source's keys and values are computed once; every step runs the answer only",
    "key-value": "left to right: each token is computed once",
    "none": "every step runs the whole sequence (a model trained with model.source_attention=isolated "
    "would cache its source)",
}
"""What the log says of each kind of :attr:`~diffusionbert.sampling.Pipeline.cache`."""


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Access:
    """Who may use the page: the ``Host`` names it answers to and the ``Origin`` of the pages that may call
    its API. Anything else is refused before any work, so a web page the user visits cannot drive the model
    through their browser (cross-site requests, DNS rebinding)."""

    hosts: tuple[str, ...]
    origins: tuple[str, ...]

    @classmethod
    def serving(cls, host: str, port: int, allowed_origins: tuple[str, ...] = ()) -> Access:
        """What a server on ``host``:``port`` answers to: the loopback names, ``host`` itself when it is one
        address (not a wildcard), and every ``allowed_origins`` (``http://name:port``) with its name."""
        names = [*LOCAL_HOSTS, "[::1]"]
        if host not in ("0.0.0.0", "::", ""):
            names.append(f"[{host}]" if ":" in host else host)
        origins = [f"http://{name}:{port}" for name in names]
        for origin in allowed_origins:
            parsed = urlsplit(origin)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
                raise ConfigError(
                    f"--allowed-origin {origin!r} is not valid; allowed: scheme://host[:port], e.g. "
                    "http://box.example:7860"
                )
            names.append(parsed.hostname)
            origins.append(origin.rstrip("/"))
        return cls(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(origins)))

    def refusal(self, http: HttpRequest) -> str | None:
        """Why a request is refused (its Host or Origin is not this server's), or None."""
        host = http.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in self.hosts:
            return f"host {host!r} is not this server's; allowed: {', '.join(self.hosts)} (or serve --allowed-origin)"
        origin = http.headers.get("origin")
        if origin is not None and origin not in self.origins:
            return f"origin {origin!r} may not use this server; allowed: {', '.join(self.origins)}"
        return None


def create_app(pipe: Pipeline, title: str, access: Access) -> Starlette:
    """The page's app for ``pipe`` (``title`` names the model on the page, never its path), answering only
    requests ``access`` allows; its worker runs while it is served."""
    scheduler = Scheduler(partial(generate, pipe), log=_log)
    info = describe(pipe, title)

    def guarded(handler: Any) -> Any:
        async def checked(http: HttpRequest) -> Response:
            if (reason := access.refusal(http)) is not None:
                return JSONResponse({"error": reason}, status_code=403)
            return await handler(http)

        return checked

    async def page(_: HttpRequest) -> Response:
        return FileResponse(STATIC / "index.html")

    async def model(_: HttpRequest) -> Response:
        return JSONResponse(info)

    async def status(_: HttpRequest) -> Response:
        return JSONResponse(scheduler.status())

    async def submit(http: HttpRequest) -> Response:
        try:
            body = await _body(http)
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"the request is not JSON ({exc})") from None
            request = Request.parse(payload, pipe)
        except DiffusionBertError as exc:
            return JSONResponse({"error": first_line(exc)}, status_code=400)
        job = scheduler.submit(request)
        return StreamingResponse(
            _stream(job, scheduler),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(scheduler.run())
        try:
            yield
        finally:
            scheduler.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    routes = [
        Route("/", guarded(page)),
        Route("/api/model", guarded(model)),
        Route("/api/status", guarded(status)),
        Route("/api/generate", guarded(submit), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.scheduler = scheduler
    return app


async def _body(http: HttpRequest) -> bytes:
    """The request's body, read in chunks and refused as soon as it passes :data:`MAX_BODY` (announced or
    not: a chunked body is never read whole)."""
    announced = http.headers.get("content-length")
    too_long = ConfigError(f"the request is longer than {MAX_BODY} bytes; allowed: a shorter one")
    if announced is not None and (not announced.isdigit() or int(announced) > MAX_BODY):
        raise too_long
    body = bytearray()
    async for chunk in http.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise too_long
    return bytes(body)


async def _stream(job: Job, scheduler: Scheduler) -> AsyncIterator[str]:
    """The job's events as server-sent events; when the client goes (the response is cancelled), the job
    is cancelled with it."""
    try:
        while (event := await job.events.get()) is not None:
            kind, data = event
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
    finally:
        scheduler.cancel(job)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), or a one-line ConfigError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot listen on {host}:{port} ({reason}); allowed: a free port (--port, 0 picks one) on an "
            "address of this machine (--host)"
        ) from None
    sock.listen(64)
    return sock


def serve(
    pipe: Pipeline,
    title: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    allowed_origins: tuple[str, ...] = (),
) -> None:
    """Serve the page for ``pipe`` until Ctrl-C, printing its address first (one line on stdout); requests
    whose Host or Origin is not this server's (or one of ``allowed_origins``) are refused."""
    import uvicorn

    sock = listen(host, port)
    bound = sock.getsockname()[1]
    access = Access.serving(host, bound, allowed_origins)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {title} at http://{shown}:{bound}/ (Ctrl-C stops)", flush=True)
    _log(f"cache: {pipe.cache} ({CACHES[pipe.cache]})")
    if host not in LOCAL_HOSTS:
        _log(
            f"warning: {host} is not this machine's loopback; anyone who can reach it can use the model "
            f"(requests are answered for the hosts {', '.join(access.hosts)})"
        )
    app = create_app(pipe, title, access)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.scheduler.stop()  # open streams end at once, so the shutdown need not wait for them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once it has shut down
        Server(config).run(sockets=[sock])
    print("stopped", flush=True)
