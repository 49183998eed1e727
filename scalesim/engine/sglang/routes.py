"""ScaleSim's HTTP routes on SGLang's FastAPI app (registered in the HTTP server process).

- `POST /scalesim/v1/distances` `{epoch, distances: {agent: number}, unit?, ttl?, replace?}`
- `POST /v1/update`: the reference implementation's payload
  `{agent_data: {agent: D}, timestep_data: {D: [agents]}, timestep_cnt}` (a full replacement
  at epoch `timestep_cnt`; an agent named in both takes the smaller distance)
- `POST /scalesim/v1/agents` `{agents: [{agent_id, adapter?, prefix?}]}`: register agents;
  `GET /scalesim/v1/agents/{agent_id}`: one registration (404 if unknown)
- `GET /scalesim/v1/stats`: what the HTTP process and each scheduler know
- on `/v1/chat/completions`, `/v1/completions` and `/generate`: the request's agent
  (`scalesim.engine.sglang.identity`) and its optional `invocation_distance` hint; the
  scheduler is told the agent of the request (by its `rid`, set here when the client sent
  none) just before the request itself, so the radix tree can tag the agent's prefix, and, on
  the chat route, where the prompt before its last message ends (`chat_prefix`); a
  registered agent's adapter is used when the request names none

An update is validated and applied to this process's table first (atomically: a rejected
update changes nothing and answers 400 with the reason); only then is it forwarded to the
scheduler over SGLang's IPC, where the same update is applied to the scheduler's table.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from scalesim.distance import DistanceError, DistanceTable, validate_distances
from scalesim.distance.estimators import combine_min
from scalesim.distance.table import MAX_AGENTS, validate_agent_id
from scalesim.engine.sglang import PLUGIN_NAME, lora_cpu_tier
from scalesim.engine.sglang.chat_prefix import ChatPrefixes, PromptPrefix, renderer
from scalesim.engine.sglang.identity import Identity, identify
from scalesim.engine.sglang.messages import ScaleSimAgentReq, ScaleSimDistancesReq, ScaleSimRegisterReq

DISTANCE_FIELDS = {"epoch", "distances", "unit", "ttl", "replace"}
UPDATE_FIELDS = {"agent_data", "timestep_data", "timestep_cnt"}

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/generate"})

# The HTTP process's view, used to validate epochs and limits before anything is forwarded.
_table = DistanceTable(clock=time.monotonic)


class RequestHistory:
    """Who sent generation requests and how they were identified. (The learned estimate of
    when each agent calls next lives in the scheduler, fed by the same requests.)"""

    def __init__(self) -> None:
        self.by_source: dict[str, int] = {"body": 0, "header": 0, "adapter": 0, "user": 0}
        self.untagged = 0
        self.agents: set[str] = set()

    def record(self, identity: Identity | None) -> None:
        if identity is None:
            self.untagged += 1
            return
        self.by_source[identity.source] += 1
        self.agents.add(identity.agent_id)

    def report(self) -> dict[str, Any]:
        return {"requests_tagged": dict(self.by_source), "requests_untagged": self.untagged,
                "agents_seen": len(self.agents)}


MAX_PREFIX_CHARS = 1_000_000


@dataclass(frozen=True)
class Registration:
    agent_id: str
    adapter: str | None = None
    prefix: str | None = None
    adapter_path: str | None = None


class AgentRegistry:
    """Registered agents (at most `MAX_AGENTS`): each with its adapter and private prefix.

    `adapter` names an adapter the server serves; with `adapter_path` the adapter is loaded at
    registration (named `adapter`, else after the agent), after a check against the base model
    and the server's LoRA limits (`scalesim.models.adapters.check_adapter`).
    """

    FIELDS = {"agent_id", "adapter", "adapter_path", "prefix"}

    def __init__(self) -> None:
        self.agents: dict[str, Registration] = {}

    def validate(self, body: dict[str, Any], adapters: set[str], check_path: Any) -> list[Registration]:
        _check_fields(body, {"agents"}, {"agents"})
        items = body["agents"]
        if not isinstance(items, list) or not items:
            raise DistanceError("agents must be a non-empty list of {agent_id, adapter?, adapter_path?, prefix?}")
        out: dict[str, Registration] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DistanceError(f"agents[{i}] must be an object, got {type(item).__name__}")
            unknown = item.keys() - self.FIELDS
            if unknown:
                raise DistanceError(f"agents[{i}]: unknown field(s) {', '.join(sorted(unknown))} "
                                    f"(valid: {', '.join(sorted(self.FIELDS))})")
            agent = validate_agent_id(item.get("agent_id"))
            adapter, path, prefix = item.get("adapter"), item.get("adapter_path"), item.get("prefix")
            if path is not None:
                if not isinstance(path, str) or not path:
                    raise DistanceError(f"agents[{i}].adapter_path must be a non-empty string")
                if adapter is not None and not isinstance(adapter, str):
                    raise DistanceError(f"agents[{i}].adapter must be a string")
                adapter = adapter or agent
                check_path(i, path)
            elif adapter is not None and (not isinstance(adapter, str) or adapter not in adapters):
                served = ", ".join(sorted(adapters)) or "none (start the server with --enable-lora --lora-paths)"
                raise DistanceError(f"agents[{i}].adapter {adapter!r} is not an adapter this server serves "
                                    f"(served: {served}); give adapter_path to load one")
            if prefix is not None and (not isinstance(prefix, str) or len(prefix) > MAX_PREFIX_CHARS):
                raise DistanceError(f"agents[{i}].prefix must be a string of at most {MAX_PREFIX_CHARS} characters")
            if agent in out:
                raise DistanceError(f"agents[{i}]: agent {agent!r} appears twice")
            out[agent] = Registration(agent, adapter, prefix, path)
        new = len(out.keys() - self.agents.keys())
        if len(self.agents) + new > MAX_AGENTS:
            raise DistanceError(f"registration would hold {len(self.agents) + new} agents, over the limit of {MAX_AGENTS}")
        return list(out.values())

    def register(self, registrations: list[Registration]) -> None:
        for r in registrations:
            self.agents[r.agent_id] = r


_history = RequestHistory()
_agents = AgentRegistry()
_cpu_tier = lora_cpu_tier.install(_table)


def _tokenizer_manager() -> Any:
    """SGLang's tokenizer manager in this (the HTTP server's) process."""
    from sglang.srt.entrypoints.http_server import get_global_state

    return get_global_state().tokenizer_manager


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
    if not isinstance(replace, bool):
        raise DistanceError(f"replace must be true or false, got {replace!r}")
    changed = _table.update(distances, epoch, unit=unit, ttl=ttl, replace=replace)
    clean = {a: float(d) for a, d in distances.items()}
    tm = _tokenizer_manager()
    tm._dispatch_to_scheduler(
        ScaleSimDistancesReq(epoch=epoch, distances=clean, replace=replace, ttl=None if ttl is None else float(ttl))
    )
    if changed and tm.server_args.max_loaded_loras is not None and lora_cpu_tier.enabled():
        _cpu_tier.schedule(tm, tm.server_args.max_loaded_loras)
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


def _served_adapters() -> dict[str, str]:
    """Adapter name -> path, of the adapters the server serves now."""
    refs = _tokenizer_manager().lora_registry.get_all_adapters()
    return {name: ref.lora_path for name, ref in refs.items()}


def _adapter_checker() -> Any:
    """`check(i, path)` for registrations: the adapter fits this base model and LoRA config."""
    from scalesim.models.adapters import AdapterError, check_adapter

    tm = _tokenizer_manager()
    args = tm.server_args

    def check(i: int, path: str) -> None:
        if not (args.enable_lora or args.lora_paths):
            raise DistanceError(f"agents[{i}].adapter_path: this server has no LoRA (start it with --enable-lora)")
        targets = set(args.lora_target_modules) if args.lora_target_modules else None
        try:
            check_adapter(path, hidden_size=tm.model_config.hidden_size, max_rank=args.max_lora_rank,
                          target_modules=targets)
        except AdapterError as exc:
            raise DistanceError(f"agents[{i}].adapter_path: {exc}") from None

    return check


async def _load_adapters(registrations: list[Registration], served: dict[str, str]) -> None:
    """Load the registrations' new adapters; on a failure unload the ones loaded here and raise."""
    from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput, UnloadLoRAAdapterReqInput

    tm = _tokenizer_manager()
    loaded: list[str] = []
    for r in registrations:
        if r.adapter_path is None or r.adapter in loaded:
            continue
        if r.adapter in served:
            if served[r.adapter] != r.adapter_path:
                raise DistanceError(f"adapter {r.adapter!r} is already served from {served[r.adapter]}, "
                                    f"not {r.adapter_path}")
            continue
        result = await tm.load_lora_adapter(LoadLoRAAdapterReqInput(lora_name=r.adapter, lora_path=r.adapter_path))
        if not result.success:
            for name in loaded:
                await tm.unload_lora_adapter(UnloadLoRAAdapterReqInput(lora_name=name))
            raise DistanceError(f"adapter {r.adapter!r} from {r.adapter_path}: {result.error_message}")
        loaded.append(r.adapter)


async def post_agents(request: Request) -> JSONResponse:
    try:
        served = _served_adapters()
        registrations = _agents.validate(await _json_object(request), set(served), _adapter_checker())
        await _load_adapters(registrations, served)
    except DistanceError as exc:
        return _error(400, str(exc))
    _agents.register(registrations)
    adapters = {r.agent_id: r.adapter for r in registrations if r.adapter is not None}
    if adapters:
        _tokenizer_manager()._dispatch_to_scheduler(ScaleSimRegisterReq(adapters=adapters))
    return JSONResponse({"registered": len(registrations), "agents_registered": len(_agents.agents)})


async def get_agent(agent_id: str) -> JSONResponse:
    registration = _agents.agents.get(agent_id)
    if registration is None:
        return _error(404, f"agent {agent_id!r} is not registered")
    return JSONResponse(asdict(registration))


async def get_stats(request: Request) -> JSONResponse:
    states = await _tokenizer_manager().get_internal_state()
    return JSONResponse({
        "http": {"distance_epoch": _table.epoch, "agents_with_distance": len(_table),
                 "agents_registered": len(_agents.agents), **_history.report(), "lora_cpu": _cpu_tier.report(),
                 "chat_prefixes_rendered": _chat_prefixes.rendered if _chat_prefixes else 0,
                 "chat_prefixes_failed": _chat_prefixes.failed if _chat_prefixes else 0},
        "schedulers": [s.get(PLUGIN_NAME, {}) for s in states],
    })


def _announce(obj: dict[str, Any], agent: str, prefix: PromptPrefix | None = None) -> bool:
    """Tell the scheduler which agent the request belongs to, by rid, and where its prompt's
    prefix ends when known (`chat_prefix`); give the request a rid if it has none. Returns
    whether `obj` was changed. A malformed rid is left to SGLang."""
    changed = False
    rid = obj.get("rid")
    if rid is None:
        rid = obj["rid"] = f"scalesim-{uuid.uuid4().hex}"
        changed = True
    rids = [rid] if isinstance(rid, str) else rid if isinstance(rid, list) else []
    dispatch = _tokenizer_manager()._dispatch_to_scheduler
    tokens, last_ids = (prefix.tokens, list(prefix.last_ids)) if prefix is not None else (None, None)
    for r in rids:
        if isinstance(r, str):
            dispatch(ScaleSimAgentReq(request_id=r, agent_id=agent, time=time.monotonic(),
                                      prefix_tokens=tokens, prefix_last_ids=last_ids))
    return changed


_chat_prefixes: ChatPrefixes | None = None


def _chat_prefix(path: str, obj: dict[str, Any]) -> PromptPrefix | None:
    """A chat request's prompt prefix before its last message (`chat_prefix`); None elsewhere
    or where the tokenizer manager has no tokenizer (`--skip-tokenizer-init`)."""
    global _chat_prefixes
    if path != "/v1/chat/completions":
        return None
    if _chat_prefixes is None:
        tokenizer = getattr(_tokenizer_manager(), "tokenizer", None)
        if tokenizer is None:
            return None
        _chat_prefixes = ChatPrefixes(renderer(tokenizer))
    return _chat_prefixes.of(obj.get("messages"))


def _use_registered_adapter(obj: dict[str, Any], agent: str) -> bool:
    """A registered agent's adapter, unless the request names one (`lora_path` or
    `model="base:adapter"`). Returns whether `obj` was changed."""
    registration = _agents.agents.get(agent)
    if registration is None or registration.adapter is None or obj.get("lora_path"):
        return False
    if isinstance(obj.get("model"), str) and ":" in obj["model"]:
        return False
    obj["lora_path"] = registration.adapter
    return True


def _request_adapter(obj: dict[str, Any]) -> str | None:
    adapter = obj.get("lora_path")
    if adapter is None and isinstance(obj.get("model"), str) and ":" in obj["model"]:
        adapter = obj["model"].split(":", 1)[1]
    return adapter if isinstance(adapter, str) and adapter else None


def _note_adapter(adapter: str | None, agent: str | None) -> None:
    """The CPU tier's view: which adapter the agent's request uses, and whether it is loaded."""
    if adapter is None:
        return
    tm = _tokenizer_manager()
    if tm.server_args.enable_metrics:
        _cpu_tier.counters.enable_prometheus()
    if agent is not None:
        _cpu_tier.note(agent, adapter)
    _cpu_tier.on_request(adapter, tm.lora_registry._registry.keys())


class IdentityMiddleware:
    """ASGI middleware on generation routes: read the agent and its hint from the request.

    The body is read once and replayed to SGLang, with two additions for a tagged request: a
    `rid` when it has none (the scheduler is told the agent by rid) and the registered agent's
    adapter when it names none. A malformed `agent_id` or `invocation_distance` is refused with
    400 before SGLang sees the request; a body that is not a JSON object is left for SGLang.
    While the request runs its adapter counts as in use for the CPU tier.
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
        adapter = None
        if isinstance(obj, dict):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            try:
                identity = identify(obj, headers)
                if identity is not None and identity.distance is not None:
                    _apply_and_forward(max(_table.epoch, 0), {identity.agent_id: identity.distance})
            except DistanceError as exc:
                await _error(400, str(exc))(scope, receive, send)
                return
            _history.record(identity)
            if identity is not None:
                changed = _use_registered_adapter(obj, identity.agent_id)
                if _announce(obj, identity.agent_id, _chat_prefix(scope["path"], obj)) or changed:
                    body = json.dumps(obj).encode()
                    scope = _with_content_length(scope, len(body))
            adapter = _request_adapter(obj)
            _note_adapter(adapter, identity.agent_id if identity is not None else None)

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client's disconnect, as before

        if adapter is None:
            await self.app(scope, replay, send)
            return
        _cpu_tier.begin(adapter)
        try:
            await self.app(scope, replay, send)
        finally:
            _cpu_tier.end(adapter)


def _with_content_length(scope: dict, length: int) -> dict:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


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


AGENTS_SCHEMA = {
    "type": "object",
    "required": ["agents"],
    "additionalProperties": False,
    "properties": {
        "agents": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["agent_id"], "additionalProperties": False,
            "properties": {
                "agent_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "adapter": {"type": "string", "description": "a LoRA adapter this server serves (or the name to "
                            "load `adapter_path` under); used by the agent's requests that name no adapter"},
                "adapter_path": {"type": "string", "description": "a PEFT adapter directory to load, checked "
                                 "against the base model and the server's LoRA limits"},
                "prefix": {"type": "string", "maxLength": MAX_PREFIX_CHARS,
                           "description": "the agent's private prompt prefix (stored, returned by GET)"},
            },
        }},
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
    app.add_api_route("/scalesim/v1/agents", post_agents, methods=["POST"],
                      summary="Register agents with their adapter and private prefix",
                      openapi_extra=_body(AGENTS_SCHEMA))
    app.add_api_route("/scalesim/v1/agents/{agent_id}", get_agent, methods=["GET"],
                      summary="One registered agent")
    app.add_api_route("/scalesim/v1/stats", get_stats, methods=["GET"], summary="ScaleSim statistics")
    app.add_middleware(IdentityMiddleware)
