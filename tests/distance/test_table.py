"""DistanceTable: epochs, partial/full updates, TTL, ordering, and rejected input changing nothing."""

from __future__ import annotations

import math

import pytest

from scalesim.distance import DistanceError, DistanceTable


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def table(clock):
    return DistanceTable(clock)


def test_partial_update_and_order(table):
    assert table.update({"a": 3, "b": 1, "c": 2}, epoch=1) == {"a", "b", "c"}
    assert table.update({"a": 0.5}, epoch=1) == {"a"}  # same epoch merges
    assert list(table.in_order()) == [("a", 0.5), ("b", 1.0), ("c", 2.0)]
    assert table.nearest(2) == [("a", 0.5), ("b", 1.0)]
    table.update({"d": 1}, epoch=1)
    assert table.within(1.0) == [("a", 0.5), ("b", 1.0), ("d", 1.0)]  # every one within, ties by id
    assert table.within(0.1) == []
    assert table.get("zzz") is None


def test_unchanged_values_are_not_reported(table):
    table.update({"a": 1, "b": 2}, epoch=1)
    assert table.update({"a": 1, "b": 3}, epoch=2) == {"b"}


def test_full_replacement_drops_missing_agents(table):
    table.update({"a": 1, "b": 2}, epoch=1)
    assert table.update({"b": 2, "c": 5}, epoch=2, replace=True) == {"a", "c"}
    assert table.snapshot() == {"b": 2.0, "c": 5.0}
    assert table.epoch == 2


def test_ties_order_by_agent_id(table):
    table.update({"b": 1, "a": 1, "c": 0}, epoch=0)
    assert [a for a, _ in table.in_order()] == ["c", "a", "b"]


def test_ttl_decays_to_unknown_and_notifies(table, clock):
    heard: list[set[str]] = []
    table.subscribe(heard.append)
    table.update({"a": 1}, epoch=1, ttl=5)
    table.update({"b": 2}, epoch=1)
    clock.t = 4.9
    assert table.get("a") == 1.0
    clock.t = 5.0
    assert table.get("a") is None and table.get("b") == 2.0
    assert heard == [{"a"}, {"b"}, {"a"}]


def test_refresh_extends_ttl(table, clock):
    table.update({"a": 1}, epoch=1, ttl=5)
    clock.t = 3
    table.update({"a": 1}, epoch=1, ttl=5)
    clock.t = 6
    assert table.get("a") == 1.0
    clock.t = 8
    assert "a" not in table


def test_forget(table):
    table.update({"a": 1}, epoch=0)
    assert table.forget("a") and not table.forget("a")
    assert len(table) == 0


BAD_UPDATES = [
    ({"a": math.nan}, {}, "distances['a'] must be finite and >= 0, got nan"),
    ({"a": -1}, {}, "distances['a'] must be finite and >= 0, got -1"),
    ({"a": math.inf}, {}, "distances['a'] must be finite and >= 0, got inf"),
    ({"a": "3"}, {}, "distances['a'] must be a number, got '3'"),
    ({"a": True}, {}, "distances['a'] must be a number, got True"),
    ({"": 1}, {}, "agent_id must be a non-empty string, got ''"),
    ({1: 1}, {}, "agent_id must be a non-empty string, got 1"),
    ({"a": 1}, {"unit": "parsecs"}, "unit must be 'steps' for this table, got 'parsecs'"),
    ({"a": 1}, {"ttl": 0}, "ttl must be a positive finite number or None, got 0"),
    ({"a": 1}, {"epoch": 4}, "epoch 4 is older than the table's epoch 5"),
    ({"a": 1}, {"replace": True}, "epoch 5 already has a full table; a replacement needs a newer epoch"),
    ({"a": 1}, {"epoch": -1}, "epoch must be a non-negative integer, got -1"),
    ({"a": 1}, {"epoch": 5.5}, "epoch must be a non-negative integer, got 5.5"),
    (["a"], {}, "distances must be a mapping of agent_id to number, got list"),
]


@pytest.mark.parametrize("distances, kwargs, message", BAD_UPDATES)
def test_bad_input_is_rejected_and_changes_nothing(table, distances, kwargs, message):
    table.update({"x": 7}, epoch=5)
    heard: list[set[str]] = []
    table.subscribe(heard.append)
    args = {"epoch": 5, **kwargs}
    # A valid entry next to the bad one must not be applied either.
    if isinstance(distances, dict):
        distances = {"ok": 1, **distances}
    with pytest.raises(DistanceError) as err:
        table.update(distances, **args)
    assert str(err.value) == message
    assert table.snapshot() == {"x": 7.0} and table.epoch == 5 and heard == []


def test_size_limit(clock):
    table = DistanceTable(clock, max_agents=3)
    table.update({"a": 1, "b": 1}, epoch=0)
    with pytest.raises(DistanceError, match="update would hold 4 agents, over the limit of 3"):
        table.update({"c": 1, "d": 1}, epoch=0)
    with pytest.raises(DistanceError, match="distances has 4 entries, over the limit of 3"):
        table.update({"c": 1, "d": 1, "e": 1, "f": 1}, epoch=1, replace=True)
    assert table.snapshot() == {"a": 1.0, "b": 1.0}
    table.update({"c": 1, "d": 1, "e": 1}, epoch=1, replace=True)  # replacement may swap all


def test_bad_table_config(clock):
    with pytest.raises(DistanceError, match="unit must be one of \\['seconds', 'steps'\\], got 'hours'"):
        DistanceTable(clock, unit="hours")
