"""The CPU tier of LoRA adapters (`--max-loaded-loras`), managed by invocation distance.

This tier lives in SGLang's HTTP process: the tokenizer manager keeps at most
`--max-loaded-loras` adapters loaded (in CPU memory, in the scheduler), unloads the least
recently used one when it needs room, and reloads an unloaded adapter from disk when a request
names it. ScaleSim changes two things, both in this process, where the pushed distances are:

- **Victim**: `LoRARegistry.lru_lora_name` (an AROUND hook) returns the adapter whose nearest
  agent is farthest; LRU among equals (the registry is kept in LRU order).
- **Prefetch**: after each distance update, a background task reloads from disk the unloaded
  adapters of agents due within `LOOKAHEAD`, nearest first, never when the tier is full of
  adapters needed as soon or sooner. A request's own reload goes through SGLang's lock like a
  prefetch, so at most one prefetch load (not a queue of them) can be ahead of it.

Counters (in the stats route, `http.lora_cpu`): hits and misses (a request's adapter loaded or
not when it arrives), prefetch loads issued, used (a request found it) and wasted (unloaded
first), and `wait_seconds`, the time requests spent resolving their adapter (reloads included).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from typing import Any

from scalesim.distance import DistanceTable
from scalesim.engine.sglang.counters import TierCounters

logger = logging.getLogger(__name__)

LOOKAHEAD = 2.0


class CpuTier:
    def __init__(self, table: DistanceTable) -> None:
        self.table = table
        self.agents_of: dict[str, set[str]] = defaultdict(set)  # adapter name -> agents
        # Adapters named by requests still in this process (between arrival and response): a
        # request reloads its adapter and only then takes SGLang's reference on it, so another
        # load in between must not unload it again.
        self.in_use: dict[str, int] = defaultdict(int)
        self.counters = TierCounters("cpu")
        self._task: asyncio.Task | None = None
        self._again = False

    # -- what we know ---------------------------------------------------------------------

    def note(self, agent: str, adapter: str) -> None:
        self.agents_of[adapter].add(agent)

    def distance(self, adapter: str) -> float:
        view = self.table.view()
        return min((view.get(a, math.inf) for a in self.agents_of.get(adapter, ())), default=math.inf)

    def on_request(self, adapter: str, loaded: set[str]) -> None:
        self.counters.looked_up(adapter, adapter in loaded)

    def begin(self, adapter: str) -> None:
        self.in_use[adapter] += 1

    def end(self, adapter: str) -> None:
        self.in_use[adapter] -= 1
        if self.in_use[adapter] <= 0:
            del self.in_use[adapter]

    def report(self) -> dict[str, Any]:
        return self.counters.report()

    # -- victim ---------------------------------------------------------------------------

    def victim(self, registry: dict[str, Any], exclude_pinned: bool) -> str | None:
        """Farthest first; `registry` is in LRU order, so `min` keeps the oldest among equals."""
        names = [n for n, ref in registry.items() if not (exclude_pinned and ref.pinned)]
        idle = [n for n in names if not self.in_use.get(n)]
        names = idle or names  # all in use: SGLang's unload waits for their requests
        if not names:
            return None
        order = {n: i for i, n in enumerate(names)}
        chosen = min(names, key=lambda n: (-self.distance(n), order[n]))
        self.counters.evicted(chosen)
        return chosen

    # -- prefetch -------------------------------------------------------------------------

    def plan(self, registry: dict[str, Any], known: dict[str, Any], capacity: int | None) -> list[str]:
        """Unloaded adapters of agents due within `LOOKAHEAD`, nearest first, that may displace
        a loaded one (a free place, or a loaded adapter needed later than it)."""
        unloaded = ((self.distance(n), n) for n in known if n not in registry)
        wanted = sorted((d, n) for d, n in unloaded if d <= LOOKAHEAD)
        if capacity is None:
            return [n for _, n in wanted]
        loaded = sorted((self.distance(n) for n, ref in registry.items() if not ref.pinned), reverse=True)
        free = capacity - len(registry)
        out = []
        for d, name in wanted:
            if free > 0:
                free -= 1
            elif loaded and loaded[0] > d:
                loaded.pop(0)
            else:
                break
            out.append(name)
        return out

    def schedule(self, tokenizer_manager: Any, capacity: int | None) -> None:
        """Start (or re-arm) the background prefetch after a distance update."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._prefetch(tokenizer_manager, capacity))

    async def _prefetch(self, tm: Any, capacity: int | None) -> None:
        from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput

        while True:
            self._again = False
            registry = tm.lora_registry._registry
            for name in self.plan(registry, tm.lora_ref_cache, capacity):
                if name in tm.lora_registry._registry:
                    continue  # a request reloaded it meanwhile
                ref = tm.lora_ref_cache[name]
                result = await tm.load_lora_adapter(LoadLoRAAdapterReqInput(
                    lora_name=ref.lora_name, lora_path=ref.lora_path, pinned=ref.pinned))
                if result.success:
                    self.counters.prefetch_issued(name)
                elif "already loaded" not in (result.error_message or ""):
                    logger.warning("ScaleSim: prefetch of adapter %s failed: %s", name, result.error_message)
                    break
            if not self._again:
                return


_TIER: CpuTier | None = None  # set in the HTTP process by `install`


def enabled() -> bool:
    """Distance-managed LoRA tiers, unless `serve` was given SGLang's --lora-eviction-policy."""
    import os

    from scalesim.engine.sglang.lora_slots import POLICY_ENV

    return os.environ.get(POLICY_ENV) == "distance"


def install(table: DistanceTable) -> CpuTier:
    global _TIER
    _TIER = CpuTier(table)
    return _TIER


def around_lru_lora_name(original: Any, registry: Any, exclude_pinned: bool = False) -> Any:
    """AROUND hook on `LoRARegistry.lru_lora_name` (async, like the original): the farthest
    adapter in the HTTP process where ScaleSim's routes run; SGLang's LRU elsewhere."""
    tier = _TIER
    if tier is None or not enabled():
        return original(registry, exclude_pinned=exclude_pinned)

    async def farthest() -> str | None:
        async with registry._registry_lock.reader_lock:
            return tier.victim(registry._registry, exclude_pinned)

    return farthest()


def around_resolve_lora_path(original: Any, tokenizer_manager: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    """AROUND hook on `TokenizerManager._resolve_lora_path` (async): time requests wait there."""
    tier = _TIER
    if tier is None:
        return original(tokenizer_manager, obj, *args, **kwargs)

    async def timed() -> Any:
        import time

        start = time.perf_counter()
        try:
            return await original(tokenizer_manager, obj, *args, **kwargs)
        finally:
            tier.counters.waited(time.perf_counter() - start)

    return timed()
