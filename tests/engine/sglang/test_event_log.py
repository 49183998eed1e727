"""The diagnostic event log: each hook's line, exact (nodes are stand-ins with the attributes the
hooks read; the log is off unless `SCALESIM_EVENT_LOG` is set, and then only these hooks write)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from scalesim.engine.sglang import event_log, scheduler_state
from scalesim.engine.sglang.scheduler_state import SchedulerState


class Node:
    def __init__(self, node_id: int, parent: "Node | None", tokens: int, *, backuped: bool = False,
                 evicted: bool = False, locks: int = 0):
        self.id, self.parent, self.key, self.backuped, self.children = node_id, parent, [0] * tokens, backuped, {}
        self.evicted, self.last_access_time = evicted, 0.0
        full = SimpleNamespace(lock_ref=locks)
        self.component_data = [full] * 8  # every component reads as FULL: the hooks read only FULL
        if parent is not None:
            parent.children[node_id] = self


class Req:
    def __init__(self, rid: str, prompt: int, cached: int = 0, host: int = 0):
        self.rid, self.origin_input_ids, self.cached_tokens, self.cached_tokens_host = rid, [0] * prompt, cached, host

    def finished(self) -> bool:
        return True


@pytest.fixture
def log_path(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(event_log.ENV, str(path))
    monkeypatch.setattr(event_log, "_LOG", None)
    monkeypatch.setattr(scheduler_state, "_STATE", SchedulerState(clock=lambda: 0.0))
    return path


def _lines(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "t"} for line in path.read_text().splitlines()]


def test_each_hook_logs_the_node_as_the_policy_sees_it(log_path):
    assert event_log.enabled()
    state = scheduler_state.current()
    root = Node(0, None, 0)
    prefix = Node(1, root, 1200, backuped=True)
    tail = Node(2, prefix, 40)
    state.announce("r1", "a", 0.0)
    state.tag_path(Req("r1", 1240), tail, 1200)  # a first call: past 1,200 tokens is its tail
    state.table.update({"a": 2.0}, 3)
    core = SimpleNamespace(node_by_id={1: prefix, 2: tail}.__getitem__, root_node=root)

    event_log.after_device_victim(2, SimpleNamespace(_evict_device_last_node=tail))
    event_log.after_device_victim(None, SimpleNamespace(_evict_device_last_node=tail))  # no victim: nothing
    event_log.before_host_leaf_evict(core, prefix)
    event_log.before_drop_subtree(core, 1)
    assert event_log.around_load_back(lambda cache, node_id: False, SimpleNamespace(tree_core=core), 1) is False
    state.announce("r2", "a", 1.0)
    event_log.before_release(None, Req("r2", 1300, cached=1200, host=1200))

    node = {"node": 1, "agents": ["a"], "tokens": 1200, "dist": 2.0, "tail": False, "host": True}
    assert _lines(log_path) == [
        {"ev": "device_evict", "epoch": 3, "node": 2, "agents": ["a"], "tokens": 40, "dist": None, "tail": True,
         "host": False},
        {"ev": "tiers", "epoch": 3, "device": {"tail": 40}, "host": {}, "both": {"known": 1200},
         "by_distance": {"2": 1200}, "held": 0},
        {"ev": "host_evict", "epoch": 3, **node},
        {"ev": "drop", "epoch": 3, "subtree": 1240, **node},
        {"ev": "load", "epoch": 3, "ok": False, "prefetch": False, **node},
        {"ev": "release", "epoch": 3, "agent": "a", "prompt": 1300, "cached": 1200, "host": 1200},
    ]
    assert state.hook_errors == 0


def test_tiers_sums_each_tier_by_kind_and_known_distances_once(log_path):
    state = scheduler_state.current()
    root = Node(0, None, 0)
    shared = Node(1, root, 500, backuped=True)  # both tiers, owned by a and b
    a_only = Node(2, shared, 700, backuped=True, evicted=True)  # host only
    a_tail = Node(3, a_only, 40, evicted=True, backuped=True)
    b_run = Node(4, shared, 900, locks=1)  # device only, locked by a running request
    loose = Node(5, root, 30)  # untagged: unknown distance
    gone = Node(6, root, 10, evicted=True)  # in neither tier: not counted
    state.announce("r1", "a", 0.0)
    state.tag_path(Req("r1", 1240), a_tail, 1200)
    state.announce("r2", "b", 0.0)
    state.tag_path(Req("r2", 1400), b_run, 1400)
    state.table.update({"a": 3.0, "b": 0.5}, 1)
    assert gone.id not in (shared.id, loose.id)

    assert event_log.tier_fields(SimpleNamespace(root_node=root), 900) == {
        "device": {"locked": 900, "unknown": 30}, "host": {"known": 700, "tail": 40},
        "both": {"known": 500}, "by_distance": {"0.5": 1400, "3": 700}, "held": 900,
    }
