"""KV slots in runs: exact slots taken and free-list order, and the hook on SGLang's real
`TokenToKVPoolAllocator` (no model, no server)."""

from __future__ import annotations

import torch

from scalesim.engine.sglang import targets
from scalesim.engine.sglang.slot_runs import MIN_TOKENS, TARGET, around_alloc, take_runs

# Runs once sorted: [1] [3 4 5] [9] [11 12] [20 21 22 23]
FREE = torch.tensor([9, 3, 4, 5, 20, 21, 22, 23, 1, 11, 12])


def test_best_fit_takes_the_shortest_run_that_holds_it_all():
    taken = take_runs(FREE, 3)
    assert taken.selected.tolist() == [3, 4, 5]
    assert taken.remaining.tolist() == [1, 9, 11, 12, 20, 21, 22, 23]
    taken = take_runs(FREE, 2)  # [11 12] fits exactly; [3 4 5] and [20..23] stay whole
    assert taken.selected.tolist() == [11, 12]
    assert taken.remaining.tolist() == [1, 9, 3, 4, 5, 20, 21, 22, 23]


def test_a_tie_takes_the_lowest_run_and_cuts_it_from_its_start():
    taken = take_runs(torch.tensor([30, 31, 32, 7, 8, 9, 50]), 2)
    assert taken.selected.tolist() == [7, 8]
    assert taken.remaining.tolist() == [9, 50, 30, 31, 32]


def test_without_a_run_that_fits_the_longest_runs_go_first_the_last_one_cut():
    taken = take_runs(FREE, 6)  # [20..23] whole, then 2 of [3 4 5]
    assert taken.selected.tolist() == [3, 4, 20, 21, 22, 23]
    assert taken.remaining.tolist() == [1, 5, 9, 11, 12]
    taken = take_runs(FREE, 7)  # two whole runs exactly
    assert taken.selected.tolist() == [3, 4, 5, 20, 21, 22, 23]
    assert taken.remaining.tolist() == [1, 9, 11, 12]
    taken = take_runs(FREE, 11)
    assert taken.selected.tolist() == sorted(FREE.tolist())
    assert taken.remaining.tolist() == []


def test_the_hooked_method_exists_in_the_pinned_sglang():
    targets.check_targets((TARGET,))


def _allocator(size: int):
    from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator

    return TokenToKVPoolAllocator(size, torch.bfloat16, "cpu", kvcache=None, need_sort=False)


def _runs(slots: torch.Tensor) -> int:
    return int((torch.diff(slots) != 1).sum()) + 1


def test_hook_on_sglangs_allocator_keeps_a_prefix_in_runs_after_interleaved_decode_frees():
    from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator

    original = TokenToKVPoolAllocator.alloc
    hooked, stock = _allocator(620), _allocator(620)
    for allocator in (hooked, stock):
        # Eight sequences decode 40 tokens together: slot by slot interleaved, 1..320.
        tails = [[] for _ in range(8)]
        for _ in range(40):
            step = around_alloc(original, allocator, 8)  # below MIN_TOKENS: SGLang's own path
            for seq, slot in zip(tails, step.tolist()):
                seq.append(slot)
        prefix = around_alloc(original, allocator, 300)  # the head is one run: SGLang's path
        assert prefix.tolist() == list(range(321, 621))
        # The even sequences' tails are evicted (the odd slots), then the prefix.
        for seq in tails[::2]:
            allocator.free(torch.tensor(seq))
        allocator.free(prefix)
    assert torch.equal(hooked.free_pages, stock.free_pages)
    scraps = [slot for seq in tails[::2] for slot in seq]
    # Reloading the prefix: SGLang takes the head, 160 one-slot scraps and 140 of the run; the
    # hook takes the run that holds it all and puts the scraps first.
    theirs = original(stock, 300)
    ours = around_alloc(original, hooked, 300)
    assert _runs(theirs) == 161
    assert theirs.tolist() == scraps + list(range(321, 461))
    assert ours.tolist() == list(range(321, 621))
    assert hooked.free_pages.tolist() == sorted(scraps)


def test_hook_leaves_small_allocations_and_a_head_that_is_one_run_to_sglang():
    from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator

    original = TokenToKVPoolAllocator.alloc
    allocator = _allocator(500)
    assert around_alloc(original, allocator, 500).tolist() == list(range(1, 501))  # fresh pool
    allocator.free(torch.arange(150, 0, -2))  # 150, 148, ..., 2: one-slot runs
    assert around_alloc(original, allocator, MIN_TOKENS - 1).tolist() == list(range(150, 24, -2))
    assert around_alloc(original, allocator, 10_000) is None  # more than is free: SGLang's answer
    allocator.free(torch.arange(300, 400))
    assert around_alloc(original, allocator, MIN_TOKENS).tolist() == list(range(300, 300 + MIN_TOKENS))
    assert allocator.free_pages.tolist() == list(range(2, 25, 2)) + list(range(300 + MIN_TOKENS, 400))
