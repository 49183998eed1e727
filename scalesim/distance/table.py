"""The per-agent distance table: epochs, partial and full updates, time-to-live, ordered reads.

Contract:
- A distance is a finite, non-negative real number (not a bool); its unit is one of `UNITS`.
  Only the order matters to eviction; the value matters to prefetch look-ahead.
- Every update carries an epoch. An epoch older than the table's is rejected; the same epoch
  merges (several pushes within one simulation step); a newer epoch becomes the table's epoch.
  `replace=True` makes the table exactly the given distances; otherwise only the given agents
  change. A full replacement is the whole table of an epoch, so a second one at the table's
  epoch is a duplicate (a replayed or misnumbered step) and is rejected.
- An update may carry a time-to-live; its entries decay to unknown once `clock() >= set + ttl`.
- Unknown agents (never set, or expired) have no distance: `get` returns None; in distance
  order they come after every known agent.
- A rejected update raises `DistanceError` naming the field and value, and changes nothing.
- Cost of an update is proportional to the agents it names (plus expired entries purged, and
  for `replace=True` the agents it drops), never to the whole table; `changed` agents are
  returned, and told to listeners, so callers re-rank only those.

Time is injected (`clock`), never read from the wall clock inside the table.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from numbers import Real

UNITS = frozenset({"steps", "seconds"})
MAX_AGENTS = 100_000
MAX_AGENT_ID_LENGTH = 256


class DistanceError(ValueError):
    """A rejected distance update: the message names the offending field and value."""


def validate_agent_id(agent_id: object) -> str:
    if not isinstance(agent_id, str) or not agent_id:
        raise DistanceError(f"agent_id must be a non-empty string, got {agent_id!r}")
    if len(agent_id) > MAX_AGENT_ID_LENGTH:
        raise DistanceError(f"agent_id longer than {MAX_AGENT_ID_LENGTH} characters: {agent_id[:40]!r}...")
    return agent_id


def validate_distance(agent_id: str, value: object) -> float:
    # bool is an int subclass; True as a distance is a client bug, not 1 step.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise DistanceError(f"distances[{agent_id!r}] must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise DistanceError(f"distances[{agent_id!r}] must be finite and >= 0, got {value!r}")
    return number


def validate_distances(distances: object, limit: int = MAX_AGENTS) -> dict[str, float]:
    """Check a whole `{agent_id: distance}` mapping; return it with float values."""
    if not isinstance(distances, Mapping):
        raise DistanceError(f"distances must be a mapping of agent_id to number, got {type(distances).__name__}")
    if len(distances) > limit:
        raise DistanceError(f"distances has {len(distances)} entries, over the limit of {limit}")
    out: dict[str, float] = {}
    inf = math.inf
    for agent, value in distances.items():
        # Fast path for the common case (str ids, int/float values); anything else, and any
        # failure, goes through the checks that produce the error message.
        if type(agent) is str and 0 < len(agent) <= MAX_AGENT_ID_LENGTH and type(value) in (float, int):
            number = float(value)
            if 0.0 <= number < inf:  # false for NaN too
                out[agent] = number
                continue
        out[validate_agent_id(agent)] = validate_distance(agent, value)
    return out


def _validate_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, Real) or not math.isfinite(float(ttl)) or ttl <= 0:
        raise DistanceError(f"ttl must be a positive finite number or None, got {ttl!r}")
    return float(ttl)


class DistanceTable:
    """Current invocation distance per agent. See the module docstring for the contract."""

    def __init__(self, clock: Callable[[], float], *, unit: str = "steps", max_agents: int = MAX_AGENTS):
        if unit not in UNITS:
            raise DistanceError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
        if max_agents < 1:
            raise DistanceError(f"max_agents must be >= 1, got {max_agents!r}")
        self._clock = clock
        self.unit = unit
        self.max_agents = max_agents
        self.epoch = -1  # no update yet
        self._dist: dict[str, float] = {}
        self._expires: dict[str, float] = {}
        # (expiry time, agent): lazily checked against _expires, so overwrites need no removal.
        self._expiry_heap: list[tuple[float, str]] = []
        self._listeners: list[Callable[[set[str]], None]] = []

    def subscribe(self, listener: Callable[[set[str]], None]) -> None:
        """Call `listener(changed_agents)` after every change: update, forget or expiry."""
        self._listeners.append(listener)

    def _notify(self, changed: set[str]) -> None:
        if changed:
            for listener in self._listeners:
                listener(changed)

    # -- reads ---------------------------------------------------------------------------

    def get(self, agent_id: str) -> float | None:
        """The agent's distance, or None if unknown or expired."""
        self._purge_expired()
        return self._dist.get(agent_id)

    def __len__(self) -> int:
        self._purge_expired()
        return len(self._dist)

    def __contains__(self, agent_id: object) -> bool:
        self._purge_expired()
        return agent_id in self._dist

    def view(self) -> Mapping[str, float]:
        """The live `{agent: distance}` mapping after purging expired entries; do not mutate.

        For callers that read many agents at once (re-keying a policy): one purge instead of
        one per `get`.
        """
        self._purge_expired()
        return self._dist

    def snapshot(self) -> dict[str, float]:
        """A copy of every known distance."""
        self._purge_expired()
        return dict(self._dist)

    def in_order(self) -> Iterator[tuple[str, float]]:
        """Known agents, nearest first; ties by agent id (deterministic across processes)."""
        self._purge_expired()
        return iter(sorted(self._dist.items(), key=lambda kv: (kv[1], kv[0])))

    def nearest(self, k: int) -> list[tuple[str, float]]:
        """The k nearest known agents, nearest first, in O(n log k)."""
        self._purge_expired()
        return heapq.nsmallest(k, self._dist.items(), key=lambda kv: (kv[1], kv[0]))

    def within(self, limit: float) -> list[tuple[str, float]]:
        """Known agents at distance <= `limit`, nearest first (ties by agent id), in
        O(n + m log m) for m of them."""
        self._purge_expired()
        return sorted(((a, d) for a, d in self._dist.items() if d <= limit), key=lambda kv: (kv[1], kv[0]))

    # -- writes --------------------------------------------------------------------------

    def update(
        self,
        distances: Mapping[str, float],
        epoch: int,
        *,
        unit: str | None = None,
        ttl: float | None = None,
        replace: bool = False,
    ) -> set[str]:
        """Apply an update atomically; return the agents whose distance changed.

        Raises `DistanceError` (and changes nothing) on a bad field, an older epoch, a unit
        other than the table's, or a result over `max_agents`.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise DistanceError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch < self.epoch:
            raise DistanceError(f"epoch {epoch} is older than the table's epoch {self.epoch}")
        if replace and epoch == self.epoch:
            raise DistanceError(f"epoch {epoch} already has a full table; a replacement needs a newer epoch")
        if unit is not None and unit != self.unit:
            raise DistanceError(f"unit must be {self.unit!r} for this table, got {unit!r}")
        ttl = _validate_ttl(ttl)
        clean = validate_distances(distances, self.max_agents)
        self._purge_expired()
        if not replace:
            current = self._dist
            new_agents = len([a for a in clean if a not in current])
            if len(self._dist) + new_agents > self.max_agents:
                raise DistanceError(
                    f"update would hold {len(self._dist) + new_agents} agents, over the limit of {self.max_agents}"
                )
        # Validated: from here on nothing raises.
        changed: set[str] = set()
        if replace:
            changed = {a for a in self._dist if a not in clean}
            for agent in changed:
                del self._dist[agent]
                self._expires.pop(agent, None)
        # O(len(distances)), never O(len(table)): no set operations against the whole table.
        current = self._dist
        get = current.get
        changed.update([a for a, v in clean.items() if get(a) != v])
        current.update(clean)
        if ttl is not None:
            expires_at = self._clock() + ttl
            for agent in clean:
                self._expires[agent] = expires_at
                heapq.heappush(self._expiry_heap, (expires_at, agent))
        elif self._expires:
            for agent in clean:
                self._expires.pop(agent, None)
        self.epoch = epoch
        self._notify(changed)
        return changed

    def forget(self, agent_id: str) -> bool:
        """Make one agent unknown; return whether it was known."""
        self._expires.pop(agent_id, None)
        known = self._dist.pop(agent_id, None) is not None
        if known:
            self._notify({agent_id})
        return known

    def expire(self) -> set[str]:
        """Purge expired entries now (listeners hear of them) and return those agents."""
        return self._purge_expired()

    def _purge_expired(self) -> set[str]:
        if not self._expiry_heap:
            return set()
        now = self._clock()
        gone: set[str] = set()
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            at, agent = heapq.heappop(heap)
            if self._expires.get(agent) == at:  # not overwritten since
                del self._expires[agent]
                del self._dist[agent]
                gone.add(agent)
        self._notify(gone)
        return gone
