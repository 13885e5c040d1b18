"""One request of the live page: what the page sends, checked into a :class:`Request`, and how it runs on a
pipeline while every denoising state is reported (:func:`generate`).

A request is one text (one sample) generated the way ``pipe(1, length, steps, sampler, …, seed=seed)`` would,
so the page's final text is exactly the pipeline's for the same settings. Its events, in order:

* ``start`` ``{"tokens": [...], "live": bool, "dropped": n}``: the text positions of the first state (token
  strings, ``[MASK]`` where generated; empty when the model has no token states to show: ``live`` false)
  and, for a chat, how many of the oldest messages were left out to fit the window;
* ``step`` ``{"changes": [[i, token], ...]}``: after every iteration of the denoising loop, the text positions
  whose token changed (a revealed token, or a re-masked one for Mask-Predict-style samplers);
* ``done`` ``{"text", "nfe", "seconds"}``: the final text (the pipeline's, cut at its end), its network calls
  and its wall time.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...data.chat import Message
from ...errors import ConfigError, invalid_choice
from ...sampling import Pipeline

DEFAULT_LENGTH = 32
"""The generated positions of a request that names none, for a model without a target window."""
DEFAULT_STEPS = 64
MAX_STEPS = 10_000
"""The most steps one request may take (a page is for watching, not for a day-long job)."""
INFILL_BLANK = re.compile(r"_")
"""How a person types one blank token of an infill template (``[MASK]`` works too)."""

Emit = Callable[[str, dict[str, Any]], None]
"""Where :func:`generate` reports its events: ``emit(kind, data)``."""


@dataclass(frozen=True)
class Request:
    """What one press of the page's button asks for (see :meth:`parse` for the JSON it comes from)."""

    mode: str
    text: str | None
    messages: tuple[Message, ...] | None
    sampler: str
    steps: int
    length: int | None
    temperature: float
    top_k: int
    top_p: float
    seed: int
    block_length: int | None

    @classmethod
    def parse(cls, body: object, pipe: Pipeline) -> Request:
        """A request from the page's JSON, its fields checked against what ``pipe`` offers.

        Fields: ``mode`` (one of ``pipe.modes``), ``text`` (the prompt, the infill template with ``_`` or
        ``[MASK]`` blanks, or the source), ``messages`` (a chat's conversation), ``sampler`` (default: the
        model's own), ``steps``, ``length`` (null: the default), ``temperature``, ``top_k``, ``top_p``,
        ``seed``, ``block_length`` (null: none).

        Raises:
            ConfigError: one line naming the field and what is allowed.
        """
        if not isinstance(body, Mapping):
            raise ConfigError("the request is not a JSON object; allowed: {'mode': ..., ...}")
        unknown = sorted(set(body) - set(cls.__dataclass_fields__))
        if unknown:
            raise invalid_choice("field", unknown[0], cls.__dataclass_fields__)
        mode = body.get("mode")
        if mode not in pipe.modes:
            raise invalid_choice("mode", mode, pipe.modes)
        text, messages = None, None
        if mode in ("prompt", "infill", "source"):
            text = body.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"the {mode} text is empty; allowed: {_TEXT_HINT[mode]}")
            if mode == "infill":
                text = INFILL_BLANK.sub(f" {pipe.tokenizer.mask_token} ", text)
        if mode == "chat":
            raw = body.get("messages")
            if not isinstance(raw, Sequence) or isinstance(raw, str):
                raise ConfigError("messages is not a list; allowed: [{'role': 'user', 'content': ...}, ...]")
            messages = tuple(raw)
        sampler = body.get("sampler") or None
        if sampler is not None and not isinstance(sampler, str):
            raise ConfigError(f"sampler={sampler!r} is not valid; allowed: a name")
        block_length = _integer(body, "block_length", None, minimum=1)
        if block_length is not None and not pipe.masked_loop:
            raise ConfigError("block_length does not apply to this model; allowed: null")
        return cls(
            mode=mode,
            text=text,
            messages=messages,
            sampler=pipe.resolve_sampler(sampler),
            steps=_integer(body, "steps", DEFAULT_STEPS, minimum=1, maximum=MAX_STEPS),
            length=_integer(body, "length", None, minimum=1),
            temperature=_number(body, "temperature", 1.0),
            top_k=_integer(body, "top_k", 0, minimum=0),
            top_p=_number(body, "top_p", 1.0),
            seed=_integer(body, "seed", 0, minimum=0),
            block_length=block_length,
        )


_TEXT_HINT = {
    "prompt": "the words the text starts with",
    "infill": "text with _ (or [MASK]) for each token to fill in",
    "source": "the source text the model writes its target from",
}


def _integer(
    body: Mapping[str, object], name: str, default: int | None, *, minimum: int, maximum: int | None = None
) -> Any:
    """``body[name]`` as an integer in [minimum, maximum] (missing: ``default``; null allowed where the
    default is null)."""
    value = body.get(name, default)
    if value is None and default is None:
        return None
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    if not is_integer or value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name}={value!r} is not valid; allowed: an integer >= {minimum}{upper}")
    return value


def _number(body: Mapping[str, object], name: str, default: float) -> float:
    """``body[name]`` as a finite number (missing: ``default``); its range is the sampler's to check."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not valid; allowed: a finite number")
    return float(value)


def default_length(pipe: Pipeline, mode: str) -> int:
    """The generated positions of a request without a length: a pair model's target window for its source
    (or chat), else :data:`DEFAULT_LENGTH`."""
    if mode in ("source", "chat") and pipe.target_window:
        return pipe.target_window
    return DEFAULT_LENGTH


def describe(pipe: Pipeline, title: str) -> dict[str, Any]:
    """What the page needs to offer only what the model supports: its modes and samplers, whether sharpening,
    blocks and live states apply, its window, defaults, and the tokens that mark a blank and an end."""
    tok = pipe.tokenizer
    return {
        "title": title,
        "modes": list(pipe.modes),
        "samplers": list(pipe.sampler_names()),
        "sharpens": pipe.sharpens,
        "live": pipe.masked_loop,
        "window": pipe.model.max_input_length,
        "default_length": {mode: default_length(pipe, mode) for mode in pipe.modes},
        "default_steps": DEFAULT_STEPS,
        "max_steps": MAX_STEPS,
        "mask_token": tok.mask_token,
        "end_token": tok.sep_token,
    }


def generate(pipe: Pipeline, request: Request, emit: Emit) -> None:
    """Run ``request`` on ``pipe``, reporting its ``start``, ``step`` and ``done`` events (module doc) through
    ``emit``; an exception raised by ``emit`` (a client gone) stops the denoising loop where it is.

    Raises:
        DiffusionBertError: a request the pipeline rejects (a length beyond the window, a template without
            a blank, a conversation that does not fit…), before any network call.
    """
    text, length, dropped = request.text, request.length, 0
    if request.mode == "chat":
        assert request.messages is not None  # parse() sets them for a chat
        text, length, dropped = pipe.chat_prompt(request.messages, length, request.block_length)
    length = length or default_length(pipe, request.mode)
    keyword = "source" if request.mode == "chat" else request.mode  # a chat's prompt is the model's source
    conditioning = {keyword: text} if text else {}
    options: dict[str, Any] = dict(conditioning)
    if pipe.sharpens:
        options |= {"temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p}
    if request.block_length is not None:
        options["block_length"] = request.block_length
    tokens: list[str] = []
    if pipe.masked_loop:
        ids, start = pipe.text_template(length, **conditioning)
        shown = ids[start:]
        tokens = pipe.tokenizer.convert_ids_to_tokens(shown)

        def on_step(x: Any) -> None:
            row = x[0, start:].tolist()
            changed = [i for i, (old, new) in enumerate(zip(shown, row, strict=True)) if old != new]
            for i in changed:
                shown[i] = row[i]
            emit("step", {"changes": [[i, pipe.tokenizer.convert_ids_to_tokens(row[i])] for i in changed]})

        options["on_step"] = on_step
    emit("start", {"tokens": tokens, "live": pipe.masked_loop, "dropped": dropped})
    began = time.perf_counter()
    out = pipe(1, length, request.steps, request.sampler, seed=request.seed, **options)
    emit("done", {"text": out.texts[0], "nfe": out.nfe[0], "seconds": time.perf_counter() - began})
