"""The write-back admission hook's plumbing: which calls it leaves alone, and which of SGLang's
warnings it hides (the decision itself: `tests/policy`; on a live tree: `tests/e2e/test_host_tier.py`)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from scalesim.engine.sglang import host_admission
from scalesim.engine.sglang.host_admission import DeclinedDropFilter, around_execute_and_commit_kv_backup


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord(host_admission.CACHE_LOGGER, logging.WARNING, __file__, 1, msg, (7,), None)


def test_only_the_drop_warnings_the_hook_caused_are_hidden():
    f = DeclinedDropFilter()
    drop = "write_back: KV subtree dropped without backup due to host memory pressure, root node %d"
    assert f.filter(_record(drop)) is True  # SGLang's own host-pressure drop: shown
    f.pending = 1
    assert f.filter(_record("something else")) is True
    assert f.filter(_record(drop)) is False  # ours: hidden, once
    assert f.filter(_record(drop)) is True
    assert f.pending == 0


def test_copies_other_than_the_eviction_loops_write_back_pass_through():
    calls = []

    def original(cache, action, *args, **kwargs):
        calls.append(kwargs)
        return 5

    no_tree = SimpleNamespace()  # any look at the tree would raise
    assert around_execute_and_commit_kv_backup(original, no_tree, SimpleNamespace(node_ids=[1])) == 5
    assert around_execute_and_commit_kv_backup(original, no_tree, SimpleNamespace(node_ids=[1]), write_back=False) == 5
    assert calls == [{}, {"write_back": False}]


class _Node:
    _ids = iter(range(1, 10_000))

    def __init__(self, parent, tokens: int, distance: float, *, on_device: bool = False, locked: bool = False):
        self.id, self.parent, self.key, self.children = next(self._ids), parent, [0] * tokens, {}
        self.distance, self.evicted, self.backuped = distance, not on_device, not on_device
        self.component_data = [SimpleNamespace(host_lock_ref=int(locked), lock_ref=0)]
        if parent is not None:
            parent.children[self.id] = self


def test_host_eviction_order_takes_a_chain_leaf_first_then_its_parent():
    """Each agent's host state is its prompt (300) and its call's output (2): SGLang's host eviction
    frees the farthest agent's whole chain before the next agent's; a parent joins once all its
    children have gone (mid's two calls), never while it is on the device or pinned."""
    root = _Node(None, 0, 0.0, on_device=True)
    far = _Node(root, 300, 9.0)
    far_out = _Node(far, 2, 9.0)
    mid = _Node(root, 300, 5.0)
    mid_out = [_Node(mid, 2, 5.0), _Node(mid, 3, 5.0)]  # two calls forked below its prompt
    near = _Node(root, 300, 1.0, on_device=True)  # on the device: its output's parent stays
    near_out = _Node(near, 2, 1.0)
    pinned = _Node(root, 300, 7.0, locked=True)  # a load in flight pins its host copy
    pinned_out = _Node(pinned, 2, 7.0)
    core = SimpleNamespace(root_node=root, evictable_host_leaves={far_out, *mid_out, near_out, pinned_out})
    strategy = SimpleNamespace(get_priority=lambda n: (-n.distance, n.id))
    order = [(key[0], tokens) for key, tokens in host_admission.host_eviction_order(core, strategy)]
    assert order == [(-9.0, 2), (-9.0, 300), (-7.0, 2), (-5.0, 2), (-5.0, 3), (-5.0, 300), (-1.0, 2)]


def test_a_declined_copy_counts_what_sglang_drops_the_victim_and_its_host_only_descendants():
    """The copy's chain is the victim's unbacked parents and the victim; SGLang drops only the
    victim (a device leaf) and the host-only nodes below it (`drop_subtree_no_host`)."""
    root = _Node(None, 0, 0.0, on_device=True)
    shared = _Node(root, 40, 3.0, on_device=True)  # an unbacked parent in the copy's chain: stays
    victim = _Node(shared, 300, 3.0, on_device=True)
    _Node(victim, 2, 3.0)
    call = _Node(victim, 60, 3.0)
    _Node(call, 5, 3.0)
    assert host_admission.dropped_tokens(victim) == 300 + 2 + 60 + 5
    assert host_admission.dropped_tokens(_Node(shared, 7, 3.0, on_device=True)) == 7
