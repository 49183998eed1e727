"""Agent-aware eviction for SGLang's radix caches (UnifiedRadixCache and the plain RadixCache).

SGLang's trees pick victims among their evictable leaves by `EvictionStrategy.get_priority(node)`,
smallest first. Our strategy, registered as `--radix-eviction-policy scalesim`, answers with the
core policy's sort key (`scalesim.policy.eviction`: the same `Priority` every memory kind uses)
over the node's distance, which is its nearest owner's (`SchedulerState.node_distance`), and
SGLang's own recency counter (`node.last_access_time`); node ids break ties, so every rank
decides the same. With no distances at all every node is `UNKNOWN` and the order is LRU.

The hooks below keep `SchedulerState` up to date from the tree's own events: a checkpoint
tags the request's path with its agent (and marks the call's tail past the agent's prefix), a
split copies owners to the new parent, a victim is counted by reason, a released request counts
its cached tokens, a reset forgets every node.

`--radix-eviction-policy-config` (JSON) takes `order` ("distance" or "lru": the core priority),
`learned` (use learned distances for agents with no pushed one; default true),
`agent_series` (how many agents get their own stats and Prometheus series; default 64) and
`prefetch` (with the host tier on, load the nearest agents' prefixes ahead; default true).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sglang.srt.mem_cache.evict_policy import EvictionStrategy

from scalesim.engine.sglang.counters import DEFAULT_MAX_AGENT_SERIES
from scalesim.engine.sglang.kv_prefetch import prefetcher
from scalesim.engine.sglang.lora_slots import tracker as adapters
from scalesim.engine.sglang.scheduler_state import current, guarded
from scalesim.policy.eviction import UNKNOWN, make_priority

logger = logging.getLogger(__name__)

POLICY_NAME = "scalesim"
# The default Rust tree core only knows SGLang's built-in policies by name.
TREE_CORE_ENV = "SGLANG_UNIFIED_RADIX_TREE_CORE_BACKEND"
TREE_CORE = "python"


@dataclass(frozen=True)
class StrategyConfig:
    order: str = "distance"
    learned: bool = True
    agent_series: int = DEFAULT_MAX_AGENT_SERIES
    prefetch: bool = True  # loads ahead of requests: host-to-device KV (host tier on) and adapter slots


def parse_config(config: dict[str, Any] | None) -> StrategyConfig:
    """Validate `--radix-eviction-policy-config` for our policy; `ValueError` names the field."""
    config = dict(config or {})
    unknown = config.keys() - StrategyConfig.__dataclass_fields__.keys()
    if unknown:
        valid = ", ".join(StrategyConfig.__dataclass_fields__)
        raise ValueError(f"unknown {POLICY_NAME} eviction option(s) {sorted(unknown)} (valid: {valid})")
    parsed = StrategyConfig(**config)
    make_priority(parsed.order)  # raises for an unknown order
    for flag in ("learned", "prefetch"):
        if not isinstance(getattr(parsed, flag), bool):
            raise ValueError(f"{flag} must be true or false, got {getattr(parsed, flag)!r}")
    if isinstance(parsed.agent_series, bool) or not isinstance(parsed.agent_series, int) or parsed.agent_series < 0:
        raise ValueError(f"agent_series must be a non-negative integer, got {parsed.agent_series!r}")
    return parsed


class AgentDistanceStrategy(EvictionStrategy):
    """Farthest agent first, then least recently used (see the module docstring)."""

    def __init__(self, **config: Any) -> None:
        parsed = parse_config(config)
        self.priority = make_priority(parsed.order)
        self.state = current()
        self.state.learned_enabled = parsed.learned
        self.state.counters.max_agent_series = parsed.agent_series
        prefetcher().enabled = parsed.prefetch
        adapters().prefetch_enabled = parsed.prefetch

    def get_priority(self, node: Any) -> tuple:
        # version 0 and key None: SGLang compares (priority, node) tuples, and the unique
        # node id in the `seq` slot settles every comparison before them.
        try:
            distance = self.state.node_distance(node)
        except Exception:  # advisory: a bookkeeping failure must not stop an eviction
            self.state.hook_errors += 1
            distance = UNKNOWN
        return self.priority.entry(distance, node.last_access_time, node.id, 0, None)


def register_policy() -> None:
    """Make `scalesim` a valid `--radix-eviction-policy` (CLI choice and factory); idempotent."""
    from sglang.srt.arg_groups.choices import RADIX_EVICTION_POLICY_CHOICES, add_radix_eviction_policy_choices
    from sglang.srt.mem_cache import utils

    if POLICY_NAME not in RADIX_EVICTION_POLICY_CHOICES:
        add_radix_eviction_policy_choices([POLICY_NAME])
    utils._EVICTION_POLICY_FACTORIES[POLICY_NAME] = AgentDistanceStrategy


# -- hooks (registered by plugin.load; they run in the scheduler process; see `guarded`) ---


@guarded
def after_checkpoint(result: Any, cache: Any, req: Any, *args: Any, **kwargs: Any) -> None:
    node = req.last_node
    if isinstance(node, int):  # UnifiedRadixCache keeps a NodeId; RadixCache the node
        try:
            node = cache.tree_core.node_by_id(node)
        except NotImplementedError:
            # The Rust tree core (a built-in policy was chosen) has no Python nodes to tag:
            # nothing to do, as no policy of ours reads ownership there.
            return
    state = current()
    prefix = state.first_call_prefix(req)
    if prefix is not None and node is not None:
        prefix = _split_at(cache, req, prefix)
    state.tag_path(req, node, prefix)
    agent = state.agent_of(req)
    adapters().note_request(agent, getattr(req, "lora_id", None))
    if agent is not None and node is not None:
        # Load ahead the agent's shared prefix, not the call tail past it: the next call
        # does not read the tail, which goes first in both tiers (`SchedulerState._mark_tail`).
        prefetcher().note(cache, agent, state.prefix_node(agent) or node)


def _split_at(cache: Any, req: Any, tokens: int) -> int | None:
    """Make the first `tokens` of the request's prompt end at a node boundary, so its tail can
    be evicted without its prefix: SGLang's own `touch_prefix` walk splits the node a key ends
    inside, as a prefix match does, and applies the split's actions (a pending write-back).
    Returns the boundary (page-aligned) or None where there is none to make."""
    from sglang.srt.mem_cache.radix_cache import RadixKey

    page = max(int(getattr(cache, "page_size", 1) or 1), 1)
    tokens -= tokens % page
    if tokens <= 0 or getattr(getattr(cache, "tree_core", cache), "is_eagle", False):
        return None  # EAGLE trees key token pairs: not a path we split
    cache.touch_prefix(RadixKey(req.origin_input_ids, req.extra_key, limit=tokens, cache_salt=req.cache_salt))
    return tokens


@guarded
def after_release(result: Any, cache: Any, req: Any, *args: Any, **kwargs: Any) -> None:
    current().on_release(req)
    prefetcher().on_release(req)


@guarded
def after_unified_split(result: Any, core: Any, key: Any, child: Any, *args: Any, **kwargs: Any) -> None:
    current().on_split(child, result[0])  # UnifiedTreeCore._split_node -> (new_node, action)


@guarded
def after_radix_split(result: Any, cache: Any, key: Any, child: Any, *args: Any, **kwargs: Any) -> None:
    current().on_split(child, result)  # RadixCache._split_node -> new_node


@guarded
def after_unified_victim(result: Any, component: Any, *args: Any, **kwargs: Any) -> None:
    # FullComponent._evict_device_next_node returns the victim's id and keeps the node.
    node = component._evict_device_last_node
    if result is not None and node is not None:
        current().on_evict(node, len(node.key))


@guarded
def before_radix_delete_leaf(cache: Any, node: Any, *args: Any, **kwargs: Any) -> None:
    current().on_evict(node, len(node.key))  # RadixCache deletes leaves only when evicting


@guarded
def after_reset(result: Any, cache: Any, *args: Any, **kwargs: Any) -> None:
    current().reset_tree()
    prefetcher().reset()
