"""ScaleSim's HTTP routes on SGLang's FastAPI app (registered in the HTTP server process).

- `POST /scalesim/v1/distances` `{epoch, distances: {agent: number}, unit?, ttl?, replace?}`
- `POST /v1/update`: the reference implementation's payload
  `{agent_data: {agent: D}, timestep_data: {D: [agents]}, timestep_cnt}` (a full replacement
  at epoch `timestep_cnt`; an agent named in both takes the smaller distance)
- `GET /scalesim/v1/stats`: what the HTTP process and each scheduler know
- on `/v1/chat/completions`, `/v1/completions` and `/generate`: the request's agent
  (`scalesim.engine.sglang.identity`) and its optional `invocation_distance` hint

An update is validated and applied to this process's table first (atomically: a rejected
update changes nothing and answers 400 with the reason); only then is it forwarded to the
scheduler over SGLang's IPC, where the same update is applied to the scheduler's table.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from scalesim.distance import DistanceError, DistanceTable, validate_distances
from scalesim.distance.estimators import LearnedEstimator, combine_min
from scalesim.engine.sglang import PLUGIN_NAME
from scalesim.engine.sglang.identity import Identity, identify
from scalesim.engine.sglang.messages import ScaleSimDistancesReq

DISTANCE_FIELDS = {"epoch", "distances", "unit", "ttl", "replace"}
UPDATE_FIELDS = {"agent_data", "timestep_data", "timestep_cnt"}

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/generate"})

# The HTTP process's view, used to validate epochs and limits before anything is forwarded.
_table = DistanceTable(clock=time.monotonic)


class RequestHistory:
    """Who sent generation requests, how they were identified, and a learned estimate of
    when each agent calls next (fed for every tagged request; not yet pushed to the
    scheduler: pushed distances will win over learned ones once eviction uses them)."""

    def __init__(self) -> None:
        self.learned = LearnedEstimator()
        self.by_source: dict[str, int] = {"body": 0, "header": 0, "adapter": 0, "user": 0}
        self.untagged = 0
        self.agents: set[str] = set()

    def record(self, identity: Identity | None, now: float) -> None:
        if identity is None:
            self.untagged += 1
            return
        self.by_source[identity.source] += 1
        self.agents.add(identity.agent_id)
        self.learned.observe(identity.agent_id, now)

    def report(self) -> dict[str, Any]:
        self.learned.advance(time.monotonic())
        return {
            "requests_tagged": dict(self.by_source),
            "requests_untagged": self.untagged,
            "agents_seen": len(self.agents),
            "agents_with_learned_distance": len(self.learned.distances()),
        }


_history = RequestHistory()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DistanceError(f"body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise DistanceError(f"body must be a JSON object, got {type(body).__name__}")
    return body


def _check_fields(body: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = body.keys() - allowed
    if unknown:
        raise DistanceError(f"unknown field(s) {', '.join(sorted(unknown))} (valid: {', '.join(sorted(allowed))})")
    missing = required - body.keys()
    if missing:
        raise DistanceError(f"missing field(s) {', '.join(sorted(missing))}")


def _apply_and_forward(epoch: Any, distances: Any, *, unit: Any = None, ttl: Any = None, replace: Any = False) -> dict:
    from sglang.srt.entrypoints.http_server import get_global_state

    if not isinstance(replace, bool):
        raise DistanceError(f"replace must be true or false, got {replace!r}")
    changed = _table.update(distances, epoch, unit=unit, ttl=ttl, replace=replace)
    clean = {a: float(d) for a, d in distances.items()}
    get_global_state().tokenizer_manager._dispatch_to_scheduler(
        ScaleSimDistancesReq(epoch=epoch, distances=clean, replace=replace, ttl=None if ttl is None else float(ttl))
    )
    return {"accepted": len(clean), "changed": len(changed), "epoch": epoch, "agents_with_distance": len(_table)}


async def post_distances(request: Request) -> JSONResponse:
    try:
        body = await _json_object(request)
        _check_fields(body, DISTANCE_FIELDS, {"epoch", "distances"})
        result = _apply_and_forward(
            body["epoch"], body["distances"], unit=body.get("unit"), ttl=body.get("ttl"),
            replace=body.get("replace", False),
        )
    except DistanceError as exc:
        return _error(400, str(exc))
    return JSONResponse(result)


def _from_reference_update(body: dict[str, Any]) -> dict[str, float]:
    agent_data = validate_distances(body.get("agent_data") or {})
    timestep_data = body.get("timestep_data") or {}
    if not isinstance(timestep_data, dict):
        raise DistanceError("timestep_data must be a JSON object")
    by_step: dict[str, float] = {}
    for step, agents in timestep_data.items():
        try:
            d = float(step)
        except ValueError:
            raise DistanceError(f"timestep_data key {step!r} is not a number") from None
        if not math.isfinite(d) or d < 0:
            raise DistanceError(f"timestep_data key {step!r} must be finite and >= 0")
        if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
            raise DistanceError(f"timestep_data[{step!r}] must be a list of agent ids")
        for agent in agents:
            by_step[agent] = min(d, by_step.get(agent, math.inf))
    return combine_min(agent_data, by_step)


async def post_reference_update(request: Request) -> JSONResponse:
    try:
        body = await _json_object(request)
        _check_fields(body, UPDATE_FIELDS, {"timestep_cnt"})
        result = _apply_and_forward(body["timestep_cnt"], _from_reference_update(body), replace=True)
    except DistanceError as exc:
        return _error(400, str(exc))
    return JSONResponse(result)


async def get_stats(request: Request) -> JSONResponse:
    from sglang.srt.entrypoints.http_server import get_global_state

    states = await get_global_state().tokenizer_manager.get_internal_state()
    return JSONResponse({
        "http": {"distance_epoch": _table.epoch, "agents_with_distance": len(_table), **_history.report()},
        "schedulers": [s.get(PLUGIN_NAME, {}) for s in states],
    })


class IdentityMiddleware:
    """ASGI middleware on generation routes: read the agent and its hint from the request.

    The body is read once and replayed unchanged to SGLang. A malformed `agent_id` or
    `invocation_distance` is refused with 400 before SGLang sees the request; a body that is
    not a JSON object is left for SGLang to judge.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            try:
                identity = identify(obj, headers)
                if identity is not None and identity.distance is not None:
                    _apply_and_forward(max(_table.epoch, 0), {identity.agent_id: identity.distance})
            except DistanceError as exc:
                await _error(400, str(exc))(scope, receive, send)
                return
            _history.record(identity, time.monotonic())

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client's disconnect, as before

        await self.app(scope, replay, send)


_NUMBER_MAP = {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}}
DISTANCES_SCHEMA = {
    "type": "object",
    "required": ["epoch", "distances"],
    "additionalProperties": False,
    "properties": {
        "epoch": {"type": "integer", "minimum": 0, "description": "older refused, equal merges, newer replaces"},
        "distances": {**_NUMBER_MAP, "description": "agent id -> invocation distance (smaller is sooner)"},
        "unit": {"type": "string", "enum": ["steps"], "default": "steps"},
        "ttl": {"type": ["number", "null"], "exclusiveMinimum": 0, "description": "seconds until decay to unknown"},
        "replace": {"type": "boolean", "default": False, "description": "true: the table becomes exactly this"},
    },
}
REFERENCE_UPDATE_SCHEMA = {
    "type": "object",
    "required": ["timestep_cnt"],
    "additionalProperties": False,
    "properties": {
        "agent_data": _NUMBER_MAP,
        "timestep_data": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "timestep_cnt": {"type": "integer", "minimum": 0},
    },
}


def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def register_routes(app: FastAPI) -> None:
    """Add ScaleSim's routes to SGLang's app (idempotent)."""
    if any(getattr(r, "path", None) == "/scalesim/v1/distances" for r in app.routes):
        return
    app.add_api_route("/scalesim/v1/distances", post_distances, methods=["POST"],
                      summary="Push invocation distances (epoch, unit, ttl, replace)",
                      openapi_extra=_body(DISTANCES_SCHEMA))
    app.add_api_route("/v1/update", post_reference_update, methods=["POST"],
                      summary="Reference implementation's distance update payload",
                      openapi_extra=_body(REFERENCE_UPDATE_SCHEMA))
    app.add_api_route("/scalesim/v1/stats", get_stats, methods=["GET"], summary="ScaleSim statistics")
    app.add_middleware(IdentityMiddleware)
