"""How ScaleSim's own copies into device memory overlap with compute: one interface, chosen once.

- `StreamCopier` (CUDA): the copy is issued on a side stream, an event is recorded after it, and
  the compute stream waits on that event on the device. The host never blocks; kernels queued
  later on the compute stream cannot read the destination before the copy lands, and stream
  order keeps a copy from landing after its destination was given to someone else.
- `ThreadCopier` (CPU): the copy runs on one background worker thread and returns a future; the
  caller (the scheduler thread, which owns the maps) waits on it before the destination is used
  or reassigned.

`order_after(event)` makes later compute wait for a copy SGLang issued itself (its host-to-device
load of a KV prefix): on the device for CUDA; nothing on CPU. `background_loads` tells the KV
prefetcher whether to move the copies it starts onto this worker (and wait for them before a
batch reads their slots). On CPU it does not: compute and copies share the same cores, so a
copy thread next to the forward pass's two PyTorch threads only oversubscribed a 2-core machine.
Measured with the same requests and counts (20 agents, 30 steps): the background KV prefetch
made the debate 185.4 s and the plan town 189.2 s; the same prefetch run in the scheduler thread
took 164.4 s and 166.1 s (prefetch off: 155.0 s and 184.4 s). The prefetch still loads ahead,
before the step's requests are admitted, just without pretending to overlap.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, Protocol


class Copier(Protocol):
    def submit(self, copy: Callable[[], Any]) -> concurrent.futures.Future: ...

    def order_after(self, event: Any) -> None: ...

    background_loads: bool


class ThreadCopier:
    background_loads = False  # see the module docstring: KV prefetch copies stay in the scheduler thread

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scalesim-copy")

    def submit(self, copy: Callable[[], Any]) -> concurrent.futures.Future:
        return self._pool.submit(copy)

    def order_after(self, event: Any) -> None:
        return None


class StreamCopier:
    background_loads = False  # SGLang already issues its loads on a side stream

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._stream = torch.cuda.Stream()

    def submit(self, copy: Callable[[], Any]) -> concurrent.futures.Future:
        torch = self._torch
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._stream.wait_stream(torch.cuda.current_stream())  # sources written by earlier kernels
        with torch.cuda.stream(self._stream):
            try:
                done.set_result(copy())
            except Exception as exc:  # surfaced to whoever waits, as with a thread
                done.set_exception(exc)
            event = torch.cuda.Event()
            event.record(self._stream)
        torch.cuda.current_stream().wait_event(event)
        return done

    def order_after(self, event: Any) -> None:
        self._torch.cuda.current_stream().wait_event(event)


_COPIERS: dict[str, Copier] = {}


def copier_for(device: Any) -> Copier:
    """The copier for a device (`"cuda"`, `"cuda:0"`, `torch.device`, `"cpu"`), one per type."""
    kind = str(device).split(":", 1)[0]
    copier = _COPIERS.get(kind)
    if copier is None:
        copier = _COPIERS[kind] = StreamCopier() if kind == "cuda" else ThreadCopier()
    return copier
