"""Which agent a request belongs to, and its own distance hint, read from the request itself.

Identity, first match wins (so unmodified OpenAI clients still get agent-aware caching):
1. `agent_id` in the JSON body (the `openai` SDK sends it with `extra_body`);
2. the `x-scalesim-agent-id` header;
3. the LoRA adapter: `lora_path` in the body, or the adapter part of `model="base:adapter"`;
4. the OpenAI `user` field.
A per-request hint `invocation_distance` (a number: when this agent will call again after
this request) is optional and needs an identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scalesim.distance.table import DistanceError, validate_agent_id, validate_distance

AGENT_HEADER = "x-scalesim-agent-id"


@dataclass(frozen=True)
class Identity:
    agent_id: str
    source: str  # "body", "header", "adapter" or "user"
    distance: float | None = None


def identify(body: Mapping[str, Any], headers: Mapping[str, str]) -> Identity | None:
    """The request's agent and hint, or None if it names no agent. Raises `DistanceError`
    for a malformed `agent_id` or hint (the request must then be refused with a 4xx)."""
    agent, source = None, None
    if "agent_id" in body:
        agent, source = validate_agent_id(body["agent_id"]), "body"
    elif headers.get(AGENT_HEADER):
        agent, source = validate_agent_id(headers[AGENT_HEADER]), "header"
    elif isinstance(body.get("lora_path"), str) and body["lora_path"]:
        agent, source = body["lora_path"], "adapter"
    elif isinstance(body.get("model"), str) and ":" in body["model"]:
        agent, source = body["model"].split(":", 1)[1] or None, "adapter"
    if agent is None and isinstance(body.get("user"), str) and body["user"]:
        agent, source = body["user"], "user"
    hint = body.get("invocation_distance")
    if hint is not None and agent is None:
        raise DistanceError("invocation_distance needs an agent (agent_id, header, adapter or user)")
    if agent is None:
        return None
    agent = validate_agent_id(agent)
    return Identity(agent, source, None if hint is None else validate_distance(agent, hint))
