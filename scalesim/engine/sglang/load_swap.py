"""Loads from host memory swap with what they push out of the device, one at a time.

With the host tier written back, a load from host memory makes device room by evicting victims,
and the victims are copied to host memory, which needs host room. The loaded prefix's own host
copy would be that room (once loaded it is a duplicate SGLang reclaims first), but it stays
pinned until SGLang acknowledges the load, at the next scheduler iteration. SGLang admits a
batch's requests one after another and queues each one's load, starting them all together when
the batch is built: so every load's victims push out host state the tiers would have kept (as
many tokens as the batch loads), and the loaded copies become duplicates only afterwards. The
social network at 60 agents (its hints are weak, so most callers are loaded on demand, not ahead)
showed it as up to 8,716 duplicate host tokens after a step's loads, 10% of the tiers (the server
missed like a single pool 9% smaller; `host_admission` declining nearer victims was the other
part). With both fixed: 11 misses after first calls in two runs, 18 before (docs/bench.md).

An AROUND hook on `UnifiedRadixCache.load_back` (demand loads and `kv_prefetch`'s alike) settles
the loads still pending before a load whose victims' copies do not fit in free host memory plus
reclaimable duplicates: it starts the queued ones, waits for every started one and acknowledges
them as SGLang's own `loading_check` does, so their host copies are reclaimable when the next
victims need room. On CPU the copy runs in the scheduler thread either way (`kv_prefetch`); on
GPU the scheduler waits for copies the batch would otherwise overlap with its forward pass, and
only when host memory is short (not measured on a GPU yet). Counted as `loads_settled` (host_kv).
Only with our eviction policy and write-back, without SGLang's buffer pipeline or an external
linker; any failure leaves SGLang's own order (counted as a hook error).
"""

from __future__ import annotations

import logging
from typing import Any

from scalesim.engine.sglang.eviction import AgentDistanceStrategy
from scalesim.engine.sglang.host_tier import host_room
from scalesim.engine.sglang.kv_prefetch import device_room, host_only_tokens, prefetcher
from scalesim.engine.sglang.scheduler_state import current

logger = logging.getLogger(__name__)


def around_load_back(original: Any, cache: Any, node_id: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        if _pending_loads_block_swap(cache, node_id):
            settle_pending_loads(cache)
            prefetcher().counters.add("loads_settled")
    except Exception:  # advisory: SGLang's own order stands
        state = current()
        state.hook_errors += 1
        if state.hook_errors <= 10:
            logger.exception("ScaleSim load swap failed (SGLang's order kept)")
    return original(cache, node_id, *args, **kwargs)


def _pending_loads_block_swap(cache: Any, node_id: Any) -> bool:
    """Whether earlier loads are pending and this one's device victims need host room that only
    their host copies (reclaimable once acknowledged) would give."""
    controller = getattr(cache, "cache_controller", None)
    if (controller is None or not (controller.load_queue or controller.ack_load_queue)
            or getattr(controller, "write_policy", None) != "write_back"
            or getattr(cache, "buffer_pipeline", None) is not None or getattr(cache, "linker", None) is not None
            or not isinstance(cache.tree_core.eviction_strategy, AgentDistanceStrategy)):
        return False
    tokens = host_only_tokens(cache.tree_core.node_by_id(node_id))
    _, written = device_room(cache, tokens)  # SGLang's own victims (any agent's), whole nodes
    return written > host_room(cache)


def settle_pending_loads(cache: Any) -> None:
    """Start the queued loads, wait for every started one and acknowledge them all (SGLang's
    `loading_check` with a count: every rank runs this at the same point, so no all-reduce)."""
    controller = cache.cache_controller
    cache.ready_to_load_host_cache()
    for ack in controller.ack_load_queue:
        ack.finish_event.synchronize()
    cache.loading_check(finish_count=len(controller.ack_load_queue))
