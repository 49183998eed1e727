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


def register_message_types() -> None:
    hook_custom_types(ScaleSimDistancesReq)
