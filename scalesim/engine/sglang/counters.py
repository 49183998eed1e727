"""Cache counters, in total and per agent, for `GET /scalesim/v1/stats` and Prometheus.

Per request (counted once, when it finishes): a hit when any prompt token came from the
cache, else a miss; prompt tokens split into cached and recomputed. Per evicted radix node:
its tokens, by reason (`farthest`: an owner had a known distance and it was the farthest
state; `no_distance`: owned, but no owner has a distance, so LRU decided; `stale`: a branch its
agents' later requests left (an old call's own tail); `tail`: the agent's latest call past the
prefix its calls share, not read again by its next call; `untagged`: never owned).

Per-agent series are bounded: the first `max_agent_series` agents seen get their own; every
later agent is counted under `OTHER`, so 10,000 agents make at most that many series.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

OTHER = "_other"
NONE = "_none"  # requests and nodes with no agent
EVICTION_REASONS = ("farthest", "no_distance", "stale", "tail", "untagged")
DEFAULT_MAX_AGENT_SERIES = 64
_FIELDS = ("hits", "misses", "cached_tokens", "recomputed_tokens", "evicted_nodes", "evicted_tokens")


class AgentCounters:
    def __init__(self, max_agent_series: int = DEFAULT_MAX_AGENT_SERIES) -> None:
        self.max_agent_series = max_agent_series
        self.total: dict[str, int] = dict.fromkeys(_FIELDS, 0)
        self.evicted_tokens_by_reason: dict[str, int] = dict.fromkeys(EVICTION_REASONS, 0)
        self.per_agent: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_FIELDS, 0))
        self._prometheus: _Prometheus | None = None

    def label(self, agent: str | None) -> str:
        if agent is None:
            return NONE
        if agent in self.per_agent or len(self.per_agent) < self.max_agent_series:
            return agent
        return OTHER

    def enable_prometheus(self) -> None:
        """Export to Prometheus too (SGLang's `--enable-metrics`; scheduler process only)."""
        if self._prometheus is None:
            self._prometheus = _Prometheus()

    def prefill(self, agent: str | None, cached: int, recomputed: int) -> None:
        label = self.label(agent)
        hit = cached > 0
        for bucket in (self.total, self.per_agent[label]):
            bucket["hits" if hit else "misses"] += 1
            bucket["cached_tokens"] += cached
            bucket["recomputed_tokens"] += recomputed
        if self._prometheus is not None:
            self._prometheus.prefill(label, "hit" if hit else "miss", cached, recomputed)

    def evicted(self, agent: str | None, reason: str, tokens: int) -> None:
        """One evicted node in one owner's series (called once per owner; `evicted_node` counts
        it once in the totals)."""
        label = self.label(agent)
        bucket = self.per_agent[label]
        bucket["evicted_nodes"] += 1
        bucket["evicted_tokens"] += tokens
        if self._prometheus is not None:
            self._prometheus.evicted(label, reason, tokens)

    def evicted_node(self, reason: str, tokens: int) -> None:
        self.total["evicted_nodes"] += 1
        self.total["evicted_tokens"] += tokens
        self.evicted_tokens_by_reason[reason] += tokens
        if self._prometheus is not None:
            self._prometheus.evicted_total(reason, tokens)

    def report(self) -> dict[str, Any]:
        return {
            "cache": dict(self.total),
            "evicted_tokens_by_reason": dict(self.evicted_tokens_by_reason),
            "per_agent": {agent: dict(c) for agent, c in self.per_agent.items()},
            "per_agent_series_limit": self.max_agent_series,
        }


class _Prometheus:
    """The same counters as Prometheus series (multiprocess mode: SGLang's /metrics collects
    them from the scheduler process)."""

    def __init__(self) -> None:
        # Imported here: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when imported.
        from prometheus_client import Counter

        self.requests = Counter("scalesim_prefill_requests", "Finished requests by cache result",
                                ["agent", "result"])
        self.tokens = Counter("scalesim_prefill_tokens", "Prompt tokens, cached or recomputed",
                              ["agent", "kind"])
        self.evicted_tokens = Counter("scalesim_evicted_tokens", "Radix-cache tokens evicted, per owner",
                                      ["agent", "reason"])
        self.evictions = Counter("scalesim_evictions", "Radix nodes evicted, by reason", ["reason"])
        self.evicted_tokens_total = Counter("scalesim_evicted_tokens_all", "Radix-cache tokens evicted, by reason",
                                            ["reason"])

    def prefill(self, label: str, result: str, cached: int, recomputed: int) -> None:
        self.requests.labels(label, result).inc()
        self.tokens.labels(label, "cached").inc(cached)
        self.tokens.labels(label, "recomputed").inc(recomputed)

    def evicted(self, label: str, reason: str, tokens: int) -> None:
        self.evicted_tokens.labels(label, reason).inc(tokens)

    def evicted_total(self, reason: str, tokens: int) -> None:
        self.evictions.labels(reason).inc()
        self.evicted_tokens_total.labels(reason).inc(tokens)


class TierCounters:
    """Named event counters of one memory tier (`slot`, `cpu`: LoRA adapters; `host_kv`: the
    host KV tier), mirrored to Prometheus as `scalesim_memory_events_total{tier, event}` and
    `scalesim_memory_wait_seconds_total{tier}` once `enable_prometheus` is called (SGLang's
    `--enable-metrics`)."""

    EVENTS = ("hits", "misses", "prefetch_issued", "prefetch_used", "prefetch_wasted", "prefetch_skipped_for_demand")

    def __init__(self, tier: str, extra: tuple[str, ...] = ()) -> None:
        self.tier = tier
        self.values: dict[str, int] = dict.fromkeys((*self.EVENTS, *extra), 0)
        self.wait_seconds = 0.0
        self.prefetched: set[Any] = set()  # loaded ahead, not used yet
        self._events: Any = None
        self._wait: Any = None

    def add(self, event: str, n: int = 1) -> None:
        self.values[event] += n
        if self._events is not None:
            self._events.labels(self.tier, event).inc(n)

    def prefetch_issued(self, key: Any) -> None:
        self.prefetched.add(key)
        self.add("prefetch_issued")

    def looked_up(self, key: Any, found: bool) -> None:
        """A request needed `key`: a hit (and a used prefetch) if it was there, else a miss."""
        if not found:
            self.add("misses")
            return
        self.add("hits")
        if key in self.prefetched:
            self.prefetched.discard(key)
            self.add("prefetch_used")

    def evicted(self, key: Any) -> None:
        """`key` left the tier: a prefetch nobody used was wasted."""
        if key in self.prefetched:
            self.prefetched.discard(key)
            self.add("prefetch_wasted")

    def waited(self, seconds: float) -> None:
        self.wait_seconds += seconds
        if self._wait is not None:
            self._wait.labels(self.tier).inc(seconds)

    def __getitem__(self, event: str) -> int:
        return self.values[event]

    def enable_prometheus(self) -> None:
        if self._events is None:
            self._events, self._wait = _tier_series()

    def report(self) -> dict[str, Any]:
        return {**self.values, "wait_seconds": self.wait_seconds}


_TIER_SERIES: tuple[Any, Any] | None = None


def _tier_series() -> tuple[Any, Any]:
    global _TIER_SERIES
    if _TIER_SERIES is None:
        from prometheus_client import Counter

        _TIER_SERIES = (
            Counter("scalesim_memory_events", "Memory tier events (hits, misses, prefetches)", ["tier", "event"]),
            Counter("scalesim_memory_wait_seconds", "Time requests waited for loads, by tier", ["tier"]),
        )
    return _TIER_SERIES
