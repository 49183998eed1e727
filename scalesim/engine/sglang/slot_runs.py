"""KV slots in runs on the CPU path: a prefill or a load takes whole runs of free slots.

SGLang's `TokenToKVPoolAllocator` (page size 1, `need_sort` off outside disaggregation) hands out
the head of a free list that frees are appended to. Decode takes one slot per running sequence
per token, so the answers of ~40 sequences interleave slot by slot; once such tails are evicted,
a prefix reloaded from the host tier or recomputed is built from those scraps. On the CPU path
every decode step gathers each sequence's keys and values with `index_select` (`cpu_attention`),
and a gather over scattered rows costs more: at 60 agents (social network, 12 steps) ScaleSim's
gathers averaged 17.3 slots per run against 128.6 for the bound that never frees, and a cold
1,800-row gather in runs of 17 took about 1.5x one in runs of 129 (docs/bench.md).

So an allocation of `MIN_TOKENS` or more whose free-list head is not already one run takes whole
runs instead: the shortest run that holds it all (best fit, keeping long runs for long
prefixes), else the longest runs until it is covered. The slots left over are put back shortest
run first, so the one-slot-per-sequence decode allocations, which stay on SGLang's path (a sort
per decode step would cost more than it saves), use up scraps before they cut into long runs.
Which slots a token gets never changes what attention computes: outputs are the same.

An AROUND hook registered by the device seam (`scalesim-device`), which every system loads, so
stock SGLang, ScaleSim and the bound allocate alike. Other devices, `need_sort` allocators and
paged allocators keep SGLang's path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

TARGET = "sglang.srt.mem_cache.allocator.token.TokenToKVPoolAllocator.alloc"
# Below this size an allocation is a decode step's (one slot per running sequence) or a short
# extend, where runs buy little and a sort of the free list would cost more than the gathers save.
MIN_TOKENS = 64


class Taken(NamedTuple):
    """Slots handed out (ascending) and the free list left, shortest run first."""

    selected: Any
    remaining: Any


def _runs(sorted_slots: Any) -> tuple[Any, Any]:
    """Start positions and lengths of the runs of consecutive slot numbers in a sorted tensor."""
    import torch

    n = sorted_slots.numel()
    brk = torch.ones(n, dtype=torch.bool, device=sorted_slots.device)
    brk[1:] = sorted_slots[1:] != sorted_slots[:-1] + 1
    starts = brk.nonzero().squeeze(1)
    lengths = torch.diff(starts, append=torch.tensor([n], device=starts.device))
    return starts, lengths


def _positions(starts: Any, lengths: Any) -> Any:
    """Indices of the first `lengths[i]` elements from `starts[i]` on, run after run."""
    import torch

    offsets = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
    return torch.arange(offsets.numel(), device=starts.device) + offsets


def take_runs(free: Any, need: int) -> Taken:
    """`need` slots from `free` (distinct slot numbers, any order, at least `need` of them) in
    as few runs as the free slots allow: the shortest run holding all of them if there is one
    (the lowest such run on a tie), else the longest runs, longest first (lowest first on a tie),
    the last one cut. The rest of `free` comes back ordered by run length, shortest first, each
    run ascending, ties by slot number."""
    import torch

    slots = torch.sort(free).values
    starts, lengths = _runs(slots)
    take = torch.zeros_like(lengths)  # slots taken from the start of each run
    fits = lengths >= need
    if bool(fits.any()):
        take[int(torch.argmin(torch.where(fits, lengths, slots.numel() + 1)))] = need
    else:
        order = torch.argsort(lengths, descending=True, stable=True)
        covered = torch.cumsum(lengths[order], 0)
        last = int(torch.searchsorted(covered, need))  # the run that completes `need`
        take[order[:last]] = lengths[order[:last]]
        take[order[last]] = need - (int(covered[last - 1]) if last else 0)
    # A run cut from its start leaves one run; no two leftovers touch (in-use slots part them).
    rest = lengths - take
    order = torch.argsort(rest, stable=True)
    return Taken(slots[_positions(starts, take)], slots[_positions(starts[order] + take[order], rest[order])])


def head_is_one_run(free: Any, need: int) -> bool:
    """Whether the first `need` free slots are consecutive ascending numbers (then SGLang's
    own head-of-list allocation already gives one run: a fresh pool, or the bound that never
    frees)."""
    import torch

    head = free[:need]
    return bool(torch.all(head[1:] == head[:-1] + 1))


def around_alloc(original: Any, allocator: Any, need_size: int) -> Any:
    free = allocator.free_pages
    if (need_size < MIN_TOKENS or allocator.need_sort or allocator.page_size != 1
            or str(allocator.device) != "cpu" or need_size > len(free) or head_is_one_run(free, need_size)):
        return original(allocator, need_size)
    selected, allocator.free_pages = take_runs(free, need_size)
    return selected


def register() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, around_alloc, HookType.AROUND)
