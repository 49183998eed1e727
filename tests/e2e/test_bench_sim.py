"""Smoke test of `scalesim bench sim`: every workload, 10 agents, 3 steps, against live servers
(stock SGLang with and without its host tier, ScaleSim and its two ablations, the unlimited
bound), tiny model. A test of the runner and its outputs, not of speed."""

from __future__ import annotations

import json

import pytest

from scalesim import cli
from scalesim.trace.format import read_pushes, read_trace
from tests.conftest import free_port

pytestmark = pytest.mark.server

SYSTEMS = ["sglang-lru", "sglang-lru+host", "scalesim", "scalesim-evict", "scalesim-prefetch", "unlimited"]
OURS = ("scalesim", "scalesim-evict", "scalesim-prefetch")  # the systems with ScaleSim's counters
WORKLOADS = ["plan_town", "spatial_town", "social_network", "debate", "replay"]


def test_every_workload_runs_on_every_system_and_the_results_are_well_formed(tmp_path, capsys):
    out = tmp_path / "bench"
    code = cli.main(["bench", "sim", "--model", "tiny", "--agents", "10", "--steps", "3", "--prefix-tokens", "200",
                     "400", "--systems", ",".join(SYSTEMS), "--out", str(out), "--port", str(free_port())])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = json.loads((out / "results.json").read_text())
    assert list(results["workloads"]) == WORKLOADS
    for name, entry in results["workloads"].items():
        systems = entry["systems"]
        assert list(systems) == SYSTEMS
        counts = {s: m["requests"] for s, m in systems.items()}
        assert len(set(counts.values())) == 1 and counts["scalesim"] > 0, (name, counts)  # same schedule everywhere
        for m in systems.values():
            assert m["makespan_s"] > 0 and 0 <= m["kv_hit_rate"] <= 1 and 0 <= m["cached_token_share"] <= 1
        for ours in OURS:
            assert systems[ours]["server"]["hook_errors"] == 0, (name, ours)
        assert set(systems["scalesim"]["server"]["evicted_tokens_by_reason"]) == {"farthest", "no_distance", "stale",
                                                                                  "tail", "untagged"}
        evict_only = systems["scalesim-evict"]["server"]
        assert evict_only["host_kv"]["prefetch_issued"] == evict_only["lora"]["prefetch_issued"] == 0  # prefetch off
        assert systems["sglang-lru"]["server"] == {}  # stock SGLang has no ScaleSim counters
        # The pools the servers really had: the device budget as asked; the host pool, which SGLang
        # sizes itself (twice the device pool where memory allows), is the oracle's.
        budget = results["meta"]["budget"]
        pools = [systems[ours]["server"]["memory"] for ours in OURS]
        assert {p["device_total"] for p in pools} == {budget["kv_tokens"]}
        assert budget["host_kv_tokens"] == max(p["host_total"] for p in pools) >= 2 * budget["kv_tokens"]
        # ScaleSim writes its host tier back: the oracle gets device plus host tokens.
        assert {p["host_write_policy"] for p in pools} == {budget["host_write_policy"]} == {"write_back"}
        h = entry["headline"]
        assert h["best_stock"] in ("sglang-lru", "sglang-lru+host") and h["speedup"] > 0 and h["vs_unlimited"] > 0
        assert 0 <= h["oracle_hit_rate_device"] <= h["oracle_hit_rate"] <= 1
        trace = read_trace(out / f"trace-{name}.jsonl")
        assert len(trace) == counts["scalesim"]
        # The distances pushed before each step (every step of the simulation, callers or not),
        # and what they allow in one pool.
        pushes = read_pushes(out / f"hints-{name}.jsonl")
        assert sorted(pushes) == [float(k) for k in range(len(pushes))] and {r.step for r in trace} <= set(pushes)
        assert 0 <= h["hints_hit_rate"] <= 1
        for system in SYSTEMS:  # every request on record, as the summary counted them
            lines = (out / "requests" / f"{system}-{name}.jsonl").read_text().splitlines()
            requests = [json.loads(line) for line in lines]
            assert len(requests) == counts[system]
            assert sum(r["hit"] for r in requests) / len(requests) == pytest.approx(systems[system]["kv_hit_rate"],
                                                                                    abs=1e-3)
    assert (out / "makespan.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "| plan_town | sglang-lru" in table and "## replay" in table
    assert "gap closed" in printed and "results.json" in printed
