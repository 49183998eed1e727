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
