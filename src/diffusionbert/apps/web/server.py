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
from functools import partial
from pathlib import Path
from types import FrameType

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


def create_app(pipe: Pipeline, title: str) -> Starlette:
    """The page's app for ``pipe`` (``title`` names the model on the page); its worker runs while it is served."""
    scheduler = Scheduler(partial(generate, pipe), log=_log)
    info = describe(pipe, title)

    async def page(_: HttpRequest) -> Response:
        return FileResponse(STATIC / "index.html")

    async def model(_: HttpRequest) -> Response:
        return JSONResponse(info)

    async def status(_: HttpRequest) -> Response:
        return JSONResponse(scheduler.status())

    async def submit(http: HttpRequest) -> Response:
        try:
            announced = http.headers.get("content-length", "0")  # refused before reading when too long
            too_long = not announced.isdigit() or int(announced) > MAX_BODY
            body = b"" if too_long else await http.body()
            if too_long or len(body) > MAX_BODY:
                raise ConfigError(f"the request is longer than {MAX_BODY} bytes; allowed: a shorter one")
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
        Route("/", page),
        Route("/api/model", model),
        Route("/api/status", status),
        Route("/api/generate", submit, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.scheduler = scheduler
    return app


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


def serve(pipe: Pipeline, title: str, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page for ``pipe`` until Ctrl-C, printing its address first (one line on stdout)."""
    import uvicorn

    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {title} at http://{shown}:{bound}/ (Ctrl-C stops)", flush=True)
    _log(f"cache: {pipe.cache} ({CACHES[pipe.cache]})")
    if host not in LOCAL_HOSTS:
        _log(f"warning: {host} is not this machine's loopback; anyone who can reach it can use the model")
    app = create_app(pipe, title)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.scheduler.stop()  # open streams end at once, so the shutdown need not wait for them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once it has shut down
        Server(config).run(sockets=[sock])
    print("stopped", flush=True)
