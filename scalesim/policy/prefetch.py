"""Prefetch planning: which absent state to load ahead, and what it may displace.

Contract (exact plans are tested in tests/policy):
- Demand loads (a request is waiting) come first, in the order given, and may displace any
  unpinned state; they are never dropped for budget or window reasons.
- Then prefetches: absent state of agents with a known distance within `window`, nearest first
  (ties: the order given, which callers keep deterministic). Each must fit in the remaining
  `budget` (bytes loaded by prefetches in this plan) or it is skipped.
- A prefetch uses free space first, then displaces resident state in eviction order, but only
  state strictly farther than the piece being loaded, and never demand-loaded or pinned state.
  If that cannot make room, the piece is skipped.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from scalesim.policy.eviction import UNKNOWN, EvictionPolicy


@dataclass(frozen=True)
class Load:
    """A piece of absent state that could be loaded: its key, size and nearest owner distance."""

    key: Hashable
    size: int
    distance: float = UNKNOWN


@dataclass(frozen=True)
class PrefetchPlan:
    demand: list[Hashable] = field(default_factory=list)
    prefetch: list[Hashable] = field(default_factory=list)
    evict: list[Hashable] = field(default_factory=list)


def plan_prefetch(
    resident: EvictionPolicy,
    free: int,
    demand: Sequence[Load],
    candidates: Sequence[Load],
    *,
    budget: int,
    window: float,
) -> PrefetchPlan:
    """Plan loads for one memory kind; `resident` is its eviction policy, `free` its free space."""
    if budget < 0 or free < 0:
        raise ValueError(f"budget and free must be >= 0, got budget={budget} free={free}")
    order = [(key, resident.distance(key), resident.size_of(key)) for key in resident.order()]
    taken: set[Hashable] = set()
    evict: list[Hashable] = []

    def make_room(need: int, nearer_than: float | None) -> bool:
        """Reserve `need` units: free space first, then victims farther than `nearer_than`."""
        nonlocal free
        picked: list[Hashable] = []
        room = free
        for key, dist, size in order:
            if room >= need:
                break
            if key in taken or (nearer_than is not None and not dist > nearer_than):
                continue
            picked.append(key)
            room += size
        if room < need:
            return False
        evict.extend(picked)
        taken.update(picked)
        free = room - need
        return True

    demand_keys = []
    for load in demand:
        # A demand load is never dropped: if pinned state leaves no room, the caller waits.
        if not make_room(load.size, nearer_than=None):
            free = 0
        demand_keys.append(load.key)
    prefetch_keys = []
    spent = 0
    for load in sorted(candidates, key=lambda c: c.distance):
        if load.distance > window or load.distance == UNKNOWN:
            break
        if spent + load.size > budget:
            continue
        if make_room(load.size, nearer_than=load.distance):
            prefetch_keys.append(load.key)
            spent += load.size
    return PrefetchPlan(demand_keys, prefetch_keys, evict)
