"""What the sync and async clients share: configuration, request bodies, replies, errors.

No I/O here: each client is a thin transport over these pure functions, so both speak exactly
the same protocol (DESIGN.md section 3).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scalesim.distance.table import validate_agent_id

BASE_URL_ENV = "SCALESIM_BASE_URL"
API_KEY_ENV = "SCALESIM_API_KEY"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ScaleSimError(RuntimeError):
    """The server refused a request (4xx: the message is the server's) or stayed unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClientConfig:
    """Where the server is and how patient to be.

    `base_url` is the server root (`http://host:port`), from the argument or `$SCALESIM_BASE_URL`;
    there is no default. `timeout` is seconds per HTTP request; `max_retries` retries connection
    errors and 429/5xx replies (never other 4xx, which mean the request itself is wrong).
    """

    base_url: str
    api_key: str = "EMPTY"
    model: str = "default"
    timeout: float = 300.0
    max_retries: int = 2

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def resolve(cls, base_url: str | None = None, **kwargs: Any) -> ClientConfig:
        url = base_url or os.environ.get(BASE_URL_ENV)
        if not url:
            raise ValueError(f"no server address: pass base_url or set ${BASE_URL_ENV}")
        key = kwargs.pop("api_key", None) or os.environ.get(API_KEY_ENV) or "EMPTY"
        return cls(url, api_key=key, **kwargs)

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass(frozen=True)
class AgentSpec:
    """An agent to register: its adapter (a served name, or loaded from `adapter_path`) and its
    private prefix (informational for the server)."""

    agent_id: str
    adapter: str | None = None
    adapter_path: str | None = None
    prefix: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agent_id": validate_agent_id(self.agent_id)}
        for name in ("adapter", "adapter_path", "prefix"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class Completion:
    """One completion: its text and what the server reported about the prompt."""

    agent_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    latency_s: float


def _tags(agent_id: str, adapter: str | None, distance: float | None) -> dict[str, Any]:
    """The request's ScaleSim fields (`extra_body`): its agent, adapter and distance hint."""
    extra: dict[str, Any] = {"agent_id": validate_agent_id(agent_id)}
    if adapter is not None:
        extra["lora_path"] = adapter
    if distance is not None:
        extra["invocation_distance"] = distance
    return extra


def completion_kwargs(config: ClientConfig, agent_id: str, prompt: str, *, max_tokens: int, adapter: str | None,
                      temperature: float, distance: float | None) -> dict[str, Any]:
    """Arguments of `openai` `completions.create` for one agent's request."""
    return {"model": config.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
            "extra_body": _tags(agent_id, adapter, distance)}


def chat_kwargs(config: ClientConfig, agent_id: str, messages: Sequence[Mapping[str, str]], *, max_tokens: int,
                adapter: str | None, temperature: float, distance: float | None) -> dict[str, Any]:
    """Arguments of `openai` `chat.completions.create` for one agent's request. The server
    applies the model's chat template, so an instruct model answers instead of stopping at once
    (a raw prompt often gets only an end-of-turn token)."""
    if not messages or not all(isinstance(m, Mapping) and isinstance(m.get("role"), str)
                               and isinstance(m.get("content"), str) for m in messages):
        raise ValueError("messages must be a non-empty list of {role, content} strings")
    return {"model": config.model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens,
            "temperature": temperature, "extra_body": _tags(agent_id, adapter, distance)}


def completion_from(agent_id: str, response: Any, latency_s: float) -> Completion:
    """A `Completion` from a completions or a chat completions response."""
    usage = response.usage
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    choice = response.choices[0]
    message = getattr(choice, "message", None)
    text = (message.content or "") if message is not None else choice.text
    return Completion(agent_id, text, usage.prompt_tokens, usage.completion_tokens, int(cached), latency_s)


def distances_body(distances: Mapping[str, float], epoch: int, *, replace: bool, ttl: float | None,
                   unit: str) -> dict[str, Any]:
    body: dict[str, Any] = {"epoch": epoch, "distances": dict(distances), "replace": replace, "unit": unit}
    if ttl is not None:
        body["ttl"] = ttl
    return body


def check_reply(status: int, text: str, what: str) -> None:
    if status >= 400:
        raise ScaleSimError(f"{what}: HTTP {status}: {text.strip()[:500]}", status)
