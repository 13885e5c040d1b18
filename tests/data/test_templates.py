"""Chat templates rendered in the worker: exactly transformers' prompts, and a one-line error (never a hang,
a crash or a traceback) for a template that fails, loops, or grows without bound."""

from __future__ import annotations

import pytest

from conftest import CHAT_WORDS
from diffusionbert.data import templates
from diffusionbert.data.chat import DEFAULT_CHAT_TEMPLATE, chat_template_of, load_chat, render_prompt
from diffusionbert.data.templates import REALISTIC_CONVERSATION, ChatTemplateError, render_conversations
from diffusionbert.errors import ConfigError
from diffusionbert.testing import build_tiny_tokenizer

# the kind of template a model folder holds: special tokens, a role check, loop controls, a trim
HUB_STYLE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role') }}{% endif %}{% if loop.index0 > 40 %}{% break %}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] | trim }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
LOOPS = "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"
DOUBLING = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"


@pytest.fixture()
def tokenizer():
    tokenizer = build_tiny_tokenizer(CHAT_WORDS)
    tokenizer.add_special_tokens({"bos_token": "[BOS]", "eos_token": "[EOS]"})
    return tokenizer


@pytest.mark.parametrize("template", [DEFAULT_CHAT_TEMPLATE, HUB_STYLE])
def test_prompts_are_exactly_what_transformers_renders(tokenizer, template) -> None:
    conversations = [
        list(REALISTIC_CONVERSATION),
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    ]
    tokenizer.chat_template = template
    expected = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
    ]
    assert render_conversations(template, conversations, tokenizer.special_tokens_map) == expected
    assert render_prompt(tokenizer, conversations[0]) == expected[0]
    if template == HUB_STYLE:  # the special tokens reached the template
        assert expected[1].startswith("[BOS]<|system|>be brief[EOS]")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% for m in messages %}", "TemplateSyntaxError: Unexpected end of template"),
        ("{{ raise_exception('no system messages') }}", "TemplateError: no system messages"),
        ("{{ messages.__class__.__mro__ }}", "SecurityError: access to attribute '__class__'"),
        ("{{ 'x' * 3000000 }}", "renders 3,000,000 characters; allowed: at most 1,000,000"),
        (DOUBLING + "{{ ns.s }}", "needs more than 512 MB to render"),
    ],
)
def test_a_failing_or_runaway_template_is_one_line_and_the_worker_goes_on(
    tokenizer, template, message
) -> None:
    with pytest.raises(ChatTemplateError) as err:
        render_conversations(template, [list(REALISTIC_CONVERSATION)], {})
    assert message in str(err.value) and "\n" not in str(err.value)
    assert render_conversations(DEFAULT_CHAT_TEMPLATE, [[{"role": "user", "content": "hi"}]], {}) == [
        "user: hi\nassistant:"
    ]


def test_a_template_that_loops_is_stopped_at_the_time_limit(tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(templates, "RENDER_SECONDS", 1.0)
    with pytest.raises(ChatTemplateError, match=r"takes over 1 s to render a conversation"):
        render_conversations(LOOPS, [[{"role": "user", "content": "hi"}]], {})
    # a new worker serves the next render
    assert render_conversations(DEFAULT_CHAT_TEMPLATE, [[{"role": "user", "content": "hi"}]], {})


def test_a_template_is_checked_on_a_realistic_conversation_before_it_is_used(tokenizer) -> None:
    """A template that renders one user message but breaks on a second turn fails the check."""
    first_only = "{{ messages[0]['content'] }}{% if messages | length > 1 %}{{ messages[1]['content'] + 1 }}{% endif %}"
    with pytest.raises(ConfigError, match=r"data\.chat_template cannot render a conversation: TypeError"):
        chat_template_of(tokenizer, first_only)
    tokenizer.chat_template = first_only
    with pytest.raises(ConfigError, match=r"the backbone's chat template cannot render a conversation"):
        chat_template_of(tokenizer, None)


def test_a_template_that_fails_on_one_record_names_it(tokenizer, tmp_path) -> None:
    data = tmp_path / "chat.jsonl"
    data.write_text(
        '{"instruction": "describe the cat", "output": "the cat sat"}\n'
        '{"instruction": "describe the dog", "output": ""}\n'
        '{"instruction": "where is the dog forty", "output": "there"}\n'
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{% if 'forty' in m['content'] %}{{ raise_exception('too long') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(
        ConfigError, match=r"chat\.jsonl: record 3: the chat template fails on it: TemplateError: too"
    ):
        load_chat(data, tokenizer, cache_dir=tmp_path / "hf")
