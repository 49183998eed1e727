"""An in-memory `AgentMemory` driven by an `EvictionPolicy`: the reference the tests run.

It moves no tensors; it keeps exact books (tiers, sizes, pins, counters), which is what the
policy contract is about. Real kinds (SGLang's radix cache, LoRA slots) implement the same
protocol in `scalesim.engine.sglang`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from scalesim.memory.base import MemoryStats, Tier
from scalesim.policy import EvictionPolicy, Load, PrefetchPlan, plan_prefetch


class CapacityError(RuntimeError):
    """Not enough unpinned device space for a demand load."""


class ReferenceMemory:
    """Device tier of `capacity` units over an unbounded host tier."""

    def __init__(self, kind: str, capacity: int, policy: EvictionPolicy):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.kind = kind
        self.capacity = capacity
        self.stats = MemoryStats()
        self.policy = policy
        self._sizes: dict[Hashable, int] = {}
        self._owners: dict[Hashable, frozenset[str]] = {}
        self._prefetched: set[Hashable] = set()  # loaded ahead and not yet used
        self._used = 0

    # -- catalogue ----------------------------------------------------------------------

    def register(self, key: Hashable, owners: Iterable[str], size: int) -> None:
        """Make a piece known (on the host tier)."""
        if size < 1 or size > self.capacity:
            raise ValueError(f"size of {key!r} must be in [1, {self.capacity}], got {size}")
        self._sizes[key] = size
        self._owners[key] = frozenset(owners)

    @property
    def used(self) -> int:
        return self._used

    def tier(self, key: Hashable) -> Tier:
        if key in self.policy:
            return Tier.DEVICE
        return Tier.HOST if key in self._sizes else Tier.ABSENT

    def size(self, key: Hashable) -> int:
        return self._sizes[key]

    def owners(self, key: Hashable) -> frozenset[str]:
        return self._owners[key]

    # -- moves --------------------------------------------------------------------------

    def load(self, key: Hashable, *, prefetch: bool, now: float = 0.0) -> None:
        size = self._sizes[key]
        if key in self.policy:
            return
        if self._used + size > self.capacity:
            raise CapacityError(f"no room for {key!r}: {self._used} + {size} > {self.capacity}")
        self.policy.add(key, self._owners[key], size, now)
        self._used += size
        self.stats.bytes_loaded += size
        if prefetch:
            self.stats.prefetches_issued += 1
            self._prefetched.add(key)
        else:
            self.stats.demand_loads += 1

    def evict(self, key: Hashable) -> None:
        if self.policy.is_pinned(key):
            raise ValueError(f"{key!r} is pinned")
        self.policy.remove(key)
        self._used -= self._sizes[key]
        self.stats.evictions += 1
        if key in self._prefetched:
            self._prefetched.discard(key)
            self.stats.prefetches_wasted += 1

    def pin(self, key: Hashable) -> None:
        self.policy.pin(key)

    def unpin(self, key: Hashable) -> None:
        self.policy.unpin(key)

    # -- what a request does ------------------------------------------------------------

    def access(self, key: Hashable, now: float) -> bool:
        """A request uses `key` now: hit, or evict by policy and demand-load. Returns hit.

        The piece stays pinned until `release(key)`.
        """
        hit = key in self.policy
        if hit:
            self.stats.hits += 1
            if key in self._prefetched:
                self._prefetched.discard(key)
                self.stats.prefetches_used += 1
        else:
            self.stats.misses += 1
            need = self._used + self._sizes[key] - self.capacity
            if need > 0:
                for victim in self.policy.victims(need):
                    self.evict(victim)
            self.load(key, prefetch=False, now=now)
        self.policy.touch(key, now)
        self.pin(key)
        return hit

    def release(self, key: Hashable) -> None:
        self.unpin(key)

    def prefetch(self, candidates: Iterable[Load], *, budget: int, window: float, now: float) -> PrefetchPlan:
        """Plan with `plan_prefetch` and carry the plan out (evictions, then loads)."""
        absent = [c for c in candidates if c.key not in self.policy]
        plan = plan_prefetch(self.policy, self.capacity - self._used, [], absent, budget=budget, window=window)
        for victim in plan.evict:
            self.evict(victim)
        for key in plan.prefetch:
            self.load(key, prefetch=True, now=now)
        return plan
