"""Simulation request traces: the format, a replayer for any policy, and the Belady oracle."""

from scalesim.trace.format import TraceError, TraceRecord, read_pushes, read_trace, write_pushes, write_trace
from scalesim.trace.replay import ReplayResult, replay_belady, replay_policy, replay_pushed

__all__ = ["ReplayResult", "TraceError", "TraceRecord", "read_pushes", "read_trace", "replay_belady", "replay_policy",
           "replay_pushed", "write_pushes", "write_trace"]
