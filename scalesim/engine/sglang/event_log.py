"""What happens to agents' KV state, one JSON line per event, for diagnosis (off by default).

`SCALESIM_EVENT_LOG=<path>` in the server's environment makes the scheduler process append to
`<path>`: each device victim (`device_evict`), host leaf evicted (`host_evict`: the state leaves
both tiers), subtree dropped without a host copy (`drop`: its copy was declined or found no
room), load from host memory (`load`: demand or prefetch) and finished request (`release`: its
cached tokens, from either tier), and before the first host eviction of a burst (at most one a
second) what the two tiers hold (`tiers`: tokens on the device only, on host only and on both, by
kind: locked by a request or a prefetch hold, call tail, agent state at a known distance, the
rest; and the known-distance tokens in either tier by distance). Each line carries the distance-table epoch (the simulation step,
for clients that push one table per step) and, for a node, its owners, tokens, distance as the
policy ranks it and whether it is a call tail. The question it answers: where did the prefix of
an agent that missed go, and how near was it then (docs/bench.md, "Finding where a miss came
from"). Nodes are logged as the hooks see them, before SGLang changes them; the hooks only read.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TextIO

from scalesim.engine.sglang.scheduler_state import current, guarded
from scalesim.policy.eviction import UNKNOWN

ENV = "SCALESIM_EVENT_LOG"


TIERS_EVERY_S = 1.0  # a burst of host evictions (hundreds of leaves) gets one snapshot


class EventLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = None  # opened by the first event: only the scheduler logs any
        self._tiers_at = -TIERS_EVERY_S

    def tiers_due(self) -> bool:
        now = time.monotonic()
        if now - self._tiers_at < TIERS_EVERY_S:
            return False
        self._tiers_at = now
        return True

    def write(self, event: str, **fields: Any) -> None:
        if self._file is None:
            self._file = open(self.path, "a", buffering=1, encoding="utf-8")
        state = current()
        line = {"t": round(time.monotonic(), 4), "ev": event, "epoch": state.table.epoch, **fields}
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")


_LOG: EventLog | None = None


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _log() -> EventLog:
    global _LOG
    if _LOG is None:
        _LOG = EventLog(os.environ[ENV])
    return _LOG


def node_fields(node: Any) -> dict[str, Any]:
    state = current()
    distance = state.node_distance(node)
    return {"node": node.id, "agents": sorted(state.node_owners(node)), "tokens": len(node.key),
            "dist": None if distance == UNKNOWN else distance, "tail": state.is_tail(node),
            "host": bool(node.backuped)}


def tier_fields(core: Any, held_tokens: int) -> dict[str, Any]:
    """Tokens the tree holds per tier (`device`, `host`, `both`) and kind, and the known-distance
    tokens in either tier by distance: what took the room when host memory evicts."""
    from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

    state = current()
    tiers: dict[str, dict[str, int]] = {"device": {}, "host": {}, "both": {}}
    by_distance: dict[str, int] = {}
    stack = list(core.root_node.children.values())
    while stack:
        node = stack.pop()
        stack.extend(node.children.values())
        on_device, on_host = not node.evicted, bool(node.backuped)
        if not (on_device or on_host):
            continue
        tokens = len(node.key)
        distance = state.node_distance(node)
        if on_device and node.component_data[ComponentType.FULL].lock_ref > 0:
            kind = "locked"
        elif state.is_tail(node):
            kind = "tail"
        else:
            kind = "unknown" if distance == UNKNOWN else "known"
        tier = tiers["both" if on_device and on_host else "device" if on_device else "host"]
        tier[kind] = tier.get(kind, 0) + tokens
        if distance != UNKNOWN:
            key = f"{distance:g}"
            by_distance[key] = by_distance.get(key, 0) + tokens
    return {**tiers, "by_distance": dict(sorted(by_distance.items(), key=lambda kv: float(kv[0]))),
            "held": held_tokens}


@guarded
def after_device_victim(result: Any, component: Any, *args: Any, **kwargs: Any) -> None:
    node = component._evict_device_last_node
    if result is not None and node is not None:
        _log().write("device_evict", **node_fields(node))


@guarded
def before_host_leaf_evict(core: Any, node: Any, *args: Any, **kwargs: Any) -> None:
    log = _log()
    if log.tiers_due():
        from scalesim.engine.sglang.kv_prefetch import prefetcher

        log.write("tiers", **tier_fields(core, sum(hold.tokens for hold in prefetcher().held.values())))
    log.write("host_evict", **node_fields(node))


@guarded
def before_drop_subtree(core: Any, node_id: Any, *args: Any, **kwargs: Any) -> None:
    from scalesim.engine.sglang.host_admission import dropped_tokens

    node = core.node_by_id(node_id)
    _log().write("drop", subtree=dropped_tokens(node), **node_fields(node))


def around_load_back(original: Any, cache: Any, node_id: Any, *args: Any, **kwargs: Any) -> Any:
    result = original(cache, node_id, *args, **kwargs)
    try:
        from scalesim.engine.sglang.kv_prefetch import prefetcher

        _log().write("load", ok=bool(result), prefetch=prefetcher().prefetching,
                     **node_fields(cache.tree_core.node_by_id(node_id)))
    except Exception:  # diagnosis only
        current().hook_errors += 1
    return result


@guarded
def before_release(cache: Any, req: Any, *args: Any, **kwargs: Any) -> None:
    if req.finished():  # before `SchedulerState.on_release` forgets the request's agent
        _log().write("release", agent=current().agent_of(req), prompt=len(req.origin_input_ids),
                     cached=int(req.cached_tokens or 0), host=int(getattr(req, "cached_tokens_host", 0) or 0))
