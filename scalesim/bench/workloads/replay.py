"""Replay of a recorded simulation trace (the core trace format, `scalesim.trace.format`).

Each record is one call: the agent, its prefix identity and length, its output length. The
prefix text is generated from the prefix identity, so the same identity always gives the same
text and length. Hint: the trace's own `next_step` (what the simulation knew), as steps from now.
Steps are the trace's distinct `step` values in order; `--steps` (the parameters' `steps`) caps
how many are run, so a long trace can be run in part. Distances still count the trace's later
steps, as the simulation knew them when it was recorded.
"""

from __future__ import annotations

import random
from pathlib import Path

from scalesim.bench.workloads.base import Call, Simulation, TokenCounter, WorkloadParams, estimate_tokens
from scalesim.bench.workloads.text import persona_prefix
from scalesim.trace.format import TraceRecord, read_trace


class Replay(Simulation):
    name = "replay"

    def __init__(self, params: WorkloadParams, count_tokens: TokenCounter = estimate_tokens, *,
                 trace: Path | list[TraceRecord]) -> None:
        records = read_trace(Path(trace)) if not isinstance(trace, list) else trace
        if not records:
            raise ValueError("the trace has no records")
        self.records = records
        self.times = sorted({r.step for r in records})
        agents = sorted({r.agent for r in records})
        self.params = params
        self.agent_ids = agents
        self.rng = random.Random(f"{self.name}/{params.seed}")
        self.prefixes = {}
        for r in records:
            if r.agent not in self.prefixes:
                rng = random.Random(f"replay/{r.prefix}")
                self.prefixes[r.agent] = persona_prefix(agents.index(r.agent), rng, r.prefix_len, count_tokens)
        self.last_said = {}

    @property
    def n_steps(self) -> int:
        return min(len(self.times), self.params.steps)

    def _at(self, step: int) -> list[TraceRecord]:
        t = self.times[step] if step < len(self.times) else None
        return [r for r in self.records if r.step == t]

    def distances(self, step: int) -> dict[str, float]:
        if step >= len(self.times):
            return {}
        now = self.times[step]
        out: dict[str, float] = {}
        for r in self.records:
            if r.step > now:
                break
            out[r.agent] = 0.0 if r.step == now else (
                sum(1 for t in self.times if now < t <= r.next_step) if r.next_step is not None else None)
        return {a: d for a, d in out.items() if d is not None}

    def calls(self, step: int) -> list[Call]:
        return [Call(r.agent, f"Step {step}. Continue.", max(1, min(32, r.output_len))) for r in self._at(step)]
