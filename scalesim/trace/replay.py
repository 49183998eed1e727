"""Replay a trace against a memory of given capacity: any eviction policy, or Belady's MIN.

Each request uses one piece of state, its prefix (key `prefix`, size `prefix_len` tokens):
a hit if the prefix is resident, else a miss that loads it (evicting by the policy). The
request's own prefix is in use (pinned) while it is served.

Distances for `replay_policy` come from a `distances` mode:
- "perfect": each agent's next request index (exact future knowledge, the same information
  Belady uses: with uniform sizes and one prefix per agent the distance policy then makes
  Belady's choices);
- "next_step": the trace's own `next_step` field (what a simulation would push as hints);
- "none": no hints (every agent unknown: the distance policy falls back to LRU).

`replay_belady` is an independent implementation of MIN: evict the resident prefix whose next
use is farthest in the future (never again counts as infinitely far).

`replay_pushed` runs the distance policy with the distances the simulation really pushed, one
table per step, and each step's calls in flight together, as a server gets them: one pool, no
tiers, no timing. Its misses beyond Belady's are the hints' (a call sooner than its hint said);
a server's misses beyond it are the server's (its two tiers, loads in flight, timing). With
`served` (a run's real content: each call's cached path, a few tokens past the trace's prefix,
and its tail, the prompt past that path plus the answer) it replays what that server had to hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scalesim.distance import DistanceTable
from scalesim.memory.base import Tier
from scalesim.memory.reference import ReferenceMemory
from scalesim.policy import DistancePriority, EvictionPolicy, Priority
from scalesim.trace.format import TraceRecord

DISTANCE_MODES = ("perfect", "next_step", "none")


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    requests: int
    hits: int
    misses: int
    tokens_loaded: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def _next_index(ids: Sequence[str]) -> list[float]:
    """For position i, the next position holding the same id (inf if none)."""
    nxt = [float("inf")] * len(ids)
    last: dict[str, int] = {}
    for i in range(len(ids) - 1, -1, -1):
        nxt[i] = last.get(ids[i], float("inf"))
        last[ids[i]] = i
    return nxt


def _memory(trace: Sequence[TraceRecord], priority: Priority, capacity: int,
            sizes: Mapping[str, int] | None = None) -> tuple[ReferenceMemory, DistanceTable, list[float]]:
    """An empty pool of `capacity` tokens that knows every prefix of `trace` (of its `prefix_len`,
    or of `sizes[prefix]`); its table; its clock."""
    now = [0.0]
    table = DistanceTable(clock=lambda: now[0])
    memory = ReferenceMemory("kv", capacity, EvictionPolicy(priority, table))
    for r in trace:
        if memory.tier(r.prefix) is Tier.ABSENT:
            memory.register(r.prefix, (r.agent,), (sizes or {}).get(r.prefix, r.prefix_len))
    return memory, table, now


def replay_policy(trace: Sequence[TraceRecord], priority: Priority, capacity: int, *, distances: str = "perfect") -> ReplayResult:
    """Run `priority` over `trace` with a device capacity of `capacity` tokens."""
    if distances not in DISTANCE_MODES:
        raise ValueError(f"unknown distances mode {distances!r} (valid: {', '.join(DISTANCE_MODES)})")
    memory, table, now = _memory(trace, priority, capacity)
    next_agent = _next_index([r.agent for r in trace])
    # Only the order of distances matters to eviction, and time moves every agent closer by
    # the same amount, so an agent's distance can be pushed as the absolute time of its next
    # request: no per-step shifting of the whole table.
    for i, r in enumerate(trace):
        now[0] = float(i)
        memory.access(r.prefix, now[0])
        memory.release(r.prefix)
        nxt = {"perfect": next_agent[i], "next_step": r.next_step, "none": None}[distances]
        if nxt is None or nxt == float("inf"):
            table.forget(r.agent)
        else:
            table.update({r.agent: float(nxt)}, 0)
    s = memory.stats
    return ReplayResult(priority.name + ("" if distances == "perfect" else f"/{distances}"),
                        len(trace), s.hits, s.misses, s.bytes_loaded)


@dataclass(frozen=True)
class Served:
    """What a server held for one call: its cached path (the prefix and what the agent's calls
    share past it) and its tail (the rest of the prompt plus the answer), in tokens."""

    path: int
    tail: int


def replay_pushed(trace: Sequence[TraceRecord], pushes: Mapping[float, Mapping[str, float]],
                  capacity: int, served: Mapping[tuple[float, str], Served] | None = None) -> ReplayResult:
    """The distance policy over `trace` with `pushes[step]`, the full table pushed before that
    step's calls (none pushed: every agent unknown). A step's prefixes stay pinned until all its
    calls are in (an agent calls at most once per step). With `served[(step, agent)]`, a prefix
    takes its longest served path, and each call's tail is pinned with it, then kept with no owner
    (ranked first for eviction, as a server ranks an agent's last call tail). Hits, misses and
    tokens loaded count prefixes only. Raises `CapacityError` where a step's calls do not fit
    together."""
    served = served or {}
    paths: dict[str, int] = {}
    for r in trace:
        if (r.step, r.agent) in served:
            paths[r.prefix] = max(paths.get(r.prefix, 0), served[(r.step, r.agent)].path)
    memory, table, now = _memory(trace, DistancePriority(), capacity, paths)
    steps: dict[float, list[TraceRecord]] = {}
    for r in trace:
        steps.setdefault(r.step, []).append(r)
    hits = loaded = 0
    for epoch, (step, records) in enumerate(steps.items(), start=1):
        now[0] = float(step)
        table.update(pushes.get(step, {}), epoch, replace=True)
        held = []
        for r in records:
            if memory.access(r.prefix, now[0]):
                hits += 1
            else:
                loaded += memory.size(r.prefix)
            held.append(r.prefix)
            call = served.get((r.step, r.agent))
            if call is not None and call.tail > 0:
                tail = ("tail", r.step, r.agent)
                memory.register(tail, (), call.tail)
                memory.access(tail, now[0])
                held.append(tail)
        for key in held:
            memory.release(key)
    name = "distance/pushed" + ("/served" if served else "")
    return ReplayResult(name, len(trace), hits, len(trace) - hits, loaded)


def replay_belady(trace: Sequence[TraceRecord], capacity: int) -> ReplayResult:
    """Belady's MIN over prefixes, with the request's own prefix never evicted."""
    nxt = _next_index([r.prefix for r in trace])
    resident: dict[str, int] = {}  # prefix -> size
    next_use: dict[str, float] = {}
    used = hits = loaded = 0
    for i, r in enumerate(trace):
        if r.prefix in resident:
            hits += 1
        else:
            while used + r.prefix_len > capacity:
                victim = max(resident, key=lambda p: (next_use[p], p))
                used -= resident.pop(victim)
                del next_use[victim]
            resident[r.prefix] = r.prefix_len
            used += r.prefix_len
            loaded += r.prefix_len
        next_use[r.prefix] = nxt[i]
    return ReplayResult("belady", len(trace), hits, len(trace) - hits, loaded)
