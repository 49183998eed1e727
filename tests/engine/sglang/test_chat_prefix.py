"""Where a chat prompt's prefix before its last message ends (`chat_prefix`), with the default
model's own tokenizer and chat template, and what the HTTP process does with other shapes."""

from __future__ import annotations

import pytest

from scalesim.engine.sglang.chat_prefix import LAST_IDS, ChatPrefixes, PromptPrefix, renderer

PERSONA = "You are Mira, the baker of Oakvale. You rise at four and know every neighbour's order. " * 20
CALL = [{"role": "system", "content": PERSONA}, {"role": "user", "content": "It is 9am. What do you do now?"}]


@pytest.fixture(scope="module")
def tokenizer(default_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model))


def _ids(out):
    return out if isinstance(out, list) else out["input_ids"]


def test_the_prefix_is_the_prompt_before_its_last_messages_content_with_the_models_template(tokenizer):
    prefixes = ChatPrefixes(renderer(tokenizer))
    found = prefixes.of(CALL)
    # The prompt SGLang renders for the call (generation prompt on) starts with exactly it: the
    # messages before the last, then the last one's header, `<|im_start|>user\n`.
    prompt = _ids(tokenizer.apply_chat_template(CALL, tokenize=True, add_generation_prompt=True))
    head = _ids(tokenizer.apply_chat_template(CALL[:1], tokenize=True, add_generation_prompt=False))
    header = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    assert len(header) == 3
    assert found == PromptPrefix(len(head) + 3, tuple((head + header)[-LAST_IDS:]))
    assert found.matches(prompt) and prompt[:found.tokens] == head + header
    # Another situation of the same agent, one that starts with a newline: the same prefix, from
    # the cache, and the header's newline stays a token of its own in the prompt.
    situation = {"role": "user", "content": "\nThe bell rings at noon."}
    again = prefixes.of([CALL[0], situation])
    assert again == found and prefixes.rendered == 1
    assert again.matches(_ids(tokenizer.apply_chat_template([CALL[0], situation], tokenize=True,
                                                            add_generation_prompt=True)))
    # The last message from another role has another header: rendered apart.
    reply = [CALL[0], {"role": "assistant", "content": "Bread."}]
    other = prefixes.of(reply)
    assert other.tokens > len(head) and other != found and prefixes.rendered == 2
    assert other.matches(_ids(tokenizer.apply_chat_template(reply, tokenize=True, add_generation_prompt=False)))
    assert not found.matches(head)  # a prompt that is the prefix alone has no tail
    assert not found.matches([0] * len(prompt))


def test_other_shapes_get_no_prefix_and_failures_are_counted():
    calls = []

    def render(messages):
        calls.append(messages)
        if messages[0]["content"] == "boom":
            raise ValueError("template refuses")
        return list(range(len(messages[0]["content"])))

    prefixes = ChatPrefixes(render, size=2)
    assert prefixes.of([{"role": "user", "content": "only one message"}]) is None
    assert prefixes.of([{"role": "user", "content": [{"type": "text", "text": "parts"}]},
                        {"role": "user", "content": "x"}]) is None
    tool_call = {"role": "assistant", "content": "", "tool_calls": []}
    assert prefixes.of([tool_call, {"role": "user", "content": "x"}]) is None
    assert prefixes.of("not a list") is None and calls == []
    assert prefixes.of([{"role": "system", "content": "boom"}, {"role": "user", "content": "x"}]) is None
    assert prefixes.failed == 1
    assert prefixes.of([{"role": "system", "content": "abcdefghij"}, {"role": "user", "content": "x"}]) == \
        PromptPrefix(10, (2, 3, 4, 5, 6, 7, 8, 9))
    prefixes.of([{"role": "system", "content": "abc"}, {"role": "user", "content": "x"}])  # evicts "boom"
    prefixes.of([{"role": "system", "content": "boom"}, {"role": "user", "content": "x"}])
    # Three renders a prefix (the head, then two contents of the last message), one where the
    # head's render fails.
    assert prefixes.failed == 2 and len(calls) == 8
