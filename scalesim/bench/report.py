"""Figures of a `scalesim bench sim` run: per workload and system, and the headline ratios.

Per (workload, system): makespan, requests/s, request latency p50/p95, KV hit rate (requests
whose private prefix was at least 90% cached), cached share of prompt tokens, recomputed prompt
tokens, and ScaleSim's own counters where the system has them. Per workload, the headline:
the best stock system (shortest makespan among `sglang-*`), ScaleSim's speedup over it, the
**gap closed** = (T_best_stock - T_scalesim) / (T_best_stock - T_unlimited), ScaleSim's makespan
over the unlimited bound, and its hit rate over the Belady oracle's, each against its target.
Beside them, the same gap in recomputed prompt tokens (`gap_closed_tokens`, against the stock
system that recomputed least): a count, so it holds where one run's times are noise. And the
same gap in hit rate twice: closed by ScaleSim (`gap_closed_hits`) and by Belady's oracle with the
same memory (`oracle_gap_closed_hits`), the most any eviction policy could close: where that is
under the target, memory, not the policy, stands between the best stock system and the bound.
And `hints_hit_rate`: the distance policy's hit rate in the same memory as one pool, with the
distances the simulation pushed (`replay_pushed`). Belady's exceeds it by what the hints did not
foresee. `hints_served_hit_rate` replays the same holding what ScaleSim's server really held (each
call's cached path, a few tokens past the prefix, and its tail while it runs); it exceeds
ScaleSim's by what the server's two tiers and timing lost.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGETS = {"gap_closed": 0.8, "vs_unlimited": 1.15, "hit_vs_oracle": 0.9}


def hit_rate(records: Sequence[Any]) -> float:
    return sum(r.hit for r in records) / len(records) if records else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def call_figures(records: Sequence[Any]) -> dict[str, Any]:
    """What a run's request records tell beyond the totals: `misses_after_first_calls`, the calls
    of an agent that had called before and found its prefix not cached (first calls miss on every
    system: the others are the ones memory policy decides), and `step_s`, each step's slowest
    call, the step's time to within the client's overhead (a step's calls go out together and the
    next step waits for all of them): steps that are the same work for every system (the cold
    ones) then compare server against server within a run."""
    seen: set[str] = set()
    misses = 0
    slowest: dict[int, float] = {}
    for r in records:
        misses += r.agent in seen and not r.hit
        seen.add(r.agent)
        slowest[r.step] = max(slowest.get(r.step, 0.0), r.latency_s)
    return {"misses_after_first_calls": misses, "step_s": [round(slowest[k], 2) for k in sorted(slowest)]}


def metrics(run: Any) -> dict[str, Any]:
    records = run.records
    prompt = sum(r.prompt_tokens for r in records)
    cached = sum(min(r.cached_tokens, r.prompt_tokens) for r in records)
    cold = len({r.agent for r in records})  # an agent's first call is the cold one
    latencies = [r.latency_s for r in records]
    return {
        "makespan_s": round(run.makespan_s, 3),
        "requests": len(records),
        "requests_per_s": round(len(records) / run.makespan_s, 3) if run.makespan_s else 0.0,
        "latency_p50_s": round(_percentile(latencies, 0.5), 3),
        "latency_p95_s": round(_percentile(latencies, 0.95), 3),
        "kv_hit_rate": round(hit_rate(records), 4),
        "cold_share": round(cold / len(records), 4) if records else 0.0,
        "cached_token_share": round(cached / prompt, 4) if prompt else 0.0,
        "recomputed_tokens": prompt - cached,
        "mean_latency_s": round(statistics.fmean(latencies), 3) if latencies else 0.0,
        **call_figures(records),
        "server": run.server,
    }


def _closed(start: float, reached: float, bound: float) -> float:
    """The share of the way from `start` to `bound` that `reached` went (either direction:
    times and tokens fall towards the bound, hit rates rise)."""
    return (start - reached) / (start - bound)


def headline(per_system: dict[str, dict[str, Any]], oracles: dict[str, float | None] | None) -> dict[str, Any]:
    """The ratios for one workload (None where a needed system was not run). `oracles`: Belady's
    hit rate with the device budget (`device`) and with device plus host memory (`device_host`):
    ScaleSim runs with the host tier, so its hit rate is set against the second; and the pushed
    hints' in that memory (`hints`, `replay_pushed`)."""
    oracles = oracles or {}
    oracle = oracles.get("device_host")
    stock = {n: m["makespan_s"] for n, m in per_system.items() if n.startswith("sglang-")}
    best = min(stock, key=stock.get) if stock else None
    ours, bound = per_system.get("scalesim"), per_system.get("unlimited")
    tokens = {n: per_system[n]["recomputed_tokens"] for n in stock}
    best_tokens = min(tokens, key=tokens.get) if tokens else None
    out: dict[str, Any] = {"best_stock": best, "speedup": None, "gap_closed": None, "vs_unlimited": None,
                           "hit_vs_oracle": None, "oracle_hit_rate": oracle,
                           "oracle_hit_rate_device": oracles.get("device"), "hints_hit_rate": oracles.get("hints"),
                           "hints_served_hit_rate": oracles.get("hints_served"),
                           "best_stock_tokens": best_tokens, "gap_closed_tokens": None,
                           "gap_closed_hits": None, "oracle_gap_closed_hits": None}
    if best_tokens is not None and bound is not None:
        floor, top = per_system[best_tokens]["kv_hit_rate"], bound["kv_hit_rate"]
        if top > floor:
            if oracle is not None:
                out["oracle_gap_closed_hits"] = round(_closed(floor, oracle, top), 3)
            if ours is not None:
                out["gap_closed_hits"] = round(_closed(floor, ours["kv_hit_rate"], top), 3)
    if ours is None:
        return out
    t = ours["makespan_s"]
    if best_tokens is not None and bound is not None and tokens[best_tokens] > bound["recomputed_tokens"]:
        out["gap_closed_tokens"] = round(
            _closed(tokens[best_tokens], ours["recomputed_tokens"], bound["recomputed_tokens"]), 3)
    exact: dict[str, float | None] = dict.fromkeys(TARGETS)  # targets are judged before rounding
    if best is not None:
        out["speedup"] = round(stock[best] / t, 3)
        if bound is not None and stock[best] > bound["makespan_s"]:
            exact["gap_closed"] = _closed(stock[best], t, bound["makespan_s"])
    if bound is not None:
        exact["vs_unlimited"] = t / bound["makespan_s"]
    if oracle:
        exact["hit_vs_oracle"] = ours["kv_hit_rate"] / oracle
    for k, v in exact.items():
        out[k] = None if v is None else round(v, 3)
    out["met"] = {k: None if exact[k] is None else exact[k] <= v if k == "vs_unlimited" else exact[k] >= v
                  for k, v in TARGETS.items()}
    return out


def summarise(runs: Sequence[Any], oracles: dict[str, dict[str, float | None]], **meta: Any) -> dict[str, Any]:
    """Figures per workload and system. A system run in several rounds (`--repeats`) is
    represented by its median-makespan round, with every round's makespan, recomputed tokens
    and hit rate beside it (`rounds`): times vary between rounds on a shared machine, counts
    should not."""
    grouped: dict[str, dict[str, list[Any]]] = {}
    for run in runs:
        grouped.setdefault(run.workload, {}).setdefault(run.system, []).append(run)
    workloads: dict[str, dict[str, Any]] = {}
    for workload, systems in grouped.items():
        entry = workloads[workload] = {"systems": {}}
        for system, rounds in systems.items():
            figures = [metrics(r) for r in rounds]
            m = sorted(figures, key=lambda f: f["makespan_s"])[(len(figures) - 1) // 2]
            if len(figures) > 1:
                m["rounds"] = [{k: f[k] for k in ("makespan_s", "recomputed_tokens", "kv_hit_rate")} for f in figures]
            entry["systems"][system] = m
    results = {"meta": meta, "targets": TARGETS, "workloads": workloads}
    rescore(results, oracles)
    return results


def rescore(results: dict[str, Any], oracles: dict[str, dict[str, float | None]]) -> None:
    """(Re)compute every workload's headline from its systems' figures."""
    for name, entry in results["workloads"].items():
        entry["headline"] = headline(entry["systems"], oracles.get(name))


def _host_tier(budget: dict[str, Any]) -> str:
    if "host_kv_tokens" not in budget:
        return ""
    policy = budget.get("host_write_policy", "write_through").replace("_", "-")
    return f", host tier {budget['host_kv_tokens']} tokens ({policy})"


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _target(h: dict[str, Any], key: str) -> str:
    """A target's figure, marked where it is missed (judged unrounded: 1.1503 prints as 1.15)."""
    return _fmt(h[key]) + (" (missed)" if h.get("met", {}).get(key) is False else "")


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    p = meta["params"]
    lines = [f"# scalesim bench sim: {p['agents']} agents, {p['active']:.0%} active, {p['resident']:.0%} resident, "
             f"{p['steps']} steps, seed {p['seed']}", "",
             f"Model `{Path(meta['model']).name}`, adapters {'on' if meta['adapters'] else 'off'}; KV budget "
             f"{meta['budget']['kv_tokens']} tokens ({meta['budget']['unlimited_kv_tokens']} unlimited)"
             + _host_tier(meta["budget"])
             + ", "
             f"adapter slots {meta['budget']['adapter_slots']}.", "",
             "| workload | best stock | ScaleSim speedup | gap closed (>= 0.8) | ScaleSim / unlimited (<= 1.15) "
             "| hit rate / oracle (>= 0.9) | gap closed in recomputed tokens (stock system) "
             "| gap closed in hit rate: ScaleSim / Belady |",
             "|---|---|---|---|---|---|---|---|"]
    for name, entry in results["workloads"].items():
        h = entry["headline"]
        by_tokens = f"{_fmt(h.get('gap_closed_tokens'))} ({h.get('best_stock_tokens') or 'n/a'})"
        lines.append(f"| {name} | {h['best_stock'] or 'n/a'} | {_fmt(h['speedup'])} | {_target(h, 'gap_closed')} | "
                     f"{_target(h, 'vs_unlimited')} | {_target(h, 'hit_vs_oracle')} | {by_tokens} | "
                     f"{_fmt(h.get('gap_closed_hits'))} / {_fmt(h.get('oracle_gap_closed_hits'))} |")
    for name, entry in results["workloads"].items():
        h = entry["headline"]
        lines += ["", f"## {name} (Belady hit rate: {_fmt(h['oracle_hit_rate_device'])} with the device budget, "
                  f"{_fmt(h['oracle_hit_rate'])} with device plus host memory; the pushed hints' in that memory "
                  f"as one pool: {_fmt(h.get('hints_hit_rate'))}, {_fmt(h.get('hints_served_hit_rate'))} "
                  f"holding what ScaleSim's server held)", "",
                  "| system | makespan s | req/s | latency p50 / p95 s | KV hit rate | cached tokens | "
                  "recomputed tokens | cold | misses after first calls |", "|---|---|---|---|---|---|---|---|---|"]
        for system, m in entry["systems"].items():
            lines.append(f"| {system} | {_makespan(m)} | {m['requests_per_s']:.2f} | "
                         f"{m['latency_p50_s']:.2f} / {m['latency_p95_s']:.2f} | {m['kv_hit_rate']:.2f} | "
                         f"{m['cached_token_share']:.2f} | {m['recomputed_tokens']} | {m['cold_share']:.2f} | "
                         f"{_fmt(m.get('misses_after_first_calls'), 'd')} |")
        notes = [counters_line(system, m["server"]) for system, m in entry["systems"].items() if m.get("server")]
        if notes:
            lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _makespan(m: dict[str, Any]) -> str:
    """The makespan; over several rounds the median, then every round in run order."""
    rounds = m.get("rounds")
    if not rounds:
        return f"{m['makespan_s']:.1f}"
    each = ", ".join(format(r["makespan_s"], ".1f") for r in rounds)
    return f"{m['makespan_s']:.1f} ({each})"


def counters_line(system: str, server: dict[str, Any]) -> str:
    """A ScaleSim system's own counters over one workload, as one Markdown list item."""
    parts = []
    kv = server.get("host_kv") or {}
    if kv:
        parts.append(f"KV prefetch {kv.get('prefetch_issued', 0):g} issued, {kv.get('prefetch_used', 0):g} used, "
                     f"{kv.get('prefetch_wasted', 0):g} wasted; "
                     f"requests served from host memory {kv.get('hits', 0):g}; "
                     f"device victims host memory declined {kv.get('writeback_declined', 0):g}; "
                     f"load wait {kv.get('wait_seconds', 0):.2f} s")
    lora = server.get("lora") or {}
    if lora.get("hits") or lora.get("misses"):
        parts.append(f"adapter slots {lora['hits']:g} hits, {lora['misses']:g} misses, "
                     f"prefetch {lora.get('prefetch_used', 0):g}/{lora.get('prefetch_issued', 0):g} used")
    evicted = server.get("evicted_tokens_by_reason") or {}
    if evicted:
        parts.append("evicted tokens " + ", ".join(f"{reason} {tokens:g}" for reason, tokens in evicted.items()))
    parts.append(f"hook errors {server.get('hook_errors', 0)}")
    return f"- `{system}`: " + "; ".join(parts)


def plot(results: dict[str, Any], path: Path) -> None:
    """Makespan of each system over the unlimited bound (or over the slowest system), per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results["workloads"])
    systems = list(dict.fromkeys(s for w in workloads for s in results["workloads"][w]["systems"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(workloads) * max(1, len(systems)) / 4), 4))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        values = []
        for w in workloads:
            entry = results["workloads"][w]["systems"]
            base = (entry.get("unlimited") or max(entry.values(), key=lambda m: m["makespan_s"]))["makespan_s"]
            values.append(entry[system]["makespan_s"] / base if system in entry and base else 0.0)
        ax.bar([x + i * width for x in range(len(workloads))], values, width, label=system)
    ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(workloads))], workloads)
    ax.set_ylabel("makespan / unlimited memory")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Simulation makespan (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
