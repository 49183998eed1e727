"""Prefetch plans, with exact expected loads and displacements."""

from __future__ import annotations

import pytest

from scalesim.distance import DistanceTable
from scalesim.memory import ReferenceMemory
from scalesim.policy import DistancePriority, EvictionPolicy, Load, plan_prefetch


@pytest.fixture
def resident():
    table = DistanceTable(clock=lambda: 0.0)
    policy = EvictionPolicy(DistancePriority(), table)
    for key, agent, size in [("r_far", "f", 2), ("r_mid", "m", 2), ("r_near", "n", 2)]:
        policy.add(key, {agent}, size, 0.0)
    table.update({"f": 8, "m": 4, "n": 1}, epoch=0)
    return policy


def test_nearest_first_within_window_and_budget(resident):
    candidates = [Load("p5", 1, 5.0), Load("p2", 1, 2.0), Load("p3", 3, 3.0), Load("p9", 1, 9.0), Load("pu", 1)]
    plan = plan_prefetch(resident, free=1, demand=[], candidates=candidates, budget=4, window=6)
    # p2 fits in free space; p3 (size 3) displaces r_far (8 > 3) and r_mid (4 > 3);
    # p5 would exceed the budget (1 + 3 + 1 > 4); p9 is outside the window; pu is unknown.
    assert plan.prefetch == ["p2", "p3"]
    assert plan.evict == ["r_far", "r_mid"]
    assert plan.demand == []


def test_never_displaces_a_nearer_agent(resident):
    plan = plan_prefetch(resident, free=0, demand=[], candidates=[Load("p6", 4, 6.0)], budget=10, window=10)
    # Only r_far (8) is farther than 6; it frees 2 of the 4 needed: skip.
    assert plan == type(plan)([], [], [])
    plan = plan_prefetch(resident, free=0, demand=[], candidates=[Load("p6", 2, 6.0)], budget=10, window=10)
    assert (plan.prefetch, plan.evict) == (["p6"], ["r_far"])


def test_demand_first_and_may_displace_anything(resident):
    plan = plan_prefetch(resident, free=0, demand=[Load("d", 4, 0.0)], candidates=[Load("p", 2, 0.5)],
                         budget=10, window=10)
    # The demand load takes r_far and r_mid; the prefetch (0.5) may only displace state
    # farther than 0.5: r_near (1) is.
    assert plan.demand == ["d"]
    assert plan.evict == ["r_far", "r_mid", "r_near"]
    assert plan.prefetch == ["p"]


def test_pinned_state_is_not_displaced(resident):
    resident.pin("r_far")
    plan = plan_prefetch(resident, free=0, demand=[], candidates=[Load("p", 2, 2.0)], budget=10, window=10)
    assert (plan.prefetch, plan.evict) == (["p"], ["r_mid"])


def test_reference_memory_carries_out_a_plan_and_counts_waste():
    table = DistanceTable(clock=lambda: 0.0)
    memory = ReferenceMemory("kv", 3, EvictionPolicy(DistancePriority(), table))
    for key, agent in [("x", "a"), ("y", "b"), ("z", "c"), ("w", "d")]:
        memory.register(key, {agent}, 1)
    for t, key in enumerate(["x", "y", "z"]):
        memory.access(key, float(t))
        memory.release(key)
    table.update({"a": 9, "b": 1, "c": 2, "d": 3}, epoch=0)
    plan = memory.prefetch([Load("w", 1, 3.0)], budget=5, window=5, now=3.0)
    assert (plan.prefetch, plan.evict) == (["w"], ["x"])
    assert memory.access("w", 4.0) is True
    s = memory.stats
    assert (s.prefetches_issued, s.prefetches_used, s.prefetches_wasted) == (1, 1, 0)


def test_bad_budget():
    policy = EvictionPolicy(DistancePriority())
    with pytest.raises(ValueError, match="budget and free must be >= 0"):
        plan_prefetch(policy, free=0, demand=[], candidates=[], budget=-1, window=1)
