"""The eviction contract, with exact orders, run over every priority and the reference memory."""

from __future__ import annotations

import pytest

from scalesim.distance import DistanceTable
from scalesim.memory import ReferenceMemory
from scalesim.memory.reference import CapacityError
from scalesim.policy import DistancePriority, EvictionPolicy, LRUPriority, admits, make_priority


def make(priority):
    table = DistanceTable(clock=lambda: 0.0)
    return table, EvictionPolicy(priority, table)


def populate(policy):
    # key, owners, size, last used
    for key, owners, size, used in [
        ("k_a", {"a"}, 1, 1.0),
        ("k_b", {"b"}, 1, 2.0),
        ("k_c", {"c"}, 1, 3.0),
        ("k_shared", {"a", "d"}, 1, 0.5),
        ("k_u1", {"u1"}, 1, 4.0),
        ("k_u2", {"u2"}, 1, 0.0),
    ]:
        policy.add(key, owners, size, used)


# Distances: a=5, b=1, c=9, d=0; u1, u2 unknown.
DISTANCES = {"a": 5, "b": 1, "c": 9, "d": 0}

EXPECTED_ORDER = {
    # Unknown first (LRU among them: u2 then u1), then farthest known first; the shared node
    # takes its nearest owner's distance (d = 0) and goes last.
    "distance": ["k_u2", "k_u1", "k_c", "k_a", "k_b", "k_shared"],
    "lru": ["k_u2", "k_shared", "k_a", "k_b", "k_c", "k_u1"],
}


@pytest.mark.parametrize("name", ["distance", "lru"])
def test_exact_eviction_order(name):
    table, policy = make(make_priority(name))
    populate(policy)
    table.update(DISTANCES, epoch=1)
    assert policy.order() == EXPECTED_ORDER[name]
    assert policy.victims(2) == EXPECTED_ORDER[name][:2]
    assert policy.victims(0) == []


@pytest.mark.parametrize("name", ["distance", "lru"])
def test_pinned_state_is_never_a_victim(name):
    table, policy = make(make_priority(name))
    populate(policy)
    table.update(DISTANCES, epoch=1)
    first = EXPECTED_ORDER[name][0]
    policy.pin(first)
    policy.pin(first)
    policy.unpin(first)
    assert first not in policy.order()
    assert first not in policy.victims(100)
    policy.unpin(first)
    assert policy.order() == EXPECTED_ORDER[name]
    with pytest.raises(ValueError, match="is not pinned"):
        policy.unpin(first)


def test_distance_changes_reorder_incrementally():
    table, policy = make(DistancePriority())
    populate(policy)
    table.update(DISTANCES, epoch=1)
    table.update({"b": 50}, epoch=2)  # b is now the farthest known
    assert policy.order() == ["k_u2", "k_u1", "k_b", "k_c", "k_a", "k_shared"]
    table.update({"u1": 0.1, "u2": 0.2}, epoch=3)
    assert policy.order() == ["k_b", "k_c", "k_a", "k_u2", "k_u1", "k_shared"]
    table.update({"a": 1}, epoch=4, replace=True)  # everyone else unknown again
    assert policy.order() == ["k_u2", "k_b", "k_c", "k_u1", "k_shared", "k_a"]


def test_equal_distances_fall_back_to_lru_then_insertion():
    table, policy = make(DistancePriority())
    for i, used in enumerate([3.0, 1.0, 1.0, 2.0]):
        policy.add(f"k{i}", {f"a{i}"}, 1, used)
    table.update({f"a{i}": 4 for i in range(4)}, epoch=0)
    assert policy.order() == ["k1", "k2", "k3", "k0"]
    policy.touch("k1", 10.0)
    assert policy.order() == ["k2", "k3", "k0", "k1"]


def test_no_hints_is_exactly_lru():
    _, dist = make(DistancePriority())
    _, lru = make(LRUPriority())
    for p in (dist, lru):
        populate(p)
        p.touch("k_c", 9.0)
        p.remove("k_b")
    assert dist.order() == lru.order() == ["k_u2", "k_shared", "k_a", "k_u1", "k_c"]


def test_owner_changes_and_removal_keep_indexes_clean():
    table, policy = make(DistancePriority())
    populate(policy)
    table.update(DISTANCES, epoch=1)
    policy.set_owners("k_shared", {"c"})  # d no longer uses it: distance 9 now
    assert policy.distance("k_shared") == 9.0
    policy.remove("k_shared")
    table.update({"c": 0, "d": 100}, epoch=2)  # must not resurrect removed state
    assert policy.order() == ["k_u2", "k_u1", "k_a", "k_b", "k_c"]
    assert "k_shared" not in policy and len(policy) == 5


def test_registry_is_strict():
    with pytest.raises(ValueError, match="unknown eviction priority 'mru' \\(valid: distance, lru\\)"):
        make_priority("mru")


@pytest.mark.parametrize("name", ["distance", "lru"])
def test_reference_memory_follows_the_policy(name):
    table, policy = make(make_priority(name))
    memory = ReferenceMemory("kv", capacity=6, policy=policy)
    keys = ["k_a", "k_b", "k_c", "k_shared", "k_u1", "k_u2", "k_new"]
    owners = {"k_a": {"a"}, "k_b": {"b"}, "k_c": {"c"}, "k_shared": {"a", "d"}, "k_u1": {"u1"},
              "k_u2": {"u2"}, "k_new": {"b"}}
    for key in keys:
        memory.register(key, owners[key], 1)
    used = {"k_a": 1.0, "k_b": 2.0, "k_c": 3.0, "k_shared": 0.5, "k_u1": 4.0, "k_u2": 0.0}
    for key in keys[:-1]:
        assert memory.access(key, used[key]) is False
        memory.release(key)
    table.update(DISTANCES, epoch=1)
    assert memory.used == 6
    assert memory.access("k_new", 5.0) is False  # full: the policy's first victim goes
    assert memory.tier(EXPECTED_ORDER[name][0]).value == "host"
    assert memory.access("k_new", 6.0) is True
    s = memory.stats
    assert (s.hits, s.misses, s.evictions, s.bytes_loaded) == (1, 7, 1, 7)


def test_reference_memory_refuses_when_everything_is_pinned():
    _, policy = make(LRUPriority())
    memory = ReferenceMemory("kv", capacity=1, policy=policy)
    memory.register("x", {"a"}, 1)
    memory.register("y", {"b"}, 1)
    memory.access("x", 0.0)  # pinned until released
    with pytest.raises(CapacityError):
        memory.access("y", 1.0)
    memory.release("x")
    assert memory.access("y", 2.0) is False


@pytest.mark.parametrize("name", ["distance", "lru"])
def test_removed_then_re_added_state_appears_once(name):
    table, policy = make(make_priority(name))
    policy.add("k", {"a"}, 1, 0.0)
    policy.add("j", {"b"}, 1, 1.0)
    policy.remove("k")  # its heap entry goes stale
    policy.add("k", {"a"}, 1, 2.0)  # no bulk re-key since: the stale entry is still in the heap
    assert policy.order() == ["j", "k"]
    assert policy.victims(10) == ["j", "k"]


def test_a_full_lower_tier_admits_a_victim_only_over_state_ranked_below_it():
    # Distance order: keys (-distance, last used, seq); candidates as the tier would evict them.
    p = DistancePriority()
    far, mid, near, nearest = (p.entry(d, 0.0, s, 0, None) for s, d in enumerate((9.0, 5.0, 1.0, 0.0)))
    host = [(mid, 300), (nearest, 300)]  # the tier's own eviction order: mid goes first
    assert admits(far, host, room=0, need=300) is False  # would push out mid, nearer than itself
    assert admits(near, host, room=0, need=300) is True  # mid goes for it
    assert admits(near, host, room=0, need=600) is False  # would push out nearest too, which ranks above
    assert admits(far, host, room=300, need=300) is True  # free room: nothing is pushed out
    assert admits(far, [], room=0, need=300) is True  # no candidates: the tier decides
    # A piece of equal distance used later ranks above the older one (LRU among equals).
    older, newer = p.entry(5.0, 1.0, 7, 0, None), p.entry(5.0, 2.0, 8, 0, None)
    assert admits(newer, [(older, 300)], room=0, need=300) is True
    assert admits(older, [(newer, 300)], room=0, need=300) is False
