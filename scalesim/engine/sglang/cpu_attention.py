"""Prefill attention that a cached prefix makes cheaper, and faster decode attention, on SGLang's
pure-PyTorch backend.

`TorchNativeAttnBackend._run_sdpa_forward_extend` (the CPU path without a compiled `sgl_kernel`)
builds, per sequence, a query as long as the whole sequence, cached prefix included, and runs
causal attention over all of it, keeping only the new rows. A request whose 1,800-token prefix
is cached so paid full-length, quadratic attention in every layer: in the plan-town benchmark
that attention was about 65% of the scheduler's time, the same with or without cache hits
(docs/bench.md). Here the new rows attend alone, to the whole sequence's keys, with the causal
mask aligned to the end (row i is token `prefix + i`): the same rows SGLang kept.

That explicit mask costs where the prefix is short next to the new rows (a cold prompt behind a
shared header, the later chunks of a chunked prefill): PyTorch's CPU kernel computes every masked
block, while with `is_causal` it skips the blocks above the diagonal. Such a sequence keeps
SGLang's formulation, a query padded to the sequence's length under `is_causal`: 26 against 45 ms
per layer for 1,500 new rows behind 30 cached (9 query, 3 key-value heads, float32), the same
rows bit for bit. The padded query costs (prefix + new)^2 / 2 products and the mask new x (prefix
+ new), so the padded query is taken while the prefix is no longer than the new rows (1,365 new
rows behind 1,365: 73 against 92 ms; 600 behind 2,048: 69 against 32 ms, the mask's case).

Decode (`_run_sdpa_forward_decode`) keeps SGLang's loop but not its grouped-query call: with
`enable_gqa` and one query token, PyTorch's CPU attention takes a path about 5x slower than the
same attention with each key-value head's query heads laid out as that head's query rows (1.09
against 0.21 ms for 9 query and 3 key-value heads over 2,000 bf16 tokens; a grouped query is
also faster in prefill, 2.4 against 1.7 ms for 40 new rows). The grouped layout gives the same
numbers, bit for bit with the default model's heads (other head counts: at most a last-bit
rounding difference in long rows, the kernel's blocking); every system runs the same path. With
real 32-token answers, decode attention had become half of the scheduler's time.

AROUND hooks registered by the device seam (`scalesim-device`), which every system loads, so
stock SGLang and ScaleSim run the same attention. Sequences with no cached prefix (in prefill),
sliding windows, encoder inputs or non-causal prefill attention take SGLang's own path.
"""

from __future__ import annotations

from typing import Any

BACKEND = "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend."
TARGET = BACKEND + "_run_sdpa_forward_extend"
DECODE_TARGET = BACKEND + "_run_sdpa_forward_decode"


def around_forward_extend(original: Any, backend: Any, query: Any, output: Any, k_cache: Any, v_cache: Any,
                          req_to_token: Any, req_pool_indices: Any, seq_lens: Any, extend_prefix_lens: Any,
                          extend_seq_lens: Any, encoder_lens: Any = None, scaling: Any = None,
                          enable_gqa: bool = False, causal: bool = False, is_cross_attn: bool = False,
                          sliding_window_size: Any = None) -> Any:
    if (not causal or is_cross_attn or encoder_lens is not None
            or (sliding_window_size is not None and sliding_window_size > -1)
            or not bool((extend_prefix_lens > 0).any())):
        return original(backend, query, output, k_cache, v_cache, req_to_token, req_pool_indices, seq_lens,
                        extend_prefix_lens, extend_seq_lens, encoder_lens, scaling=scaling, enable_gqa=enable_gqa,
                        causal=causal, is_cross_attn=is_cross_attn, sliding_window_size=sliding_window_size)
    return extend_new_rows(query, output, k_cache, v_cache, req_to_token, req_pool_indices, seq_lens,
                           extend_prefix_lens, extend_seq_lens, scaling=scaling, enable_gqa=enable_gqa)


def extend_new_rows(query: Any, output: Any, k_cache: Any, v_cache: Any, req_to_token: Any, req_pool_indices: Any,
                    seq_lens: Any, extend_prefix_lens: Any, extend_seq_lens: Any, *, scaling: Any = None,
                    enable_gqa: bool = False) -> Any:
    """Causal attention of each sequence's new tokens over its whole sequence (see the module
    docstring); same arguments and layout as SGLang's `_run_sdpa_forward_extend`."""
    import torch

    query = query.movedim(0, query.dim() - 2)  # [heads, tokens, dim]
    start_q = 0
    for i in range(seq_lens.shape[0]):
        new, prefix, total = int(extend_seq_lens[i]), int(extend_prefix_lens[i]), int(seq_lens[i])
        end_q = start_q + new
        q = query[:, start_q:end_q, :]
        k, v = sequence_kv(k_cache, v_cache, req_to_token[req_pool_indices[i], :total], q.dtype)
        if prefix <= new:
            rows = padded_causal_attention(q, k, v, prefix, scaling, enable_gqa)
        else:
            # Row r is the token at position prefix + r: it sees keys 0 .. prefix + r.
            mask = torch.ones((new, total), dtype=torch.bool, device=q.device).tril(prefix)
            rows = grouped_attention(q, k, v, mask, scaling, enable_gqa)
        output[start_q:end_q, :, :] = rows.movedim(1, 0)
        start_q = end_q
    return output


def padded_causal_attention(q: Any, k: Any, v: Any, prefix: int, scaling: Any, enable_gqa: bool) -> Any:
    """The new rows q [heads, new, dim] of a sequence whose first `prefix` tokens are cached, as
    SGLang computes them: a query as long as the sequence (the prefix's rows zero, their outputs
    dropped) under `is_causal`, whose upper-left-aligned mask is then the right one."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    if prefix:
        q = torch.cat((q.new_zeros((q.shape[0], prefix, q.shape[2])), q), dim=1)
    out = scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), is_causal=True,
                                       enable_gqa=enable_gqa, scale=scaling).squeeze(0)
    return out[:, prefix:, :]


def sequence_kv(k_cache: Any, v_cache: Any, tokens: Any, dtype: Any) -> tuple[Any, Any]:
    """One sequence's keys and values as [kv_heads, tokens, dim] in the query's dtype. The rows
    come from `index_select`: the same rows as SGLang's `cache[tokens]`, about 5x faster on CPU
    (0.02 against 0.11 ms for 2,000 rows of 3 x 64 bf16)."""
    import torch

    k = torch.index_select(k_cache, 0, tokens).movedim(0, 1)
    v = torch.index_select(v_cache, 0, tokens).movedim(0, 1)
    if not (dtype == k.dtype == v.dtype):
        k, v = k.to(dtype), v.to(dtype)
    return k, v


def grouped_attention(q: Any, k: Any, v: Any, mask: Any, scaling: Any, enable_gqa: bool) -> Any:
    """`scaled_dot_product_attention` of q [heads, rows, dim] over k, v [kv_heads, keys, dim]
    (mask [rows, keys] or None), as [heads, rows, dim]. With grouped-query attention, each
    key-value head's query heads become that head's query rows (PyTorch's grouping: query head
    h reads key-value head h // group), so no grouped-query kernel is needed."""
    from torch.nn.functional import scaled_dot_product_attention

    heads, rows, dim = q.shape
    kv_heads = k.shape[0]
    if not enable_gqa or heads == kv_heads or heads % kv_heads:
        return scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask,
                                            enable_gqa=enable_gqa, scale=scaling).squeeze(0)
    group = heads // kv_heads
    grouped = q.reshape(kv_heads, group * rows, dim)  # row (g, r): query head kv * group + g, row r
    if mask is not None:
        mask = mask.repeat(group, 1)
    out = scaled_dot_product_attention(grouped.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask,
                                       scale=scaling)
    return out.reshape(heads, rows, dim)


def around_forward_decode(original: Any, backend: Any, query: Any, output: Any, k_cache: Any, v_cache: Any,
                          req_to_token: Any, req_pool_indices: Any, seq_lens: Any, encoder_lens: Any = None,
                          scaling: Any = None, enable_gqa: bool = False, causal: bool = False,
                          is_cross_attn: bool = False, sliding_window_size: Any = None) -> Any:
    if (causal or is_cross_attn or encoder_lens is not None
            or (sliding_window_size is not None and sliding_window_size > -1)):
        return original(backend, query, output, k_cache, v_cache, req_to_token, req_pool_indices, seq_lens,
                        encoder_lens, scaling=scaling, enable_gqa=enable_gqa, causal=causal,
                        is_cross_attn=is_cross_attn, sliding_window_size=sliding_window_size)
    return decode_rows(query, output, k_cache, v_cache, req_to_token, req_pool_indices, seq_lens,
                       scaling=scaling, enable_gqa=enable_gqa)


def decode_rows(query: Any, output: Any, k_cache: Any, v_cache: Any, req_to_token: Any, req_pool_indices: Any,
                seq_lens: Any, *, scaling: Any = None, enable_gqa: bool = False) -> Any:
    """One new token per sequence attending to its whole sequence; same arguments and layout
    as SGLang's `_run_sdpa_forward_decode`, the same loop, grouped queries."""
    query = query.movedim(0, query.dim() - 2)  # [heads, tokens, dim]
    for i in range(seq_lens.shape[0]):
        q = query[:, i:i + 1, :]
        k, v = sequence_kv(k_cache, v_cache, req_to_token[req_pool_indices[i], :int(seq_lens[i])], q.dtype)
        output[i:i + 1, :, :] = grouped_attention(q, k, v, None, scaling, enable_gqa).movedim(1, 0)
    return output


def register() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, around_forward_extend, HookType.AROUND)
    HookRegistry.register(DECODE_TARGET, around_forward_decode, HookType.AROUND)
