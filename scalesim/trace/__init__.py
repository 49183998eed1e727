"""Simulation request traces: the format, a replayer for any policy, and the Belady oracle."""

from scalesim.trace.format import TraceError, TraceRecord, read_trace, write_trace
from scalesim.trace.replay import ReplayResult, replay_belady, replay_policy

__all__ = ["ReplayResult", "TraceError", "TraceRecord", "read_trace", "replay_belady", "replay_policy", "write_trace"]
