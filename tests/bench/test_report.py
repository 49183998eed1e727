"""Headline ratios and the run's trace, with exact numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalesim.bench.report import counters_line, headline, markdown, summarise
from scalesim.bench.sim import (HostTier, RequestRecord, RunConfig, WorkloadRun, host_tier, oracle_hit_rates,
                                read_requests, rescore, run_order, serve_args, served_content, server_delta, trace_of,
                                write_requests, write_results)
from scalesim.bench.systems import Budget, select
from scalesim.bench.workloads import WorkloadParams
from scalesim.trace.format import TraceRecord, write_pushes, write_trace
from scalesim.trace.replay import Served


META = {"params": {"agents": 2, "active": 0.5, "resident": 0.5, "steps": 2, "seed": 0},
        "budget": {"kv_tokens": 1, "unlimited_kv_tokens": 2, "adapter_slots": 1}, "model": "m", "adapters": False}


def _m(makespan: float, hit: float = 0.5, recomputed: int = 0) -> dict:
    return {"makespan_s": makespan, "kv_hit_rate": hit, "recomputed_tokens": recomputed}


def test_gap_closed_speedup_and_bound_ratio():
    h = headline({"sglang-lru": _m(100), "sglang-lfu": _m(90), "scalesim": _m(64, 0.45), "unlimited": _m(60)},
                 oracles={"device": 0.3, "device_host": 0.5})
    assert h["best_stock"] == "sglang-lfu"
    assert h["speedup"] == round(90 / 64, 3) and h["gap_closed"] == round(26 / 30, 3)
    assert h["vs_unlimited"] == round(64 / 60, 3) and h["hit_vs_oracle"] == 0.9  # against device + host
    assert (h["oracle_hit_rate"], h["oracle_hit_rate_device"]) == (0.5, 0.3)
    assert h["met"] == {"gap_closed": True, "vs_unlimited": True, "hit_vs_oracle": True}


def test_targets_are_judged_on_the_ratios_before_rounding():
    # 1,150.3 s against 1,000 s prints as 1.15 but is above the 1.15 target; a hit rate 0.89996
    # of the oracle's, and a gap closed of 0.79995, print as 0.9 and 0.8 and are below theirs.
    h = headline({"sglang-lru": _m(2000), "scalesim": _m(1150.3, 0.44998), "unlimited": _m(1000)},
                 oracles={"device_host": 0.5})
    assert (h["vs_unlimited"], h["met"]["vs_unlimited"]) == (1.15, False)
    assert (h["hit_vs_oracle"], h["met"]["hit_vs_oracle"]) == (0.9, False)
    h = headline({"sglang-lru": _m(3000), "scalesim": _m(1400.1), "unlimited": _m(1000)}, oracles=None)
    assert (h["gap_closed"], h["met"]["gap_closed"]) == (0.8, False)
    results = {"meta": META, "workloads": {"w": {"headline": h, "systems": {}}}}
    assert "| w | sglang-lru | 2.14 | 0.80 (missed) | 1.40 (missed) | n/a |" in markdown(results)


def test_gap_closed_in_tokens_is_against_the_stock_system_that_recomputed_least():
    h = headline({"sglang-lru": _m(100, recomputed=900), "sglang-lfu": _m(90, recomputed=1000),
                  "scalesim": _m(95, recomputed=500), "unlimited": _m(60, recomputed=400)}, oracles=None)
    assert (h["best_stock"], h["best_stock_tokens"]) == ("sglang-lfu", "sglang-lru")
    assert h["gap_closed_tokens"] == 0.8 and h["gap_closed"] == round(-5 / 30, 3)
    assert headline({"sglang-lru": _m(50, recomputed=400), "scalesim": _m(55, recomputed=400),
                     "unlimited": _m(52, recomputed=400)}, oracles=None)["gap_closed_tokens"] is None


def test_gap_closed_in_hit_rate_by_scalesim_and_by_belady_with_the_same_memory():
    h = headline({"sglang-lfu": _m(100, 0.5, recomputed=900), "sglang-tlru": _m(110, 0.4, recomputed=800),
                  "scalesim": _m(90, 0.55), "unlimited": _m(60, 0.8)}, oracles={"device_host": 0.6})
    # Against T-LRU, the stock system that recomputed least: ScaleSim 0.15 of 0.4, Belady 0.2 of 0.4.
    assert (h["gap_closed_hits"], h["oracle_gap_closed_hits"]) == (0.375, 0.5)
    assert "| 0.38 / 0.50 |" in markdown({"meta": META, "workloads": {"w": {"headline": h, "systems": {}}}})
    # Without ScaleSim the bound Belady sets is still reported; without a gap neither is.
    assert headline({"sglang-lfu": _m(100, 0.5), "unlimited": _m(60, 0.8)},
                    oracles={"device_host": 0.65})["oracle_gap_closed_hits"] == 0.5
    assert headline({"sglang-lfu": _m(100, 0.8), "scalesim": _m(90, 0.8), "unlimited": _m(60, 0.8)},
                    oracles={"device_host": 0.8})["oracle_gap_closed_hits"] is None


def test_no_gap_to_close_and_missing_systems_give_none():
    h = headline({"sglang-lru": _m(50), "scalesim": _m(55), "unlimited": _m(52)}, oracles=None)
    assert h["gap_closed"] is None and h["hit_vs_oracle"] is None and h["speedup"] == round(50 / 55, 3)
    assert headline({"sglang-lru": _m(50)}, oracles={"device_host": 0.3})["speedup"] is None


def test_scalesim_counters_line():
    server = {"host_kv": {"prefetch_issued": 30, "prefetch_used": 24, "prefetch_wasted": 6,
                          "hits": 20, "writeback_declined": 4, "wait_seconds": 0.29386},
              "lora": {"hits": 0, "misses": 0},
              "evicted_tokens_by_reason": {"farthest": 900, "no_distance": 0, "stale": 1200, "untagged": 0},
              "hook_errors": 0}
    assert counters_line("scalesim", server) == (
        "- `scalesim`: KV prefetch 30 issued, 24 used, 6 wasted; requests served from host memory 20; "
        "device victims host memory declined 4; load wait 0.29 s; evicted tokens farthest 900, no_distance 0, stale 1200, untagged 0; hook errors 0")


def test_trace_next_step_is_the_agents_next_call():
    records = [RequestRecord(0, "a", 100, 110, 0, 5, 0.1), RequestRecord(0, "b", 90, 95, 0, 5, 0.1),
               RequestRecord(2, "a", 100, 110, 100, 5, 0.1)]
    trace = trace_of(records)
    assert [(t.step, t.agent, t.next_step) for t in trace] == [(0, "a", 2), (0, "b", None), (2, "a", None)]
    run = WorkloadRun("w", "scalesim", 2.0, records)
    results = summarise([run], {"w": {"device": 0.4, "device_host": 0.5}}, params={"agents": 2, "active": 0.5, "resident": 0.5, "steps": 3, "seed": 0},
                        budget={"kv_tokens": 1, "unlimited_kv_tokens": 2, "adapter_slots": 1}, model="m", adapters=False)
    m = results["workloads"]["w"]["systems"]["scalesim"]
    assert (m["requests"], m["kv_hit_rate"], m["recomputed_tokens"], m["cold_share"]) == (3, round(1 / 3, 4), 215, round(2 / 3, 4))
    assert "| w |" in markdown(results)


def test_rounds_alternate_and_each_system_is_its_median_round():
    a, b, c = select("sglang-lru,scalesim,unlimited")
    assert [(r, s.name) for r, s in run_order((a, b, c), 3)] == [
        (0, "sglang-lru"), (0, "scalesim"), (0, "unlimited"), (1, "unlimited"), (1, "scalesim"), (1, "sglang-lru"),
        (2, "sglang-lru"), (2, "scalesim"), (2, "unlimited")]
    records = [RequestRecord(0, "a", 100, 110, 0, 5, 0.1), RequestRecord(1, "a", 100, 110, 100, 5, 0.1)]
    runs = [WorkloadRun("w", "scalesim", t, records) for t in (30.0, 10.0, 20.0)]
    m = summarise(runs, {}, **META)["workloads"]["w"]["systems"]["scalesim"]
    assert m["makespan_s"] == 20.0
    assert m["rounds"] == [{"makespan_s": t, "recomputed_tokens": 120, "kv_hit_rate": 0.5} for t in (30.0, 10.0, 20.0)]
    assert "| scalesim | 20.0 (30.0, 10.0, 20.0) |" in markdown(summarise(runs, {}, **META))
    assert "rounds" not in summarise(runs[:1], {}, **META)["workloads"]["w"]["systems"]["scalesim"]


def test_rescoring_a_run_without_its_trace_keeps_the_recorded_oracle(tmp_path):
    cold, warm = RequestRecord(0, "a", 100, 110, 0, 5, 0.1), RequestRecord(1, "a", 100, 110, 100, 5, 0.1)
    runs = [WorkloadRun("w", "sglang-lfu", 9.0, [cold, cold]), WorkloadRun("w", "unlimited", 5.0, [cold, warm])]
    write_results(summarise(runs, {"w": {"device": 0.25, "device_host": 0.4}}, **META), tmp_path)
    h = rescore(tmp_path)["workloads"]["w"]["headline"]
    # Stock hit rate 0, unlimited 0.5: Belady's 0.4 closes 0.8 of that gap.
    assert (h["oracle_hit_rate_device"], h["oracle_hit_rate"], h["oracle_gap_closed_hits"]) == (0.25, 0.4, 0.8)
    assert "| n/a / 0.80 |" in (tmp_path / "results.md").read_text()


def test_rescoring_replays_the_kept_trace_with_the_kept_hints(tmp_path):
    # Room for two 100-token prefixes (device 100 + host 100, written back); a b c a. Before
    # step 2 the pushed table says b comes back before a: wrong (b never does). The replay
    # evicts a and misses it at step 3; Belady evicts b and hits. No hints file: no figure.
    calls = [RequestRecord(k, x, 100, 110, 0, 5, 0.1) for k, x in enumerate("abca")]
    runs = [WorkloadRun("w", "sglang-lfu", 9.0, calls), WorkloadRun("w", "unlimited", 5.0, calls)]
    meta = {**META, "budget": {**META["budget"], "kv_tokens": 100, "host_kv_tokens": 100,
                               "host_write_policy": "write_back"}}
    write_results(summarise(runs, {}, **meta), tmp_path)
    write_trace(tmp_path / "trace-w.jsonl", trace_of(calls))
    assert rescore(tmp_path)["workloads"]["w"]["headline"]["hints_hit_rate"] is None
    write_pushes(tmp_path / "hints-w.jsonl", {0: {"a": 0}, 1: {"b": 0}, 2: {"c": 0, "b": 1, "a": 2}, 3: {"a": 0}})
    h = rescore(tmp_path)["workloads"]["w"]["headline"]
    assert (h["oracle_hit_rate_device"], h["oracle_hit_rate"], h["hints_hit_rate"]) == (0.0, 0.25, 0.0)
    assert "the pushed hints' in that memory as one pool: 0.00, n/a holding what ScaleSim's server held)" in (
        tmp_path / "results.md").read_text()
    # ScaleSim's request log kept: its calls' tails (15 tokens each) also take room.
    write_requests(tmp_path / "requests" / "scalesim-w.jsonl", calls)
    assert rescore(tmp_path)["workloads"]["w"]["headline"]["hints_served_hit_rate"] == 0.0
    assert "as one pool: 0.00, 0.00 holding what ScaleSim's server held)" in (tmp_path / "results.md").read_text()


def test_misses_after_first_calls_and_each_steps_slowest_call(tmp_path):
    # a misses twice: its first call (cold, every system's) and at step 2 (a miss after a first
    # call); b's second call hits (95 of 100 cached: at least 90%), c only calls once.
    records = [RequestRecord(0, "a", 100, 110, 0, 5, 2.0), RequestRecord(0, "b", 100, 110, 0, 5, 3.5),
               RequestRecord(1, "c", 100, 110, 0, 5, 1.25), RequestRecord(2, "a", 100, 110, 50, 5, 4.0),
               RequestRecord(2, "b", 100, 110, 95, 5, 0.5)]
    runs = [WorkloadRun("w", "scalesim", 9.0, records), WorkloadRun("w", "unlimited", 5.0, records[:3])]
    results = summarise(runs, {}, **META)
    m = results["workloads"]["w"]["systems"]["scalesim"]
    assert (m["misses_after_first_calls"], m["step_s"]) == (1, [3.5, 1.25, 4.0])
    assert "| 0.60 | 1 |" in markdown(results)  # cold share, then the misses after first calls
    # A run recorded before these figures: `rescore` adds them from the kept requests.
    for entry in results["workloads"]["w"]["systems"].values():
        del entry["misses_after_first_calls"], entry["step_s"]
    write_results(results, tmp_path)
    assert "| 0.60 | n/a |" in (tmp_path / "results.md").read_text()
    write_requests(tmp_path / "requests" / "scalesim-w.jsonl", records)
    systems = rescore(tmp_path)["workloads"]["w"]["systems"]
    assert (systems["scalesim"]["misses_after_first_calls"], systems["scalesim"]["step_s"]) == (1, [3.5, 1.25, 4.0])
    assert "misses_after_first_calls" not in systems["unlimited"]  # its requests were not kept


def test_served_content_is_each_calls_path_and_tail(tmp_path):
    # a's hits had 8 and 5 tokens cached past the prefix: its path is 5 past it; b never hit and
    # gets the median of the others' (5). The tail: the rest of the prompt plus the answer.
    records = [RequestRecord(0, "a", 100, 130, 0, 10, 0.1), RequestRecord(1, "a", 100, 130, 108, 10, 0.1),
               RequestRecord(2, "a", 100, 131, 105, 10, 0.1), RequestRecord(2, "b", 200, 240, 0, 12, 0.1)]
    assert served_content(records) == {(0.0, "a"): Served(105, 35), (1.0, "a"): Served(105, 35),
                                       (2.0, "a"): Served(105, 36), (2.0, "b"): Served(205, 47)}
    write_requests(tmp_path / "r.jsonl", records)
    assert read_requests(tmp_path / "r.jsonl") == records


def test_budget_holds_the_working_set_plus_the_resident_share():
    b = Budget.of([1000, 2000, 1500, 1200], active=1, resident=2, tail_tokens=100, output_tokens=32)
    assert b.kv_tokens == 2000 + 132 + 2 * 1425 and b.adapter_slots == 2
    assert b.unlimited_kv_tokens == 5700 + 2132 and b.adapters == 4
    (unlimited,) = select("unlimited")
    assert b.serve_args(unlimited, lora=True) == ["--max-total-tokens", "7832", "--max-loras-per-batch", "4"]
    fixed = Budget.of([1000, 2000, 1500, 1200], active=1, resident=2, tail_tokens=100, output_tokens=32,
                      kv_tokens=3000)
    assert (fixed.kv_tokens, fixed.unlimited_kv_tokens, fixed.adapter_slots) == (3000, 7832, 2)
    busy = Budget.of([1000, 2000, 1500, 1200], active=1, resident=2, tail_tokens=100, output_tokens=32,
                     peak_callers=3)
    assert (busy.kv_tokens, busy.adapter_slots) == (b.kv_tokens, 3)  # a busy step needs a slot per caller
    with pytest.raises(ValueError, match="--kv-tokens 2000 is below the working set of one step \\(2132 tokens"):
        Budget.of([1000, 2000], active=1, resident=1, tail_tokens=100, output_tokens=32, kv_tokens=2000)


def test_system_names_are_checked():
    assert [s.name for s in select("sglang-lru,scalesim")] == ["sglang-lru", "scalesim"]
    assert len(select("all")) == 19
    (stock_wb,) = select("sglang-lfu+host-wb")  # stock SGLang with ScaleSim's host write policy
    assert stock_wb.args[-3:] == ("--enable-hierarchical-cache", "--hicache-write-policy", "write_back")
    import pytest

    with pytest.raises(ValueError, match="valid: all, sglang-lru"):
        select("sglang-lruu")


def test_the_unlimited_bound_runs_the_host_tier_cache_class_with_a_tiny_host_pool():
    (unlimited, scalesim) = select("unlimited,scalesim")
    # The same cache class as the systems it bounds, with a host pool of a hundredth of its device
    # pool, which the `--hicache-ratio` (or `--hicache-size`) given to every system through
    # `--serve-arg` does not change: SGLang takes the last of a repeated flag.
    assert unlimited.args == ("--scalesim-disable", "--radix-eviction-policy", "lru", "--enable-hierarchical-cache",
                              "--hicache-write-policy", "write_back")
    assert unlimited.unlimited and not unlimited.hints
    config = RunConfig(WorkloadParams(agents=4), model=Path("/m"), adapters=False,
                       extra_args=("--hicache-ratio", "0.8", "--hicache-size", "3"))
    budget = Budget.of([1000, 2000], active=1, resident=1, tail_tokens=100, output_tokens=32)
    assert serve_args(config, budget, unlimited) == [
        "--model-path", "/m", "--enable-cache-report", "--max-total-tokens", "5132", "--scalesim-disable",
        "--radix-eviction-policy", "lru", "--enable-hierarchical-cache", "--hicache-write-policy", "write_back",
        "--hicache-ratio", "0.8", "--hicache-size", "3", "--hicache-size", "0", "--hicache-ratio", "0.01"]
    # Every other system takes the extras last.
    assert serve_args(config, budget, scalesim)[-5:] == [
        "--enable-hierarchical-cache", "--hicache-ratio", "0.8", "--hicache-size", "3"]


def test_tlru_systems_carry_the_config_sglang_requires():
    import json

    for name in ("sglang-tlru", "sglang-tlru+host", "sglang-tlru+host-wb"):
        (system,) = select(name)
        args = list(system.args)
        config = json.loads(args[args.index("--radix-eviction-policy-config") + 1])
        # SGLang refuses T-LRU unless threshold > next_prompt_estimate >= 0 (kv_cache_hook).
        assert config == {"threshold": 256, "next_prompt_estimate": 64}
    assert "--radix-eviction-policy-config" not in select("sglang-lru")[0].args


def test_server_counters_over_a_workload_are_differences_and_gauges_their_end_values():
    def stats(issued: int, held: int, registered: int) -> dict:
        return {"schedulers": [{"host_kv": {"prefetch_issued": issued, "held": held},
                                "lora": {"hits": issued, "agents_registered_with_adapter": registered},
                                "hook_errors": 0, "memory": {"device_total": 100, "device_free": 100 - held,
                                                             "host_total": 200, "host_free": 150,
                                                             "host_write_policy": "write_back"}}]}

    assert server_delta(stats(10, 2, 20), stats(25, 1, 20)) == {
        "host_kv": {"prefetch_issued": 15, "held": 1},
        "lora": {"hits": 15, "agents_registered_with_adapter": 20},
        "hook_errors": 0, "memory": {"device_total": 100, "host_total": 200, "host_write_policy": "write_back"}}
    assert server_delta(None, stats(1, 0, 0)) == {}


def test_the_host_tier_oracle_holds_what_the_write_policy_keeps_distinct():
    """Four 100-token prefixes in a cycle; device pool 100, host pool 200. Write-through copies
    every device token to host memory, so the tiers hold two prefixes, not three; write-back
    copies only what the device evicts, so they hold three."""
    trace = [TraceRecord(i, a, a, 100, 1, None) for i, a in enumerate("ABCD" * 3)]
    # Belady in 200 tokens: 3 hits; in 300: 6.
    assert oracle_hit_rates(trace, 100, HostTier(200)) == {"device": 0.0, "device_host": 3 / 12}
    assert oracle_hit_rates(trace, 100, HostTier(200, "write_back")) == {"device": 0.0, "device_host": 6 / 12}
    # A host pool SGLang shrank below the device pool's size adds nothing under write-through.
    assert oracle_hit_rates(trace, 100, HostTier(50)) == {"device": 0.0, "device_host": 0.0}


def test_the_oracle_gets_the_host_tier_the_servers_reported_else_the_default():
    def run(system: str, host: int | None, policy: str | None = None) -> WorkloadRun:
        memory = {} if host is None else {"device_total": 100, "host_total": host}
        if policy:
            memory["host_write_policy"] = policy
        return WorkloadRun("w", system, 1.0, [], server={"hook_errors": 0, "memory": memory} if memory else {})

    # SGLang sized the host pools by the memory it found free: the oracle gets the most distinct tokens.
    assert host_tier([run("sglang-lru+host", None), run("scalesim", 139), run("scalesim-evict", 141)], 100) == \
        HostTier(141)
    assert host_tier([run("scalesim", 141), run("scalesim-evict", 139, "write_back")], 100) == \
        HostTier(139, "write_back")  # 239 distinct tokens against 141
    assert host_tier([run("sglang-lru+host", None), run("unlimited", None)], 100) == HostTier(200)  # SGLang's default


def test_a_kv_budget_below_one_steps_working_set_is_refused_before_any_server_starts(tmp_path, capsys):
    from scalesim import cli

    out = tmp_path / "bench"
    code = cli.main(["bench", "sim", "--model", "tiny", "--agents", "4", "--steps", "1", "--no-adapters",
                     "--workloads", "plan_town", "--systems", "scalesim", "--kv-tokens", "10", "--out", str(out)])
    assert code == 2
    assert "scalesim bench sim: error: --kv-tokens 10 is below the working set of one step" in capsys.readouterr().err
    assert not out.exists()
