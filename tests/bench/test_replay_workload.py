"""The replay workload: steps are the trace's, its `next_step` becomes the distance hint, and
`steps` caps how many of them run while distances still see the whole trace."""

from __future__ import annotations

from scalesim.bench.workloads import WorkloadParams
from scalesim.bench.workloads.replay import Replay
from scalesim.trace.format import TraceRecord


def _trace() -> list[TraceRecord]:
    rec = lambda step, agent, nxt: TraceRecord(step, agent, f"{agent}:p", 40, 5, nxt)  # noqa: E731
    return [rec(0, "a", 2), rec(0, "b", 5), rec(2, "a", None), rec(5, "c", 9), rec(5, "b", None), rec(9, "c", None)]


def _params(steps: int) -> WorkloadParams:
    return WorkloadParams(agents=3, steps=steps, seed=0, prefix_tokens=(20, 30))


def test_the_trace_decides_the_steps_their_callers_and_hints():
    sim = Replay(_params(30), trace=_trace())
    assert sim.n_steps == 4  # the trace's distinct steps, not the asked 30
    assert [[c.agent for c in sim.calls(k)] for k in range(sim.n_steps)] == [["a", "b"], ["a"], ["c", "b"], ["c"]]
    # At step 0 (time 0): a next calls at time 2 (one step on), b at time 5 (two steps on).
    assert sim.distances(0) == {"a": 0.0, "b": 0.0}
    assert sim.distances(1) == {"a": 0.0, "b": 1.0}
    assert sim.distances(2) == {"b": 0.0, "c": 0.0}


def test_steps_caps_the_run_and_distances_still_count_later_steps():
    capped, full = Replay(_params(2), trace=_trace()), Replay(_params(30), trace=_trace())
    assert capped.n_steps == 2
    assert [capped.distances(k) for k in range(2)] == [full.distances(k) for k in range(2)]
