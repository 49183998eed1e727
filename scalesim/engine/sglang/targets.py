"""The SGLang attributes ScaleSim hooks or depends on, checked before anything is hooked.

Class and module names drift between SGLang releases; a hook on a vanished target would
otherwise be skipped with a log line. Checking up front turns a version mismatch into one
clear error naming the missing target and the release ScaleSim is pinned to.
"""

from __future__ import annotations

import pkgutil

from scalesim import SGLANG_VERSION

# Hooked by the plugin (see plugin.py).
SCHEDULER_INTERNAL_STATE = "sglang.srt.managers.scheduler.Scheduler.get_internal_state"
SCHEDULER_DISPATCHER = "sglang.srt.managers.scheduler.Scheduler.init_request_dispatcher"
HTTP_LAUNCH_SERVER = "sglang.srt.entrypoints.http_server.launch_server"
# Hooked by the eviction policy (see eviction.py).
_UNIFIED = UNIFIED_CACHE = "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache"
# Timed (AROUND) when SCALESIM_TREE_TIMING=1, by `scalesim bench tree-core`.
TIMED_TREE_METHODS = ("match_prefix", "checkpoint", "evict", "evict_for_alloc", "lock", "unlock")
_RADIX = "sglang.srt.mem_cache.radix_cache.RadixCache"
UNIFIED_CHECKPOINT = f"{_UNIFIED}.checkpoint"
RADIX_CHECKPOINT = f"{_RADIX}.checkpoint"
UNIFIED_RELEASE = f"{_UNIFIED}.on_release"
RADIX_RELEASE = f"{_RADIX}.on_release"
UNIFIED_SPLIT = "sglang.srt.mem_cache.unified_cache.unified_tree_core.UnifiedTreeCore._split_node"
RADIX_SPLIT = f"{_RADIX}._split_node"
UNIFIED_VICTIM = "sglang.srt.mem_cache.unified_cache.components.full.FullComponent._evict_device_next_node"
RADIX_DELETE_LEAF = f"{_RADIX}._delete_leaf"
UNIFIED_RESET = f"{_UNIFIED}.reset"
RADIX_RESET = f"{_RADIX}.reset"
LORA_POLICY_FACTORY = "sglang.srt.lora.mem_pool.get_eviction_policy"
LORA_FETCH = "sglang.srt.lora.lora_manager.LoRAManager.fetch_new_loras"
SCHEDULER_NEXT_BATCH = "sglang.srt.managers.scheduler.Scheduler.get_next_batch_to_run"
LORA_RESOLVE = "sglang.srt.managers.tokenizer_manager.TokenizerManager._resolve_lora_path"
HICACHE_START_LOADING = "sglang.srt.managers.cache_controller.HiCacheController.start_loading"
HICACHE_START_WRITING = "sglang.srt.managers.cache_controller.HiCacheController.start_writing"
UNIFIED_WRITE_BACK_COPY = f"{_UNIFIED}._execute_and_commit_kv_backup"
UNIFIED_LOAD_BACK = f"{_UNIFIED}.load_back"
# Hooked only with SCALESIM_EVENT_LOG set (see event_log.py).
_UNIFIED_CORE = "sglang.srt.mem_cache.unified_cache.unified_tree_core.UnifiedTreeCore"
UNIFIED_HOST_LEAF_EVICT = f"{_UNIFIED_CORE}._evict_host_leaf"
UNIFIED_DROP_SUBTREE = f"{_UNIFIED_CORE}.drop_subtree_no_host"
HOST_POOL_ALLOCATORS = "sglang.srt.mem_cache.pool_host.common.ALLOC_MEMORY_FUNCS"
LORA_CPU_VICTIM = "sglang.srt.lora.lora_registry.LoRARegistry.lru_lora_name"
EVICTION_FACTORIES = "sglang.srt.mem_cache.utils._EVICTION_POLICY_FACTORIES"
EVICTION_CHOICES = "sglang.srt.arg_groups.choices.add_radix_eviction_policy_choices"
RADIX_BACKENDS = "sglang.srt.mem_cache.registry.register_radix_cache_backend"
# Used by the routes and messages.
HTTP_GLOBAL_STATE = "sglang.srt.entrypoints.http_server.get_global_state"
TOKENIZER_DISPATCH = "sglang.srt.managers.tokenizer_manager.TokenizerManager._dispatch_to_scheduler"
HOOK_CUSTOM_TYPES = "sglang.srt.managers.io_struct.hook_custom_types"

# Used by `scalesim serve` to parse and launch.
SERVER_ARGS = "sglang.srt.server_args.ServerArgs"
PREPARE_SERVER_ARGS = "sglang.srt.server_args.prepare_server_args"
RUN_SERVER = "sglang.launch_server.run_server"

HOOK_TARGETS: tuple[str, ...] = (
    SCHEDULER_INTERNAL_STATE,
    SCHEDULER_DISPATCHER,
    HTTP_LAUNCH_SERVER,
    HTTP_GLOBAL_STATE,
    TOKENIZER_DISPATCH,
    HOOK_CUSTOM_TYPES,
    UNIFIED_CHECKPOINT,
    RADIX_CHECKPOINT,
    UNIFIED_RELEASE,
    RADIX_RELEASE,
    UNIFIED_SPLIT,
    RADIX_SPLIT,
    UNIFIED_VICTIM,
    RADIX_DELETE_LEAF,
    UNIFIED_RESET,
    RADIX_RESET,
    EVICTION_FACTORIES,
    EVICTION_CHOICES,
    RADIX_BACKENDS,
    LORA_POLICY_FACTORY,
    LORA_FETCH,
    SCHEDULER_NEXT_BATCH,
    LORA_CPU_VICTIM,
    LORA_RESOLVE,
    HOST_POOL_ALLOCATORS,
    HICACHE_START_LOADING,
    HICACHE_START_WRITING,
    UNIFIED_WRITE_BACK_COPY,
    UNIFIED_LOAD_BACK,
)
LAUNCH_TARGETS: tuple[str, ...] = (SERVER_ARGS, PREPARE_SERVER_ARGS, RUN_SERVER)


class TargetMissingError(RuntimeError):
    """An SGLang attribute ScaleSim needs does not exist in the installed SGLang."""


def installed_sglang_version() -> str:
    import sglang

    return getattr(sglang, "__version__", "unknown")


def check_version() -> None:
    """Raise `TargetMissingError` unless the installed SGLang is the pinned release."""
    found = installed_sglang_version()
    if found != SGLANG_VERSION:
        raise TargetMissingError(
            f"ScaleSim is pinned to sglang=={SGLANG_VERSION} but sglang {found} is installed"
        )


def check_targets(targets: tuple[str, ...]) -> None:
    """Resolve every dotted target; raise `TargetMissingError` naming the first that is missing."""
    for target in targets:
        try:
            pkgutil.resolve_name(target)
        except (ImportError, AttributeError, ValueError) as exc:
            raise TargetMissingError(
                f"SGLang target {target} not found ({type(exc).__name__}: {exc}); "
                f"ScaleSim is pinned to sglang=={SGLANG_VERSION}, "
                f"installed is {installed_sglang_version()}"
            ) from exc
