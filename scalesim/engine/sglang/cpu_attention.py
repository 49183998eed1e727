"""Prefill (extend) attention on SGLang's pure-PyTorch backend that a cached prefix makes cheaper.

`TorchNativeAttnBackend._run_sdpa_forward_extend` (the CPU path without a compiled `sgl_kernel`)
builds, per sequence, a query as long as the whole sequence, cached prefix included, and runs
causal attention over all of it, keeping only the new rows. A request whose 1,800-token prefix
is cached so paid full-length, quadratic attention in every layer: in the plan-town benchmark
that attention was about 65% of the scheduler's time, the same with or without cache hits
(docs/bench.md). Here the new rows attend alone, to the whole sequence's keys, with the causal
mask aligned to the end (row i is token `prefix + i`): the same rows SGLang kept.

An AROUND hook registered by the device seam (`scalesim-device`), which every system loads, so
stock SGLang and ScaleSim run the same attention. Sequences with no cached prefix, sliding
windows, encoder inputs or non-causal attention take SGLang's own path.
"""

from __future__ import annotations

from typing import Any

TARGET = ("sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend."
          "_run_sdpa_forward_extend")


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
    from torch.nn.functional import scaled_dot_product_attention

    query = query.movedim(0, query.dim() - 2)  # [heads, tokens, dim]
    start_q = 0
    for i in range(seq_lens.shape[0]):
        new, prefix, total = int(extend_seq_lens[i]), int(extend_prefix_lens[i]), int(seq_lens[i])
        end_q = start_q + new
        q = query[:, start_q:end_q, :]
        tokens = req_to_token[req_pool_indices[i], :total]
        k = k_cache[tokens].movedim(0, query.dim() - 2)
        v = v_cache[tokens].movedim(0, query.dim() - 2)
        if not (q.dtype == k.dtype == v.dtype):
            k, v = k.to(q.dtype), v.to(q.dtype)
        # Row r is the token at position prefix + r: it sees keys 0 .. prefix + r.
        mask = torch.ones((new, total), dtype=torch.bool, device=q.device).tril(prefix)
        out = scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask,
                                           enable_gqa=enable_gqa, scale=scaling)
        output[start_q:end_q, :, :] = out.squeeze(0).movedim(query.dim() - 2, 0)
        start_q = end_q
    return output


def register() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, around_forward_extend, HookType.AROUND)
