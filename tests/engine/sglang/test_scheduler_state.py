"""The scheduler-side bookkeeping: ownership of radix nodes, distances, counters (exact values).

Nodes here are small stand-ins with the attributes the hooks read from SGLang's tree nodes
(`parent`, `key`, `id`, `last_access_time`); the live tests in tests/e2e/test_eviction.py run
the same code on SGLang's real trees.
"""

from __future__ import annotations

import gc

import pytest

from scalesim.engine.sglang import scheduler_state
from scalesim.engine.sglang.chat_prefix import PromptPrefix
from scalesim.engine.sglang.counters import OTHER, AgentCounters
from scalesim.engine.sglang.scheduler_state import UNKNOWN, SchedulerState


class Node:
    _ids = iter(range(1, 10**9))

    def __init__(self, parent: "Node | None", tokens: int = 10, t: float = 0.0):
        self.parent, self.key, self.id, self.last_access_time = parent, [0] * tokens, next(self._ids), t


class Req:
    def __init__(self, rid: str, prompt: int = 0, cached: int = 0, finished: bool = True, ids: list | None = None):
        self.rid, self.cached_tokens, self._finished = rid, cached, finished
        self.origin_input_ids = ids if ids is not None else [0] * prompt

    def finished(self) -> bool:
        return self._finished


@pytest.fixture
def state() -> SchedulerState:
    return SchedulerState(clock=lambda: 100.0)  # the clock only drives TTL expiry, unused here


def test_nearest_owner_decides_and_pushed_wins_over_learned(state):
    root = Node(None)
    shared = Node(root)
    a_leaf, b_leaf = Node(shared), Node(shared)
    state.announce("r1", "a", 0.0)
    state.announce("r2", "b", 0.0)
    state.tag_path(Req("r1"), a_leaf)
    state.tag_path(Req("r2"), b_leaf)
    assert state.node_distance(a_leaf) == UNKNOWN  # no distances at all: LRU decides
    state.table.update({"a": 3.0, "b": 7.0}, 1)
    assert (state.node_distance(a_leaf), state.node_distance(b_leaf), state.node_distance(shared)) == (3.0, 7.0, 3.0)
    assert state.node_distance(root) == UNKNOWN  # never tagged

    # Learned: "c" calls every 10 s; pushed "a" keeps its pushed distance whatever it learned.
    # "Now" is the latest arrival (the same in every TP rank), not the scheduler's clock.
    for t in (100.0, 110.0, 120.0):
        state.announce(f"c{t}", "c", t)
        state.announce(f"a{t}", "a", t)
    assert state.distance("c") == pytest.approx(10.0)
    state.announce("other", "d", 124.0)
    assert state.distance("c") == pytest.approx(6.0)
    assert state.distance("a") == 3.0
    state.learned_enabled = False
    assert state.distance("c") == UNKNOWN


def test_a_calls_tail_past_the_shared_prefix_is_marked_until_the_next_call(state):
    """Calls of "a": its prefix F plus a new situation S_i, answered by A_i; each call is
    checkpointed after its prompt (unfinished) and when it finishes. From the second call on,
    the fork from the previous finished call (F) is the agent's prefix: the call's own part
    below it ranks `UNKNOWN` and is evicted as `tail`; the previous call's part is `stale`."""
    root = Node(None)
    prefix, other = Node(root, tokens=1500), Node(root, tokens=1400)
    s1, s2, s3 = Node(prefix, 150), Node(prefix, 150), Node(prefix, 150)
    a1, a2 = Node(s1, 32), Node(s2, 32)
    state.table.update({"a": 1.0, "b": 9.0}, 1)
    state.announce("b1", "b", 0.0)
    state.tag_path(Req("b1"), other)

    def call(rid, situation, answer=None):
        state.announce(rid, "a", 0.0)
        state.tag_path(Req(rid, prompt=1650, finished=False), situation)
        if answer is not None:
            state.tag_path(Req(rid, prompt=1650), answer)

    call("r1", s1, a1)
    assert state.prefix_node("a") is None  # one call: no fork known
    assert [state.node_distance(n) for n in (prefix, s1, a1, other)] == [1.0, 1.0, 1.0, 9.0]
    call("r2", s2)  # prompt checkpointed, not finished
    assert state.prefix_node("a") is prefix
    assert [state.node_distance(n) for n in (prefix, s2, s1, a1)] == [1.0, UNKNOWN, UNKNOWN, UNKNOWN]
    state.tag_path(Req("r2", prompt=1650), a2)  # finished: the answer joins the tail
    assert [state.node_distance(n) for n in (prefix, s2, a2, other)] == [1.0, UNKNOWN, UNKNOWN, 9.0]
    state.on_evict(a2, 32)
    state.on_evict(a1, 32)
    call("r3", s3)  # the second call's tail is left behind: stale now, no longer a tail
    assert a2 not in state._tails and s2 not in state._owners and s3 in state._tails
    state.on_evict(s2, 150)
    report = state.report()
    assert report["evicted_tokens_by_reason"] == {"farthest": 0, "no_distance": 0, "stale": 182, "tail": 32,
                                                  "untagged": 0}
    assert report["per_agent"]["a"]["evicted_tokens"] == 32
    state.reset_tree()
    assert state.prefix_node("a") is None and not state._tails


def test_the_fork_is_found_when_the_previous_calls_end_was_evicted(state):
    """Tails go first, so the previous call's answer (the end of its path) is often evicted and
    gone by the agent's next call. The next call still forks below the prefix: its own part is a
    tail, and what remains of the previous branch (its situation) is stale, not the agent's."""
    root = Node(None)
    prefix = Node(root, tokens=1500)
    s1, s2, s3 = Node(prefix, 150), Node(prefix, 150), Node(prefix, 150)
    a1, a2 = Node(s1, 32), Node(s2, 32)
    state.table.update({"a": 1.0}, 1)
    for rid, situation, answer in (("r1", s1, a1), ("r2", s2, a2)):
        state.announce(rid, "a", 0.0)
        state.tag_path(Req(rid, prompt=1650, finished=False), situation)
        state.tag_path(Req(rid, prompt=1650), answer)
    assert [state.node_distance(n) for n in (prefix, s2, a2)] == [1.0, UNKNOWN, UNKNOWN]
    state.on_evict(a2, 32)
    del a1, a2, answer  # evicted from both tiers: the tree no longer holds them
    gc.collect()
    state.announce("r3", "a", 0.0)
    state.tag_path(Req("r3", prompt=1650, finished=False), s3)
    assert state.prefix_node("a") is prefix
    assert s3 in state._tails and s2 in state._stale and s2 not in state._owners
    assert [state.node_distance(n) for n in (prefix, s2, s3)] == [1.0, UNKNOWN, UNKNOWN]
    # The whole tail of the third call goes; the fourth passes through the agent's known fork.
    a3 = Node(s3, 32)
    state.tag_path(Req("r3", prompt=1650), a3)
    state.on_evict(a3, 32)
    state.on_evict(s3, 150)
    del s2, a3, s3
    gc.collect()
    s4 = Node(prefix, 150)
    state.announce("r4", "a", 0.0)
    state.tag_path(Req("r4", prompt=1650, finished=False), s4)
    assert state.prefix_node("a") is prefix and s4 in state._tails
    assert [state.node_distance(n) for n in (prefix, s4)] == [1.0, UNKNOWN]


def test_no_fork_where_a_call_passes_through_what_remains_of_the_previous_one(state):
    """A prefix computed in two prefill chunks is two nodes (`head`, 274 tokens, and `rest`).
    When the previous call's path lost everything below `head`, the next call passes through
    `head`: the paths may part anywhere below it, so nothing is marked. (Taking `head` for the
    fork marked the rest of the prefix as a tail at every call: evicted first, never kept.)"""
    root = Node(None)
    head = Node(root, tokens=274)
    rest = Node(head, 1300)
    answer = Node(rest, 30)
    state.table.update({"a": 2.0}, 1)
    state.announce("r1", "a", 0.0)
    state.tag_path(Req("r1", prompt=1620, finished=False), head)  # first chunk
    state.tag_path(Req("r1", prompt=1620), answer)
    state.on_evict(answer, 30)
    state.on_evict(rest, 1300)
    del rest, answer
    gc.collect()
    rest2 = Node(head, 1300)
    state.announce("r2", "a", 0.0)
    state.tag_path(Req("r2", prompt=1620, finished=False), rest2)
    assert state.prefix_node("a") is None and not state._tails
    assert [state.node_distance(n) for n in (head, rest2)] == [2.0, 2.0]


def test_a_conversation_turn_is_no_tail_even_where_the_answer_was_tokenized_anew(state):
    """The next turn holds the whole previous prompt (1,650 tokens) and most of its answer: the
    path forks 30 tokens into the answer (`said`), below the previous prompt, so nothing is a
    tail; a call forking inside the previous prompt (a new situation) marks its own part."""
    root = Node(None)
    prefix = Node(root, tokens=1500)
    turn1 = Node(prefix, 150)
    said = Node(turn1, 30)
    rest = Node(said, 2)
    turn2 = Node(said, 40)
    state.table.update({"a": 1.0}, 1)
    state.announce("r1", "a", 0.0)
    state.tag_path(Req("r1", prompt=1650), rest)
    state.announce("r2", "a", 0.0)
    state.tag_path(Req("r2", prompt=1720), turn2)
    assert state.prefix_node("a") is None and not state._tails
    assert [state.node_distance(n) for n in (prefix, turn1, said, turn2)] == [1.0] * 4
    other = Node(prefix, 60)
    state.announce("r3", "a", 0.0)
    state.tag_path(Req("r3", prompt=1560), other)
    assert state.prefix_node("a") is prefix and state.node_distance(other) == UNKNOWN


def test_a_first_calls_tail_starts_where_its_announced_prefix_ends(state):
    """A first call on the chat route: the HTTP process announced its prompt's length before the
    last message (1,500 tokens, with their last ids). Finished, and with a node ending there
    (the hook splits the path first), its situation and answer are a tail at once, not a second
    call later; the second call passes through that prefix and marks its own part."""
    ids = list(range(1682))
    root = Node(None)
    prefix = Node(root, tokens=1500)
    situation = Node(prefix, 150)
    answer = Node(situation, 32)
    state.table.update({"a": 1.0}, 1)
    state.announce("r1", "a", 0.0, PromptPrefix(1500, tuple(ids[1492:1500])))
    unfinished = Req("r1", ids=ids[:1650], finished=False)
    assert state.first_call_prefix(unfinished) is None  # split and marked when it finishes
    state.tag_path(unfinished, situation)
    assert state.prefix_node("a") is None and not state._tails
    finished = Req("r1", ids=ids[:1650])
    assert state.first_call_prefix(finished) == 1500
    state.tag_path(finished, answer, 1500)
    assert state.prefix_node("a") is prefix
    assert [state.node_distance(n) for n in (prefix, situation, answer)] == [1.0, UNKNOWN, UNKNOWN]
    state.on_evict(answer, 32)
    state.on_evict(situation, 150)
    state.on_release(finished)
    assert not state._prompt_prefix_of_rid
    del situation, answer
    gc.collect()
    second = Node(prefix, 150)
    state.announce("r2", "a", 0.0, PromptPrefix(1500, tuple(ids[1492:1500])))
    req = Req("r2", ids=ids[:1500] + [0] * 150)
    assert state.first_call_prefix(req) is None  # the first call's prefix remains: the fork tells
    state.tag_path(req, second)
    assert state.prefix_node("a") is prefix and second in state._tails
    assert state.report()["evicted_tokens_by_reason"]["tail"] == 182


@pytest.mark.parametrize("announced, prompt, node_at", [
    (PromptPrefix(1500, (9, 9)), 1650, 1500),  # not the prompt's ids there: another template
    (PromptPrefix(1650, tuple(range(1642, 1650))), 1650, 1500),  # the whole prompt: no tail
    (PromptPrefix(1500, tuple(range(1492, 1500))), 1650, 1400),  # no node ends at 1,500
])
def test_a_first_calls_announced_prefix_that_does_not_fit_marks_nothing(state, announced, prompt, node_at):
    root = Node(None)
    upper = Node(root, tokens=node_at)
    lower = Node(upper, 1650 + 32 - node_at)
    state.announce("r1", "a", 0.0, announced)
    req = Req("r1", ids=list(range(prompt)))
    boundary = state.first_call_prefix(req)
    assert boundary == (1500 if node_at == 1400 else None)
    state.tag_path(req, lower, boundary)
    assert state.prefix_node("a") is None and not state._tails


def test_split_copies_owners_and_eviction_reasons(state):
    root = Node(None)
    leaf = Node(root, tokens=30)
    state.announce("r", "a", 0.0)
    state.tag_path(Req("r"), leaf)
    upper = Node(root, tokens=12)  # a split: `upper` now sits between root and `leaf`
    leaf.parent = upper
    state.on_split(leaf, upper)
    assert state.node_distance(upper) == UNKNOWN and state._owners[upper] == {"a"}

    state.on_evict(leaf, 30)  # owned, no distance
    state.table.update({"a": 2.0}, 1)
    state.on_evict(upper, 12)  # owned, with a distance
    state.on_evict(Node(root, tokens=5), 5)  # untagged
    report = state.report()
    assert report["evicted_tokens_by_reason"] == {"farthest": 12, "no_distance": 30, "stale": 0, "tail": 0,
                                                  "untagged": 5}
    assert report["cache"]["evicted_nodes"] == 3 and report["cache"]["evicted_tokens"] == 47
    assert report["per_agent"]["a"]["evicted_tokens"] == 42
    assert report["per_agent"]["_none"]["evicted_tokens"] == 5


def test_tagging_stops_at_an_already_tagged_ancestor_and_nodes_are_held_weakly(state):
    root = Node(None)
    mid = Node(root)
    leaf = Node(mid)
    state.announce("r", "a", 0.0)
    state.tag_path(Req("r"), leaf)
    deeper = Node(leaf)
    state.tag_path(Req("r"), deeper)
    assert state.report()["tagged_nodes"] == 3
    del leaf, deeper
    gc.collect()
    assert state.report()["tagged_nodes"] == 1  # only `mid` is still alive
    state.reset_tree()
    assert state.report()["tagged_nodes"] == 0


def test_release_counts_finished_requests_once_and_forgets_the_rid(state):
    state.announce("r1", "a", 0.0)
    state.announce("r2", "a", 0.0)
    state.on_release(Req("r1", prompt=100, cached=0, finished=False))  # retracted: not yet
    state.on_release(Req("r1", prompt=100, cached=0))
    state.on_release(Req("r2", prompt=100, cached=80))
    state.on_release(Req("other", prompt=10, cached=0))  # never announced: no agent
    report = state.report()
    assert report["pending_requests"] == 0
    assert report["per_agent"]["a"] == {"hits": 1, "misses": 1, "cached_tokens": 80, "recomputed_tokens": 120,
                                        "evicted_nodes": 0, "evicted_tokens": 0}
    assert report["cache"]["hits"] == 1 and report["cache"]["misses"] == 2
    assert report["per_agent"]["_none"]["recomputed_tokens"] == 10


def test_derived_rids_find_their_agent_and_announcements_are_bounded(state, monkeypatch):
    state.announce("base", "a", 0.0)
    assert state.agent_of(Req("base_0")) == "a" and state.agent_of(Req("base_3")) == "a"
    assert state.agent_of(Req("unknown_0")) is None
    monkeypatch.setattr(scheduler_state, "MAX_PENDING_RIDS", 3)
    for i in range(5):
        state.announce(f"r{i}", "b", 0.0)
    assert state.report()["pending_requests"] == 3
    assert state.agent_of(Req("r0")) is None and state.agent_of(Req("r4")) == "b"


def test_per_agent_series_are_bounded():
    counters = AgentCounters(max_agent_series=2)
    for agent in ("a", "b", "c", "d", "a"):
        counters.prefill(agent, 1, 1)
    report = counters.report()
    assert sorted(report["per_agent"]) == sorted([OTHER, "a", "b"])
    assert report["per_agent"]["a"]["hits"] == 2 and report["per_agent"][OTHER]["hits"] == 2
    assert report["cache"]["hits"] == 5
