"""ScaleSim's state inside the scheduler process, kept beside SGLang's objects, not on them.

One `SchedulerState` per Scheduler instance, in a side table keyed by the scheduler object
(weakly: it goes when the scheduler goes). The scheduler's clock drives TTL expiry.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from scalesim.distance import DistanceError, DistanceTable

logger = logging.getLogger(__name__)


@dataclass
class SchedulerState:
    table: DistanceTable = field(default_factory=lambda: DistanceTable(clock=time.monotonic))
    pushes_applied: int = 0
    pushes_rejected: int = 0
    apply_seconds_total: float = 0.0  # time the scheduler spent applying pushes
    apply_seconds_max: float = 0.0

    def apply(self, epoch: int, distances: dict[str, float], *, replace: bool, ttl: float | None) -> None:
        start = time.perf_counter()
        try:
            self.table.update(distances, epoch, replace=replace, ttl=ttl)
            self.pushes_applied += 1
            elapsed = time.perf_counter() - start
            self.apply_seconds_total += elapsed
            self.apply_seconds_max = max(self.apply_seconds_max, elapsed)
        except DistanceError as exc:
            # The HTTP process validated the same update against the same history, so this
            # means the two tables diverged (e.g. several tokenizer workers): keep serving.
            self.pushes_rejected += 1
            logger.warning("ScaleSim: distance update rejected in the scheduler: %s", exc)

    def report(self) -> dict[str, Any]:
        return {
            "distance_epoch": self.table.epoch,
            "agents_with_distance": len(self.table),
            "distance_pushes_applied": self.pushes_applied,
            "distance_pushes_rejected": self.pushes_rejected,
            "distance_push_apply_ms_mean": 1000 * self.apply_seconds_total / max(self.pushes_applied, 1),
            "distance_push_apply_ms_max": 1000 * self.apply_seconds_max,
        }


_STATES: "weakref.WeakKeyDictionary[object, SchedulerState]" = weakref.WeakKeyDictionary()


def state_of(scheduler: object) -> SchedulerState:
    state = _STATES.get(scheduler)
    if state is None:
        state = _STATES[scheduler] = SchedulerState()
    return state
