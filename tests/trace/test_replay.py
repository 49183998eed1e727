"""Trace format, replayer and the Belady oracle; properties over random traces (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalesim.distance import DistanceTable
from scalesim.memory import ReferenceMemory, Tier
from scalesim.memory.reference import CapacityError
from scalesim.policy import DistancePriority, EvictionPolicy, LRUPriority, make_priority
from scalesim.trace import (TraceError, TraceRecord, read_pushes, read_trace, replay_belady, replay_policy,
                            replay_pushed, write_pushes, write_trace)
from scalesim.trace.replay import Served


def trace_from_agents(seq: list[str], size: int | list[int] = 10) -> list[TraceRecord]:
    """One request per step; each agent's prefix is its own; next_step from the sequence."""
    out = []
    for i, agent in enumerate(seq):
        nxt = next((j for j in range(i + 1, len(seq)) if seq[j] == agent), None)
        s = size if isinstance(size, int) else size[int(agent[1:])]
        out.append(TraceRecord(step=i, agent=agent, prefix=f"{agent}:p", prefix_len=s, output_len=8, next_step=nxt))
    return out


def test_hand_made_trace_exact_counts():
    # Capacity 2 prefixes; a b c a b c ... LRU thrashes, Belady keeps one of them.
    tr = trace_from_agents(["a0", "a1", "a2", "a0", "a1", "a2", "a0", "a1", "a2"])
    assert (replay_policy(tr, LRUPriority(), 20).hits, replay_belady(tr, 20).hits) == (0, 3)
    assert replay_policy(tr, DistancePriority(), 20).hits == 3
    assert replay_policy(tr, DistancePriority(), 20, distances="next_step").hits == 3
    assert replay_policy(tr, DistancePriority(), 20, distances="none").hits == 0
    r = replay_belady(tr, 20)
    assert (r.requests, r.misses, r.tokens_loaded) == (9, 6, 60)


def _steps(*steps: str) -> list[TraceRecord]:
    """One step per string, one 10-token prefix per letter (each agent's own)."""
    return [TraceRecord(step=k, agent=a, prefix=f"{a}:p", prefix_len=10, output_len=1, next_step=None)
            for k, callers in enumerate(steps) for a in callers]


def test_pushed_hints_replay_follows_the_pushed_table_and_pins_a_steps_calls_together():
    # Room for three prefixes. At step 2 the pushed table says b comes last (3), c next (1):
    # wrong, b calls at step 3 and c never again. The policy evicts b and misses it; Belady
    # evicts c and hits. At step 3 d and c are unknown (not in the table): evicted first.
    tr = _steps("ab", "c", "d", "b", "a")
    pushes = {0: {"a": 0, "b": 0, "c": 1, "d": 2}, 1: {"c": 0, "d": 1, "a": 2, "b": 3},
              2: {"d": 0, "c": 1, "a": 2, "b": 3}, 3: {"b": 0, "a": 1}, 4: {"a": 0}}
    r = replay_pushed(tr, pushes, 30)
    assert (r.requests, r.hits, r.misses, r.tokens_loaded) == (6, 1, 5, 50)
    assert replay_belady(tr, 30).hits == 2
    # Right hints at step 2 (b next, c never): it hits where Belady does.
    assert replay_pushed(tr, {**pushes, 2: {"d": 0, "b": 1, "a": 2}}, 30).hits == 2
    # A step's three calls are in flight together: 20 tokens cannot hold them, one at a time could.
    with pytest.raises(CapacityError):
        replay_pushed(_steps("abc"), {}, 20)
    assert replay_belady(_steps("abc"), 20).misses == 3


def test_pushed_hints_replay_of_the_served_content_holds_paths_and_tails():
    # 30 tokens. Prefixes alone (10 each) fit a b c together: b and a hit at steps 2 and 3. As
    # served, paths are 11 and each call's tail 3 tokens: step 1 needs room for c, evicts the two
    # tails first (no owner), then the farthest agent, a; b still hits, a misses.
    tr = _steps("ab", "c", "b", "a")
    pushes = {0: {"a": 0, "b": 0, "c": 1}, 1: {"c": 0, "b": 1, "a": 2}, 2: {"b": 0, "a": 1}, 3: {"a": 0}}
    assert replay_pushed(tr, pushes, 30).hits == 2
    served = {(r.step, r.agent): Served(11, 3) for r in tr}
    r = replay_pushed(tr, pushes, 30, served)
    assert (r.policy, r.requests, r.hits, r.misses, r.tokens_loaded) == ("distance/pushed/served", 5, 1, 4, 44)
    # Paths without tails: 33 tokens hold all three, and both hit again.
    no_tails = replay_pushed(tr, pushes, 33, {(r.step, r.agent): Served(11, 0) for r in tr})
    assert (no_tails.hits, no_tails.tokens_loaded) == (2, 33)


def test_pushes_round_trip_and_bad_lines(tmp_path):
    path = tmp_path / "hints.jsonl"
    pushes = {0.0: {"a": 0.0, "b": 2.5}, 1.0: {}}
    write_pushes(path, pushes)
    assert read_pushes(path) == pushes
    for line, message in [('{"step": 0}', "line 1: a push needs exactly the fields step and distances"),
                          ('{"step": -1, "distances": {}}', "line 1: step must be a finite number >= 0, got -1"),
                          ('{"step": 0, "distances": {"a": -1}}',
                           "line 1: distances['a'] must be finite and >= 0, got -1"),
                          ("[1", "line 1: not JSON")]:
        path.write_text(line + "\n")
        with pytest.raises(TraceError) as err:
            read_pushes(path)
        assert str(err.value).startswith(message)


def test_round_trip_and_bad_lines(tmp_path):
    tr = trace_from_agents(["a0", "a1", "a0"])
    path = tmp_path / "t.jsonl"
    write_trace(path, tr)
    assert read_trace(path) == tr
    good = json.loads(path.read_text().splitlines()[0])
    cases = [
        ({**good, "prefix_len": 0}, "line 1: prefix_len must be an integer >= 1, got 0"),
        ({**good, "step": -1}, "line 1: step must be a finite number >= 0, got -1"),
        ({**good, "next_step": 0}, "line 1: next_step 0 must be after step 0"),
        ({**good, "agent": ""}, "line 1: agent must be a non-empty string, got ''"),
        ({k: v for k, v in good.items() if k != "prefix"}, "line 1: missing field(s) prefix"),
    ]
    for obj, message in cases:
        path.write_text(json.dumps(obj) + "\n")
        with pytest.raises(TraceError) as err:
            read_trace(path)
        assert str(err.value) == message
    path.write_text("{not json\n")
    with pytest.raises(TraceError, match="line 1: not JSON"):
        read_trace(path)
    path.write_text(json.dumps({**good, "step": 5, "next_step": 6}) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(TraceError, match="line 2: step 0 goes back from 5"):
        read_trace(path)


agent_seqs = st.lists(st.integers(min_value=0, max_value=11), min_size=1, max_size=120).map(
    lambda xs: [f"a{x}" for x in xs]
)


@settings(max_examples=150, deadline=None)
@given(seq=agent_seqs, slots=st.integers(min_value=1, max_value=8))
def test_no_policy_beats_the_oracle_and_perfect_distances_equal_it(seq, slots):
    tr = trace_from_agents(seq)
    capacity = 10 * slots
    oracle = replay_belady(tr, capacity).hits
    for priority in (LRUPriority(), DistancePriority()):
        for mode in ("perfect", "next_step", "none"):
            assert replay_policy(tr, priority, capacity, distances=mode).hits <= oracle
    assert replay_policy(tr, DistancePriority(), capacity).hits == oracle
    assert replay_policy(tr, DistancePriority(), capacity, distances="none").hits == replay_policy(
        tr, LRUPriority(), capacity).hits


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(min_value=0, max_value=9), st.booleans()), min_size=1, max_size=80),
    sizes=st.lists(st.integers(min_value=1, max_value=4), min_size=10, max_size=10),
    distances=st.dictionaries(st.sampled_from([f"a{i}" for i in range(10)]), st.floats(0, 100), max_size=10),
    name=st.sampled_from(["distance", "lru"]),
)
def test_pinned_state_is_never_evicted(ops, sizes, distances, name):
    """Random accesses, some held (pinned) across later ones: pinned pieces stay on device."""
    table = DistanceTable(clock=lambda: 0.0)
    memory = ReferenceMemory("kv", capacity=12, policy=EvictionPolicy(make_priority(name), table))
    for i, size in enumerate(sizes):
        memory.register(f"k{i}", {f"a{i}"}, size)
    table.update(distances, epoch=0)
    held: list[str] = []
    for t, (i, hold) in enumerate(ops):
        key = f"k{i}"
        try:
            memory.access(key, float(t))
        except CapacityError:
            assert sum(memory.size(k) for k in set(held)) + memory.size(key) > memory.capacity
            continue
        if hold:
            held.append(key)
        else:
            memory.release(key)
        assert all(memory.tier(k) is Tier.DEVICE for k in held)
        assert memory.used <= memory.capacity
    for key in held:
        memory.release(key)
