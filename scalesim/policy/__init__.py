"""One eviction order and one prefetch planner for every memory kind (KV prefixes, adapters, ...).

- `EvictionPolicy`: tracks evictable state incrementally and answers "who goes first", ordered
  by a small `Priority` (like SGLang's `get_priority`): `DistancePriority` (farthest owner
  distance first, LRU among equals) or `LRUPriority` (the stock baseline).
- `admits`: whether a full lower tier should take an upper tier's victim (not over state the
  priority ranks above it).
- `plan_prefetch`: what to load ahead, nearest agents first, within a budget and a window.
Pure Python, no SGLang. The Belady oracle for traces lives in `scalesim.trace`.
"""

from scalesim.policy.eviction import (
    UNKNOWN,
    DistancePriority,
    EvictionPolicy,
    LRUPriority,
    Priority,
    admits,
    make_priority,
)
from scalesim.policy.prefetch import Load, PrefetchPlan, plan_prefetch

__all__ = [
    "UNKNOWN",
    "DistancePriority",
    "EvictionPolicy",
    "LRUPriority",
    "Load",
    "PrefetchPlan",
    "Priority",
    "admits",
    "make_priority",
    "plan_prefetch",
]
