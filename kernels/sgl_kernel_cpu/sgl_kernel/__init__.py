"""A pure-PyTorch `sgl_kernel` for running SGLang 0.5.23's CPU engine without a kernel build.

SGLang's CPU engine imports `sgl_kernel` (normally the C++ package `sglang-kernel-cpu`, which
has no wheel or sdist on PyPI). On the plain Llama/Qwen2 path with `torch_native` attention it
calls exactly two helpers, implemented here with PyTorch ops:

- `assign_req_to_token_pool_cpu`: write each request's slice of `out_cache_loc` into its row
  of the request-to-token map.
- `copy_all_layer_kv_cache_cpu`: move KV rows between slots in every layer buffer.

SGLang's scheduler also imports six speculative-decoding kernels at module level behind
`is_cpu()`; they exist here only as functions that raise `NotImplementedError` when called
(speculative decoding needs a real kernel build). Any other name is absent, so SGLang's own
`try: from sgl_kernel... except ImportError` fallbacks keep working. No `torch.ops.sgl_kernel`
ops are registered, so SGLang detects no AMX kernels and every layer takes `forward_native`.
"""

from __future__ import annotations

import ctypes

import torch

from sgl_kernel._missing import missing_kernels



__all__ = ["assign_req_to_token_pool_cpu", "copy_all_layer_kv_cache_cpu"]
__version__ = "0.1.0+scalesim.cpu"


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """For request i: `req_to_token[req_pool_indices[i], start[i]:end[i]] = out_cache_loc[o:o+n]`,
    where n = end[i] - start[i] and o is the sum of the lengths of requests 0..i-1.

    Same contract as SGLang's Triton kernel `assign_req_to_token_pool`. `pool_len` (the row
    length of `req_to_token`) is implied by the tensor's shape and only checked.
    """
    if req_to_token.shape[1] != pool_len:
        raise ValueError(f"pool_len={pool_len} but req_to_token has rows of {req_to_token.shape[1]}")
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    offset = 0
    for row, start, end in zip(rows, starts, ends):
        n = end - start
        if n > 0:
            req_to_token[row, start:end] = out_cache_loc[offset : offset + n].to(req_to_token.dtype)
        offset += n


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """For every buffer b: row `tgt_loc[j]` of b becomes a copy of row `src_loc[j]`.

    `data_ptrs[b]` is the address of buffer b's first row and `strides[b]` its row size in
    bytes (SGLang's `data_ptrs`/`data_strides` of a KV pool). All sources are read before any
    target is written, as in the GPU kernel when sources and targets do not overlap.
    """
    if tgt_loc.numel() != src_loc.numel():
        raise ValueError(f"tgt_loc has {tgt_loc.numel()} slots but src_loc has {src_loc.numel()}")
    if tgt_loc.numel() == 0:
        return
    tgt = tgt_loc.to(torch.int64)
    src = src_loc.to(torch.int64)
    rows = int(torch.maximum(tgt.max(), src.max()).item()) + 1
    for ptr, stride in zip(data_ptrs.tolist(), strides.tolist()):
        raw = (ctypes.c_uint8 * (rows * stride)).from_address(ptr)
        view = torch.frombuffer(raw, dtype=torch.uint8).view(rows, stride)
        view[tgt] = view[src]

# Imported by sglang.srt.speculative.* when the scheduler module loads; never called unless
# speculative decoding is enabled.
_SPECULATIVE_KERNELS = (
    "build_tree_kernel_efficient_cpu",
    "verify_tree_greedy_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
)
globals().update(missing_kernels(__name__, _SPECULATIVE_KERNELS))
