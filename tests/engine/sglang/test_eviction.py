"""The `scalesim` radix eviction policy: exact victim order, options, and how `serve` sets it up."""

from __future__ import annotations

import os
import re

import pytest

from scalesim.engine.sglang import eviction, launch, scheduler_state
from scalesim.engine.sglang.eviction import AgentDistanceStrategy, parse_config
from scalesim.engine.sglang.launch import ServeError, check_eviction_setup, with_plugin_defaults


class Node:
    def __init__(self, node_id: int, t: float, parent=None):
        self.id, self.last_access_time, self.parent, self.key = node_id, t, parent, [0]


@pytest.fixture
def state(monkeypatch):
    fresh = scheduler_state.SchedulerState()
    monkeypatch.setattr(scheduler_state, "_STATE", fresh)
    return fresh


def _tag(state, node, agent):
    """A finished call of `agent` whose prompt was the whole path to `node`."""
    state.announce(f"rid-{node.id}", agent, 0.0)
    path = 0
    up = node
    while up.parent is not None:
        path, up = path + len(up.key), up.parent

    class Req:
        rid = f"rid-{node.id}"
        origin_input_ids = [0] * path

        @staticmethod
        def finished() -> bool:
            return True

    state.tag_path(Req, node)


def _victim_order(strategy, nodes):
    return [n.id for n in sorted(nodes, key=strategy.get_priority)]


def test_victims_farthest_first_then_lru_and_unknown_before_known(state):
    root = Node(0, 0.0)
    nodes = [Node(i, t, root) for i, t in [(1, 5.0), (2, 1.0), (3, 3.0), (4, 2.0), (5, 4.0), (6, 0.5)]]
    for node, agent in zip(nodes, ["near", "far", "far-too", "mid", "unknown", "unknown-too"]):
        _tag(state, node, agent)
    strategy = AgentDistanceStrategy(learned=False)  # else the announcements would teach one
    # No distances at all: pure LRU (oldest access first).
    assert _victim_order(strategy, nodes) == [6, 2, 4, 3, 5, 1]
    state.table.update({"near": 1, "mid": 4, "far": 9, "far-too": 9}, 1)
    # Unknown agents first (LRU among them), then farthest first, LRU among equals.
    assert _victim_order(strategy, nodes) == [6, 5, 2, 3, 4, 1]
    assert _victim_order(AgentDistanceStrategy(order="lru", learned=False), nodes) == [6, 2, 4, 3, 5, 1]


def test_an_agents_call_tails_go_before_any_prefix(state):
    """Each call is the agent's prefix plus a new situation: after `near`'s second call, the
    tail of its first call (id 3) is left behind, and the second call's own tail (4, past the
    prefix both calls shared) will not be read by the next call either: both go first (LRU
    among them), before `far`'s prefix (2) and tail (6; one call tells no fork yet). A call
    that extends the previous one (5 below 4, a conversation) leaves nothing behind, and its
    path keeps the agent's distance."""
    root = Node(0, 0.0)
    near_prefix, far_prefix = Node(1, 1.0, root), Node(2, 1.0, root)
    first_tail, second_tail = Node(3, 2.0, near_prefix), Node(4, 3.0, near_prefix)
    far_tail = Node(6, 1.5, far_prefix)
    nodes = [near_prefix, far_prefix, first_tail, second_tail, far_tail]
    strategy = AgentDistanceStrategy(learned=False)
    state.table.update({"near": 1, "far": 9}, 1)
    _tag(state, far_tail, "far")
    _tag(state, first_tail, "near")
    assert _victim_order(strategy, nodes[:3]) == [2, 1, 3]  # farthest first, LRU among equals
    _tag(state, second_tail, "near")
    assert _victim_order(strategy, nodes) == [3, 4, 2, 6, 1]
    assert 3 not in [n.id for n in state._owners]
    _tag(state, Node(5, 4.0, second_tail), "near")  # extends the latest path: 4 keeps its owner
    assert _victim_order(strategy, nodes) == [3, 2, 6, 1, 4]
    state.on_evict(first_tail, 7)
    assert state.report()["evicted_tokens_by_reason"] == {"farthest": 0, "no_distance": 0, "stale": 7, "tail": 0,
                                                          "untagged": 0}


def test_equal_priorities_fall_back_to_node_ids(state):
    root = Node(0, 0.0)
    nodes = [Node(i, 1.0, root) for i in (9, 3, 7)]
    assert _victim_order(AgentDistanceStrategy(), nodes) == [3, 7, 9]


@pytest.mark.parametrize("config, message", [
    ({"colour": "red"}, "unknown scalesim eviction option(s) ['colour']"),
    ({"order": "mru"}, "unknown eviction priority 'mru'"),
    ({"learned": "yes"}, "learned must be true or false"),
    ({"agent_series": -1}, "agent_series must be a non-negative integer"),
])
def test_bad_options_are_refused(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_config(config)


def test_options_reach_the_scheduler_state(state):
    AgentDistanceStrategy(learned=False, agent_series=5)
    assert state.learned_enabled is False and state.counters.max_agent_series == 5


def test_serve_selects_the_policy_and_write_back_unless_the_user_chose():
    assert with_plugin_defaults(["--port", "1"]) == ["--port", "1", "--radix-eviction-policy", "scalesim"]
    assert with_plugin_defaults(["--radix-eviction-policy", "lfu"]) == ["--radix-eviction-policy", "lfu"]
    # The host tier writes back (tiers hold device plus host tokens), unless the user chose.
    assert with_plugin_defaults(["--enable-hierarchical-cache"]) == [
        "--enable-hierarchical-cache", "--hicache-write-policy", "write_back", "--radix-eviction-policy", "scalesim"]
    chosen = ["--enable-hierarchical-cache", "--hicache-write-policy=write_through", "--radix-eviction-policy", "lru"]
    assert with_plugin_defaults(chosen) == chosen
    args = launch.parse_sglang_args(["--model-path", "x", "--radix-eviction-policy", "scalesim"])
    assert args.radix_eviction_policy == "scalesim"


def test_serve_checks_options_and_tree_core(monkeypatch):
    monkeypatch.delenv(eviction.TREE_CORE_ENV, raising=False)
    check_eviction_setup({"order": "lru"})
    assert os.environ[eviction.TREE_CORE_ENV] == "python"
    with pytest.raises(ServeError, match="--radix-eviction-policy-config: learned must be true or false"):
        check_eviction_setup({"learned": 1})
    monkeypatch.setenv(eviction.TREE_CORE_ENV, "rust")
    with pytest.raises(ServeError, match="needs SGLANG_UNIFIED_RADIX_TREE_CORE_BACKEND=python"):
        check_eviction_setup(None)


def test_prefetch_false_turns_off_kv_and_adapter_slot_prefetch_and_keeps_eviction():
    from scalesim.engine.sglang.kv_prefetch import prefetcher
    from scalesim.engine.sglang.lora_slots import tracker

    try:
        strategy = AgentDistanceStrategy(prefetch=False)
        assert prefetcher().enabled is False and tracker().prefetch_enabled is False
        assert strategy.priority is not None  # distance-aware eviction stays
        AgentDistanceStrategy()
        assert prefetcher().enabled is True and tracker().prefetch_enabled is True
    finally:
        prefetcher().enabled = tracker().prefetch_enabled = True
