"""ScaleSim's pure-PyTorch sgl_kernel: the two CPU helpers against reference loops."""

from __future__ import annotations

import pytest
import torch

import sgl_kernel


def test_assign_req_to_token_pool_cpu_writes_each_slice():
    req_to_token = torch.zeros((4, 10), dtype=torch.int32)
    rows = torch.tensor([2, 0, 3])
    start = torch.tensor([1, 0, 5])
    end = torch.tensor([4, 2, 5])  # the last request adds nothing
    out_cache_loc = torch.tensor([11, 12, 13, 21, 22], dtype=torch.int64)
    sgl_kernel.assign_req_to_token_pool_cpu(rows, req_to_token, start, end, out_cache_loc, 10)
    expected = torch.zeros((4, 10), dtype=torch.int32)
    expected[2, 1:4] = torch.tensor([11, 12, 13])
    expected[0, 0:2] = torch.tensor([21, 22])
    assert torch.equal(req_to_token, expected)


def test_assign_req_to_token_pool_cpu_checks_pool_len():
    with pytest.raises(ValueError, match="pool_len=5"):
        sgl_kernel.assign_req_to_token_pool_cpu(
            torch.tensor([0]), torch.zeros((1, 10), dtype=torch.int32), torch.tensor([0]), torch.tensor([1]),
            torch.tensor([1]), 5)


def test_copy_all_layer_kv_cache_cpu_moves_rows_in_every_buffer():
    torch.manual_seed(0)
    buffers = [torch.randn(8, 3, 4, dtype=torch.bfloat16), torch.randn(8, 5, dtype=torch.float32)]
    before = [b.clone() for b in buffers]
    ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.uint64)
    strides = torch.tensor([b.stride(0) * b.dtype.itemsize for b in buffers])
    tgt, src = torch.tensor([6, 1, 7]), torch.tensor([0, 2, 1])
    sgl_kernel.copy_all_layer_kv_cache_cpu(ptrs, strides, tgt, src)
    for b, old in zip(buffers, before):
        expected = old.clone()
        expected[tgt] = old[src]  # sources are read before targets are written
        assert torch.equal(b, expected)


def test_unimplemented_kernels_fail_when_called_not_when_imported():
    from sgl_kernel import verify_tree_greedy_cpu

    with pytest.raises(NotImplementedError, match="verify_tree_greedy_cpu is not implemented"):
        verify_tree_greedy_cpu()


def test_other_names_are_absent_so_sglang_fallbacks_work():
    with pytest.raises(ImportError):
        from sgl_kernel import fused_add_rmsnorm  # noqa: F401
    with pytest.raises(ImportError):
        import sgl_kernel.scalar_type  # noqa: F401


def test_transfer_kv_direct_copies_the_indexed_rows_of_every_layer():
    import torch
    from sgl_kernel.kvcacheio import transfer_kv_all_layer, transfer_kv_direct

    src = [torch.arange(24, dtype=torch.float32).reshape(6, 2, 2) + 100 * layer for layer in range(3)]
    dst = [torch.zeros(4, 2, 2) for _ in range(3)]
    transfer_kv_direct(src_layers=src, dst_layers=dst, src_indices=torch.tensor([5, 0]),
                       dst_indices=torch.tensor([1, 3]), page_size=1)
    for layer in range(3):
        assert torch.equal(dst[layer][1], src[layer][5]) and torch.equal(dst[layer][3], src[layer][0])
        assert not dst[layer][0].any() and not dst[layer][2].any()
    with pytest.raises(NotImplementedError, match="needs a real sgl-kernel build"):
        transfer_kv_all_layer()
