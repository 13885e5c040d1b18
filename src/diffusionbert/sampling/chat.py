"""Answering a conversation: the prompt fitted into the model's window, the answer shown while it forms.

A chat model is a pair model trained with ``data.format: chat`` (:mod:`diffusionbert.data.chat`): it reads a
conversation rendered by its tokenizer's chat template as the source and writes the answer as the target.
:meth:`~diffusionbert.sampling.pipelines.base.Pipeline.chat` (every pipeline has it) renders the
conversation with :func:`fit_conversation`, generates one answer and returns a :class:`ChatReply`.

What the model reads is bounded by the length it was trained on (``data.max_length``, else the network's
maximum): the prompt gets what the answer window leaves. A conversation that does not fit loses its oldest
messages first (system messages are kept), whole messages at a time; when even the newest message alone
does not fit, that is an error naming the sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ..data.chat import Message, check_messages, render_prompt
from ..errors import ConfigError

BLANK = "░"
"""How a still-masked position of a forming answer is shown."""


@dataclass(frozen=True)
class ChatReply:
    """An answer: its text, the network calls it took and how many of the oldest messages were left out of
    the prompt to fit the model's window."""

    text: str
    nfe: int
    dropped: int


def fit_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], budget: int
) -> tuple[str, int]:
    """The prompt of ``messages`` (the last from the user) in at most ``budget`` tokens, and how many of the
    oldest non-system messages were dropped to get there.

    Raises:
        DataError: a message is malformed or empty, or the last is not the user's.
        ConfigError: the tokenizer has no chat template; the newest message does not fit on its own.
    """
    kept = check_messages(messages, last="user")
    older = [i for i, message in enumerate(kept[:-1]) if message["role"] != "system"]

    def fitted(drop: int) -> tuple[str, int]:  # the prompt without the ``drop`` oldest droppable messages
        gone = set(older[:drop])
        prompt = render_prompt(tokenizer, [m for i, m in enumerate(kept) if i not in gone])
        return prompt, len(tokenizer(prompt, add_special_tokens=False)["input_ids"])

    # fewer messages never make a longer prompt: the fewest drops that fit, by bisection (a few renders,
    # however long the conversation)
    low, high = 0, len(older)
    size = fitted(high)[1]
    if size > budget:
        raise ConfigError(
            f"the message is too long: its prompt takes {size} tokens and the model reads at most {budget} "
            "before its answer; allowed: a shorter message (or a shorter answer window)"
        )
    while low < high:
        middle = (low + high) // 2
        if fitted(middle)[1] <= budget:
            high = middle
        else:
            low = middle + 1
    return fitted(low)[0], low


def forming_answer(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """The text of an answer's positions as they stand: revealed tokens in place, [MASK] as :data:`BLANK`,
    cut at the first [SEP] (its end)."""
    tokens = []
    for token_id in ids:
        if token_id == tokenizer.sep_token_id:
            break
        tokens.append(
            BLANK if token_id == tokenizer.mask_token_id else tokenizer.convert_ids_to_tokens(token_id)
        )
    return tokenizer.convert_tokens_to_string(tokens)
