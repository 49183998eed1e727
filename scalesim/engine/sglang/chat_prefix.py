"""Where the part of a chat prompt worth keeping ends: everything before its last message's content.

A simulation agent's call is its private prefix (persona, memories, the dialogue so far) plus a
new situation. The scheduler learns where the prefix ends from the agent's second call, where
the two calls' paths part (`SchedulerState._mark_tail`). Until then the first call's situation
and answer were kept at the agent's distance with its prefix. On the plan town at 200 agents
(`benchmarks/results-200-plan-host08/`), 106-110 agents were between their first and second
call at steps 6-9, holding some 7,700 tokens of such tails; misses there are sensitive to
memory: a replay of that run's schedule misses 26 calls after first calls in the tiers' 298,084
tokens, and 42 (the server: 43) in 285,000.

On the chat route the boundary is known at the first call: the prompt before its last message's
content, that is the messages before it and the header the template opens it with
(`<|im_start|>user\n`), which every call of the agent shares whatever it says. The HTTP process
renders them with the model's chat template (once per distinct prefix and role of the last
message: `ChatPrefixes` keeps a bounded cache) and sends their token count with the request's
agent, together with the last few token ids. The boundary also serves every later call whose
previous call's tail is gone (evicted first, as tails are); without the header, those tokens
were in the tail and recomputed on every such call (3 tokens a call with the default model).
The scheduler uses the boundary only where those ids are the prompt's own at that position
(`PromptPrefix.matches`), so a template SGLang renders differently (a `--chat-template` of its
own, tools, multimodal parts) costs nothing but the hint.
A conversation's last turn is part of its next call: marked as a tail it may be evicted first and
recomputed (tens of tokens), never served wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

LAST_IDS = 8  # token ids sent with the boundary, compared with the prompt's own
CACHE_SIZE = 4096  # distinct prefixes remembered (a digest and a few ints each)


@dataclass(frozen=True)
class PromptPrefix:
    tokens: int  # the prefix's length in tokens
    last_ids: tuple[int, ...]  # its last token ids (at most LAST_IDS)

    def matches(self, prompt: Sequence[int]) -> bool:
        """Whether `prompt` starts with this prefix's end and goes on past it."""
        n, ids = self.tokens, self.last_ids
        return 0 < len(ids) <= n < len(prompt) and tuple(prompt[n - len(ids):n]) == ids


def _plain_messages(messages: Any) -> bool:
    """Text-only messages ({role, content} strings): other shapes (content parts, tool calls)
    may be rendered by SGLang in ways this process does not repeat."""
    return (isinstance(messages, list) and len(messages) >= 2
            and all(isinstance(m, dict) and m.keys() <= {"role", "content", "name"}
                    and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages))


class ChatPrefixes:
    """`of(messages)`: the prefix of a chat request's prompt before its last message's content
    (the messages before it and that message's header), or None."""

    def __init__(self, render: Callable[[list[dict[str, Any]]], Sequence[int]], size: int = CACHE_SIZE) -> None:
        self.render = render  # messages -> token ids, chat template applied, no generation prompt
        self.size = size
        self._cache: OrderedDict[bytes, PromptPrefix | None] = OrderedDict()
        self.rendered = 0
        self.failed = 0

    def of(self, messages: Any) -> PromptPrefix | None:
        if not _plain_messages(messages):
            return None
        head, role = messages[:-1], messages[-1]["role"]
        digest = hashlib.blake2b(json.dumps([head, role], sort_keys=True).encode(), digest_size=16).digest()
        if digest in self._cache:
            self._cache.move_to_end(digest)
            return self._cache[digest]
        try:
            ids = self._with_turn_header(head, role)
            self.rendered += 1
        except Exception:  # a template that refuses these messages: no hint, the request goes on
            self.failed += 1
            ids = []
        found = PromptPrefix(len(ids), tuple(ids[-LAST_IDS:])) if ids else None
        self._cache[digest] = found
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return found

    def _with_turn_header(self, head: list[dict[str, Any]], role: str) -> list[int]:
        """`head` rendered, then the tokens that two different contents of a last message of
        `role` share after it: that turn's header. The two contents start differently ("" and
        "x"), so a header token that a tokenizer merges with the content's first characters is
        left out. A template that renders `head` differently once a message follows gets `head`
        alone."""
        ids = [int(i) for i in self.render(head)]
        a = [int(i) for i in self.render([*head, {"role": role, "content": ""}])]
        b = [int(i) for i in self.render([*head, {"role": role, "content": "x"}])]
        n = len(ids)
        if a[:n] != ids or b[:n] != ids:
            return ids
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]


def renderer(tokenizer: Any) -> Callable[[list[dict[str, Any]]], Sequence[int]]:
    """A Hugging Face tokenizer's chat template as `ChatPrefixes.render`."""

    def render(messages: list[dict[str, Any]]) -> Sequence[int]:
        out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        return out["input_ids"] if not isinstance(out, list) else out  # transformers 5 returns an encoding

    return render
