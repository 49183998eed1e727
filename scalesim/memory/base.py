"""`AgentMemory`: the small interface each kind of per-agent state implements.

A memory kind (KV prefixes, LoRA adapters, later whole models) holds pieces of state, each
identified by a key, owned by one or more agents, with a size in the kind's unit (bytes or
tokens), living in a tier. The policy decides; the memory kind moves bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol


class Tier(enum.Enum):
    DEVICE = "device"  # usable by the next batch
    HOST = "host"  # a load away (host memory, CPU-side adapter)
    ABSENT = "absent"  # must be recomputed or read from disk


@dataclass
class MemoryStats:
    """Counters every memory kind reports (the stats route and metrics read these)."""

    hits: int = 0
    misses: int = 0
    demand_loads: int = 0
    prefetches_issued: int = 0
    prefetches_used: int = 0
    prefetches_wasted: int = 0
    evictions: int = 0
    bytes_loaded: int = 0


class AgentMemory(Protocol):
    """Contract:

    - `tier(key)` says where a piece is; `size(key)` its size; `owners(key)` its agents.
    - `load(key, prefetch=...)` brings a piece to the device tier; the caller has made room
      (the policy chose victims). A demand load (`prefetch=False`) is never cancelled.
    - `evict(key)` moves a piece off the device; pinned pieces cannot be evicted.
    - `pin(key)` / `unpin(key)` protect a piece while a request uses it (pins nest).
    - `capacity` and `used` are in the same unit as sizes; `used <= capacity` always.
    """

    kind: str
    capacity: int
    stats: MemoryStats

    @property
    def used(self) -> int: ...

    def tier(self, key: Hashable) -> Tier: ...

    def size(self, key: Hashable) -> int: ...

    def owners(self, key: Hashable) -> frozenset[str]: ...

    def load(self, key: Hashable, *, prefetch: bool) -> None: ...

    def evict(self, key: Hashable) -> None: ...

    def pin(self, key: Hashable) -> None: ...

    def unpin(self, key: Hashable) -> None: ...
