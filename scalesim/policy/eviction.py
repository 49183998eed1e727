"""Eviction order over any kind of per-agent state, kept up to date incrementally.

The mechanism (`EvictionPolicy`) tracks each piece of evictable state: its owners (the agents
that use it), size, last use and pins. The order is one small `Priority`: a sort key per piece,
smallest evicted first. The mechanism never walks all state per eviction: it keeps a heap with
lazy invalidation and re-keys only the state of agents whose distance changed.

Contract (exact orders are tested in tests/policy):
- The distance of a piece of state is its nearest owner's distance; with no known owner
  distance it is `UNKNOWN` (infinite): in distance order an unknown agent ranks after every
  known one, so in eviction order its state goes first.
- `DistancePriority`: farthest first; among equal distances (unknown included) least recently
  used first; then first added first.
- `LRUPriority`: least recently used first; then first added first.
- Pinned (in-use) state is never returned as a victim.
- Ties never depend on object identity or hashing: identical call sequences give identical
  decisions in every process (tensor-parallel ranks).
- `admits`: a full lower tier (host memory) takes an upper tier's victim only over state its
  priority ranks below the victim; otherwise the victim is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol

from scalesim.distance import DistanceTable

UNKNOWN = float("inf")


class TrackedState(Protocol):
    """What a priority may read of one tracked piece of state (see `_Tracked`)."""

    sole_owner: str | None  # the owner when there is exactly one, else None
    last_used: float
    seq: int  # unique per piece, in order of `add`
    version: int  # identifies the current heap entry

    def distance(self, get: Callable[[str, float], float]) -> float: ...


class Priority(Protocol):
    """Sort key of one piece of state: the smallest is evicted first.

    `entry` returns the heap entry: the sort key followed by `seq, version, key`. `seq` is
    unique per piece, so `version` and `key` are never compared; the mechanism uses
    `version` to recognise stale entries. `entries` builds every entry at once for a rebuild
    (one comprehension: the bulk path is the hot one after a full distance update); `get`
    maps an agent to its distance (default `UNKNOWN`).
    """

    name: str

    def entry(self, distance: float, last_used: float, seq: int, version: int, key: Hashable) -> tuple: ...

    def entries(self, items: Iterable[tuple[Hashable, TrackedState]], get: Callable[[str, float], float]) -> list[tuple]: ...


@dataclass(frozen=True)
class DistancePriority:
    name: str = "distance"

    def entry(self, distance: float, last_used: float, seq: int, version: int, key: Hashable) -> tuple:
        return (-distance, last_used, seq, version, key)

    def entries(self, items: Iterable[tuple[Hashable, TrackedState]], get: Callable[[str, float], float]) -> list[tuple]:
        inf = UNKNOWN
        return [
            (-(get(t.sole_owner, inf) if t.sole_owner is not None else t.distance(get)), t.last_used, t.seq, t.version, k)
            for k, t in items
        ]


@dataclass(frozen=True)
class LRUPriority:
    name: str = "lru"

    def entry(self, distance: float, last_used: float, seq: int, version: int, key: Hashable) -> tuple:
        return (last_used, seq, version, key)

    def entries(self, items: Iterable[tuple[Hashable, TrackedState]], get: Callable[[str, float], float]) -> list[tuple]:
        return [(t.last_used, t.seq, t.version, k) for k, t in items]


_PRIORITIES: dict[str, Callable[[], Priority]] = {"distance": DistancePriority, "lru": LRUPriority}


def make_priority(name: str) -> Priority:
    """The priority registered under `name`; unknown names raise listing the valid ones."""
    try:
        return _PRIORITIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction priority {name!r} (valid: {', '.join(sorted(_PRIORITIES))})") from None


@dataclass
class _Tracked:
    owners: frozenset[str]
    size: int
    last_used: float
    seq: int
    pins: int = 0
    version: int = 0  # unique per heap entry (policy-wide counter); entries carry it to detect staleness
    sole_owner: str | None = None  # the owner when there is exactly one (the common case)

    def set_owners(self, owners: frozenset[str]) -> None:
        self.owners = owners
        self.sole_owner = next(iter(owners)) if len(owners) == 1 else None

    def distance(self, get: Callable[[str, float], float]) -> float:
        """The nearest owner's distance (`UNKNOWN` if none is known)."""
        return min([get(agent, UNKNOWN) for agent in self.owners], default=UNKNOWN)


def _always_unknown(agent: str, default: float) -> float:
    return default


def admits(victim: tuple, candidates: Iterable[tuple[tuple, int]], room: int, need: int) -> bool:
    """Whether a lower tier should take `need` tokens of an evicted piece whose sort key is `victim`.

    The lower tier has `room` free tokens; `candidates` are its evictable pieces as (sort key,
    size) in its eviction order (smallest key first). Making room would evict them in that order
    until `room` covers `need`; the piece is admitted unless one of those ranks above it (a key
    larger than `victim`: the policy would keep it longer). Belady's rule across two tiers: what
    the policy would evict next anyway is dropped, not kept at the cost of nearer state. With no
    candidates left before the need is covered the piece is admitted (the tier decides).
    """
    for key, size in candidates:
        if room >= need:
            break
        if key > victim:
            return False
        room += size
    return True


class EvictionPolicy:
    """Evictable state of one memory kind, ordered by `priority` over distances in `table`.

    Keys are whatever the memory kind uses (radix node ids, adapter names): hashable, and
    never compared with each other.
    """

    # Rebuild the heap from scratch when stale entries outnumber live ones by this factor.
    _COMPACT_FACTOR = 2

    def __init__(self, priority: Priority, table: DistanceTable | None = None):
        self.priority = priority
        self._table = table
        self._state: dict[Hashable, _Tracked] = {}
        self._by_agent: dict[str, set[Hashable]] = {}
        self._heap: list[tuple] = []
        self._seq = 0
        # Versions are unique across the policy's lifetime, so an entry left in the heap by a
        # removed piece can never pass for the entry of a piece re-added under the same key.
        self._versions = itertools.count(1)
        if table is not None:
            table.subscribe(self.on_distances_changed)

    # -- state tracking -----------------------------------------------------------------

    def add(self, key: Hashable, owners: Iterable[str], size: int, now: float) -> None:
        """Start tracking `key` (resident, evictable unless pinned)."""
        if key in self._state:
            raise KeyError(f"state {key!r} is already tracked")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        tracked = _Tracked(frozenset(), size, now, self._seq)
        tracked.set_owners(frozenset(owners))
        self._seq += 1
        self._state[key] = tracked
        for agent in tracked.owners:
            self._by_agent.setdefault(agent, set()).add(key)
        self._push(key, tracked)

    def remove(self, key: Hashable) -> None:
        """Stop tracking `key` (evicted or freed). Its heap entry becomes stale."""
        tracked = self._state.pop(key)
        for agent in (tracked.sole_owner,) if tracked.sole_owner is not None else tracked.owners:
            keys = self._by_agent[agent]
            keys.discard(key)
            if not keys:
                del self._by_agent[agent]

    def touch(self, key: Hashable, now: float) -> None:
        """Record a use of `key` at time `now` (recency)."""
        tracked = self._state[key]
        tracked.last_used = now
        self._push(key, tracked)

    def set_owners(self, key: Hashable, owners: Iterable[str]) -> None:
        tracked = self._state[key]
        new = frozenset(owners)
        for agent in tracked.owners - new:
            self._by_agent[agent].discard(key)
            if not self._by_agent[agent]:
                del self._by_agent[agent]
        for agent in new - tracked.owners:
            self._by_agent.setdefault(agent, set()).add(key)
        tracked.set_owners(new)
        self._push(key, tracked)

    def pin(self, key: Hashable) -> None:
        """Protect `key` from eviction until a matching `unpin` (pins nest)."""
        self._state[key].pins += 1

    def unpin(self, key: Hashable) -> None:
        tracked = self._state[key]
        if tracked.pins == 0:
            raise ValueError(f"state {key!r} is not pinned")
        tracked.pins -= 1

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def __len__(self) -> int:
        return len(self._state)

    def size_of(self, key: Hashable) -> int:
        return self._state[key].size

    def owners_of(self, key: Hashable) -> frozenset[str]:
        return self._state[key].owners

    def is_pinned(self, key: Hashable) -> bool:
        return self._state[key].pins > 0

    def distance(self, key: Hashable) -> float:
        """The nearest owner's distance, or `UNKNOWN`."""
        return self._state[key].distance(self._getter())

    # -- decisions ----------------------------------------------------------------------

    def victims(self, need: float) -> list[Hashable]:
        """Unpinned keys in eviction order until their sizes sum to at least `need`.

        Returns fewer (possibly none) if all unpinned state together is smaller. Does not
        remove anything: the caller evicts, then calls `remove`.
        """
        chosen: list[Hashable] = []
        freed = 0
        heap, state = self._heap, self._state
        popped: list[tuple] = []
        while freed < need and heap:
            entry = heapq.heappop(heap)
            tracked = state.get(entry[-1])
            if tracked is None or tracked.version != entry[-2]:
                continue  # stale: dropped for good
            popped.append(entry)
            if tracked.pins == 0:
                chosen.append(entry[-1])
                freed += tracked.size
        for entry in popped:  # deciding is not evicting: the heap is left as it was
            heapq.heappush(heap, entry)
        return chosen

    def order(self) -> list[Hashable]:
        """Every unpinned key, in eviction order (first evicted first)."""
        return self.victims(math.inf)

    # -- distance changes ---------------------------------------------------------------

    def on_distances_changed(self, agents: set[str]) -> None:
        """Re-key the state owned by `agents` (the table's listener)."""
        if len(agents) * 4 >= len(self._state):
            self._rebuild()
            return
        seen: set[Hashable] = set()
        get = self._getter()
        for agent in agents:
            for key in self._by_agent.get(agent, ()):
                if key not in seen:
                    seen.add(key)
                    heapq.heappush(self._heap, self._entry(key, self._state[key], get))
        if len(self._heap) > self._COMPACT_FACTOR * max(len(self._state), 16):
            self._rebuild()

    # -- internals ----------------------------------------------------------------------

    def _getter(self) -> Callable[[str, float], float]:
        return self._table.view().get if self._table is not None else _always_unknown

    def _entry(self, key: Hashable, tracked: _Tracked, get: Callable[[str, float], float] | None = None) -> tuple:
        tracked.version = next(self._versions)
        distance = tracked.distance(get or self._getter())
        return self.priority.entry(distance, tracked.last_used, tracked.seq, tracked.version, key)

    def _push(self, key: Hashable, tracked: _Tracked) -> None:
        heapq.heappush(self._heap, self._entry(key, tracked))
        if len(self._heap) > self._COMPACT_FACTOR * max(len(self._state), 16):
            self._rebuild()

    def _rebuild(self) -> None:
        # The one O(n) path (a bulk distance change, or compaction): comprehensions on purpose.
        # Current versions are kept: the old heap, stale entries and all, is dropped wholesale.
        heap = self.priority.entries(self._state.items(), self._getter())
        heapq.heapify(heap)
        self._heap = heap
