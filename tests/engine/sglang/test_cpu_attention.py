"""Prefix-aware extend attention on the CPU path: the same new rows as SGLang's own
`_run_sdpa_forward_extend` (real tensors, SGLang's real function). Bit for bit on single
sequences; in a mixed batch a row may differ in the last bit of a float (the attention kernel
blocks differently), far below bf16's resolution."""

from __future__ import annotations

import pytest
import torch

from scalesim.engine.sglang.cpu_attention import around_forward_extend


def _batch(prefixes: list[int], news: list[int], heads: int = 9, kv_heads: int = 3, dim: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    totals = [p + n for p, n in zip(prefixes, news)]
    slots = sum(totals) + 7
    k_cache = torch.randn(slots, kv_heads, dim, generator=g).bfloat16()
    v_cache = torch.randn(slots, kv_heads, dim, generator=g).bfloat16()
    perm = torch.randperm(slots, generator=g)  # scattered slots, as after evictions
    req_to_token = torch.zeros(len(totals) + 1, max(totals) + 3, dtype=torch.int32)
    used = 0
    for row, total in enumerate(totals, 1):
        req_to_token[row, :total] = perm[used:used + total].to(torch.int32)
        used += total
    query = torch.randn(sum(news), heads, dim, generator=g).bfloat16()
    return (query, k_cache, v_cache, req_to_token, torch.arange(1, len(totals) + 1), torch.tensor(totals),
            torch.tensor(prefixes), torch.tensor(news))


@pytest.mark.parametrize("prefixes, news", [([1800], [40]), ([0, 1500, 37], [20, 1, 300]), ([5, 0], [1, 9])])
def test_new_rows_equal_sglangs(prefixes, news):
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    query, k, v, table, rows, seq_lens, prefix_lens, new_lens = _batch(prefixes, news)
    theirs, ours = torch.zeros_like(query), torch.zeros_like(query)
    original = TorchNativeAttnBackend._run_sdpa_forward_extend
    args = (table, rows, seq_lens, prefix_lens, new_lens, None)
    kwargs = dict(scaling=0.125, enable_gqa=True, causal=True)
    original(None, query, theirs, k, v, *args, **kwargs)
    calls = []

    def spy(*a, **kw):
        calls.append(1)
        return original(*a, **kw)

    around_forward_extend(spy, None, query, ours, k, v, *args, **kwargs)
    assert torch.allclose(ours.float(), theirs.float(), rtol=0, atol=1e-6)
    if len(prefixes) == 1:
        assert torch.equal(ours, theirs)
    assert calls == ([1] if sum(prefixes) == 0 else [])  # no cached prefix: SGLang's own path


def test_sliding_windows_and_non_causal_attention_take_sglangs_path():
    query, k, v, table, rows, seq_lens, prefix_lens, new_lens = _batch([10], [4])
    calls = []
    for kw in (dict(causal=False), dict(causal=True, sliding_window_size=8), dict(causal=True, is_cross_attn=True)):
        around_forward_extend(lambda *a, **k2: calls.append(1), None, query, torch.zeros_like(query), k, v, table,
                              rows, seq_lens, prefix_lens, new_lens, None, **kw)
    assert calls == [1, 1, 1]
