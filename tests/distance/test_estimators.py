"""Each estimator against hand-computed cases, edge cases included."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalesim.distance.estimators import (
    ActivationPathEstimator,
    EventQueueEstimator,
    LearnedEstimator,
    PlanEstimator,
    SpatialEstimator,
    TurnEstimator,
    Walker,
    combine_min,
)


def test_combine_min():
    assert combine_min({"a": 3, "b": 1}, {"a": 2, "c": 5}, {}) == {"a": 2, "b": 1, "c": 5}


def test_plan_remaining_action_time():
    plans = PlanEstimator()
    plans.set_action("cook", 3)
    plans.set_action("sleep", 8)
    plans.advance(2)
    plans.set_action("walk", 1)  # starts now
    assert plans.distances() == {"cook": 1.0, "sleep": 6.0, "walk": 1.0}
    plans.advance(4)
    # A plan that just ended: the agent calls now.
    assert plans.distances() == {"cook": 0.0, "sleep": 4.0, "walk": 0.0}
    with pytest.raises(ValueError):
        plans.set_action("x", -1)


def test_spatial_meeting_is_the_later_arrival_each_at_own_speed():
    s = SpatialEstimator()
    cafe = (10.0, 0.0)
    s.set_walker("fast", Walker((0.0, 0.0), cafe, speed=2.0))  # arrives at 5
    s.set_walker("slow", Walker((4.0, 0.0), cafe, speed=0.5))  # arrives at 12
    s.set_walker("loner", Walker((0.0, 0.0), (50.0, 0.0), speed=1.0))
    assert s.distances() == {"fast": 12.0, "slow": 12.0}


def test_spatial_earliest_partner_and_already_together():
    s = SpatialEstimator()
    park = (0.0, 3.0)
    s.set_walker("a", Walker((0.0, 0.0), park, speed=1.0))  # 3
    s.set_walker("b", Walker((0.0, 3.0)))  # already there, staying: 0
    s.set_walker("c", Walker((0.0, 3.0)))  # already together with b
    s.set_walker("d", Walker((0.0, -7.0), park, speed=1.0))  # 10
    assert s.distances() == {"a": 3.0, "b": 0.0, "c": 0.0, "d": 10.0}


def test_spatial_min_with_action_time_and_immobile_agents():
    plans = PlanEstimator()
    plans.set_action("a", 2)
    plans.set_action("b", 9)
    s = SpatialEstimator(plans)
    s.set_walker("a", Walker((0.0, 0.0), (6.0, 0.0), speed=1.0))
    s.set_walker("b", Walker((6.0, 0.0)))
    s.set_walker("stuck", Walker((1.0, 1.0), (6.0, 0.0), speed=0.0))  # never arrives
    assert s.distances() == {"a": 2.0, "b": 6.0}


def test_activation_bfs_hops_incremental():
    graph = {"s": ["a", "b"], "a": ["c"], "b": ["c"], "c": ["d"], "x": ["y"]}
    est = ActivationPathEstimator(graph)
    assert est.distances() == {}  # empty front: nobody is known
    est.activate(["s"])
    assert est.distances() == {"s": 0.0, "a": 1.0, "b": 1.0, "c": 2.0, "d": 3.0}
    est.activate(["a", "b"])  # s has spoken: it drops out
    assert est.distances() == {"a": 0.0, "b": 0.0, "c": 1.0, "d": 2.0}
    est.activate(["c"])
    assert est.distances() == {"c": 0.0, "d": 1.0}
    # x and y are another component: never reachable, so unknown throughout.


def test_activation_undirected_and_new_source_shortens_paths():
    est = ActivationPathEstimator({"a": ["b"], "b": ["c"], "c": ["d"], "d": ["e"]}, directed=False)
    est.activate(["a"])
    assert est.distances()["e"] == 4.0
    est.activate(["e"])  # news also breaks out at the far end
    assert est.distances() == {"e": 0.0, "b": 1.0, "c": 2.0, "d": 1.0}


def test_activation_spread_once_counts_hops_from_the_front_through_agents_not_yet_activated():
    # s - a - c - d, and s - b: once s has spoken, b is reachable only through s (no longer
    # spreading), so it drops out; c and d stay reachable through the front a.
    est = ActivationPathEstimator({"s": ["a", "b"], "a": ["c"], "c": ["d"]}, directed=False, spread_once=True)
    est.activate(["s"])
    assert est.distances() == {"s": 0.0, "a": 1.0, "b": 1.0, "c": 2.0, "d": 3.0}
    est.activate(["a"])
    assert est.distances() == {"a": 0.0, "c": 1.0, "d": 2.0}
    est.activate([])  # the news died out: nobody is near
    assert est.distances() == {}
    # Without spread_once, s keeps spreading: b stays one hop away.
    keeps = ActivationPathEstimator({"s": ["a", "b"], "a": ["c"], "c": ["d"]}, directed=False)
    keeps.activate(["s"])
    keeps.activate(["a"])
    assert keeps.distances() == {"a": 0.0, "b": 1.0, "c": 1.0, "d": 2.0}


def test_activation_with_a_share_gives_the_expected_activation_step():
    # s - a - b, each spreader passes it on with probability 0.5, horizon 2 (not by then: 3).
    # Once: a is activated at step 1 with 0.5, b at step 2 with 0.25 (a must have it first).
    once = ActivationPathEstimator({"s": ["a"], "a": ["b"]}, directed=False, spread_once=True, share=0.5,
                                   horizon=2)
    once.activate(["s"])
    assert once.distances() == {"s": 0.0, "a": 0.5 * 1 + 0.5 * 3, "b": 0.25 * 2 + 0.75 * 3}
    # Spreading on, s tries a again at step 2: a is nearer (0.5 at 1, 0.25 at 2, 0.25 never).
    keeps = ActivationPathEstimator({"s": ["a"], "a": ["b"]}, directed=False, share=0.5, horizon=2)
    keeps.activate(["s"])
    assert keeps.distances() == {"s": 0.0, "a": 0.5 + 0.25 * 2 + 0.25 * 3, "b": 0.25 * 2 + 0.75 * 3}


def test_activation_with_a_share_ranks_two_friends_at_the_front_nearer_than_one():
    est = ActivationPathEstimator({"f1": ["x", "y"], "f2": ["x"], "y": ["far"]}, directed=False,
                                  spread_once=True, share=0.2, horizon=1)
    est.activate(["f1", "f2"])
    d = est.distances()
    # x: 1 - 0.8 * 0.8 = 0.36 at step 1; y: 0.2; far is two hops out, past the horizon: unknown.
    assert d == pytest.approx({"f1": 0.0, "f2": 0.0, "x": 0.36 + 0.64 * 2, "y": 0.2 + 0.8 * 2})
    assert sorted(d, key=lambda a: (d[a], a)) == ["f1", "f2", "x", "y"]


@pytest.mark.parametrize("bad", [{"share": 0.0}, {"share": 1.5}, {"share": 0.2, "horizon": 0}])
def test_activation_share_and_horizon_are_checked(bad):
    with pytest.raises(ValueError):
        ActivationPathEstimator({"a": ["b"]}, **bad)


def test_turn_order_across_rounds_and_skips():
    t = TurnEstimator(["a", "b", "c"])
    assert t.distances() == {"a": 0.0, "b": 1.0, "c": 2.0}
    assert t.advance() == "a"
    assert t.distances() == {"b": 0.0, "c": 1.0, "a": 2.0}
    t.skip("c")
    # c's next turn is passed over: a goes right after b, c comes in the next round, after b.
    assert t.distances() == {"b": 0.0, "a": 1.0, "c": 3.0}
    assert t.advance() == "b"
    assert t.advance() == "a"  # c's turn was skipped
    assert t.distances() == {"b": 0.0, "c": 1.0, "a": 2.0}


def test_turn_skip_of_the_current_speaker_hands_the_turn_on():
    t = TurnEstimator(["a", "b", "c"])
    assert t.advance() == "a"
    t.skip("b")  # b was to speak now: c speaks instead, b in the next round
    assert t.speaker == "c"
    assert t.distances() == {"c": 0.0, "a": 1.0, "b": 2.0}
    assert [t.advance() for _ in range(4)] == ["c", "a", "b", "c"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 2)), max_size=30))
def test_turn_distances_are_the_schedule_while_no_skip_is_announced(ops):
    """Whatever advances and skips came before, D is exactly the number of turns until the agent
    speaks, and D = 0 is the current speaker."""
    order = ["a", "b", "c", "a", "d"]
    t = TurnEstimator(order)
    for speak, who, turns in ops:
        if speak:
            t.advance()
        else:
            t.skip("abcd"[who], turns)
    d = t.distances()
    assert d[t.speaker] == 0.0
    first: dict[str, float] = {}
    for turn in range(len(order) * (2 + sum(turns for _, _, turns in ops))):
        first.setdefault(t.advance(), float(turn))
    assert d == first


def test_turn_agent_speaking_twice_per_round_takes_nearest():
    t = TurnEstimator(["chair", "x", "chair", "y"])
    t.advance()
    assert t.distances() == {"x": 0.0, "chair": 1.0, "y": 2.0}


def test_event_queue_rank():
    q = EventQueueEstimator()
    q.schedule(5.0, "a")
    q.schedule(2.0, "b")
    q.schedule(2.0, "c")  # same time as b, inserted later
    q.schedule(1.0, "a")  # a's next event is its earliest
    assert q.distances() == {"a": 0.0, "b": 1.0, "c": 2.0}
    assert q.pop() == (1.0, "a")
    assert q.distances() == {"b": 0.0, "c": 1.0, "a": 2.0}


def test_learned_round_robin_is_exact_after_two_requests():
    est = LearnedEstimator()
    for step in range(9):  # round-robin over a, b, c
        est.observe("abc"[step % 3], float(step))
    est.advance(9)
    assert est.distances() == {"a": 0.0, "b": 1.0, "c": 2.0}


def test_learned_median_ignores_an_outlier_and_single_calls_are_unknown():
    est = LearnedEstimator(window=5)
    for t in (0, 4, 8, 30, 34):  # gaps 4, 4, 22, 4
        est.observe("a", float(t))
    est.observe("once", 10.0)
    est.advance(35)
    assert est.distances() == {"a": 3.0}
    with pytest.raises(ValueError, match="goes back"):
        est.observe("a", 1.0)


def test_learned_overdue_agent_is_due_now():
    est = LearnedEstimator()
    est.observe("a", 0.0)
    est.observe("a", 2.0)
    est.advance(100)
    assert est.distances() == {"a": 0.0}
    assert math.isclose(est.predicted_next("a"), 4.0)
