"""The SGLang plugin: entry point `scalesim` of group `sglang.srt.plugins`.

SGLang calls `load()` early in every process it starts (launcher, tokenizer, scheduler,
detokenizer), so hooks registered here reach the scheduler subprocess. `scalesim serve
--scalesim-disable` keeps SGLang from loading this plugin at all (stock behaviour).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from scalesim import SGLANG_VERSION, __version__
from scalesim.engine.sglang import (
    PLUGIN_NAME,
    event_log,
    eviction,
    host_admission,
    host_tier,
    kv_prefetch,
    load_swap,
    lora_cpu_tier,
    lora_slots,
    targets,
)
from scalesim.engine.sglang.chat_prefix import PromptPrefix
from scalesim.engine.sglang.messages import (
    ScaleSimAgentReq,
    ScaleSimDistancesReq,
    ScaleSimRegisterReq,
    register_message_types,
)
from scalesim.engine.sglang.scheduler_state import current

logger = logging.getLogger(__name__)


def load() -> None:
    """Check the installed SGLang, then register ScaleSim's hooks.

    A missing target is fatal (`SystemExit` with the reason): SGLang's plugin loader logs and
    swallows ordinary exceptions, which would leave a server running without ScaleSim while
    claiming to have it.
    """
    timing = os.environ.get("SCALESIM_TREE_TIMING") == "1"
    timed = tuple(f"{targets.UNIFIED_CACHE}.{m}" for m in targets.TIMED_TREE_METHODS) if timing else ()
    logged = (
        (targets.UNIFIED_VICTIM, event_log.after_device_victim, HookType.AFTER),
        (targets.UNIFIED_HOST_LEAF_EVICT, event_log.before_host_leaf_evict, HookType.BEFORE),
        (targets.UNIFIED_DROP_SUBTREE, event_log.before_drop_subtree, HookType.BEFORE),
        (targets.UNIFIED_LOAD_BACK, event_log.around_load_back, HookType.AROUND),
        (targets.UNIFIED_RELEASE, event_log.before_release, HookType.BEFORE),
    ) if event_log.enabled() else ()
    try:
        targets.check_version()
        targets.check_targets(targets.HOOK_TARGETS + timed + tuple(target for target, _, _ in logged))
    except targets.TargetMissingError as exc:
        raise SystemExit(f"scalesim plugin: {exc}") from exc
    register_message_types()
    eviction.register_policy()
    register_radix_backend()
    host_tier.register_cpu_host_pool()
    HookRegistry.register(targets.SCHEDULER_INTERNAL_STATE, report_plugin_state, HookType.AFTER)
    HookRegistry.register(targets.SCHEDULER_DISPATCHER, add_scheduler_handlers, HookType.AFTER)
    HookRegistry.register(targets.HTTP_LAUNCH_SERVER, add_routes, HookType.BEFORE)
    for target, hook, kind in (
        (targets.UNIFIED_CHECKPOINT, eviction.after_checkpoint, HookType.AFTER),
        (targets.RADIX_CHECKPOINT, eviction.after_checkpoint, HookType.AFTER),
        (targets.UNIFIED_RELEASE, eviction.after_release, HookType.AFTER),
        (targets.RADIX_RELEASE, eviction.after_release, HookType.AFTER),
        (targets.UNIFIED_SPLIT, eviction.after_unified_split, HookType.AFTER),
        (targets.RADIX_SPLIT, eviction.after_radix_split, HookType.AFTER),
        (targets.UNIFIED_VICTIM, eviction.after_unified_victim, HookType.AFTER),
        (targets.RADIX_DELETE_LEAF, eviction.before_radix_delete_leaf, HookType.BEFORE),
        (targets.UNIFIED_RESET, eviction.after_reset, HookType.AFTER),
        (targets.RADIX_RESET, eviction.after_reset, HookType.AFTER),
        (targets.LORA_POLICY_FACTORY, lora_slots.around_get_eviction_policy, HookType.AROUND),
        (targets.LORA_FETCH, lora_slots.around_fetch_new_loras, HookType.AROUND),
        (targets.LORA_RESOLVE, lora_cpu_tier.around_resolve_lora_path, HookType.AROUND),
        (targets.SCHEDULER_NEXT_BATCH, lora_slots.before_next_batch, HookType.BEFORE),
        (targets.SCHEDULER_NEXT_BATCH, kv_prefetch.before_next_batch, HookType.BEFORE),
        (targets.HICACHE_START_LOADING, kv_prefetch.around_start_loading, HookType.AROUND),
        (targets.HICACHE_START_WRITING, kv_prefetch.around_start_writing, HookType.AROUND),
        (targets.UNIFIED_WRITE_BACK_COPY, host_admission.around_execute_and_commit_kv_backup, HookType.AROUND),
        (targets.UNIFIED_LOAD_BACK, load_swap.around_load_back, HookType.AROUND),
        (targets.LORA_CPU_VICTIM, lora_cpu_tier.around_lru_lora_name, HookType.AROUND),
        *logged,  # after ScaleSim's own hooks, so a logged victim is the one the policy chose
    ):
        HookRegistry.register(target, hook, kind)
    host_admission.install_log_filter()
    for target, method in zip(timed, targets.TIMED_TREE_METHODS):
        HookRegistry.register(target, _timed(method), HookType.AROUND)
    logger.info("ScaleSim %s plugin loaded in pid %d", __version__, os.getpid())


def plugin_state(scheduler: Any) -> dict[str, Any]:
    """What the scheduler reports about ScaleSim under `/get_server_info` internal_states."""
    base = {"version": __version__, "sglang": SGLANG_VERSION, "active": True, "pid": os.getpid()}
    return {**base, **current().report(), **lora_slots.tracker().report(), **kv_prefetch.prefetcher().report(),
            "memory": memory_usage(scheduler)}


def memory_usage(scheduler: Any) -> dict[str, int | str | None]:
    """Token counts of the KV pools: idle, `device_free + evictable == device_total`,
    `protected == 0` and `host_free + host_in_tree == host_total` (nothing leaked or locked);
    and the host tier's write policy (with write-back the tiers hold device plus host tokens)."""
    cache = scheduler.tree_cache
    out = {"device_total": int(scheduler.max_total_num_tokens),
           "device_free": int(scheduler.token_to_kv_pool_allocator.available_size()),
           "evictable": int(cache.evictable_size()), "protected": int(cache.protected_size())}
    controller = getattr(cache, "cache_controller", None)
    host = getattr(controller, "mem_pool_host", None)
    if host is not None:
        out["host_total"], out["host_free"] = int(host.size), int(host.available_size())
        out["host_in_tree"] = _host_tokens_in_tree(cache)
        out["host_duplicates"] = _host_duplicates(cache)
        out["host_write_policy"] = controller.write_policy
    return out


def _host_tokens_in_tree(cache: Any) -> int | None:
    """Host-pool tokens the radix tree references (a walk: for the stats route, not hot paths);
    None with SGLang's Rust tree core, which has no Python nodes to walk."""
    from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

    try:
        root = cache.tree_core.root_node
    except NotImplementedError:
        return None
    total, stack = 0, [root]
    while stack:
        node = stack.pop()
        host_value = node.component_data[ComponentType.FULL].host_value
        if host_value is not None:
            total += len(host_value)
        stack.extend(node.children.values())
    return total


def _host_duplicates(cache: Any) -> int | None:
    """Host tokens of prefixes also on the device (with write-back, room the tiers hold twice
    until SGLang reclaims it); None with the Rust tree core."""
    try:
        return host_tier.duplicate_tokens(cache.tree_core)
    except (NotImplementedError, AttributeError):
        return None


def report_plugin_state(result: Any, scheduler: Any, *args: Any, **kwargs: Any) -> Any:
    """AFTER hook on `Scheduler.get_internal_state`: adds a `scalesim` entry.

    This is how a client (and the tests, and `/scalesim/v1/stats`) see that the plugin is
    live inside the scheduler process and what its distance table holds.
    """
    try:
        result.internal_state[PLUGIN_NAME] = plugin_state(scheduler)
    except Exception as exc:  # a stats request must never take the scheduler down
        current().hook_errors += 1
        logger.exception("ScaleSim stats failed")
        result.internal_state[PLUGIN_NAME] = {"active": True, "error": f"{type(exc).__name__}: {exc}"}
    return result


def add_scheduler_handlers(result: Any, scheduler: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER hook on `Scheduler.init_request_dispatcher`: route ScaleSim's messages."""
    from sglang.srt.runtime_context import get_observability
    from sglang.utils import TypeBasedDispatcher

    state = current()
    if get_observability().enable_metrics:
        state.counters.enable_prometheus()
        lora_slots.tracker().counters.enable_prometheus()
        kv_prefetch.prefetcher().counters.enable_prometheus()

    # Both fire and forget: the HTTP process already answered.
    def on_distances(req: ScaleSimDistancesReq) -> None:
        state.apply(req.epoch, req.distances, replace=req.replace, ttl=req.ttl)

    def on_agent(req: ScaleSimAgentReq) -> None:
        prefix = None
        if req.prefix_tokens is not None and req.prefix_last_ids:
            prefix = PromptPrefix(req.prefix_tokens, tuple(req.prefix_last_ids))
        state.announce(req.request_id, req.agent_id, req.time, prefix)

    def on_register(req: ScaleSimRegisterReq) -> None:
        lora_slots.tracker().register(req.adapters)

    scheduler._request_dispatcher += TypeBasedDispatcher(
        [(ScaleSimDistancesReq, on_distances), (ScaleSimAgentReq, on_agent), (ScaleSimRegisterReq, on_register)]
    )


def _timed(op: str):
    """AROUND hook timing one radix-cache method (`scalesim bench tree-core`)."""
    import time

    def around(original: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            entry = current().tree_timing.setdefault(op, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    return around


RADIX_BACKEND = "radix"


def register_radix_backend() -> None:
    """`--radix-cache-backend radix` selects SGLang's plain RadixCache (0.5.23 builds the
    UnifiedRadixCache by default and offers no other way to get the plain one)."""
    from sglang.srt.mem_cache.registry import register_radix_cache_backend, registered_radix_cache_backends

    if RADIX_BACKEND in registered_radix_cache_backends():
        return

    def factory(ctx: Any) -> Any:
        from sglang.srt.mem_cache.radix_cache import RadixCache

        return RadixCache(ctx.params)

    register_radix_cache_backend(RADIX_BACKEND, factory)


def add_routes(*args: Any, **kwargs: Any) -> None:
    """BEFORE hook on `http_server.launch_server`: add ScaleSim's routes to SGLang's app."""
    from sglang.srt.entrypoints.http_server import app

    from scalesim.engine.sglang.routes import register_routes

    register_routes(app)
