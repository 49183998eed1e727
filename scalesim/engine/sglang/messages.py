"""Messages ScaleSim sends from the HTTP process to the scheduler over SGLang's own IPC.

They are msgspec structs registered with `io_struct.hook_custom_types` in every process (the
plugin does it at load), so SGLang's msgpack channel carries them like its own requests.
"""

from __future__ import annotations

from typing import Optional

from sglang.srt.managers.io_struct import BaseReq, hook_custom_types


class ScaleSimDistancesReq(BaseReq, kw_only=True):
    """A validated distance update, applied as is by the scheduler's DistanceTable."""

    epoch: int
    distances: dict[str, float]
    replace: bool = False
    ttl: Optional[float] = None


class ScaleSimAgentReq(BaseReq, kw_only=True):
    """Request `request_id` belongs to `agent_id`. Sent just before the request itself on the
    same socket, so the scheduler knows the agent when the request reaches the radix tree.
    (`BaseReq` already has an `rid` field, with a meaning of its own: this message's id.)"""

    request_id: str
    agent_id: str
    time: float  # the HTTP process's monotonic clock: every TP rank learns from the same times
    # A chat prompt's length before its last message, and its last token ids (`chat_prefix`)
    prefix_tokens: Optional[int] = None
    prefix_last_ids: Optional[list[int]] = None


class ScaleSimRegisterReq(BaseReq, kw_only=True):
    """Registered agents and the adapter (by name) each one uses."""

    adapters: dict[str, str]


def register_message_types() -> None:
    hook_custom_types(ScaleSimDistancesReq, ScaleSimAgentReq, ScaleSimRegisterReq)
