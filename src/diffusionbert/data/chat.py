"""Chat and instruction data: conversations → (prompt, answer) pairs, the prompt rendered by a chat template.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``, as in
Hugging Face chat templates. The model reads it as a source/target pair (:func:`tokenize_dataset`):

* the **source** (prompt) is every message before an answer, rendered by the tokenizer's ``chat_template``
  (Jinja, stored in ``tokenizer_config.json`` with the model, run by transformers' renderer in a worker
  process with limits of time, memory and size: :mod:`.templates`) with the generation prompt added;
* the **target** is the assistant's answer.

So the prompt stays clean and only the answer is noised and scored (response-only training), and an answer
of variable length is learned in a target window (``data.target_window``): the answer, then ``[SEP]``
filler that the model learns to place (LLaDA pads its SFT answers with EOS the same way).

Records of a ``.jsonl`` / ``.json`` file (``data.format: chat``) are either instructions in the Alpaca layout
(``instruction``, optional ``input``, ``output``: one user message, the instruction and its input separated
by a blank line, then the answer; a record with an empty output is dropped with a warning) or conversations (``messages``: one example per assistant message, with the
messages before it as its history).

:data:`DEFAULT_CHAT_TEMPLATE` writes one ``role: content`` line per message and ends the prompt with
``assistant:``. A BERT tokenizer reads the role names as ordinary words, so no token is added to the
vocabulary and a pre-trained backbone's embeddings stay as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from ..errors import ConfigError, DataError
from .files import load_records
from .templates import ChatTemplateError, Message, check_chat_template, render_conversations

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] | trim }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""One ``role: content`` line per message, then ``assistant:`` when a prompt asks for the answer."""


def check_messages(messages: object, *, last: str, where: str = "messages") -> list[Message]:
    """``messages`` as a list of ``{"role", "content"}`` dicts, checked: a known role, non-blank text, and the
    last message from ``last`` (``user`` for a prompt, ``assistant`` for a training example).

    Raises:
        DataError: one line naming ``where`` and what is wrong.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise DataError(f"{where}: expected a non-empty list of messages, got {messages!r:.60}")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) - {"role", "content"}:
            raise DataError(
                f"{where}[{index}]: expected {{'role': ..., 'content': ...}}, got {message!r:.60}"
            )
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}[{index}]: role {role!r} is not valid; allowed: {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}[{index}]: the {role} message is empty; allowed: non-blank text")
        checked.append({"role": role, "content": content})
    if checked[-1]["role"] != last:
        raise DataError(f"{where}: the last message is from {checked[-1]['role']}; expected one from {last}")
    return checked


def instruction_messages(instruction: str, input: str | None, output: str) -> list[Message]:
    """An Alpaca-style record as a conversation: the instruction (and its input after a blank line) from the
    user, the output from the assistant."""
    question = instruction.strip() + (f"\n\n{input.strip()}" if input and input.strip() else "")
    return [{"role": "user", "content": question}, {"role": "assistant", "content": output}]


def chat_template_of(tokenizer: PreTrainedTokenizerBase, template: str | None) -> str:
    """The template a chat run stores with its tokenizer: ``template`` if given, else the tokenizer's own,
    else :data:`DEFAULT_CHAT_TEMPLATE`; checked to render a realistic conversation
    (:func:`~.templates.check_chat_template`)."""
    own = getattr(tokenizer, "chat_template", None)
    chosen = template or own or DEFAULT_CHAT_TEMPLATE
    origin = "data.chat_template" if template else "the backbone's chat template" if own else "the default"
    try:
        check_chat_template(chosen, tokenizer.special_tokens_map)
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"{origin} cannot render a conversation: {exc}") from None
    return chosen


def check_model_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Check, before a chat starts, that ``tokenizer`` has a chat template and that it renders a realistic
    conversation.

    Raises:
        ConfigError: no template (see :func:`require_chat_template`); ChatTemplateError: it fails.
    """
    require_chat_template(tokenizer)
    try:
        check_chat_template(tokenizer.get_chat_template(), tokenizer.special_tokens_map)
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"the model's chat template cannot render a conversation: {exc}") from None


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> str:
    """The source a model reads before its answer: ``messages`` rendered by ``tokenizer.chat_template`` with
    the generation prompt, within the limits of :mod:`.templates`.

    Raises:
        ConfigError: the tokenizer has no chat template (see :func:`require_chat_template`);
            ChatTemplateError: the template fails on these messages (one line: why).
    """
    require_chat_template(tokenizer)
    template, variables = tokenizer.get_chat_template(), tokenizer.special_tokens_map
    try:
        return render_conversations(template, [messages], variables)[0]
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"the chat template fails on this conversation: {exc}") from None


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise a one-line ConfigError when ``tokenizer`` has no chat template (a model not trained to chat)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; allowed: a model trained with "
            "data.format=chat (its tokenizer stores the template)"
        )


def record_conversations(record: Mapping[str, Any], where: str) -> list[tuple[list[Message], str]]:
    """The (history, answer) examples of one record: one for an instruction record, one per assistant message
    of a conversation."""
    if record.get("messages") is not None:
        messages = check_messages(record["messages"], last="assistant", where=f"{where}: messages")
        return [
            (messages[:i], message["content"])
            for i, message in enumerate(messages)
            if message["role"] == "assistant" and i > 0
        ]
    instruction, output = record.get("instruction"), record.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise DataError(
            f"{where}: expected an instruction record (instruction, output, optional input) or messages; "
            f"found fields {', '.join(k for k, v in record.items() if v is not None)}"
        )
    if not output.strip():  # nothing to learn (Alpaca has such records): dropped, as blank lines are
        return []
    messages = instruction_messages(instruction, record.get("input"), output)
    messages = check_messages(messages, last="assistant", where=where)
    return [(messages[:-1], messages[-1]["content"])]


def load_chat(
    path: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase,
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """A chat ``.jsonl`` / ``.json`` file as a pair dataset: ``source`` = the rendered prompt, ``target`` = the
    answer (see the module doc), in file order.

    Raises:
        DataError: the file's problems (as :func:`load_texts`), a record that is neither layout, a bad
            message; ConfigError: the tokenizer has no chat template.
    """
    require_chat_template(tokenizer)
    records = load_records(path, cache_dir)
    known = {"instruction", "output", "messages"} & set(records.column_names)
    if not known:
        raise DataError(
            f"{path}: no chat records: expected fields instruction and output (Alpaca), or messages; found "
            f"{', '.join(records.column_names)}"
        )
    pairs = records.map(
        _render_batch,
        batched=True,
        with_indices=True,
        remove_columns=records.column_names,
        features=datasets.Features({"source": datasets.Value("string"), "target": datasets.Value("string")}),
        fn_kwargs={"tokenizer": tokenizer, "path": os.fspath(path)},
        desc="Rendering chat prompts",
    )
    if len(pairs) == 0:
        raise DataError(f"{path}: no examples (no assistant answer in any record)")
    unanswered = sum(not str(output).strip() for output in records["output"]) if "output" in known else 0
    if unanswered:
        logger.warning("%s: dropped %d instruction records with an empty output", path, unanswered)
    return pairs


def _render_batch(
    batch: dict[str, list[Any]], indices: list[int], tokenizer: PreTrainedTokenizerBase, path: str
) -> dict[str, list[str]]:
    """Batched map: each record's examples as (rendered prompt, answer) rows, the prompts rendered together."""
    examples = []  # (record number, history, answer)
    for row, index in enumerate(indices):
        record = {name: values[row] for name, values in batch.items()}
        where = f"{path}: record {index + 1}"
        examples += [(index + 1, history, answer) for history, answer in record_conversations(record, where)]
    histories = [history for _, history, _ in examples]
    try:
        prompts = (
            render_conversations(tokenizer.get_chat_template(), histories, tokenizer.special_tokens_map)
            if histories
            else []
        )
    except ChatTemplateError as exc:
        number = examples[exc.index][0]
        raise ChatTemplateError(f"{path}: record {number}: the chat template fails on it: {exc}") from None
    return {"source": prompts, "target": [answer for _, _, answer in examples]}
