"""Which device victims SGLang's written-back host tier takes: not one farther than its own copies.

With `--hicache-write-policy write_back` SGLang copies every prefix the device evicts to host
memory and, when host memory is full, evicts host copies to make room (ours: farthest agent
first). The victim itself is not among those candidates, so a victim farther than every host
copy still pushes out the farthest of them: host memory can end up holding the agents needed
last while nearer ones are recomputed (`tests/e2e/test_host_tier.py`: agents arriving farthest
last). The copies it would push out are taken in SGLang's host eviction order, chains included
(`host_eviction_order`): an agent's host state is its prompt with its call's output below, and
until 2026-11-30 only the outputs (a few tokens each) were counted, so a victim nearer than
every farther agent's prompt was declined too (the social network at 60 agents: 11 declined
copies, 19k tokens; two runs each, 22/19 misses after first calls with that hook, 15/17 without).

An AROUND hook on `UnifiedRadixCache._execute_and_commit_kv_backup` with `write_back=True` (the
eviction loop's deferred copy of a device victim, and nothing else for a KV-only model) declines
the copy when `scalesim.policy.admits` says the copies it would push out rank above the victim
(the same sort key the tree evicts by). SGLang then takes its own path for a copy that found no
room: it drops the victim's subtree (`drop_subtree_no_host`) and the device evicts on. SGLang logs
a warning per such drop ("host memory pressure"); the ones this hook caused are filtered out and
counted instead (host_kv `writeback_declined`, and `writeback_declined_tokens`: what the drop
takes, the victim and its host-only descendants).

Only with our eviction strategy (`--radix-eviction-policy scalesim`, whichever `order`), the
Python tree core, and no storage buffer pipeline; any failure admits the copy (SGLang's own
behaviour) and counts a hook error.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any, Iterator

from scalesim.engine.sglang.eviction import AgentDistanceStrategy
from scalesim.engine.sglang.host_tier import host_room
from scalesim.engine.sglang.kv_prefetch import prefetcher
from scalesim.engine.sglang.scheduler_state import current
from scalesim.policy.eviction import admits

logger = logging.getLogger(__name__)

CACHE_LOGGER = "sglang.srt.mem_cache.unified_radix_cache"
# SGLang's warnings after a failed write-back copy: dropped, or kept on the device (locked).
DROP_WARNINGS = ("write_back: KV subtree dropped without backup",
                 "write_back: backup failed under host memory pressure")


class DeclinedDropFilter(logging.Filter):
    """Drops SGLang's warning for a subtree dropped because this hook declined its copy (one
    warning per decline: the eviction loop logs right after the copy returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending and isinstance(record.msg, str) and record.msg.startswith(DROP_WARNINGS):
            self.pending -= 1
            return False
        return True


_FILTER = DeclinedDropFilter()


def install_log_filter() -> None:
    """Idempotent: SGLang's logging setup replaces handlers, not a logger's filters."""
    log = logging.getLogger(CACHE_LOGGER)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)


def around_execute_and_commit_kv_backup(original: Any, cache: Any, action: Any, *args: Any, **kwargs: Any) -> Any:
    write_back = kwargs.get("write_back", args[0] if args else False)
    if write_back:
        try:
            decline = declined(cache, action)
            dropped = dropped_tokens(cache.tree_core.node_by_id(action.node_ids[-1])) if decline else 0
        except Exception:  # advisory: SGLang's own choice (copy it) stands
            state = current()
            state.hook_errors += 1
            if state.hook_errors <= 10:
                logger.exception("ScaleSim host admission failed (copy admitted)")
            decline = False
        if decline:
            counters = prefetcher().counters
            counters.add("writeback_declined")
            counters.add("writeback_declined_tokens", dropped)
            _FILTER.pending += 1
            return 0  # what SGLang's copy returns when host memory has no room
    return original(cache, action, *args, **kwargs)


def declined(cache: Any, action: Any) -> bool:
    """Whether host memory should not take the `BackupKV` chain `action` (parent first; its last
    node is the device's victim)."""
    core = cache.tree_core
    strategy = core.eviction_strategy
    controller = getattr(cache, "cache_controller", None)
    if (not isinstance(strategy, AgentDistanceStrategy) or controller is None
            or getattr(cache, "buffer_pipeline", None) is not None or not action.node_ids):
        return False
    nodes = [core.node_by_id(node_id) for node_id in action.node_ids]
    need = sum(len(node.key) for node in nodes if not node.backuped)
    if controller.mem_pool_host.available_size() >= need:
        return False  # free memory alone covers it: no walk over SGLang's duplicates on every copy
    room = host_room(cache)  # free, plus the duplicates SGLang reclaims first (not those in flight)
    if room >= need:
        return False
    return not admits(strategy.get_priority(nodes[-1]), host_eviction_order(core, strategy), room, need)


def dropped_tokens(victim: Any) -> int:
    """The tokens SGLang drops for a declined copy (`drop_subtree_no_host`): the device victim and
    its descendants, all host-only (a device leaf's children are). Not the copy's whole chain: its
    unbacked parents stay on the device."""
    tokens, stack = 0, [victim]
    while stack:
        node = stack.pop()
        tokens += len(node.key)
        stack.extend(node.children.values())
    return tokens


def host_eviction_order(core: Any, strategy: Any) -> Iterator[tuple[tuple, int]]:
    """(sort key, tokens) of host state in the order SGLang's host eviction takes it
    (`FullComponent.drive_host_eviction`): its evictable host leaves by the strategy's key, and a
    parent joins them once its last child has gone. An agent's state in host memory is a chain
    (its prompt, then its call's output), so its leaf alone is a few tokens: counting leaves only
    would find no room behind the farther agents' outputs and decline a nearer victim.
    A heap popped lazily, as SGLang walks it: `admits` usually stops after the first few."""
    heap = [(strategy.get_priority(node), node) for node in core.evictable_host_leaves]  # keys are unique
    heapq.heapify(heap)
    gone: dict[int, int] = {}  # parent id -> its children taken so far
    while heap:
        key, node = heapq.heappop(heap)
        yield key, len(node.key)
        parent = node.parent
        if parent is None or parent is core.root_node:
            continue
        gone[parent.id] = gone.get(parent.id, 0) + 1
        if gone[parent.id] == len(parent.children) and _host_only_and_unlocked(parent):
            heapq.heappush(heap, (strategy.get_priority(parent), parent))


def _host_only_and_unlocked(node: Any) -> bool:
    """SGLang's host-leaf test (`UnifiedTreeCore._is_host_leaf`) but for the children."""
    return (node.evicted and node.backuped
            and not any(data.host_lock_ref > 0 or data.lock_ref > 0 for data in node.component_data))
