"""The systems `scalesim bench sim` compares, and the memory budget they all get.

Every system is one `scalesim serve` configuration on the same model, with the same budget:

- `sglang-<policy>` (lru, lfu, slru, tlru, priority): stock SGLang (`--scalesim-disable`), its
  own radix eviction policy and LoRA LRU; `sglang-<policy>+host` adds SGLang's host KV tier
  (on CPU through ScaleSim's device seam, which stays loaded when the plugin is disabled), with
  SGLang's default write-through; `sglang-<policy>+host-wb` the same tier written back, as
  ScaleSim's is by default (`host_tier.PLUGIN_HICACHE_DEFAULTS`): the tiers then hold device
  plus host tokens, so this is stock SGLang with as much memory as ScaleSim.
- `scalesim`: the plugin, distance-aware eviction in every tier, prefetch (host KV tier and
  adapter slots); the client pushes each step's distances and registers agents.
- `scalesim-evict`: the same with prefetch off (`{"prefetch": false}`).
- `scalesim-prefetch`: prefetch only: stock LRU for radix eviction and adapters, with the
  plugin's host-to-device KV prefetch driven by the pushed distances.
- `unlimited`: stock SGLang (LRU) with room for every agent's prefix and adapter: the bound. It
  runs with the written-back host tier too, which never receives anything (nothing is evicted):
  only for the radix cache class. Without the tier SGLang runs another class, whose warm steps
  were ~30% slower here than the systems it bounds (spatial town at 200 agents, steps 17-22 with
  no misses: 184.3 s against 145.3 s with the tier, ScaleSim 140.1 s), so the bound was slower
  than the memory alone makes it.

The budget (`Budget.of`): the KV pool holds the active agents' working set (their largest
prompts plus outputs) plus the `resident` share of all agents' prefixes; the adapter slots hold
the `resident` share of the adapters, and never fewer than the callers of the busiest step (the
issue's "never fewer than one batch needs": with fewer, SGLang runs at most that many requests
at once and the rest of the step waits for a slot; the social network's busiest step at 200
agents has 61 callers for an average of 40).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from scalesim.engine.sglang.host_tier import PLUGIN_HICACHE_DEFAULTS  # flags only: no SGLang import

STOCK_POLICIES = ("lru", "lfu", "slru", "tlru", "priority")
HOST = "--enable-hierarchical-cache"
# ScaleSim's host-tier flags (write-back), given to stock SGLang for the `+host-wb` systems.
WRITE_BACK = tuple(item for pair in PLUGIN_HICACHE_DEFAULTS for item in pair)
# SGLang refuses T-LRU without these (token counts). A simulation's next call adds one situation
# turn (about 60 tokens) to the agent's history; up to 256 recomputed tokens per call are taken
# as within its latency budget, so the tail of a history beyond that is evicted first.
POLICY_CONFIGS = {"tlru": {"threshold": 256, "next_prompt_estimate": 64}}
# The unlimited bound's host tier holds nothing, so it gets a tiny pool: a hundredth of its device
# pool (some 4,000 tokens, 0.1 GB at 200 agents). SGLang keeps 10 GiB of host memory free, so on
# 24 GiB a ratio of 0.8 does not fit next to the unlimited pool, and neither did SGLang's smallest
# fixed size (`--hicache-size` is whole GB) next to the replay's (0.79 GB left, 2026-12-01). These
# come after the `--serve-arg` extras (`System.final_args`), which give every system a ratio; the
# size 0 undoes an extra `--hicache-size` (a fixed size would override the ratio).
UNLIMITED_HOST = (HOST, *WRITE_BACK)
UNLIMITED_HOST_POOL = ("--hicache-size", "0", "--hicache-ratio", "0.01")


@dataclass(frozen=True)
class System:
    name: str
    args: tuple[str, ...]
    hints: bool = False  # push distances, register agents (ScaleSim's API)
    unlimited: bool = False
    env: tuple[tuple[str, str], ...] = ()  # server environment
    final_args: tuple[str, ...] = ()  # after the user's `--serve-arg` extras: not theirs to change

    @property
    def stock(self) -> bool:
        return self.name.startswith("sglang-")


def _all() -> dict[str, System]:
    out: dict[str, System] = {}
    for policy in STOCK_POLICIES:
        base: tuple[str, ...] = ("--scalesim-disable", "--radix-eviction-policy", policy)
        if policy in POLICY_CONFIGS:
            base += ("--radix-eviction-policy-config", json.dumps(POLICY_CONFIGS[policy]))
        out[f"sglang-{policy}"] = System(f"sglang-{policy}", base)
        out[f"sglang-{policy}+host"] = System(f"sglang-{policy}+host", (*base, HOST))
        out[f"sglang-{policy}+host-wb"] = System(f"sglang-{policy}+host-wb", (*base, HOST, *WRITE_BACK))
    out["scalesim"] = System("scalesim", (HOST,), hints=True)
    out["scalesim-evict"] = System("scalesim-evict", (HOST, "--radix-eviction-policy-config",
                                                      json.dumps({"prefetch": False})), hints=True)
    # Prefetch holds and tags tree nodes: SGLang's Python tree core (the Rust one has no nodes
    # to hold), which `serve` selects by itself only for the scalesim policy.
    out["scalesim-prefetch"] = System("scalesim-prefetch", (HOST, "--radix-eviction-policy", "lru",
                                                            "--lora-eviction-policy", "lru"), hints=True,
                                      env=(("SGLANG_UNIFIED_RADIX_TREE_CORE_BACKEND", "python"),))
    out["unlimited"] = System("unlimited", ("--scalesim-disable", "--radix-eviction-policy", "lru", *UNLIMITED_HOST),
                              unlimited=True, final_args=UNLIMITED_HOST_POOL)
    return out


SYSTEMS: dict[str, System] = _all()


def select(names: Sequence[str] | str) -> list[System]:
    """Systems by name (`all`, or a comma-separated list); an unknown name raises."""
    if isinstance(names, str):
        names = list(SYSTEMS) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise ValueError(f"unknown system(s) {unknown or names} (valid: all, {', '.join(SYSTEMS)})")
    return [SYSTEMS[n] for n in names]


@dataclass(frozen=True)
class Budget:
    """Memory for one run: KV pool tokens and adapter slots (and the unlimited alternatives)."""

    kv_tokens: int
    adapter_slots: int
    unlimited_kv_tokens: int
    adapters: int

    @classmethod
    def of(cls, prefix_tokens: Sequence[int], active: int, resident: int, *, tail_tokens: int,
           output_tokens: int, kv_tokens: int | None = None, peak_callers: int = 0) -> Budget:
        """`kv_tokens` replaces the pool the resident share gives (to compare runs of different
        workloads at one budget: the default depends on the largest prefixes of those run); it
        must hold one step's working set, or a step's requests could not all run.
        `peak_callers`: the most agents calling in one step (a floor for the adapter slots)."""
        sizes = sorted(prefix_tokens, reverse=True)
        working = sum(sizes[:active]) + active * (tail_tokens + output_tokens)
        mean = sum(sizes) / len(sizes)
        if kv_tokens is not None and kv_tokens < working:
            raise ValueError(f"--kv-tokens {kv_tokens} is below the working set of one step ({working} tokens: "
                             f"the {active} largest prefixes with their prompts and outputs)")
        return cls(kv_tokens=int(working + resident * mean) if kv_tokens is None else kv_tokens,
                   adapter_slots=max(resident, active, peak_callers), unlimited_kv_tokens=int(sum(sizes) + working),
                   adapters=len(sizes))

    def serve_args(self, system: System, *, lora: bool) -> list[str]:
        tokens = self.unlimited_kv_tokens if system.unlimited else self.kv_tokens
        args = ["--max-total-tokens", str(tokens)]
        if lora:
            slots = self.adapters if system.unlimited else self.adapter_slots
            args += ["--max-loras-per-batch", str(slots)]
        return args
