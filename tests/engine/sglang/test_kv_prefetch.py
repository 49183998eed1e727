"""Which part of an agent's path a host-to-device prefetch loads (exact node choices)."""

from __future__ import annotations

from scalesim.engine.sglang.kv_prefetch import _host_anchor, _host_only_tokens


class Node:
    def __init__(self, parent, tokens: int, *, on_device: bool, on_host: bool):
        self.parent, self.key = parent, [0] * tokens
        self.evicted, self.backuped = not on_device, on_host


def test_anchor_is_the_deepest_host_copy_below_the_device_part_of_the_path():
    root = Node(None, 0, on_device=True, on_host=False)
    shared = Node(root, 50, on_device=True, on_host=True)
    prefix = Node(shared, 300, on_device=False, on_host=True)
    tail = Node(prefix, 4, on_device=False, on_host=False)  # generated tokens, never copied
    assert _host_anchor(tail) is prefix
    assert _host_only_tokens(prefix) == 300  # the shared part is still on the device
    assert _host_anchor(shared) is None  # on the device: nothing to load
    gone = Node(root, 300, on_device=False, on_host=False)
    assert _host_anchor(gone) is None  # neither tier has it: recomputed on demand
    assert _host_anchor(None) is None
