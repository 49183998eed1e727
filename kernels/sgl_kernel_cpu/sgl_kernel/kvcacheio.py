"""`sgl_kernel.kvcacheio` for SGLang's host KV tier (HiCache) on CPU: the `direct` transfer.

SGLang's host pool (`mem_cache/pool_host/mha.py`) moves KV rows between the device pool and
the host pool with these ops. On a CPU device both pools are host memory, so the `direct` I/O
backend with the `layer_first` host layout (what `scalesim serve` selects on CPU) needs only
`transfer_kv_direct`, a per-layer indexed copy, implemented here with PyTorch. The pointer-table
kernels of the other backends and layouts exist only as names that raise `NotImplementedError`
(they need a real kernel build; the pool refuses them on CPU before any transfer).
"""

from __future__ import annotations

import torch

from sgl_kernel._missing import missing_kernels


def transfer_kv_direct(
    src_layers: list[torch.Tensor],
    dst_layers: list[torch.Tensor],
    src_indices: torch.Tensor,
    dst_indices: torch.Tensor,
    page_size: int,
) -> None:
    """For every layer pair: `dst[dst_indices[i]] = src[src_indices[i]]` (rows of token slots).

    Indices are token slots, so `page_size` (whole pages of consecutive slots) needs no special
    case here; it is accepted for the kernel's signature.
    """
    if len(src_layers) != len(dst_layers):
        raise ValueError(f"{len(src_layers)} source layers but {len(dst_layers)} destination layers")
    if src_indices.numel() != dst_indices.numel():
        raise ValueError(f"{src_indices.numel()} source slots but {dst_indices.numel()} destination slots")
    if src_indices.numel() == 0:
        return
    for src, dst in zip(src_layers, dst_layers):
        rows = src.index_select(0, src_indices.to(device=src.device, dtype=torch.long))
        dst.index_copy_(0, dst_indices.to(device=dst.device, dtype=torch.long), rows.to(dst.device))


_NOT_IMPLEMENTED = (
    "transfer_kv_all_layer",
    "transfer_kv_all_layer_direct_lf_pf",
    "transfer_kv_all_layer_lf_pf",
    "transfer_kv_all_layer_lf_ph",
    "transfer_kv_all_layer_mla",
    "transfer_kv_all_layer_mla_lf_pf",
    "transfer_kv_per_layer",
    "transfer_kv_per_layer_direct_pf_lf",
    "transfer_kv_per_layer_mla",
    "transfer_kv_per_layer_mla_pf_lf",
    "transfer_kv_per_layer_pf_lf",
    "transfer_kv_per_layer_ph_lf",
)
globals().update(missing_kernels(__name__, _NOT_IMPLEMENTED))

__all__ = ["transfer_kv_direct", *_NOT_IMPLEMENTED]
