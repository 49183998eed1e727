"""Which agent a request belongs to: body, header, adapter, user; and its own distance hint."""

from __future__ import annotations

import pytest

from scalesim.distance import DistanceError
from scalesim.engine.sglang.identity import Identity, identify


@pytest.mark.parametrize(
    "body, headers, expected",
    [
        ({"agent_id": "a", "user": "u", "lora_path": "l"}, {"x-scalesim-agent-id": "h"}, Identity("a", "body")),
        ({"user": "u", "lora_path": "l"}, {"x-scalesim-agent-id": "h"}, Identity("h", "header")),
        ({"user": "u", "lora_path": "l"}, {}, Identity("l", "adapter")),
        ({"user": "u", "model": "base:agent7"}, {}, Identity("agent7", "adapter")),
        ({"user": "u", "model": "base"}, {}, Identity("u", "user")),
        ({"agent_id": "a", "invocation_distance": 3}, {}, Identity("a", "body", 3.0)),
        ({"model": "base", "messages": []}, {}, None),
    ],
)
def test_identity_precedence(body, headers, expected):
    assert identify(body, headers) == expected


@pytest.mark.parametrize(
    "body, message",
    [
        ({"agent_id": 7}, "agent_id must be a non-empty string, got 7"),
        ({"agent_id": ""}, "agent_id must be a non-empty string, got ''"),
        ({"agent_id": "a", "invocation_distance": -2}, "distances['a'] must be finite and >= 0, got -2"),
        ({"agent_id": "a", "invocation_distance": "soon"}, "distances['a'] must be a number, got 'soon'"),
        ({"invocation_distance": 1}, "invocation_distance needs an agent (agent_id, header, adapter or user)"),
    ],
)
def test_malformed_identity_or_hint_is_refused(body, message):
    with pytest.raises(DistanceError) as err:
        identify(body, {})
    assert str(err.value) == message
