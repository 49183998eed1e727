"""Which part of an agent's path a host-to-device prefetch loads (exact node choices), and which
batches wait for a prefetch copy running on the CPU worker."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from scalesim.engine.sglang.device_copy import ThreadCopier
from scalesim.engine.sglang.kv_prefetch import KVPrefetcher, _host_anchor, _host_only_tokens


class Node:
    def __init__(self, parent, tokens: int, *, on_device: bool, on_host: bool):
        self.parent, self.key = parent, [0] * tokens
        self.evicted, self.backuped = not on_device, on_host


def test_anchor_is_the_deepest_host_copy_below_the_device_part_of_the_path():
    root = Node(None, 0, on_device=True, on_host=False)
    shared = Node(root, 50, on_device=True, on_host=True)
    prefix = Node(shared, 300, on_device=False, on_host=True)
    tail = Node(prefix, 4, on_device=False, on_host=False)  # generated tokens, never copied
    assert _host_anchor(tail) is prefix
    assert _host_only_tokens(prefix) == 300  # the shared part is still on the device
    assert _host_anchor(shared) is None  # on the device: nothing to load
    gone = Node(root, 300, on_device=False, on_host=False)
    assert _host_anchor(gone) is None  # neither tier has it: recomputed on demand
    assert _host_anchor(None) is None


# -- background copies on CPU: which batches wait for them -------------------------------------

def _scheduler_and_batch(prefix_slots: list[int]):
    """A request whose cached prefix occupies `prefix_slots` (SGLang's req_to_token layout)."""
    table = torch.zeros((2, 16), dtype=torch.int32)
    table[1, : len(prefix_slots)] = torch.tensor(prefix_slots, dtype=torch.int32)
    req = SimpleNamespace(kv=SimpleNamespace(req_pool_idx=1, cache_protected_len=len(prefix_slots)))
    return SimpleNamespace(req_to_token_pool=SimpleNamespace(req_to_token=table)), SimpleNamespace(reqs=[req])


def _submit(p: KVPrefetcher, copier: ThreadCopier, slots: list[int], copy):
    transfer = SimpleNamespace(device_indices=torch.tensor(slots))
    return p.submit_background(copier, copy, [transfer])


def test_a_batch_reading_a_slot_being_loaded_waits_for_that_copy_and_sglang_sees_it_done_only_then():
    p, copier, release = KVPrefetcher(), ThreadCopier(), threading.Event()
    landed = []
    completion = _submit(p, copier, [5, 6, 7], lambda: (release.wait(5), landed.append("kv")))
    assert completion.finish_event.query() is False  # SGLang keeps the load lock meanwhile
    scheduler, batch = _scheduler_and_batch([3, 4, 5])
    threading.Timer(0.2, release.set).start()
    p.wait_for(scheduler, batch)
    assert landed == ["kv"] and completion.finish_event.query() is True
    assert p.counters["prefetch_background"] == 1 and p.counters["prefetch_waited"] == 1
    assert p.counters.wait_seconds > 0.1 and p.copies == []


def test_a_batch_reading_other_slots_runs_while_the_copy_goes_on():
    p, copier, release = KVPrefetcher(), ThreadCopier(), threading.Event()
    completion = _submit(p, copier, [8, 9], lambda: release.wait(5))
    scheduler, batch = _scheduler_and_batch([3, 4, 5])
    p.wait_for(scheduler, batch)
    assert completion.finish_event.query() is False  # overlapped: nobody waited
    assert p.counters["prefetch_waited"] == 0 and len(p.copies) == 1
    release.set()
    completion.finish_event.synchronize()
    p.wait_for(scheduler, batch)
    assert p.copies == [] and p.counters["prefetch_waited"] == 0


def test_a_failed_background_copy_raises_where_it_is_waited_for():
    p, copier = KVPrefetcher(), ThreadCopier()

    def broken():
        raise RuntimeError("index out of range in the host pool")

    completion = _submit(p, copier, [5], broken)
    scheduler, batch = _scheduler_and_batch([5])
    with pytest.raises(RuntimeError, match="host pool"):
        p.wait_for(scheduler, batch)
    with pytest.raises(RuntimeError, match="host pool"):
        completion.finish_event.synchronize()


def test_reset_waits_for_copies_still_writing_into_the_pool():
    p, copier, release = KVPrefetcher(), ThreadCopier(), threading.Event()
    landed = []
    _submit(p, copier, [1], lambda: (release.wait(5), landed.append("kv")))
    threading.Timer(0.1, release.set).start()
    p.reset()
    assert landed == ["kv"] and p.copies == []


# -- how long a prefetched prefix stays held ---------------------------------------------------

class _Batch:
    def __init__(self, n: int) -> None:
        self.n = n

    def is_empty(self) -> bool:
        return self.n == 0


def test_a_hold_outlives_idle_polling_and_ends_after_hold_steps_busy_iterations(monkeypatch):
    """An idle scheduler polls thousands of times between two simulation steps: those
    iterations do not age a hold made for the next step; busy ones (requests running or
    waiting) do, so a simulation that stopped pushing still frees it."""
    from scalesim.engine.sglang import kv_prefetch, scheduler_state
    from scalesim.engine.sglang.kv_prefetch import HOLD_STEPS, Hold

    state = scheduler_state.SchedulerState()
    monkeypatch.setattr(scheduler_state, "_STATE", state)
    monkeypatch.setattr(kv_prefetch, "current", lambda: state)
    state.table.update({"a": 1.0}, 1)
    released = []
    cache = SimpleNamespace(cache_controller=SimpleNamespace(load_queue=[]), load_back=None,
                            dec_lock_ref=lambda node_id, params: released.append(node_id))
    scheduler = SimpleNamespace(tree_cache=cache, waiting_queue=[], running_batch=_Batch(0))
    p = KVPrefetcher()
    p._scanned_pushes = state.pushes_applied  # no new distances: only the expiry runs
    p.held["a"] = Hold(node_id=7, params=None, tokens=100, epoch=state.table.epoch, step=0)
    for _ in range(10 * HOLD_STEPS):
        p.step(scheduler)
    assert released == [] and p.steps == 0
    scheduler.running_batch = _Batch(4)
    for _ in range(HOLD_STEPS - 1):
        p.step(scheduler)
    assert released == []
    scheduler.running_batch, scheduler.waiting_queue = _Batch(0), ["req"]  # waiting counts too
    p.step(scheduler)
    assert released == [7] and p.counters["prefetch_wasted"] == 1 and p.held == {}
