"""``diffusionbert chat``: a terminal conversation with a chat model, each answer shown while it is denoised.

Lines typed at ``you>`` are the user's messages; ``/reset`` forgets the conversation, ``/quit`` (or end of
input, Ctrl-D) ends it. The answer forms in place on a terminal (masked positions as ``░``); on a pipe only
the final answer is printed. Ctrl-C during an answer stops it: the partial answer and its question are
discarded and the conversation goes on. A bad line (not UTF-8, empty, too long for the model's window) is
reported and skipped; a model that cannot chat (no chat template) is an error before the first prompt.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, BinaryIO

from .common import decoding_options, decoding_overrides, model_options

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import DecodingConfig
    from ..sampling import Pipeline

COMMANDS = {"/reset": "forget the conversation", "/quit": "end the chat"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        parents=[
            *model_options(),
            decoding_options(exclude=("num_samples", "mbr", "batch_size", "length_beam")),
        ],
        help="talk with a model trained with data.format=chat",
        description="A conversation in the terminal. --length is the answer window (default: the model's "
        "data.target_window, else 64); answer n of a conversation draws with seed + n.",
    )
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
    p.add_argument("--system", help="a system message that opens every conversation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from rich.console import Console

    from ..checkpoint import load_model_dir
    from ..sampling import pipeline_for
    from ..utils.runtime import default_device

    loaded = load_model_dir(args.checkpoint, device=default_device(args.device))
    pipe = pipeline_for(loaded)
    decoding = pipe.chat_decoding(**decoding_overrides(args))  # bad options fail before the first prompt
    console = Console(highlight=False)
    blocks = f", blocks of {decoding.block_length}" if decoding.block_length else ""
    console.print(
        f"[bold]diffusionbert chat[/] with {loaded.directory} ({loaded.method.name}, {decoding.sampler}, "
        f"{decoding.steps} steps{blocks}). "
        + ", ".join(f"{name} {what}" for name, what in COMMANDS.items())
        + ", Ctrl-C stops an answer."
    )
    Conversation(pipe, decoding, args.system, console).loop(sys.stdin.buffer)


class Conversation:
    """The messages so far and the loop that reads the user's lines and shows the model's answers."""

    def __init__(
        self, pipe: Pipeline, decoding: DecodingConfig, system: str | None, console: Console
    ) -> None:
        """``decoding`` decodes every answer (answer n of a conversation with its seed + n); ``system`` opens
        every conversation."""
        self.pipe = pipe
        self.decoding = decoding
        self.system = system
        self.console = console
        self.messages: list[dict[str, str]] = []
        self.turn = 0
        self.reset()

    def reset(self) -> None:
        """Start over: no messages but the system one."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def loop(self, stdin: BinaryIO) -> None:
        """Read lines until /quit or the end of input."""
        while True:
            self.console.print("[bold green]you>[/] ", end="")
            try:
                raw = stdin.readline()
            except KeyboardInterrupt:
                self.console.print()
                continue
            if not raw:  # end of input
                self.console.print()
                return
            if not self.console.is_terminal:  # a transcript: the line is not echoed by a terminal
                self.console.print(raw.decode("utf-8", errors="replace").rstrip("\n"), markup=False)
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                self.console.print(
                    f"[red]error:[/] the line is not UTF-8 (byte 0x{raw[exc.start]:02x} at {exc.start}); "
                    "it was ignored"
                )
                continue
            if line == "/quit":
                return
            if line == "/reset":
                self.reset()
                self.console.print("[dim](conversation reset)[/]")
                continue
            if not line:
                self.console.print("[red]error:[/] the message is empty; type some text, or /quit")
                continue
            self.answer(line)

    def answer(self, line: str) -> None:
        """Answer one message live; on success both join the conversation, on Ctrl-C or an error neither."""
        from rich.live import Live
        from rich.text import Text

        from ..errors import DiffusionBertError

        asked = [*self.messages, {"role": "user", "content": line}]
        started = time.perf_counter()

        def labelled(text: str) -> Text:
            return Text.assemble(("bot> ", "bold blue"), text)

        try:
            # on a terminal the answer forms in place; on a pipe only the final answer is written
            with Live(labelled(""), console=self.console, auto_refresh=False, transient=True) as live:
                reply = self.pipe.chat(
                    asked,
                    config=self.decoding,
                    seed=self.decoding.seed + self.turn,
                    on_answer=(lambda text: live.update(labelled(text), refresh=True))
                    if self.console.is_terminal
                    else None,
                )
            self.console.print(labelled(reply.text))
        except KeyboardInterrupt:
            self.console.print("[yellow](interrupted: the answer was discarded)[/]")
            return
        except DiffusionBertError as exc:
            self.console.print(f"[red]error:[/] {exc}")
            return
        seconds = time.perf_counter() - started
        dropped = f", the oldest {reply.dropped} messages left out" if reply.dropped else ""
        self.console.print(f"[dim](NFE {reply.nfe}, {seconds:.1f} s{dropped})[/]")
        answered = [{"role": "assistant", "content": reply.text}] if reply.text.strip() else []
        self.messages = [*asked, *answered]
        self.turn += 1
