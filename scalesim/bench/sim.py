"""`scalesim bench sim`: simulations against every system, one after another, in one run.

For each system (`scalesim.bench.systems`) a fresh server starts on the same model with the same
memory budget; each workload then runs on it from an empty cache with the same seed, so every
system serves the same agents in the same order. Each step's calls go out concurrently through
the client (`scalesim.client`); ScaleSim systems also get the step's distances and the agents'
registrations. The trace of each workload (recorded from the first system's run) gives the
Belady oracle's hit rate at the same KV budget, and with the distances the simulation pushed
(`hints-<workload>.jsonl`) the hit rate those hints allow in one pool (`replay_pushed`);
`replay` replays a trace file, or by default the plan town's trace just recorded. Results:
`results.json`, `results.md` and plots in `--out` (`scalesim.bench.report`), with every
request's record in `requests/`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scalesim import paths
from scalesim.bench import report
from scalesim.bench.systems import Budget, System, select
from scalesim.bench.workloads import Simulation, WorkloadParams, make
from scalesim.bench.workloads.base import callers_per_step
from scalesim.bench.workloads.replay import Replay
from scalesim.client import AgentSpec, AsyncScaleSimClient
from scalesim.memory.reference import CapacityError
from scalesim.trace.format import TraceRecord, read_pushes, read_trace, write_pushes, write_trace
from scalesim.trace.replay import Served, replay_belady, replay_pushed

DEFAULT_WORKLOADS = ("plan_town", "spatial_town", "social_network", "debate", "replay")
TAIL_TOKENS = 120  # the step-specific end of a prompt, at most (situation, last words)
LORA_RANK = 8
HIT_SHARE = 0.9  # a request "hits" when at least this share of its private prefix was cached
HICACHE_RATIO = 2.0  # SGLang's default host pool size, relative to the device pool
WRITE_THROUGH = "write_through"  # SGLang's default host write policy (and of runs that did not record one)


@dataclass(frozen=True)
class RunConfig:
    params: WorkloadParams
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    systems: tuple[System, ...] = ()
    model: Path = field(default_factory=paths.default_model_path)
    out: Path = Path("bench-results")
    adapters: bool = True
    trace: Path | None = None
    port: int = 31000
    extra_args: tuple[str, ...] = ()
    repeats: int = 1  # rounds over every system, in alternating order (ABC, CBA, ...)
    kv_tokens: int | None = None  # the device KV pool; None: from the resident share

    def __post_init__(self) -> None:
        if not self.workloads:
            raise ValueError("no workload selected")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if "replay" in self.workloads and self.trace is None and (
                "plan_town" not in self.workloads
                or self.workloads.index("plan_town") > self.workloads.index("replay")):
            raise ValueError("replay needs --trace, or plan_town listed before it (its trace is replayed)")


@dataclass(frozen=True)
class RequestRecord:
    step: int
    agent: str
    prefix_tokens: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_s: float

    @property
    def hit(self) -> bool:
        return self.cached_tokens >= HIT_SHARE * self.prefix_tokens


@dataclass
class WorkloadRun:
    workload: str
    system: str
    makespan_s: float
    records: list[RequestRecord]
    server: dict[str, Any] = field(default_factory=dict)  # ScaleSim's own counters (delta), if any
    pushes: dict[float, dict[str, float]] = field(default_factory=dict)  # step -> the distances for it


def serve_args(config: RunConfig, budget: Budget, system: System) -> list[str]:
    """`scalesim serve` arguments for `system`: the user's `--serve-arg` extras come after the
    system's own flags (SGLang takes the last of a repeated flag), except its `final_args`."""
    args = ["--model-path", str(config.model), "--enable-cache-report", *budget.serve_args(system, lora=config.adapters)]
    if config.adapters:
        args += ["--enable-lora", "--max-lora-rank", str(LORA_RANK), "--lora-target-modules",
                 "q_proj", "k_proj", "v_proj", "o_proj"]
    return [*args, *system.args, *config.extra_args, *system.final_args]


def token_counter(model: Path) -> Callable[[str], int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


class Bench:
    """One run: builds the workloads, starts each system, runs every workload on it."""

    def __init__(self, config: RunConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.count = token_counter(config.model)
        self.traces: dict[str, list[TraceRecord]] = {}
        self.pushes: dict[str, dict[float, dict[str, float]]] = {}
        sims = {w: self._make(w) for w in config.workloads if w != Replay.name or config.trace is not None}
        self.prefix_tokens = {w: {a: self.count(s.prefixes[a]) for a in s.agent_ids} for w, s in sims.items()}
        p = config.params
        # The built simulations are not run (each system gets a fresh one): a dry run of each
        # finds its busiest step. The replay of this run's plan-town trace is not built here (the
        # trace does not exist yet); it makes the plan town's calls, which the plan town's dry run
        # counts (`RunConfig` puts plan_town before it).
        peak = max((max(callers_per_step(s), default=0) for s in sims.values()), default=0)
        self.budget = Budget.of(_largest_per_rank(self.prefix_tokens), p.active_agents, p.resident_agents,
                                tail_tokens=TAIL_TOKENS, output_tokens=p.output_tokens, kv_tokens=config.kv_tokens,
                                peak_callers=peak)
        self.adapter_paths = self._adapters() if config.adapters else []

    def _make(self, workload: str) -> Simulation:
        """A fresh simulation (the same seed: the same agents, prompts and schedule every time)."""
        if workload == Replay.name and self.config.trace is None:
            return Replay(self.config.params, self.count, trace=self.traces["plan_town"])
        return make(workload, self.config.params, self.count, trace=self.config.trace)

    def _adapters(self) -> list[Path]:
        from scalesim.models.adapters import make_adapters

        out = paths.cache_root() / "adapters" / f"bench-{self.config.model.name}-r{LORA_RANK}"
        return make_adapters(self.config.model, out, self.config.params.agents, rank=LORA_RANK)

    def serve_args(self, system: System) -> list[str]:
        return serve_args(self.config, self.budget, system)

    def run(self) -> dict[str, Any]:
        from scalesim.server_process import ServerProcess

        runs: list[WorkloadRun] = []
        self.config.out.mkdir(parents=True, exist_ok=True)
        schedule = run_order(self.config.systems, self.config.repeats)
        for i, (round_, system) in enumerate(schedule, 1):
            self.log(f"[{i}/{len(schedule)}] {system.name}: starting the server"
                     + (f" (round {round_ + 1}/{self.config.repeats})" if self.config.repeats > 1 else ""))
            name = system.name if self.config.repeats == 1 else f"{system.name}-round{round_ + 1}"
            log_path = self.config.out / "logs" / f"{name}.log"
            with ServerProcess(self.serve_args(system), self.config.port, log_path, env=dict(system.env)) as server:
                done = asyncio.run(self._run_system(system, server.base_url))
            for run in done:
                write_requests(self.config.out / "requests" / f"{name}-{run.workload}.jsonl", run.records)
            runs += done
            results = self._results(runs)  # after every system: a later failure loses nothing
        return results

    async def _run_system(self, system: System, base_url: str) -> list[WorkloadRun]:
        out = []
        async with AsyncScaleSimClient(base_url, timeout=600.0, max_retries=1) as client:
            for path in self.adapter_paths:
                await client.load_adapter(path.name, str(path))
            for workload in self.config.workloads:
                await client.flush_cache()
                sim = self._make(workload)
                if workload not in self.prefix_tokens:
                    self.prefix_tokens[workload] = {a: self.count(sim.prefixes[a]) for a in sim.agent_ids}
                run = await self._run_workload(client, system, workload, sim)
                self.log(f"    {workload}: {run.makespan_s:.1f} s, {len(run.records)} requests, "
                         f"hit rate {report.hit_rate(run.records):.2f}")
                self.traces.setdefault(workload, trace_of(run.records))
                self.pushes.setdefault(workload, run.pushes)
                out.append(run)
        return out

    async def _run_workload(self, client: AsyncScaleSimClient, system: System, workload: str,
                            sim: Simulation) -> WorkloadRun:
        adapters = {a: self.adapter_paths[i % len(self.adapter_paths)].name
                    for i, a in enumerate(sim.agent_ids)} if self.adapter_paths else {}
        if system.hints:
            await client.register_agents([AgentSpec(a, adapter=adapters.get(a)) for a in sim.agent_ids])
        before = await client.stats() if system.hints else None
        tokens = self.prefix_tokens[workload]
        records: list[RequestRecord] = []
        pushes: dict[float, dict[str, float]] = {}
        start = time.perf_counter()
        for step in range(sim.n_steps):
            distances = pushes[step] = sim.distances(step)
            if system.hints:
                await client.push_step(distances)
            calls = sim.calls(step)
            done = await asyncio.gather(*(client.chat(
                c.agent, sim.messages(c), max_tokens=c.max_tokens or self.config.params.output_tokens,
                adapter=adapters.get(c.agent)) for c in calls))
            for call, result in zip(calls, done):
                sim.observe(step, call.agent, result.text)
                records.append(RequestRecord(step, call.agent, tokens[call.agent], result.prompt_tokens,
                                             result.cached_tokens, result.completion_tokens, result.latency_s))
            sim.end_step(step)
            if (step + 1) % 10 == 0 and step + 1 < sim.n_steps:
                self.log(f"      {workload}: step {step + 1}/{sim.n_steps}, {len(records)} requests")
        makespan = time.perf_counter() - start
        after = await client.stats() if system.hints else None
        return WorkloadRun(workload, system.name, makespan, records, server_delta(before, after), pushes)

    def _results(self, runs: list[WorkloadRun]) -> dict[str, Any]:
        for workload, trace in self.traces.items():
            write_trace(self.config.out / f"trace-{workload}.jsonl", trace)
            write_pushes(self.config.out / f"hints-{workload}.jsonl", self.pushes[workload])
        host = host_tier(runs, self.budget.kv_tokens)
        ours: dict[str, list[RequestRecord]] = {}
        for run in runs:
            if run.system == SERVED_SYSTEM:
                ours.setdefault(run.workload, run.records)  # the first round's, with repeats
        oracles = {w: oracle_hit_rates(t, self.budget.kv_tokens, host, self.pushes[w],
                                       served_content(ours[w]) if w in ours else None)
                   for w, t in self.traces.items()}
        results = report.summarise(runs, oracles, params=asdict(self.config.params),
                                   budget={**asdict(self.budget), "host_kv_tokens": host.tokens,
                                           "host_write_policy": host.write_policy},
                                   model=str(self.config.model), adapters=self.config.adapters)
        write_results(results, self.config.out)
        return results


def run_order(systems: tuple[System, ...], repeats: int) -> list[tuple[int, System]]:
    """(round, system) in run order: odd rounds reverse the order, so a machine that slows down
    or speeds up during the run favours no system (ABC CBA ABC ...)."""
    return [(r, s) for r in range(repeats) for s in (systems if r % 2 == 0 else tuple(reversed(systems)))]


SERVED_SYSTEM = "scalesim"  # whose served content `hints_served` replays


def oracle_hit_rates(trace: list[TraceRecord], kv_tokens: int, host: HostTier,
                     pushes: dict[float, dict[str, float]] | None = None,
                     served: dict[tuple[float, str], Served] | None = None) -> dict[str, float | None]:
    """Belady's hit rate with the device KV budget, and with the distinct tokens device and host
    pool hold together (`HostTier.distinct_tokens`), the memory the host-tier systems have; with
    `pushes`, also the distance policy's with those hints in that memory (`hints`: None where a
    step's callers do not fit in it together), and with `served` the same holding what ScaleSim's
    server held (`hints_served`: `served_content`)."""
    distinct = host.distinct_tokens(kv_tokens)
    out: dict[str, float | None] = {"device": replay_belady(trace, kv_tokens).hit_rate,
                                    "device_host": replay_belady(trace, distinct).hit_rate}
    if pushes is not None:
        for key, content in (("hints", None), ("hints_served", served)):
            if key == "hints_served" and not served:
                continue
            try:
                out[key] = replay_pushed(trace, pushes, distinct, content).hit_rate
            except CapacityError:
                out[key] = None
    return out


def served_content(records: list[RequestRecord]) -> dict[tuple[float, str], Served]:
    """What a server held for each call of a run, from its request records: the cached path is
    the prefix plus what the agent's calls share past it (the chat template, the start of the
    next message: the least a hit of that agent had cached past its prefix; for an agent
    without a hit, the median of the others'), the tail the rest of the prompt plus the answer."""
    past: dict[str, int] = {}
    for r in records:
        if r.hit:
            extra = max(0, r.cached_tokens - r.prefix_tokens)
            past[r.agent] = min(past.get(r.agent, extra), extra)
    typical = sorted(past.values())[len(past) // 2] if past else 0
    out = {}
    for r in records:
        path = r.prefix_tokens + past.get(r.agent, typical)
        out[(float(r.step), r.agent)] = Served(path, max(0, r.prompt_tokens + r.output_tokens - path))
    return out


def read_requests(path: Path) -> list[RequestRecord]:
    """`write_requests`' file back as records."""
    fields = RequestRecord.__dataclass_fields__
    return [RequestRecord(**{k: v for k, v in json.loads(line).items() if k in fields})
            for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class HostTier:
    """The host KV tier a run's host-tier systems had: its pool in tokens and SGLang's write policy."""

    tokens: int
    write_policy: str = WRITE_THROUGH

    def distinct_tokens(self, kv_tokens: int) -> int:
        """Write-through copies every cached device node to host memory, so the host pool holds
        all there is; write-back copies a node when the device evicts it, so the tiers add up."""
        if self.write_policy == "write_back":
            return kv_tokens + self.tokens
        return max(kv_tokens, self.tokens)


def host_tier(runs: list[WorkloadRun], kv_tokens: int) -> HostTier:
    """The host tier of the ScaleSim system that held the most distinct tokens, from its stats;
    else SGLang's default (`HICACHE_RATIO` times the device pool, write-through). SGLang shrinks
    the default pool to the host memory it finds free beyond a 10 GiB reserve (at 200 agents on a
    24 GiB machine, to 1.39 times), and the oracle must not get memory no system had."""
    tiers = [HostTier(m["host_total"], m.get("host_write_policy", WRITE_THROUGH))
             for m in (r.server.get("memory", {}) for r in runs) if m.get("host_total")]
    return max(tiers, key=lambda t: t.distinct_tokens(kv_tokens), default=default_host_tier(kv_tokens))


def default_host_tier(kv_tokens: int) -> HostTier:
    return HostTier(int(kv_tokens * HICACHE_RATIO))


def write_requests(path: Path, records: list[RequestRecord]) -> None:
    """Every request of one system's workload run, one JSON object per line (to find which
    calls missed, and how much of their prefix was cached)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**asdict(r), "hit": r.hit}) + "\n" for r in records))


def write_results(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(report.markdown(results))
    report.plot(results, out / "makespan.png")


def rescore(out: Path) -> dict[str, Any]:
    """Recompute the headline, table and plot of a finished run from its `results.json`, traces and
    hints, and each system's `call_figures` from its kept requests (one round per system); a
    workload whose trace was not kept (committed results keep none) keeps its recorded oracles."""
    results = json.loads((out / "results.json").read_text())
    budget = results["meta"]["budget"]
    kv = budget["kv_tokens"]
    # Runs before the pool, then the policy, were recorded had SGLang's default write-through.
    host = HostTier(budget.get("host_kv_tokens", default_host_tier(kv).tokens),
                    budget.get("host_write_policy", WRITE_THROUGH))
    oracles = {}
    for w, entry in results["workloads"].items():
        for system, m in entry["systems"].items():  # runs recorded before these figures existed
            kept = out / "requests" / f"{system}-{w}.jsonl"
            if "rounds" not in m and kept.exists():
                m.update(report.call_figures(read_requests(kept)))
        trace, hints = out / f"trace-{w}.jsonl", out / f"hints-{w}.jsonl"
        h = entry.get("headline", {})
        requests = out / "requests" / f"{SERVED_SYSTEM}-{w}.jsonl"
        if trace.exists():
            oracles[w] = oracle_hit_rates(read_trace(trace), kv, host, read_pushes(hints) if hints.exists() else None,
                                          served_content(read_requests(requests)) if requests.exists() else None)
        else:
            oracles[w] = {"device": h.get("oracle_hit_rate_device"), "device_host": h.get("oracle_hit_rate"),
                          "hints": h.get("hints_hit_rate"), "hints_served": h.get("hints_served_hit_rate")}
    report.rescore(results, oracles)
    write_results(results, out)
    return results


def _largest_per_rank(per_workload: dict[str, dict[str, int]]) -> list[int]:
    """Per size rank, the largest prefix over the workloads: one budget that covers them all."""
    ranked = [sorted(per.values(), reverse=True) for per in per_workload.values()]
    return [max(sizes) for sizes in zip(*ranked)]


def trace_of(records: list[RequestRecord]) -> list[TraceRecord]:
    """The run as a trace in the core format (`next_step`: the agent's next call, if any; an
    agent calls at most once per step, so it is always later)."""
    nxt: dict[str, float] = {}
    out: list[TraceRecord] = []
    for r in reversed(records):
        out.append(TraceRecord(step=r.step, agent=r.agent, prefix=f"{r.agent}:p", prefix_len=r.prefix_tokens,
                               output_len=r.output_tokens, next_step=nxt.get(r.agent)))
        nxt[r.agent] = r.step
    return out[::-1]


# Levels, not counts: reported as they stand after the workload, not as a difference.
GAUGES = frozenset({"held", "held_tokens", "adapters_with_agents", "agents_registered_with_adapter"})


def server_delta(before: dict | None, after: dict | None) -> dict[str, Any]:
    """ScaleSim's counters over one workload (scheduler 0 and the HTTP side); gauges and pool
    sizes as they stand at its end."""
    if not before or not after:
        return {}
    b, a = before["schedulers"][0], after["schedulers"][0]
    out: dict[str, Any] = {}
    for section in ("host_kv", "lora", "evicted_tokens_by_reason"):
        if isinstance(a.get(section), dict):
            out[section] = {k: v if k in GAUGES else round(v - b[section].get(k, 0), 6)
                            for k, v in a[section].items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out["hook_errors"] = a.get("hook_errors", 0)
    # The pools the server really has (tokens): the budget asked for, as SGLang sized it.
    out["memory"] = {k: v for k, v in a.get("memory", {}).items()
                     if k in ("device_total", "host_total", "host_write_policy")}
    return out
