"""Per-agent LoRA adapters in SGLang's device slots, managed by invocation distance.

SGLang keeps the adapters of a batch in `--max-loras-per-batch` device slots
(`lora/mem_pool.py::LoRAMemoryPool`) and, when a batch needs an adapter that is not in a
slot, evicts one chosen by `select_victim(candidates)` of its policy (candidates already
exclude the running batch's adapters and pinned ones). ScaleSim replaces that policy and adds
prefetch:

- **Victim**: the adapter whose nearest agent is farthest (the core `Priority` over the
  agents' distances, as for KV); among equal distances the least recently used; ties by
  first use. Recency is a counter bumped in SGLang's sorted order, so every tensor-parallel
  rank decides the same.
- **Prefetch**, between batches (a BEFORE hook on `Scheduler.get_next_batch_to_run`): the
  adapters of the nearest agents (distance within `LOOKAHEAD`) that are not in a slot are
  loaded, nearest first, into a free slot or the slot of a farther agent's adapter, never one
  of the running or last batch or of a waiting request. When a waiting request's adapter is not
  in a slot, no prefetch runs: the demand load goes first. The copy goes through `device_copy`:
  on GPU it is issued on a side stream, overlapped with compute, and the compute stream waits
  on its event; on CPU it runs in the scheduler thread between batches (a copy thread only
  competed with the forward pass for the same cores). Either way the copy is issued when the
  slot is assigned, so any later use of the slot is ordered after it; a copy that fails gives
  the slot back and the adapter is loaded on demand.
- **Metrics**: slot hits and misses (a request's adapter found in a slot, or loaded on the
  request path: a demand load), prefetch loads issued / used / wasted (evicted before any
  use), and the time batches spent on demand loads (`wait_seconds`).

Which agents use an adapter comes from registrations (`POST /scalesim/v1/agents`, forwarded to
the scheduler) and from the requests themselves (agent and `lora_id` of each request).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from typing import Any, Iterable

from scalesim.engine.sglang.counters import TierCounters
from scalesim.engine.sglang.device_copy import copier_for
from scalesim.engine.sglang.scheduler_state import SchedulerState, current, guarded
from scalesim.policy.eviction import DistancePriority

logger = logging.getLogger(__name__)

POLICY_ENV = "SCALESIM_LORA_POLICY"  # "distance" (set by `serve`) or unset: SGLang's own
LOOKAHEAD = 2.0  # prefetch adapters of agents due within this distance
MAX_PREFETCH_PER_ROUND = 2  # loads per scheduler iteration: bounds the time taken from a batch


class AdapterTracker:
    """Scheduler-side view of adapters: which agents use each, and the slot counters."""

    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        self.agents_of: dict[str, set[str]] = defaultdict(set)  # lora_id -> agents
        self.registered: dict[str, str] = {}  # agent -> adapter name (registrations)
        self._unresolved: dict[str, str] = {}  # registered, adapter not yet seen loaded
        self.counters = TierCounters("slot")  # misses are demand loads, on the request path
        self.prefetch_enabled = True  # `{"prefetch": false}` in the radix policy config turns it off
        self.last_batch: set = set()

    def register(self, adapters: dict[str, str]) -> None:
        """Registered agents and their adapter names (resolved to ids once loaded)."""
        self.registered.update(adapters)
        self._unresolved.update(adapters)

    def resolve_registered(self, uid_of_name: dict[str, str]) -> None:
        for agent, name in list(self._unresolved.items()):
            uid = uid_of_name.get(name)
            if uid is not None:
                self.agents_of[uid].add(agent)
                del self._unresolved[agent]

    def note_request(self, agent: str | None, lora_id: str | None) -> None:
        if agent is not None and lora_id is not None:
            self.agents_of[lora_id].add(agent)

    def distance(self, lora_id: str | None) -> float:
        return self.state.nearest(self.agents_of.get(lora_id, ()) if lora_id is not None else ())

    def report(self) -> dict[str, Any]:
        return {"lora": {**self.counters.report(), "adapters_with_agents": len(self.agents_of),
                         "agents_registered_with_adapter": len(self.registered)}}


_TRACKER: AdapterTracker | None = None


def tracker() -> AdapterTracker:
    global _TRACKER
    if _TRACKER is None:
        _TRACKER = AdapterTracker(current())
    return _TRACKER


class DistanceLoRAPolicy:
    """SGLang's LoRA `EvictionPolicy` interface (`mark_used`, `select_victim`, `remove`)."""

    def __init__(self) -> None:
        self.tracker = tracker()
        self.priority = DistancePriority()
        self._clock = itertools.count()
        self._last_used: dict[str, int] = {}
        self._first_use: dict[str, int] = {}

    def mark_used(self, uid: str | None) -> None:
        if uid is not None:
            tick = next(self._clock)
            self._last_used[uid] = tick
            self._first_use.setdefault(uid, tick)

    def key(self, uid: str | None) -> tuple:
        last = self._last_used.get(uid, -1) if uid is not None else -1
        seq = self._first_use.get(uid, -1) if uid is not None else -1
        return self.priority.entry(self.tracker.distance(uid), last, seq, 0, uid or "")

    def select_victim(self, candidates: Iterable[str | None]) -> str | None:
        candidates = set(candidates)
        real = candidates - {None}
        if not real:
            return None if None in candidates else _no_victim(candidates)
        return min(sorted(real), key=self.key)

    def remove(self, uid: str | None) -> None:
        if uid is None:
            return
        self._last_used.pop(uid, None)
        self._first_use.pop(uid, None)
        self.tracker.counters.evicted(uid)


def _no_victim(candidates: set) -> None:
    raise ValueError(f"no LoRA eviction candidate among {candidates!r}")


# -- hooks ------------------------------------------------------------------------------


def around_get_eviction_policy(original: Any, policy_name: str, *args: Any, **kwargs: Any) -> Any:
    """`mem_pool.get_eviction_policy`: ours unless the user chose SGLang's explicitly."""
    import os

    if os.environ.get(POLICY_ENV) == "distance":
        return DistanceLoRAPolicy()
    return original(policy_name, *args, **kwargs)


def around_fetch_new_loras(original: Any, manager: Any, new_loras: set, running_loras: set = frozenset(),
                           *args: Any, **kwargs: Any) -> Any:
    """Count the slot hits and demand loads of a batch about to run (not prefetch's own
    calls); the time a batch spends on demand loads is time its requests waited."""
    t = tracker()
    uids = set(new_loras) | set(running_loras)
    demand = 0
    start = time.perf_counter()
    try:
        demand = _count_batch(t, manager, uids)
    except Exception:
        t.state.hook_errors += 1
    result = original(manager, new_loras, running_loras, *args, **kwargs)
    if demand:
        t.counters.waited(time.perf_counter() - start)
    return result


def _count_batch(t: AdapterTracker, manager: Any, uids: set) -> int:
    """A request's adapter counts once, when it enters the batches (decode steps repeat it)."""
    resident = manager.memory_pool.uid_to_buffer_id
    demand = 0
    for uid in uids - t.last_batch - {None}:
        t.counters.looked_up(uid, uid in resident)
        demand += uid not in resident
    t.last_batch = uids
    return demand


def _lora_ids(reqs: Iterable[Any]) -> set:
    return {getattr(r, "lora_id", None) for r in reqs}


@guarded
def before_next_batch(scheduler: Any, *args: Any, **kwargs: Any) -> None:
    """Prefetch the nearest agents' adapters into slots (see the module docstring)."""
    manager = getattr(getattr(scheduler.tp_worker, "model_runner", None), "lora_manager", None)
    if manager is None or not isinstance(manager.memory_pool.eviction_policy, DistanceLoRAPolicy):
        return
    t = tracker()
    if not t.prefetch_enabled:
        return
    pool = manager.memory_pool
    resident = pool.uid_to_buffer_id
    running = kwargs.get("running_batch", args[0] if args else None)
    last = kwargs.get("last_batch", args[1] if len(args) > 1 else None)
    waiting = _lora_ids(scheduler.waiting_queue) - {None}
    if waiting - resident.keys():
        t.counters.add("prefetch_skipped_for_demand")
        return
    protected = waiting | _lora_ids(running.reqs if running is not None else ()) | _lora_ids(
        last.reqs if last is not None else ())
    plan = _plan(t, manager, resident)
    policy = pool.eviction_policy
    busy = bool((running is not None and running.reqs) or (last is not None and last.reqs))
    # Idle (the simulation is between steps): fill every slot; busy: a few per iteration.
    budget = MAX_PREFETCH_PER_ROUND if busy else manager.max_loras_per_batch
    for uid, distance in plan[:budget]:
        keep = {u for u in protected if u in resident}
        if len(keep | {uid}) > manager.max_loras_per_batch:
            return
        victim = None
        if len(resident) >= manager.max_loras_per_batch:
            victims = {u for u in resident if u is not None and u not in keep and not _pinned(manager, u)}
            if not victims:
                return
            victim = policy.select_victim(victims)
            if not t.distance(victim) > distance:
                return  # never displace an adapter needed as soon or sooner
        if _load_into_slot(manager, uid, victim):
            t.counters.prefetch_issued(uid)


def _pinned(manager: Any, uid: str) -> bool:
    ref = manager.lora_refs.get(uid)
    return bool(ref is not None and ref.pinned)


def _plan(t: AdapterTracker, manager: Any, resident: dict) -> list[tuple[str, float]]:
    """Adapters of agents due within `LOOKAHEAD` that are not in a slot, nearest first."""
    t.resolve_registered({ref.lora_name: uid for uid, ref in manager.lora_refs.items()})
    by_uid: dict[str, float] = {}
    for uid, agents in t.agents_of.items():
        if uid in resident or uid not in manager.loras:
            continue
        d = t.state.nearest(agents)
        if d <= LOOKAHEAD:
            by_uid[uid] = d
    return sorted(by_uid.items(), key=lambda kv: (kv[1], kv[0]))


def _load_into_slot(manager: Any, uid: str, victim: str | None) -> bool:
    """Give `uid` a slot (a free one, or `victim`'s) and copy its weights in through the
    device's copier. A failed copy leaves the slot empty: the adapter is loaded on demand."""
    from sglang.srt.lora.mem_pool import EMPTY_SLOT

    pool = manager.memory_pool
    if victim is not None:
        slot = pool.uid_to_buffer_id.pop(victim)
        pool.eviction_policy.remove(victim)
    else:
        slot = next(i for i, u in enumerate(pool.buffer_id_to_uid) if u == EMPTY_SLOT)
    adapter = manager.loras[uid]
    try:
        copier_for(manager.device).submit(
            lambda: pool.load_lora_weight_to_buffer(uid, slot, adapter, manager.lora_modules,
                                                    manager.embed_tokens_module, manager.lm_head_module))
        landed = True
    except Exception:
        current().hook_errors += 1
        logger.exception("ScaleSim: prefetch copy of adapter %s into slot %d failed", uid, slot)
        landed = False
    if landed:
        pool.buffer_id_to_uid[slot] = uid
        pool.uid_to_buffer_id[uid] = slot
        pool.eviction_policy.mark_used(uid)
    else:
        pool.buffer_id_to_uid[slot] = EMPTY_SLOT
    manager._notify_lora_slots_updated({slot})
    return landed
