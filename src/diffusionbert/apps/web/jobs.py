"""One request of the live page: what the page sends, checked into a :class:`Request`, and how it runs on a
pipeline while every denoising state is reported (:func:`generate`).

A request is one text (one sample) generated the way ``pipe(mode=text, **options)`` would (the model's own
decoding with the request's options), so the page's final text is exactly the pipeline's for the same settings. Its events, in order:

* ``start`` ``{"tokens": [...], "live": bool, "dropped": n}``: the text positions of the first state (token
  strings, ``[MASK]`` where generated; empty when the model has no token states to show: ``live`` false)
  and, for a chat, how many of the oldest messages were left out to fit the window;
* ``step`` ``{"changes": [[i, token], ...]}``: after every iteration of the denoising loop, the text positions
  whose token changed (a revealed token, or a re-masked one for Mask-Predict-style samplers);
* ``done`` ``{"text", "nfe", "seconds"}``: the final text (the pipeline's, cut at its end), its network calls
  and its wall time.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...config import DecodingConfig
from ...data.chat import Message
from ...errors import ConfigError, invalid_choice
from ...sampling import Pipeline
from ...sampling.pipelines import Conditioning, Outputs, TemplatePipeline

MAX_STEPS = 10_000
"""The most steps one request may take (a page is for watching, not for a day-long job)."""
MAX_MESSAGES = 256
"""The most messages a chat request may carry (the model reads only the newest that fit its window)."""
MAX_SEED = 2**63 - 1
"""The largest seed (a generator's seed is a 64-bit integer)."""
INFILL_BLANK = re.compile(r"_")
"""How a person types one blank token of an infill template (``[MASK]`` works too)."""
DECODING_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(DecodingConfig)
    if f.name not in ("num_samples", "mbr", "batch_size", "length_beam")
)
"""The decoding options a request may set (a page shows one text forming: no sample count, MBR, batch or
length beam, which decode several texts to keep one)."""

Emit = Callable[[str, dict[str, Any]], None]
"""Where :func:`generate` reports its events: ``emit(kind, data)``."""


@dataclass(frozen=True)
class Request:
    """What one press of the page's button asks for (see :meth:`parse` for the JSON it comes from): the
    mode, its text or conversation, and the decoding (the model's own with the request's options, checked
    and resolved)."""

    mode: str
    text: str | None
    messages: tuple[Message, ...] | None
    decoding: DecodingConfig

    @classmethod
    def parse(cls, body: object, pipe: Pipeline) -> Request:
        """A request from the page's JSON, its fields checked against what ``pipe`` offers.

        Fields: ``mode`` (one of ``pipe.modes``), ``text`` (the prompt, the infill template with ``_`` or
        ``[MASK]`` blanks, or the source), ``messages`` (a chat's conversation), and any of
        :data:`DECODING_FIELDS` (``sampler``, ``steps``, ``length``, ``guidance``…; a missing one, an empty
        sampler or a null length keeps the model's own).

        Raises:
            ConfigError: one line naming the field and what is allowed.
        """
        if not isinstance(body, Mapping):
            raise ConfigError("the request is not a JSON object; allowed: {'mode': ..., ...}")
        fields = ("mode", "text", "messages", *DECODING_FIELDS)
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise invalid_choice("field", unknown[0], fields)
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
            if len(raw) > MAX_MESSAGES:
                raise ConfigError(
                    f"the conversation has {len(raw)} messages; allowed: at most {MAX_MESSAGES} (start a new one)"
                )
            messages = tuple(raw)
        options = {name: body[name] for name in DECODING_FIELDS if name in body}
        if not options.get("sampler", True):
            del options["sampler"]  # an empty choice: the model's own
        options["length_beam"] = 1  # one text forms on the page, whatever beam the model saved
        window = pipe.model.max_input_length
        for name, most in (
            ("steps", MAX_STEPS),
            ("length", window),
            ("block_length", window),
            ("seed", MAX_SEED),
        ):
            value = options.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > most:
                raise ConfigError(f"{name}={value} is not valid; allowed: an integer <= {most}")
        if mode == "chat":
            decoding = pipe.chat_decoding(**options)
        else:
            conditioning = Conditioning(**({mode: text} if text else {}))
            decoding = pipe.resolve(None, options, conditioning)
            pipe.check(decoding, conditioning, Outputs())
        return cls(mode=mode, text=text, messages=messages, decoding=decoding)


_TEXT_HINT = {
    "prompt": "the words the text starts with",
    "infill": "text with _ (or [MASK]) for each token to fill in",
    "source": "the source text the model writes its target from",
}


def describe(pipe: Pipeline, title: str) -> dict[str, Any]:
    """What the page needs to offer only what the model supports and open on what it was made for: its
    modes (its main one first shown), samplers, which options apply, its default decoding, its window,
    and the tokens that mark a blank and an end."""
    tok, supports = pipe.tokenizer, pipe.supports
    return {
        "title": title,
        "modes": list(pipe.modes),
        "main_mode": pipe.main_mode,
        "cache": pipe.cache,
        "samplers": list(pipe.sampler_names()),
        "supports": {
            "steps": supports.steps,
            "blocks": supports.blocks,
            "guidance": pipe.guided,
            "sharpening": supports.sharpening,
            "live": supports.live,
        },
        "decoding": {name: getattr(pipe.decoding, name) for name in DECODING_FIELDS}
        | {"sampler": pipe.default_sampler},
        "window": pipe.model.max_input_length,
        "default_length": {mode: pipe.decoding.length or pipe.default_length(mode) for mode in pipe.modes},
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
    text, dropped, decoding = request.text, 0, request.decoding
    if request.mode == "chat":
        assert request.messages is not None  # parse() sets them for a chat
        text, dropped = pipe.chat_prompt(request.messages, decoding)
    keyword = "source" if request.mode == "chat" else request.mode  # a chat's prompt is the model's source
    conditioning = Conditioning(**({keyword: text} if text else {}))
    options: dict[str, Any] = {}
    tokens: list[str] = []
    if pipe.supports.live:
        assert isinstance(pipe, TemplatePipeline) and decoding.length is not None  # resolved by parse()
        ids, start = pipe.text_template(decoding.length, conditioning)
        shown = ids[start:]
        tokens = pipe.tokenizer.convert_ids_to_tokens(shown)

        def on_step(x: Any) -> None:
            row = x[0, start:].tolist()
            changed = [i for i, (old, new) in enumerate(zip(shown, row, strict=True)) if old != new]
            for i in changed:
                shown[i] = row[i]
            emit("step", {"changes": [[i, pipe.tokenizer.convert_ids_to_tokens(row[i])] for i in changed]})

        options["on_step"] = on_step
    emit("start", {"tokens": tokens, "live": pipe.supports.live, "dropped": dropped})
    began = time.perf_counter()
    out = pipe(
        prompt=conditioning.prompt,
        infill=conditioning.infill,
        source=conditioning.source,
        config=decoding,
        **options,
    )
    emit("done", {"text": out.texts[0], "nfe": out.nfe[0], "seconds": time.perf_counter() - began})
