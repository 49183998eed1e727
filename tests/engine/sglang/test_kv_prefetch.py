"""Which part of an agent's path a host-to-device prefetch loads (exact node choices), and how
long a prefetched prefix stays held."""

from __future__ import annotations

from types import SimpleNamespace

from scalesim.engine.sglang.kv_prefetch import KVPrefetcher, _host_anchor, device_room, eviction_order, host_only_tokens


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
    assert host_only_tokens(prefix) == 300  # the shared part is still on the device
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


# -- swap, do not drop: device room, host room, and waiting for a load in flight -------------

class TreeNode:
    """A node of SGLang's unified tree as the prefetcher reads it."""

    _ids = iter(range(1, 10_000))

    def __init__(self, parent, tokens: int, *, on_device: bool, on_host: bool):
        from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

        self.id, self.parent, self.key, self.children = next(self._ids), parent, [0] * tokens, {}
        self.evicted, self.backuped = not on_device, on_host
        self.component_data = {ComponentType.FULL: SimpleNamespace(value=[0] * tokens if on_device else None,
                                                                  host_value=[0] * tokens if on_host else None)}
        if parent is not None:
            parent.children[self.id] = self


def _world(monkeypatch, distances: dict[str, float]):
    """A scheduler state with `distances` pushed, and a tree whose nodes belong to agents."""
    from scalesim.engine.sglang import kv_prefetch, scheduler_state

    state = scheduler_state.SchedulerState()
    monkeypatch.setattr(scheduler_state, "_STATE", state)
    monkeypatch.setattr(kv_prefetch, "current", lambda: state)
    state.table.update(distances, 1)
    root = TreeNode(None, 0, on_device=True, on_host=False)

    def node(agent, tokens, parent=root, *, on_device=True, on_host=False):
        n = TreeNode(parent, tokens, on_device=on_device, on_host=on_host)
        state._owners[n] = {agent}
        return n

    return state, root, node


def _cache(state, *, leaves, device_free, host_free, duplicates=(), write_policy="write_back"):
    from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

    # The strategy's order: farthest first (SGLang evicts the smallest priority).
    core = SimpleNamespace(eviction_strategy=SimpleNamespace(get_priority=lambda n: -state.node_distance(n)),
                           evictable_device_leaves=set(leaves),
                           full_host_duplicates={d.id: d for d, _ in duplicates},
                           _can_reclaim_full_host_duplicate=lambda n: dict((d.id, ok) for d, ok in duplicates)[n.id])
    controller = SimpleNamespace(write_policy=write_policy, load_queue=[], ack_load_queue=[],
                                 mem_pool_host=SimpleNamespace(available_size=lambda: host_free))
    return SimpleNamespace(tree_core=core, cache_controller=controller,
                           _component_available_size=lambda ct: device_free if ct == ComponentType.FULL else 0)


def test_device_room_takes_farther_agents_chains_and_counts_the_tokens_host_memory_must_take(monkeypatch):
    state, root, node = _world(monkeypatch, {"far": 4.0, "mid": 3.0, "near": 0.5})
    shared = node("far", 200, on_host=True)  # already copied: evicting it writes nothing
    far = node("far", 300, shared)
    mid = node("mid", 500, on_host=True)
    near = node("near", 1000)
    cache = _cache(state, leaves=[far, mid, near], device_free=50, host_free=0)
    order = eviction_order(cache)
    assert order == [far, mid, near]

    def room(cache, tokens, distance):
        return device_room(cache, tokens, order, distance)

    assert room(cache, 40, 1.0) == (True, 0)  # free memory is enough
    assert room(cache, 500, 1.0) == (True, 300)  # the farthest chain: its leaf has no host copy
    assert room(cache, 1000, 1.0) == (True, 300)  # then the next farthest, already on host
    assert room(cache, 1100, 1.0) == (False, 300)  # never the nearer agent's state
    assert room(cache, 1100, 0.1) == (True, 1300)  # for an agent nearer still, it goes too
    assert device_room(cache, 1100, order) == (True, 1300)  # a demand load: SGLang takes any agent's
    assert device_room(cache, 1100) == (True, 1300)  # the same order, sorted by device_room itself
    through = _cache(state, leaves=[far, mid, near], device_free=50, host_free=0, write_policy="write_through")
    assert room(through, 500, 1.0) == (True, 0)  # write-through copied everything already


def test_host_room_is_free_memory_plus_the_duplicates_sglang_can_reclaim(monkeypatch):
    from scalesim.engine.sglang.host_tier import duplicate_tokens, host_room

    state, root, node = _world(monkeypatch, {})
    settled = node("a", 700, on_host=True)
    loading = node("b", 900, on_host=True)  # its load is in flight: not reclaimable yet
    gone = node("c", 50, on_device=False, on_host=True)  # a stale entry: no longer on the device
    cache = _cache(state, leaves=[], device_free=0, host_free=100,
                   duplicates=[(settled, True), (loading, False), (gone, True)])
    assert host_room(cache) == 800
    assert duplicate_tokens(cache.tree_core) == 1600


def test_a_load_whose_victims_host_memory_cannot_take_waits_for_the_load_in_flight(monkeypatch):
    """Both tiers full: the first load goes (nothing in flight: the policy decides what host
    memory keeps); the second would drop its victims while the first load's host copy is
    still locked, so it waits, and goes on a later iteration once that copy is reclaimable."""
    state, root, node = _world(monkeypatch, {"a": 0.0, "b": 1.0, "far": 4.0})
    far = node("far", 1000)
    prefixes = {agent: node(agent, 400, on_device=False, on_host=True) for agent in ("a", "b")}
    duplicates = []
    cache = _cache(state, leaves=[far], device_free=0, host_free=0, duplicates=duplicates)
    loads = []

    def load_back(node_id):
        loads.append(node_id)
        cache.cache_controller.ack_load_queue.append(node_id)
        return True

    cache.load_back = load_back
    cache.ready_to_load_host_cache = lambda: -1
    cache.has_free_load_back_slot = lambda: True
    cache.inc_lock_ref = lambda node_id: SimpleNamespace(to_dec_params=lambda: None)
    scheduler = SimpleNamespace(tree_cache=cache, waiting_queue=[], running_batch=_Batch(0),
                                max_total_num_tokens=10_000)
    p = KVPrefetcher()
    for agent, prefix in prefixes.items():
        p.prefix_end[agent] = lambda prefix=prefix: prefix
    p.step(scheduler)
    assert loads == [prefixes["a"].id] and list(p.held) == ["a"]
    p.step(scheduler)  # no new distances, but the scan was cut short: it runs again
    assert loads == [prefixes["a"].id]  # a's load is still in flight
    cache.cache_controller.ack_load_queue.clear()  # acknowledged: a's host copy is a duplicate
    duplicates.append((prefixes["a"], True))
    cache.tree_core.full_host_duplicates = {prefixes["a"].id: prefixes["a"]}
    cache.tree_core._can_reclaim_full_host_duplicate = lambda n: True
    p.step(scheduler)
    assert loads == [prefixes["a"].id, prefixes["b"].id] and list(p.held) == ["a", "b"]
    assert p.counters["prefetch_issued"] == 2
    p.step(scheduler)  # all done: no scan until the next push
    assert len(loads) == 2
