"""Which part of an agent's path a host-to-device prefetch loads (exact node choices), and how
long a prefetched prefix stays held."""

from __future__ import annotations

from types import SimpleNamespace

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
