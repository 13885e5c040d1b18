"""Chat templates rendered within limits of time, memory and size, in a worker process.

A chat template is Jinja code that comes with a model folder or a config. transformers runs it in a sandbox
that keeps it away from the machine, but a template may still loop for ever (nested loops) or build a string
of many gigabytes, and in the process that holds a model either one hangs or kills it. So every prompt this
package renders goes through :func:`render_conversations`: the template runs in a small interpreter of its own
(:mod:`._template_worker`, started once and reused, exactly transformers' renderer), which

* gets at most :data:`RENDER_SECONDS` per conversation (then it is killed, and the next render starts a
  new one),
* may allocate at most :data:`RENDER_MEMORY` bytes beyond its start (an address-space limit, on Linux),
* may return at most :data:`MAX_PROMPT_CHARACTERS` characters per conversation,

and every failure is one :class:`ChatTemplateError` line. :func:`check_chat_template` renders a realistic
conversation (several turns, line breaks, quotes, braces, markup and non-ASCII text) so that a template that
cannot serve a chat fails when a command starts, not at its first answer.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

Message = dict[str, str]

RENDER_SECONDS = 10.0
"""Longest a template may take on one conversation (a real one takes milliseconds)."""
RENDER_MEMORY = 512 << 20
"""Bytes a template may allocate beyond what the worker holds at start."""
MAX_PROMPT_CHARACTERS = 1_000_000
"""Longest prompt a template may render (far beyond any model's window)."""
START_SECONDS = 120.0
"""Longest the worker may take to start (it imports transformers' renderer; a busy machine is slow)."""

REALISTIC_CONVERSATION: tuple[Message, ...] = (
    {"role": "user", "content": "Give three tips for staying healthy.\n\nKeep each one short."},
    {
        "role": "assistant",
        "content": '1. Eat vegetables: they carry fibre.\n2. Sleep eight hours.\n3. Walk — it is "free".',
    },
    {"role": "user", "content": "And at work? Use {braces}, <tags> & ünïcödé if you like."},
)
"""What :func:`check_chat_template` renders: a few turns with the characters real messages hold."""

_WORKER_SCRIPT = Path(__file__).with_name("_template_worker.py")


class ChatTemplateError(ConfigError):
    """A chat template failed, ran too long, or grew too large on a conversation; ``index`` says which of the
    conversations rendered together it was."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


def render_conversations(
    template: str, conversations: Sequence[Sequence[Message]], variables: Mapping[str, Any]
) -> list[str]:
    """Each conversation rendered by ``template`` with the generation prompt (what
    ``tokenizer.apply_chat_template(..., add_generation_prompt=True)`` returns), within the limits of the
    module doc; ``variables`` are the tokenizer's special tokens the template may use.

    Raises:
        ChatTemplateError: the first conversation the template fails on, loops on or renders too large.
    """
    return _worker().render(template, [list(c) for c in conversations], dict(variables))


def check_chat_template(template: str, variables: Mapping[str, Any], system: str | None = None) -> None:
    """Render :data:`REALISTIC_CONVERSATION` (after a ``system`` message, when a chat has one).

    Raises:
        ChatTemplateError: the template cannot render it (one line: why).
    """
    conversation = list(REALISTIC_CONVERSATION)
    if system:
        conversation.insert(0, {"role": "system", "content": system})
    render_conversations(template, [conversation], variables)


class _Worker:
    """The worker process and its pipes; one request at a time (a lock, for the web server's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pending = b""  # read from the worker, not yet a whole line
        atexit.register(self.close)

    def render(
        self, template: str, conversations: list[list[Message]], variables: dict[str, Any]
    ) -> list[str]:
        with self._lock:
            process = self._start()
            assert process.stdin is not None
            request = {"template": template, "conversations": conversations, "variables": variables}
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
            except OSError:
                self._kill()
                raise ChatTemplateError(
                    "the chat-template worker stopped; allowed: run the command again"
                ) from None
            texts = []
            for index in range(len(conversations)):
                reply = self._reply(RENDER_SECONDS)
                if reply is None:
                    self._kill()
                    raise ChatTemplateError(
                        f"it takes over {RENDER_SECONDS:g} s to render a conversation (a loop?)", index
                    )
                if "error" in reply:  # the worker skips the rest of this request
                    raise ChatTemplateError(reply["error"], index)
                texts.append(reply["text"])
            return texts

    def close(self) -> None:
        """End the worker (its input closes; it exits)."""
        with self._lock:
            self._kill()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        command = [sys.executable, "-I", str(_WORKER_SCRIPT), str(RENDER_MEMORY), str(MAX_PROMPT_CHARACTERS)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        if self._reply(START_SECONDS) != {"ready": True}:
            self._kill()
            raise ChatTemplateError(
                f"the chat-template worker did not start within {START_SECONDS:g} s ({sys.executable})"
            )
        return self._process

    def _reply(self, seconds: float) -> dict[str, Any] | None:
        """The worker's next line, or None when none comes within ``seconds`` or the worker died."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + seconds
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def _kill(self) -> None:
        self._pending = b""
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.kill()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None


_WORKERS: dict[int, _Worker] = {}


def _worker() -> _Worker:
    """This process's worker (a forked child starts its own rather than share its parent's pipes)."""
    pid = os.getpid()
    if pid not in _WORKERS:
        _WORKERS[pid] = _Worker()
    return _WORKERS[pid]
