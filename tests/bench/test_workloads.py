"""The workload contract: the same seed gives the same run, hints name this step's callers,
the active share and the prefix lengths are what was asked for."""

from __future__ import annotations

import pytest

from scalesim.bench.workloads import WORKLOADS, WorkloadParams, make
from scalesim.bench.workloads.base import callers_per_step, estimate_tokens
from scalesim.bench.workloads.debate import Debate
from scalesim.distance.estimators import Walker


def _run(name: str, params: WorkloadParams, answer=lambda step, agent: f"ok {step}") -> list[list[str]]:
    sim = make(name, params)
    steps = []
    for k in range(sim.n_steps):
        distances = sim.distances(k)
        calls = sim.calls(k)
        callers = [c.agent for c in calls]
        assert len(set(callers)) == len(callers), "one call per agent per step"
        for c in calls:
            assert c.agent in sim.prefixes
            system, user = sim.messages(c)  # the private prefix leads, unchanged, so it can be cached
            assert system == {"role": "system", "content": sim.prefixes[c.agent]} and user["role"] == "user"
            assert c.situation in user["content"]
            sim.observe(k, c.agent, answer(k, c.agent))
        sim.end_step(k)
        steps.append(callers)
        assert all(d >= 0 for d in distances.values())
    return steps


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_same_seed_same_schedule_whatever_the_model_answers(name):
    params = WorkloadParams(agents=40, steps=12, seed=3, prefix_tokens=(50, 80))
    assert _run(name, params) == _run(name, params, answer=lambda step, agent: "something else entirely")
    assert _run(name, params) != _run(name, WorkloadParams(agents=40, steps=12, seed=4, prefix_tokens=(50, 80)))


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_hints_point_at_the_callers_and_the_share_is_about_right(name):
    params = WorkloadParams(agents=200, steps=30, seed=1, prefix_tokens=(20, 30))
    sim = make(name, params)
    calls = hinted = 0
    for k in range(params.steps):
        distances = sim.distances(k)
        step_calls = sim.calls(k)
        calls += len(step_calls)
        hinted += sum(distances.get(c.agent) == 0 for c in step_calls)
        for c in step_calls:
            sim.observe(k, c.agent, "fine")
        sim.end_step(k)
    share = calls / (params.steps * params.agents)
    assert 0.1 <= share <= 0.3, share  # 20% asked
    assert hinted / calls >= 0.95  # the hints know who calls (debate passes are the exception)


def test_prefixes_are_distinct_and_within_the_asked_length():
    sim = make("plan_town", WorkloadParams(agents=20, steps=1, prefix_tokens=(1000, 2000)))
    lengths = [estimate_tokens(p) for p in sim.prefixes.values()]
    assert len(set(sim.prefixes.values())) == 20
    assert min(lengths) >= 1000 * 0.9 and max(lengths) <= 2000 * 1.1
    other = make("debate", WorkloadParams(agents=20, steps=1, prefix_tokens=(1000, 2000)))
    assert not set(sim.prefixes.values()) & set(other.prefixes.values())  # per-workload text too


def test_debate_tables_speak_in_order_and_the_answer_reaches_the_next_speaker():
    sim = Debate(WorkloadParams(agents=10, active=0.2, steps=3, seed=0, prefix_tokens=(10, 20)))
    assert [len(t) for t in sim.tables] == [5, 5]
    first = sim.calls(0)
    assert [c.agent for c in first] == [t[0] for t in sim.tables]
    for c in first:
        sim.observe(0, c.agent, f"I, {c.agent}, disagree.")
    second = sim.calls(1)
    assert f"I, {first[0].agent}, disagree." in second[0].situation


@pytest.mark.parametrize("bad", [dict(agents=1), dict(active=0), dict(resident=1.5), dict(steps=0),
                                 dict(prefix_tokens=(10, 5)), dict(output_tokens=64)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        WorkloadParams(**bad)


def test_unknown_workload_lists_the_valid_ones():
    with pytest.raises(ValueError, match="plan_town, spatial_town, social_network, debate, replay"):
        make("town", WorkloadParams())


def test_spatial_town_hints_only_the_agent_that_will_greet_an_arrival():
    sim = make("spatial_town", WorkloadParams(agents=5, steps=6, seed=0, prefix_tokens=(20, 30)))
    a, b, c, d, e = sim.agent_ids
    square, park = (0.0, 0.0), (6.0, 0.0)
    sim.places = [square, park]
    # a leaves the square at step 2, before d arrives there at step 3: b (next in the greeting
    # order, staying until 5) greets d, and c, staying too, gets only its own departure.
    # e walks to the park, where nobody stays: nobody greets it.
    stays = {a: (square, None, 2), b: (square, None, 5), c: (square, None, 4),  # (at, heading to, steps left)
             d: (park, square, 3), e: (square, park, 2)}
    for agent, (position, destination, remaining) in stays.items():
        sim.walkers[agent] = Walker(position, destination, 2.0)
        sim.plans.set_action(agent, remaining, start=0)
        sim.why[agent] = "leave"
    assert sim.distances(0) == {a: 2.0, b: 3.0, c: 4.0, d: 3.0, e: 2.0}
    assert sim.distances(1) == {a: 1.0, b: 2.0, c: 3.0, d: 2.0, e: 1.0}
    sim.distances(2)
    assert [call.agent for call in sim.calls(2)] == [a, e]  # a leaves, e arrives where nobody stays
    for agent in (a, e):
        sim.observe(2, agent, "fine")
    sim.distances(3)
    assert [call.agent for call in sim.calls(3)] == [b, d]  # the hinted greeter is the one who greets


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_a_dry_run_counts_the_callers_of_every_step(name):
    params = WorkloadParams(agents=40, steps=12, seed=3, prefix_tokens=(50, 80))
    assert callers_per_step(make(name, params)) == [len(step) for step in _run(name, params)]


def test_the_busiest_step_can_exceed_the_active_share():
    # The budget's adapter slots take the busiest step, not the average (the figure docs cite).
    params = WorkloadParams(agents=200, steps=26, prefix_tokens=(20, 30))
    counts = callers_per_step(make("social_network", params))
    assert (params.active_agents, max(counts), counts.index(max(counts))) == (40, 61, 23)
    assert callers_per_step(make("debate", params)) == [40] * 26
