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


# Copies of runs of slots consecutive on both sides are slice copies (memcpy) where the runs are
# at least this long on average; below that a slice copy per run costs more than one gather
# (1,500 slots of a 30-layer model, 2 threads: runs of 64 8.4 ms as slices, 5.7 ms gathered;
# 128: 4.9 / 5.3; 500: 2.6 / 5.1; one run 2.1 / 5.4).
MIN_RUN = 128


def transfer_kv_direct(
    src_layers: list[torch.Tensor],
    dst_layers: list[torch.Tensor],
    src_indices: torch.Tensor,
    dst_indices: torch.Tensor,
    page_size: int,
) -> None:
    """For every layer pair: `dst[dst_indices[i]] = src[src_indices[i]]` (rows of token slots).

    Indices are token slots, so `page_size` (whole pages of consecutive slots) needs no special
    case here; it is accepted for the kernel's signature. Runs of slots consecutive on both
    sides are copied as slices; otherwise rows are gathered and scattered as 8-byte words where
    they allow it (fewer, wider elements than bf16).
    """
    if len(src_layers) != len(dst_layers):
        raise ValueError(f"{len(src_layers)} source layers but {len(dst_layers)} destination layers")
    if src_indices.numel() != dst_indices.numel():
        raise ValueError(f"{src_indices.numel()} source slots but {dst_indices.numel()} destination slots")
    if src_indices.numel() == 0:
        return
    src_slots = src_indices.to(device="cpu", dtype=torch.long)
    dst_slots = dst_indices.to(device="cpu", dtype=torch.long)
    runs = _runs(src_slots, dst_slots)
    for src, dst in zip(src_layers, dst_layers):
        if runs is not None:
            for s, d, n in runs:
                dst[d:d + n].copy_(src[s:s + n])
            continue
        src_words, dst_words = _words(src), _words(dst)
        if src_words.dtype == dst_words.dtype:  # both viewed as words, or neither
            src, dst = src_words, dst_words
        dst.index_copy_(0, dst_slots.to(dst.device), src.index_select(0, src_slots.to(src.device)).to(dst.device))


def _runs(src: torch.Tensor, dst: torch.Tensor) -> list[tuple[int, int, int]] | None:
    """The copy as (source start, destination start, length) runs of slots consecutive on both
    sides, or None where the runs average under `MIN_RUN` slots."""
    n = src.numel()
    breaks = (((src[1:] - src[:-1]) != 1) | ((dst[1:] - dst[:-1]) != 1)).nonzero().flatten() + 1
    if (breaks.numel() + 1) * MIN_RUN > n:
        return None
    starts = [0, *breaks.tolist()]
    ends = [*starts[1:], n]
    s, d = src[starts].tolist(), dst[starts].tolist()
    return [(s[i], d[i], ends[i] - starts[i]) for i in range(len(starts))]


def _words(rows: torch.Tensor) -> torch.Tensor:
    """`rows` as (slots, 8-byte words), the same memory, where its rows are contiguous and a
    whole number of words long; else `rows` itself."""
    try:
        return rows.view(rows.shape[0], -1).view(torch.int64)
    except RuntimeError:  # not viewable so: the rows themselves are gathered
        return rows


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
