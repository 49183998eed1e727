"""SGLang's host KV tier (HiCache, `--enable-hierarchical-cache`) on a CPU device.

On a GPU the host pool is pinned (registered with the CUDA driver) so copies can be DMA
transfers. On a CPU device both pools are host memory: there is nothing to pin, and SGLang's
default allocator for an unknown device type calls `cudaHostRegister`, which fails without a
driver. The host pool's allocator table (`pool_host/common.py::ALLOC_MEMORY_FUNCS`, keyed by
device type) gets a `cpu` entry here; the transfers come from `sgl_kernel.kvcacheio` (patch 0002
and `kernels/sgl_kernel_cpu`). Eviction and demotion in both tiers already follow ScaleSim's
radix policy: SGLang's host-tier eviction calls the same `EvictionStrategy`.
"""

from __future__ import annotations

from typing import Any

# `scalesim serve` adds these on a machine without a GPU when the host tier is on: the only
# transfer path the CPU package implements (`transfer_kv_direct`, per-layer buffers).
CPU_HICACHE_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("--hicache-io-backend", "direct"),
    ("--hicache-mem-layout", "layer_first"),
)

# `scalesim serve` adds this with the plugin on and the host tier on, on any device, unless the
# user chose a write policy. SGLang's default (write-through) copies every cached device node to
# host memory, so the host pool holds the device's contents again and the two tiers together hold
# only as many distinct tokens as the host pool. Write-back copies a node when the device evicts
# it (SGLang then also reclaims host copies of nodes back on the device under host pressure): the
# tiers hold device plus host. Measured (debate, 60 agents, 25% resident, host pool 1.48x the
# device pool, 25 steps): hit rate 0.58 -> 0.80 (every non-cold call), makespan 247 -> 190 s.
# The cost is a device-to-host copy on the eviction path instead of ahead of it; on CPU it is a
# memory copy, on GPU some milliseconds per evicted prefix of a large model.
PLUGIN_HICACHE_DEFAULTS: tuple[tuple[str, str], ...] = (("--hicache-write-policy", "write_back"),)


def duplicate_tokens(core: Any, *, reclaimable: bool = False) -> int:
    """Host tokens of prefixes also on the device: written back, a prefix loaded from host memory
    keeps its host copy until host memory needs the room, and SGLang reclaims these first then.
    `reclaimable`: only those it can free now (no transfer in flight, no host lock)."""
    from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

    can_free = core._can_reclaim_full_host_duplicate if reclaimable else None
    tokens = 0
    for node in list(core.full_host_duplicates.values()):
        data = node.component_data[ComponentType.FULL]
        if data.value is not None and data.host_value is not None and (can_free is None or can_free(node)):
            tokens += len(data.host_value)
    return tokens


def host_room(cache: Any) -> int:
    """Host tokens a write-back can have now: free, plus the duplicates SGLang can reclaim."""
    return cache.cache_controller.mem_pool_host.available_size() + duplicate_tokens(cache.tree_core, reclaimable=True)


def alloc_host_buffer_cpu(
    dims: tuple,
    dtype: Any,
    device: str,
    pin_memory: bool,
    allocator: Any,
    registration_granularity_bytes: int | None = None,
) -> Any:
    """The host pool's buffer when the device is the CPU: plain memory, nothing registered."""
    return allocator.allocate(dims, dtype=dtype, device=device)


def register_cpu_host_pool() -> None:
    from sglang.srt.mem_cache.pool_host.common import ALLOC_MEMORY_FUNCS

    ALLOC_MEMORY_FUNCS.setdefault("cpu", alloc_host_buffer_cpu)


def load() -> None:
    """Entry point `scalesim-device`: the CPU device seams, loaded even with `--scalesim-disable`,
    so stock SGLang runs the same CPU path as ScaleSim (for comparisons): its own host tier, and
    the CPU attention (`cpu_attention`: prefill that a cached prefix makes cheaper, faster decode)
    and KV slots in runs for it (`slot_runs`)."""
    from scalesim.engine.sglang import cpu_attention, slot_runs

    register_cpu_host_pool()
    cpu_attention.register()
    slot_runs.register()
