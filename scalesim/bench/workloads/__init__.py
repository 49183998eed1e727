"""The simulation workloads of `scalesim bench sim`, one per workload class of DESIGN.md
section 2, plus the replay of a recorded trace. `make(name, params, ...)` builds one by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scalesim.bench.workloads.base import Call, Simulation, WorkloadParams, estimate_tokens
from scalesim.bench.workloads.debate import Debate
from scalesim.bench.workloads.plan_town import PlanTown
from scalesim.bench.workloads.replay import Replay
from scalesim.bench.workloads.social_network import SocialNetwork
from scalesim.bench.workloads.spatial_town import SpatialTown

WORKLOADS: dict[str, type[Simulation]] = {w.name: w for w in (PlanTown, SpatialTown, SocialNetwork, Debate)}


def make(name: str, params: WorkloadParams, count_tokens: Any = estimate_tokens, *,
         trace: Path | None = None) -> Simulation:
    """The workload `name` (`replay` needs `trace`); an unknown name raises, listing the valid ones."""
    if name == Replay.name:
        if trace is None:
            raise ValueError("the replay workload needs a trace file")
        return Replay(params, count_tokens, trace=trace)
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (valid: {', '.join([*WORKLOADS, Replay.name])})")
    return WORKLOADS[name](params, count_tokens)


__all__ = ["WORKLOADS", "Call", "Simulation", "WorkloadParams", "estimate_tokens", "make"]
