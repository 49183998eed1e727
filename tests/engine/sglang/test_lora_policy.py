"""LoRA adapter decisions by distance, both tiers: exact victim orders and prefetch plans."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scalesim.distance import DistanceTable
from scalesim.engine.sglang import lora_slots, scheduler_state
from scalesim.engine.sglang.device_copy import InlineCopier
from scalesim.engine.sglang.launch import with_plugin_defaults
from scalesim.engine.sglang.lora_cpu_tier import CpuTier
from scalesim.engine.sglang.lora_slots import POLICY_ENV, DistanceLoRAPolicy


@pytest.fixture
def slots(monkeypatch):
    state = scheduler_state.SchedulerState()
    monkeypatch.setattr(scheduler_state, "_STATE", state)
    monkeypatch.setattr(lora_slots, "_TRACKER", None)
    tracker = lora_slots.tracker()
    for uid, agent in [("u-near", "near"), ("u-mid", "mid"), ("u-far", "far"), ("u-new", "new")]:
        tracker.note_request(agent, uid)
    tracker.note_request("far2", "u-far")  # a second agent: its nearest owner decides
    state.learned_enabled = False
    return state, tracker


def test_slot_victim_is_the_farthest_agents_adapter_then_lru(slots):
    state, tracker = slots
    policy = DistanceLoRAPolicy()
    for uid in ["u-far", "u-mid", "u-near", "u-new"]:
        policy.mark_used(uid)
    everyone = {"u-near", "u-mid", "u-far", "u-new", None}
    # No distances: LRU ("u-far" was used first); the base model only when nothing else is left.
    assert policy.select_victim(everyone) == "u-far"
    assert policy.select_victim({None}) is None
    # "u-far" is used by "far" (9) and "far2" (5): its nearest agent, 5, decides.
    state.table.update({"near": 0, "mid": 3, "far": 9, "far2": 5, "new": 1}, 1)
    assert [policy.select_victim(everyone - set(gone)) for gone in ([], ["u-far"], ["u-far", "u-mid"])] == [
        "u-far", "u-mid", "u-new"]
    policy.mark_used("u-mid")
    policy.mark_used("u-far")  # recency does not beat distance
    assert policy.select_victim(everyone) == "u-far"
    state.table.update({"mid": 5}, 1)  # equal distances: least recently used first
    assert policy.select_victim(everyone) == "u-mid"
    # An adapter with no known agent distance goes before any with one.
    tracker.note_request("stranger", "u-stranger")
    policy.mark_used("u-stranger")
    assert policy.select_victim(everyone | {"u-stranger"}) == "u-stranger"


def test_prefetched_adapter_evicted_unused_counts_as_wasted(slots):
    _, tracker = slots
    policy = DistanceLoRAPolicy()
    tracker.counters.prefetched.add("u-mid")
    policy.remove("u-mid")
    policy.remove("u-near")
    assert tracker.counters["prefetch_wasted"] == 1 and tracker.counters.prefetched == set()


@dataclass
class Ref:
    pinned: bool = False


def test_cpu_tier_victim_farthest_first_lru_among_equals_and_never_in_use():
    table = DistanceTable(clock=lambda: 0.0)
    tier = CpuTier(table)
    for adapter, agent in [("x", "a"), ("y", "b"), ("z", "c"), ("p", "d")]:
        tier.note(agent, adapter)
    registry = {"x": Ref(), "y": Ref(), "z": Ref(), "p": Ref(pinned=True)}  # LRU order: x oldest
    assert tier.victim(registry, exclude_pinned=True) == "x"  # no distances: LRU
    table.update({"a": 1, "b": 4, "c": 4, "d": 9}, 1)
    assert tier.victim(registry, exclude_pinned=True) == "y"  # farthest unpinned; y older than z
    assert tier.victim(registry, exclude_pinned=False) == "p"
    tier.begin("y")
    assert tier.victim(registry, exclude_pinned=True) == "z"
    tier.begin("x"), tier.begin("z")
    assert tier.victim(registry, exclude_pinned=True) == "y"  # all in use: SGLang's unload waits
    for name in "xyz":
        tier.end(name)
    assert tier.in_use == {}


def test_cpu_tier_plan_loads_nearest_first_and_never_displaces_a_nearer_adapter():
    table = DistanceTable(clock=lambda: 0.0)
    tier = CpuTier(table)
    for adapter, agent in [("loaded-far", "a"), ("loaded-near", "b"), ("want-0", "c"), ("want-1", "d"),
                           ("want-far", "e")]:
        tier.note(agent, adapter)
    table.update({"a": 5, "b": 0.5, "c": 0, "d": 1, "e": 7}, 1)
    registry = {"loaded-far": Ref(), "loaded-near": Ref()}
    known = {name: None for name in ["loaded-far", "loaded-near", "want-0", "want-1", "want-far"]}
    assert tier.plan(registry, known, capacity=3) == ["want-0", "want-1"]  # a free place, then "loaded-far"
    assert tier.plan(registry, known, capacity=2) == ["want-0"]  # only "loaded-far" may go
    assert tier.plan(registry, known, capacity=None) == ["want-0", "want-1"]  # beyond LOOKAHEAD: not loaded


def test_serve_selects_distance_lora_tiers_unless_the_user_chose_sglangs(monkeypatch):
    monkeypatch.delenv(POLICY_ENV, raising=False)
    import os

    with_plugin_defaults(["--port", "1"])
    assert os.environ[POLICY_ENV] == "distance"
    with_plugin_defaults(["--lora-eviction-policy", "lru"])
    assert POLICY_ENV not in os.environ


class FakePool:
    """The slot maps and copy call of SGLang's LoRAMemoryPool; `fail` makes the copy raise."""

    def __init__(self, slots: int, fail: bool = False) -> None:
        from sglang.srt.lora.mem_pool import EMPTY_SLOT

        self.buffer_id_to_uid = [EMPTY_SLOT] * slots
        self.uid_to_buffer_id: dict = {}
        self.eviction_policy = DistanceLoRAPolicy()
        self.copied: list = []
        self.fail = fail

    def load_lora_weight_to_buffer(self, uid, slot, *args):
        if self.fail:
            raise RuntimeError("adapter weights do not fit the slot")
        self.copied.append((uid, slot))


class FakeManager:
    def __init__(self, pool) -> None:
        self.memory_pool, self.loras = pool, {"u1": object(), "u2": object()}
        self.lora_modules, self.embed_tokens_module, self.lm_head_module = [], None, None
        self.device = "cpu"
        self.notified: list = []

    def _notify_lora_slots_updated(self, slots) -> None:
        self.notified.append(slots)


def test_prefetch_copies_into_a_free_slot_then_into_the_victims_slot(slots):
    pool = FakePool(1)
    manager = FakeManager(pool)
    assert lora_slots._load_into_slot(manager, "u1", victim=None)
    assert pool.uid_to_buffer_id == {"u1": 0} and pool.buffer_id_to_uid == ["u1"]
    assert lora_slots._load_into_slot(manager, "u2", victim="u1")
    assert pool.uid_to_buffer_id == {"u2": 0} and pool.buffer_id_to_uid == ["u2"]
    assert pool.copied == [("u1", 0), ("u2", 0)] and manager.notified == [{0}, {0}]


def test_a_failed_prefetch_copy_leaves_the_slot_empty_for_a_demand_load(slots):
    from sglang.srt.lora.mem_pool import EMPTY_SLOT

    state, _ = slots
    pool = FakePool(1)
    manager = FakeManager(pool)
    lora_slots._load_into_slot(manager, "u1", victim=None)
    pool.fail = True
    assert lora_slots._load_into_slot(manager, "u2", victim="u1") is False
    assert pool.uid_to_buffer_id == {} and pool.buffer_id_to_uid == [EMPTY_SLOT]
    assert manager.notified == [{0}, {0}] and state.hook_errors == 1


def test_copier_is_chosen_once_per_device_type():
    from scalesim.engine.sglang.device_copy import copier_for

    cpu = copier_for("cpu")
    assert isinstance(cpu, InlineCopier) and copier_for("cpu") is cpu
    assert cpu.submit(lambda: 7) == 7 and cpu.order_after(object()) is None

    def broken():
        raise RuntimeError("copy failed")

    with pytest.raises(RuntimeError, match="copy failed"):
        cpu.submit(broken)  # raised in the caller, which owns the destination
