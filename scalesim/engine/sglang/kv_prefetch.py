"""Proactive host-to-device loads of the nearest agents' KV prefixes (SGLang's host tier).

SGLang loads a prefix back from host memory only when its request is admitted. Between batches
(a BEFORE hook on `Scheduler.get_next_batch_to_run`), after a distance update, this loads ahead
the prefixes of the nearest agents (pushed distance within `LOOKAHEAD`, nearest first) whose
prefix (the part their calls share, `SchedulerState.prefix_node`; their whole latest path until two
calls forked) is in host memory only, and holds each on the device (a tree lock) until the
agent's next request has used it, the agent is no longer near, or `HOLD_UPDATES` distance
updates or `HOLD_STEPS` busy scheduler iterations pass (both counts are the same on every rank).
Only iterations with requests running or waiting count: an idle server polls its sockets
thousands of times between two simulation steps, and one step of 32-token answers is already
some 200 iterations on CPU, so a bound in plain iterations released a prefetch made for the
next step just before that step came (seen in the debate benchmark). The bound is for a
simulation that stopped pushing distances while other traffic goes on.
Rules:

- A demand load always goes first: nothing is prefetched while requests wait or SGLang has
  loads queued, or when no load slot is free.
- Never displace a nearer agent's state: a load must fit in free device memory plus evictable
  state of farther agents (the eviction that makes room takes the farthest first).
- Swap, do not drop: with the host tier written back and full, making device room copies the
  victims to host memory, but the host copy of the prefix being loaded stays until its load is
  acknowledged; only then is it a duplicate SGLang can reclaim. Loads issued together (SGLang's
  demand loads for a batch: all of a step's callers at once) therefore push out host state the
  tiers would have held once loaded (debate, 60 agents: the distinct tokens held fell by 10,000,
  some 6 prefixes, at every step the callers were loaded on demand). So the scan covers every
  agent within `LOOKAHEAD` (not a fixed few: a step has as many callers as the simulation has
  active agents), resumes on the next iteration when load slots ran out, and a load whose
  victims' copies do not fit in free host memory plus reclaimable duplicates waits while an
  earlier load is in flight; with nothing in flight the shortfall is real and the policy decides.
  Waiting an iteration keeps a GPU prefetch overlapped with compute; SGLang's demand loads for a
  batch cannot wait, so `load_swap` settles the earlier loads before theirs instead.
- Held prefixes are bounded (`MAX_HELD_FRACTION` of the device pool).
- On GPU the copy overlaps with compute: it runs on SGLang's host-to-device stream and the
  compute stream waits on its finish event. On CPU it runs where SGLang runs it, in the scheduler
  thread, between batches: PyTorch's intra-op threads already use every core, so a copy thread
  only competed with the forward pass (`device_copy`, measured).

Counters (stats `host_kv`, Prometheus tier `host_kv`): `hits` (finished requests with prompt
tokens loaded from host memory), `misses` (finished requests with nothing cached), `host_tokens`,
`prefetch_issued`, `prefetch_used`, `prefetch_wasted` (released unused), `prefetch_tokens`,
`bytes_h2d` and `bytes_d2h` (all transfers, demand and prefetch), `writeback_declined` and
`writeback_declined_tokens` (device victims host memory did not take, `host_admission`),
`loads_settled` (earlier loads finished before a load that needed their host room, `load_swap`),
and `wait_seconds`: time the scheduler spent on demand loads (on CPU the copy itself; on GPU only
the launch, as the batch then waits on the device).
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

from scalesim.engine.sglang.counters import TierCounters
from scalesim.engine.sglang.device_copy import copier_for
from scalesim.engine.sglang.host_tier import host_room
from scalesim.engine.sglang.scheduler_state import current, guarded

logger = logging.getLogger(__name__)

LOOKAHEAD = 1.0
HOLD_UPDATES = 3  # a hold ends after this many distance updates...
HOLD_STEPS = 2000  # ...or this many busy scheduler iterations (so a stalled simulation frees it too)
MAX_HELD_FRACTION = 0.5


@dataclass
class Hold:
    node_id: int
    params: Any  # DecLockRefParams
    tokens: int
    epoch: int
    step: int


class KVPrefetcher:
    def __init__(self) -> None:
        self.enabled = True
        self.prefix_end: dict[str, weakref.ref] = {}  # agent -> the node to load ahead for it (`note`)
        self.held: dict[str, Hold] = {}
        self.counters = TierCounters("host_kv", ("host_tokens", "prefetch_tokens", "bytes_h2d", "bytes_d2h",
                                                 "writeback_declined", "writeback_declined_tokens", "loads_settled"))
        self.prefetching = False
        self._scanned_pushes = -1
        self._rescan = False  # the last scan stopped early (slots, or a swap waiting): scan again
        self.steps = 0  # busy scheduler iterations seen (requests running or waiting)

    # -- bookkeeping from the tree's events -------------------------------------------------

    def note(self, cache: Any, agent: str, node: Any) -> None:
        """The agent's request was checkpointed: its hold (if any) has been used. `node` is
        what to load ahead for its next call: the end of its shared prefix when known."""
        self.prefix_end[agent] = weakref.ref(node)
        hold = self.held.pop(agent, None)
        if hold is not None:
            cache.dec_lock_ref(hold.node_id, hold.params)
            self.counters.add("prefetch_used")

    def on_release(self, req: Any) -> None:
        if not req.finished():
            return
        host = getattr(req, "cached_tokens_host", 0) or 0
        if host > 0:
            self.counters.add("hits")
            self.counters.add("host_tokens", host)
        elif not req.cached_tokens:
            self.counters.add("misses")  # nothing cached in either tier

    def reset(self) -> None:
        """The tree was flushed: its locks went with it."""
        self.held.clear()
        self.prefix_end.clear()

    def report(self) -> dict[str, Any]:
        return {"host_kv": {**self.counters.report(), "held": len(self.held),
                            "held_tokens": sum(h.tokens for h in self.held.values())}}

    # -- the scan -------------------------------------------------------------------------

    def step(self, scheduler: Any) -> None:
        cache = scheduler.tree_cache
        controller = getattr(cache, "cache_controller", None)
        if not self.enabled or controller is None or not hasattr(cache, "load_back"):
            return
        state = current()
        if scheduler.waiting_queue or not _batch_empty(getattr(scheduler, "running_batch", None)):
            self.steps += 1
        self._expire(cache, state)
        if state.pushes_applied == self._scanned_pushes and not self._rescan:
            return  # nothing changed since the last scan
        if scheduler.waiting_queue or controller.load_queue or not cache.has_free_load_back_slot():
            return  # demand first; try again next iteration
        self._scanned_pushes = state.pushes_applied
        self._rescan = False
        budget = int(MAX_HELD_FRACTION * scheduler.max_total_num_tokens) - sum(h.tokens for h in self.held.values())
        order = None  # the device's eviction order, sorted once per scan and again after each load
        for agent, distance in state.table.within(LOOKAHEAD):
            if budget <= 0:
                break
            if agent in self.held:
                continue
            node = _host_anchor(self.prefix_end.get(agent, lambda: None)())
            if node is None:
                continue  # on the device already, or gone from host memory too
            tokens = host_only_tokens(node)
            if tokens > budget:
                continue
            if order is None:
                order = eviction_order(cache)
            fits, written = device_room(cache, tokens, order, distance)
            if not fits:
                continue
            # Cheap tests first: `host_room` walks SGLang's duplicates.
            if written and controller.ack_load_queue and written > host_room(cache):
                self._rescan = True  # its host copy frees up once loaded (see "Swap, do not drop")
                break
            if not cache.load_back(node.id):
                continue
            order = None  # the load evicted some of it
            self.prefetching = True
            try:
                producer = cache.ready_to_load_host_cache()
            finally:
                self.prefetching = False
            _order_after_load(controller, producer)
            self.held[agent] = Hold(node.id, cache.inc_lock_ref(node.id).to_dec_params(), tokens,
                                    state.table.epoch, self.steps)
            budget -= tokens
            self.counters.add("prefetch_issued")
            self.counters.add("prefetch_tokens", tokens)
            if not cache.has_free_load_back_slot():
                self._rescan = True  # the rest when a slot frees, not at the next push
                break

    def _expire(self, cache: Any, state: Any) -> None:
        for agent, hold in list(self.held.items()):
            d = state.table.get(agent)  # pushed distances choose what is prefetched; so here
            if (d is None or d > LOOKAHEAD or state.table.epoch - hold.epoch >= HOLD_UPDATES
                    or self.steps - hold.step >= HOLD_STEPS):
                cache.dec_lock_ref(hold.node_id, hold.params)
                del self.held[agent]
                self.counters.add("prefetch_wasted")


def device_room(cache: Any, tokens: int, order: list[Any] | None = None,
                farther_than: float = -math.inf) -> tuple[bool, int]:
    """Whether free device memory plus evictable state of agents farther than `farther_than`
    covers `tokens`, and how many of the tokens evicted for it have no host copy: with the host
    tier written back, making room copies those to host memory. Victims in `order`
    (`eviction_order`, sorted here only when free memory falls short and none is given);
    evicting a leaf exposes its parent, so the chain goes with it."""
    from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

    room = cache._component_available_size(ComponentType.FULL)
    if room >= tokens:
        return True, 0
    if order is None:
        order = eviction_order(cache)
    write_back = getattr(cache.cache_controller, "write_policy", None) == "write_back"
    state = current()
    written = 0
    for leaf in order:
        node = leaf
        while (node.parent is not None and not node.evicted and len(node.children) <= 1
               and state.node_distance(node) > farther_than):
            room += len(node.key)
            if write_back and not node.backuped:
                written += len(node.key)
            node = node.parent
        if room >= tokens:
            return True, written
    return False, written


def eviction_order(cache: Any) -> list[Any]:
    """The device's evictable leaves in the order SGLang evicts them (the strategy's priority)."""
    priority = cache.tree_core.eviction_strategy.get_priority
    return [leaf for _, _, leaf in sorted((priority(leaf), leaf.id, leaf)
                                          for leaf in cache.tree_core.evictable_device_leaves)]


def _batch_empty(batch: Any) -> bool:
    return batch is None or batch.is_empty()


def _host_anchor(node: Any) -> Any:
    """The deepest node of the agent's path that is in host memory and not on the device
    (its generated tail may have been dropped without a host copy), or None."""
    while node is not None and node.parent is not None and node.evicted:
        if node.backuped:
            return node
        node = node.parent
    return None


def host_only_tokens(node: Any) -> int:
    """Tokens on the path from `node` up to its first ancestor still on the device."""
    tokens = 0
    while node is not None and node.parent is not None and node.evicted:
        tokens += len(node.key)
        node = node.parent
    return tokens


def _order_after_load(controller: Any, producer: int) -> None:
    """Later compute waits for the prefetch's load (on the device, for CUDA)."""
    if producer >= 0:
        device = controller.mem_pool_device_allocator.device
        copier_for(device).order_after(controller.layer_done_counter.events[producer].finish_event)


_PREFETCHER: KVPrefetcher | None = None


def prefetcher() -> KVPrefetcher:
    global _PREFETCHER
    if _PREFETCHER is None:
        _PREFETCHER = KVPrefetcher()
    return _PREFETCHER


@guarded
def before_next_batch(scheduler: Any, *args: Any, **kwargs: Any) -> None:
    prefetcher().step(scheduler)


def around_start_loading(original: Any, controller: Any, *args: Any, **kwargs: Any) -> Any:
    """`HiCacheController.start_loading`: bytes moved host to device; demand loads' time."""
    p = prefetcher()
    before = len(controller.ack_load_queue)
    start = time.perf_counter()
    result = original(controller, *args, **kwargs)
    if len(controller.ack_load_queue) > before:
        p.counters.add("bytes_h2d", int(controller.ack_load_queue[-1].num_bytes or 0))
        if not p.prefetching:
            p.counters.waited(time.perf_counter() - start)
    return result


def around_start_writing(original: Any, controller: Any, *args: Any, **kwargs: Any) -> Any:
    """`HiCacheController.start_writing`: bytes moved device to host (write-through, demotion)."""
    before = len(controller.ack_write_queue)
    result = original(controller, *args, **kwargs)
    if len(controller.ack_write_queue) > before:
        prefetcher().counters.add("bytes_d2h", int(controller.ack_write_queue[-1].num_bytes or 0))
    return result


__all__ = ["KVPrefetcher", "LOOKAHEAD", "around_start_loading", "around_start_writing", "before_next_batch",
           "device_room", "eviction_order", "host_only_tokens", "prefetcher"]
