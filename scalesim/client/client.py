"""ScaleSim's Python client: the `openai` SDK for completions, plus agents and distances.

    client = AsyncScaleSimClient(base_url="http://127.0.0.1:30000")   # or $SCALESIM_BASE_URL
    await client.register_agents([AgentSpec("a1", adapter="a1", adapter_path="/adapters/a1")])
    await client.push_step({"a1": 0.0, "a2": 3.0})    # once per simulation step
    done = await client.chat("a1", [{"role": "system", "content": persona},   # the agent's private prefix
                                    {"role": "user", "content": situation}], max_tokens=32)
    done = await client.complete("a1", prompt, max_tokens=32)     # a raw prompt, no chat template

Every request is tagged with its agent id (`extra_body`), so an unmodified server still caches
per agent, and ScaleSim's server evicts and prefetches by distance. The client keeps the
distances it pushed in a local `DistanceTable` (the same validation as the server, so a bad
table is refused before it is sent) and numbers the epochs itself. `has_scalesim()` tells a
ScaleSim server from stock SGLang; on stock SGLang, `push_step` and `register_agents` are
no-ops that return None, so one simulation runs against both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from openai import AsyncOpenAI, OpenAI

from scalesim.client.base import (
    RETRY_STATUSES,
    AgentSpec,
    ClientConfig,
    Completion,
    ScaleSimError,
    chat_kwargs,
    check_reply,
    completion_from,
    completion_kwargs,
    distances_body,
)
from scalesim.distance.table import DistanceTable, validate_distances


class _State:
    """The local distance table and epoch counter both clients keep."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.table = DistanceTable(time.monotonic)
        self.epoch = 0
        self.scalesim: bool | None = None

    def found(self, stats: dict[str, Any] | None) -> None:
        """The server answered the stats probe: ScaleSim or not; number epochs after its own."""
        self.scalesim = stats is not None
        if stats is not None:
            self.epoch = max(self.epoch, int(stats.get("http", {}).get("distance_epoch", 0)))

    def next_push(self, distances: Mapping[str, float], replace: bool, ttl: float | None) -> dict[str, Any]:
        self.table.update(distances, self.epoch + 1, ttl=ttl, replace=replace)  # validates; raises on bad input
        self.epoch += 1
        return distances_body(distances, self.epoch, replace=replace, ttl=ttl, unit=self.table.unit)


class _ClientBase:
    """What both clients hold, and their retry decisions (no I/O here)."""

    def __init__(self, base_url: str | None, openai_cls: Any, http_cls: Any, **config: Any) -> None:
        self.config = ClientConfig.resolve(base_url, **config)
        self._state = _State(self.config)
        self.openai = openai_cls(base_url=self.config.openai_base_url, api_key=self.config.api_key,
                                 timeout=self.config.timeout, max_retries=self.config.max_retries)
        self._http = http_cls(base_url=self.config.base_url, timeout=self.config.timeout,
                              headers=self.config.headers)

    @property
    def table(self) -> DistanceTable:
        return self._state.table

    def _settle(self, attempt: int, what: str, response: httpx.Response | None, error: Exception | None,
                allow_404: bool) -> tuple[bool, Any]:
        """(True, reply) when the call is over, (False, None) to retry; raises a final error."""
        last = attempt == self.config.max_retries
        if response is None:
            if last:
                raise ScaleSimError(f"{what}: server unreachable at {self.config.base_url}: {error}") from error
            return False, None
        if response.status_code in RETRY_STATUSES and not last:
            return False, None
        if allow_404 and response.status_code == 404:
            return True, None
        check_reply(response.status_code, response.text, what)
        return True, _json(response)

    @staticmethod
    def _flush_refused(exc: ScaleSimError, deadline: float) -> None:
        """SGLang refuses a flush (400) while work is pending: wait, unless time is up."""
        if exc.status != 400 or time.monotonic() > deadline:
            raise exc


class AsyncScaleSimClient(_ClientBase):
    """Asynchronous client (asyncio): many agents' requests in flight at once."""

    def __init__(self, base_url: str | None = None, **config: Any) -> None:
        super().__init__(base_url, AsyncOpenAI, httpx.AsyncClient, **config)

    async def complete(self, agent_id: str, prompt: str, *, max_tokens: int = 32, adapter: str | None = None,
                       temperature: float = 0.0, distance: float | None = None) -> Completion:
        kwargs = completion_kwargs(self.config, agent_id, prompt, max_tokens=max_tokens, adapter=adapter,
                                   temperature=temperature, distance=distance)
        start = time.perf_counter()
        response = await self.openai.completions.create(**kwargs)
        return completion_from(agent_id, response, time.perf_counter() - start)

    async def chat(self, agent_id: str, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 32,
                   adapter: str | None = None, temperature: float = 0.0, distance: float | None = None) -> Completion:
        kwargs = chat_kwargs(self.config, agent_id, messages, max_tokens=max_tokens, adapter=adapter,
                             temperature=temperature, distance=distance)
        start = time.perf_counter()
        response = await self.openai.chat.completions.create(**kwargs)
        return completion_from(agent_id, response, time.perf_counter() - start)

    async def has_scalesim(self) -> bool:
        if self._state.scalesim is None:
            self._state.found(await self._send("GET", "/scalesim/v1/stats", None, "stats", allow_404=True))
        return self._state.scalesim

    async def push_step(self, distances: Mapping[str, float], *, replace: bool = True,
                        ttl: float | None = None) -> dict[str, Any] | None:
        """Push this step's distances (a full table by default); None on stock SGLang. Epochs
        continue from the server's latest, so a new client (or a restarted simulation) just
        pushes; one client should own the table."""
        validate_distances(distances)  # a bad table is refused before anything is sent
        scalesim = await self.has_scalesim()
        body = self._state.next_push(distances, replace, ttl)
        if not scalesim:
            return None
        return await self._send("POST", "/scalesim/v1/distances", body, "push distances")

    async def register_agents(self, agents: Sequence[AgentSpec]) -> dict[str, Any] | None:
        """Register agents with their adapters; on stock SGLang, load the adapters by path."""
        if await self.has_scalesim():
            return await self._send("POST", "/scalesim/v1/agents", {"agents": [a.body() for a in agents]},
                                    "register agents")
        for a in agents:
            if a.adapter_path is not None:
                await self.load_adapter(a.adapter or a.agent_id, a.adapter_path)
        return None

    async def load_adapter(self, name: str, path: str) -> dict[str, Any] | None:
        return await self._send("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path},
                                f"load adapter {name}")

    async def stats(self) -> dict[str, Any] | None:
        return await self._send("GET", "/scalesim/v1/stats", None, "stats", allow_404=True)

    async def flush_cache(self, wait_s: float = 120.0) -> None:
        """Empty the server's prefix cache, waiting (up to `wait_s`) until SGLang is idle: it
        refuses while requests or host-tier transfers are still pending."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await self._send("POST", "/flush_cache", None, "flush cache")
                return
            except ScaleSimError as exc:
                self._flush_refused(exc, deadline)
            await asyncio.sleep(0.5)

    async def _send(self, method: str, path: str, body: Any, what: str, *, allow_404: bool = False) -> Any:
        for attempt in range(self.config.max_retries + 1):
            response, error = None, None
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                error = exc
            done, reply = self._settle(attempt, what, response, error, allow_404)
            if done:
                return reply
            await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._http.aclose()
        await self.openai.close()

    async def __aenter__(self) -> AsyncScaleSimClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class ScaleSimClient(_ClientBase):
    """Synchronous client: the same calls as `AsyncScaleSimClient`, blocking."""

    def __init__(self, base_url: str | None = None, **config: Any) -> None:
        super().__init__(base_url, OpenAI, httpx.Client, **config)

    def complete(self, agent_id: str, prompt: str, *, max_tokens: int = 32, adapter: str | None = None,
                 temperature: float = 0.0, distance: float | None = None) -> Completion:
        kwargs = completion_kwargs(self.config, agent_id, prompt, max_tokens=max_tokens, adapter=adapter,
                                   temperature=temperature, distance=distance)
        start = time.perf_counter()
        response = self.openai.completions.create(**kwargs)
        return completion_from(agent_id, response, time.perf_counter() - start)

    def chat(self, agent_id: str, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 32,
             adapter: str | None = None, temperature: float = 0.0, distance: float | None = None) -> Completion:
        kwargs = chat_kwargs(self.config, agent_id, messages, max_tokens=max_tokens, adapter=adapter,
                             temperature=temperature, distance=distance)
        start = time.perf_counter()
        response = self.openai.chat.completions.create(**kwargs)
        return completion_from(agent_id, response, time.perf_counter() - start)

    def has_scalesim(self) -> bool:
        if self._state.scalesim is None:
            self._state.found(self._send("GET", "/scalesim/v1/stats", None, "stats", allow_404=True))
        return self._state.scalesim

    def push_step(self, distances: Mapping[str, float], *, replace: bool = True,
                  ttl: float | None = None) -> dict[str, Any] | None:
        validate_distances(distances)
        scalesim = self.has_scalesim()
        body = self._state.next_push(distances, replace, ttl)
        if not scalesim:
            return None
        return self._send("POST", "/scalesim/v1/distances", body, "push distances")

    def register_agents(self, agents: Sequence[AgentSpec]) -> dict[str, Any] | None:
        if self.has_scalesim():
            return self._send("POST", "/scalesim/v1/agents", {"agents": [a.body() for a in agents]},
                              "register agents")
        for a in agents:
            if a.adapter_path is not None:
                self.load_adapter(a.adapter or a.agent_id, a.adapter_path)
        return None

    def load_adapter(self, name: str, path: str) -> dict[str, Any] | None:
        return self._send("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path},
                          f"load adapter {name}")

    def stats(self) -> dict[str, Any] | None:
        return self._send("GET", "/scalesim/v1/stats", None, "stats", allow_404=True)

    def flush_cache(self, wait_s: float = 120.0) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._send("POST", "/flush_cache", None, "flush cache")
                return
            except ScaleSimError as exc:
                self._flush_refused(exc, deadline)
            time.sleep(0.5)

    def _send(self, method: str, path: str, body: Any, what: str, *, allow_404: bool = False) -> Any:
        for attempt in range(self.config.max_retries + 1):
            response, error = None, None
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                error = exc
            done, reply = self._settle(attempt, what, response, error, allow_404)
            if done:
                return reply
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._http.close()
        self.openai.close()

    def __enter__(self) -> ScaleSimClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text}
