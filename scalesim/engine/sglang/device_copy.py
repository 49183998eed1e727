"""How ScaleSim's own copies into device memory are ordered against compute: one interface,
chosen once per device type.

- `StreamCopier` (CUDA): the copy is issued on a side stream, an event is recorded after it, and
  the compute stream waits on that event on the device. The host never blocks; kernels queued
  later on the compute stream cannot read the destination before the copy lands, and stream
  order keeps a copy from landing after its destination was given to someone else.
- `InlineCopier` (CPU): the copy runs at once in the calling thread (the scheduler's, between
  batches) and returns a finished future.

Both have issued the copy when `submit` returns, so the caller (the scheduler thread, which owns
the maps) may use or reassign the destination at once, and a failed copy raises in the caller.
`order_after(event)` makes later compute wait for a copy
SGLang issued itself (its host-to-device load of a KV prefix): on the device for CUDA; nothing on
CPU.

Why no copy thread on CPU: compute and copies share the same cores, and PyTorch's intra-op
threads already use all of them, so a copy thread only competes with the forward pass. Measured
with the same requests and counts (20 agents, 30 steps, 2 cores): KV prefetch copies on a worker
thread made the debate 185.4 s and the plan town 189.2 s; the same prefetch in the scheduler
thread took 164.4 s and 166.1 s (prefetch off: 155.0 s and 184.4 s). The copy thread was busy for
0.45 s of a run, yet the forward pass's KV gathers took 16.8 s instead of 8.2 s. The prefetch still
loads ahead, before the step's requests are admitted, just without pretending to overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Copier(Protocol):
    def submit(self, copy: Callable[[], Any]) -> Any: ...

    def order_after(self, event: Any) -> None: ...


class InlineCopier:
    def submit(self, copy: Callable[[], Any]) -> Any:
        return copy()

    def order_after(self, event: Any) -> None:
        return None


class StreamCopier:
    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._stream = torch.cuda.Stream()

    def submit(self, copy: Callable[[], Any]) -> Any:
        torch = self._torch
        self._stream.wait_stream(torch.cuda.current_stream())  # sources written by earlier kernels
        try:
            with torch.cuda.stream(self._stream):
                return copy()  # issues the copy; it lands on the device later
        finally:
            # Even after a failure, part of the copy may be queued: later compute waits for it.
            event = torch.cuda.Event()
            event.record(self._stream)
            torch.cuda.current_stream().wait_event(event)

    def order_after(self, event: Any) -> None:
        self._torch.cuda.current_stream().wait_event(event)


_COPIERS: dict[str, Copier] = {}


def copier_for(device: Any) -> Copier:
    """The copier for a device (`"cuda"`, `"cuda:0"`, `torch.device`, `"cpu"`), one per type."""
    kind = str(device).split(":", 1)[0]
    copier = _COPIERS.get(kind)
    if copier is None:
        copier = _COPIERS[kind] = StreamCopier() if kind == "cuda" else InlineCopier()
    return copier
