"""The diagnostic event log: each hook's line, exact (nodes are stand-ins with the attributes the
hooks read; the log is off unless `SCALESIM_EVENT_LOG` is set, and then only these hooks write)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from scalesim.engine.sglang import event_log, scheduler_state
from scalesim.engine.sglang.scheduler_state import SchedulerState


class Node:
    def __init__(self, node_id: int, parent: "Node | None", tokens: int, *, backuped: bool = False):
        self.id, self.parent, self.key, self.backuped, self.children = node_id, parent, [0] * tokens, backuped, {}
        self.last_access_time = 0.0
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
    core = SimpleNamespace(node_by_id={1: prefix, 2: tail}.__getitem__)

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
        {"ev": "host_evict", "epoch": 3, **node},
        {"ev": "drop", "epoch": 3, "subtree": 1240, **node},
        {"ev": "load", "epoch": 3, "ok": False, "prefetch": False, **node},
        {"ev": "release", "epoch": 3, "agent": "a", "prompt": 1300, "cached": 1200, "host": 1200},
    ]
    assert state.hook_errors == 0
