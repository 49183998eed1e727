"""CPU attention hooks against SGLang's real functions on real tensors. Prefix-aware extend:
the same new rows as `_run_sdpa_forward_extend`, bit for bit on single sequences (in a mixed
batch a row may differ in the last bit of a float: the kernel blocks differently, far below
bf16's resolution). Grouped-query decode: the same rows as `_run_sdpa_forward_decode`, bit for
bit with the default model's 9 query and 3 key-value heads; with other head counts PyTorch's
kernel may round a long row's last bit differently."""

from __future__ import annotations

import pytest
import torch

from scalesim.engine.sglang.cpu_attention import around_forward_decode, around_forward_extend


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


@pytest.mark.parametrize("prefixes, news", [([1800], [40]), ([30], [600]), ([700], [700]), ([0, 1500, 37], [20, 1, 300]),
                                             ([5, 0], [1, 9])])
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


def test_each_sequence_takes_the_cheaper_formulation(monkeypatch):
    """A prefix no longer than the new rows: SGLang's padded query under `is_causal` (the kernel
    skips the blocks above the diagonal); a longer one: the new rows alone under a mask."""
    from scalesim.engine.sglang import cpu_attention

    taken = []
    for name, label in (("padded_causal_attention", "padded"), ("grouped_attention", "mask")):
        real = getattr(cpu_attention, name)
        monkeypatch.setattr(cpu_attention, name, lambda *a, _real=real, _label=label: taken.append(_label) or _real(*a))
    query, k, v, table, rows, seq_lens, prefix_lens, new_lens = _batch([0, 30, 64, 65, 1500], [20, 600, 64, 64, 1])
    cpu_attention.extend_new_rows(query, torch.zeros_like(query), k, v, table, rows, seq_lens, prefix_lens, new_lens,
                                  scaling=0.125, enable_gqa=True)
    assert taken == ["padded", "padded", "padded", "mask", "mask"]


def test_sliding_windows_and_non_causal_attention_take_sglangs_path():
    query, k, v, table, rows, seq_lens, prefix_lens, new_lens = _batch([10], [4])
    calls = []
    for kw in (dict(causal=False), dict(causal=True, sliding_window_size=8), dict(causal=True, is_cross_attn=True)):
        around_forward_extend(lambda *a, **k2: calls.append(1), None, query, torch.zeros_like(query), k, v, table,
                              rows, seq_lens, prefix_lens, new_lens, None, **kw)
    assert calls == [1, 1, 1]


@pytest.mark.parametrize("heads, kv_heads", [(9, 3), (4, 4), (8, 1)])
def test_decode_rows_equal_sglangs(heads, kv_heads):
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    # Three sequences of 1,841, 2 and 300 tokens, one new token each (the last of each sequence).
    _, k, v, table, rows, seq_lens, _, _ = _batch([1840, 1, 299], [1, 1, 1], heads=heads, kv_heads=kv_heads)
    query = torch.randn(3, heads, 64, generator=torch.Generator().manual_seed(1)).bfloat16()
    theirs, ours = torch.zeros_like(query), torch.zeros_like(query)
    kwargs = dict(scaling=0.125, enable_gqa=heads != kv_heads, causal=False)
    TorchNativeAttnBackend._run_sdpa_forward_decode(None, query, theirs, k, v, table, rows, seq_lens, None, **kwargs)
    calls = []
    around_forward_decode(lambda *a, **kw: calls.append(1), None, query, ours, k, v, table, rows, seq_lens, None,
                          **kwargs)
    assert calls == [] and ours.abs().sum() > 0
    if (heads, kv_heads) in ((9, 3), (4, 4)):  # the default model's heads; no grouping
        assert torch.equal(ours, theirs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-3)  # bf16: values ~0.1, steps of 2**-10


def test_decode_with_encoders_windows_or_causal_masks_takes_sglangs_path():
    query, k, v, table, rows, seq_lens, _, _ = _batch([10], [1])
    calls = []
    for kw in (dict(causal=True), dict(sliding_window_size=8), dict(is_cross_attn=True),
               dict(encoder_lens=torch.tensor([2]))):
        around_forward_decode(lambda *a, **k2: calls.append(1), None, query, torch.zeros_like(query), k, v, table,
                              rows, seq_lens, **kw)
    assert calls == [1, 1, 1, 1]
