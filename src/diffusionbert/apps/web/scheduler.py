"""The page's queue: one worker runs the requests of every tab in arrival order, each with its own stream.

Requests are queued, not batched: two requests share a batch only when their sampler, steps, length and
conditioning agree, and a page's requests rarely do; on a CPU one request already uses every core, so running
them one after another costs nothing in throughput and keeps each stream exactly the pipeline's output for
its seed. A waiting request hears its position (``queued`` ``{"ahead": n}``) whenever the queue moves. A
request whose client goes away (:meth:`Scheduler.cancel`) leaves the queue, or, when it is running, stops at
its next denoising step.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import DiffusionBertError, first_line
from ...utils.runtime import release_freed_memory

Event = tuple[str, dict[str, Any]]
"""One event of a request's stream: its kind and its JSON data."""
Work = Callable[[Any, Callable[[str, dict[str, Any]], None]], None]
"""What runs one request in the worker thread: ``work(request, emit)`` (:func:`~.jobs.generate`)."""


class Cancelled(Exception):
    """Raised inside a running request when its client has gone: the denoising loop stops there."""


@dataclass(eq=False)
class Job:
    """One request in the queue: its events (``None`` ends the stream) and whether its client has gone."""

    number: int
    request: Any
    events: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    gone: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    """Runs jobs one at a time in a worker thread, in the order they were submitted (:meth:`run` is the
    worker; start it as a task of the server's event loop)."""

    def __init__(self, work: Work, log: Callable[[str], None] = lambda line: None) -> None:
        self._work = work
        self._log = log
        self._waiting: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._count = 0
        self.running: Job | None = None
        self.finished = {"done": 0, "error": 0, "cancelled": 0}

    def submit(self, request: Any) -> Job:
        """Queue ``request``; its stream starts with its position."""
        self._count += 1
        job = Job(self._count, request)
        self._waiting.append(job)
        self._arrived.set()
        self._tell_positions()
        return job

    def cancel(self, job: Job) -> None:
        """The client of ``job`` has gone: drop it from the queue, or stop it at its next step if it runs."""
        if job.gone.is_set():
            return
        job.gone.set()
        if job in self._waiting:
            self._waiting.remove(job)
            self.finished["cancelled"] += 1
            self._log(f"request {job.number}: cancelled while waiting")
            self._tell_positions()

    def stop(self) -> None:
        """The server is shutting down: every job, waiting or running, ends at its next event (safe to call
        from a signal handler: it only sets flags)."""
        for job in [*self._waiting, *([self.running] if self.running else [])]:
            job.gone.set()

    def status(self) -> dict[str, Any]:
        """What the queue is doing: whether a request runs, how many wait, and how the finished ones ended."""
        return {"running": self.running is not None, "waiting": len(self._waiting), **self.finished}

    def _tell_positions(self) -> None:
        ahead = int(self.running is not None)
        for index, job in enumerate(self._waiting):
            job.events.put_nowait(("queued", {"ahead": ahead + index}))

    async def run(self) -> None:
        """The worker: take the oldest waiting job, run it in a thread, repeat (until cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self._waiting:
                self._arrived.clear()
                continue
            job = self._waiting.popleft()
            self.running = job
            self._tell_positions()
            try:
                await asyncio.to_thread(self._execute, job, loop)
            finally:
                self.running = None

    def _execute(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Run one job in the worker thread; its events go to its stream through the event loop."""

        def put(event: Event | None) -> None:
            loop.call_soon_threadsafe(job.events.put_nowait, event)

        def emit(kind: str, data: dict[str, Any]) -> None:
            if job.gone.is_set():
                raise Cancelled
            put((kind, data))

        began = time.perf_counter()
        outcome = "done"
        try:
            self._work(job.request, emit)
        except Cancelled:
            outcome = "cancelled"
        except DiffusionBertError as exc:
            outcome = "error"
            put(("error", {"message": first_line(exc)}))
        except Exception as exc:  # a bug: the page hears of it and the server keeps serving
            outcome = "error"
            traceback.print_exc()
            put(("error", {"message": f"internal error: {type(exc).__name__}: {first_line(exc)}"}))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
                put(None)
            release_freed_memory()  # a server lives long; each request's shapes leave blocks behind
        self.finished[outcome] += 1
        self._log(f"request {job.number}: {outcome} after {time.perf_counter() - began:.2f} s")
