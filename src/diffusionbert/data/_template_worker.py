"""The chat-template worker: renders conversations in a process of its own, under a memory limit.

A chat template is code from a model folder or a config (Jinja, run in transformers' sandbox). The sandbox
stops it from reaching the machine but not from looping for ever or building a string of many gigabytes, so
:mod:`diffusionbert.data.templates` runs this file as a separate interpreter::

    python -I _template_worker.py MEMORY_BYTES MAX_CHARACTERS

It imports no part of diffusionbert (it starts in about a second), caps its own address space at what the
imports took plus ``MEMORY_BYTES`` (where the platform allows), writes ``{"ready": true}`` and then answers
each request line ``{"template": str, "conversations": [[message, ...], ...], "variables": {...}}`` with one
line per conversation, in order: ``{"text": str}``, or ``{"error": str}`` (one line: what went wrong) and
nothing more for that request. The
renderer is transformers' own (:func:`render_jinja_template` with the generation prompt, the tokenizer's
special tokens as ``variables``), so a prompt is exactly what ``tokenizer.apply_chat_template`` makes. The
parent kills the process when a conversation takes too long; end of input ends it.
"""

from __future__ import annotations

import json
import os
import sys


def _limit_memory(extra: int) -> None:
    """Cap the address space at its present size plus ``extra`` bytes (Linux; elsewhere no cap)."""
    try:
        import resource

        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        now = pages * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (now + extra, now + extra))
    except (ImportError, OSError, ValueError):
        return


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _render(request: dict, conversation: list, max_characters: int, memory: int) -> dict:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[conversation],
            chat_template=request["template"],
            add_generation_prompt=True,
            **request["variables"],
        )
    except MemoryError:
        return {"error": f"it needs more than {memory >> 20} MB to render"}
    except RecursionError:
        return {"error": "it recurses too deeply"}
    except Exception as exc:  # any template failure is reported, never a crash of the worker
        return {"error": _first_line(exc)}
    text = rendered[0]
    if len(text) > max_characters:
        return {"error": f"it renders {len(text):,} characters; allowed: at most {max_characters:,}"}
    return {"text": text}


def main() -> None:
    memory, max_characters = int(sys.argv[1]), int(sys.argv[2])
    import transformers.utils.chat_template_utils  # noqa: F401  (imported before the cap)

    _limit_memory(memory)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        for conversation in request["conversations"]:
            reply = _render(request, conversation, max_characters, memory)
            print(json.dumps(reply), flush=True)
            if "error" in reply:
                break  # the parent stops reading this request at its first failure


if __name__ == "__main__":
    main()
