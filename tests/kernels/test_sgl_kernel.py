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


@pytest.mark.parametrize("dtype, row", [(torch.bfloat16, (3, 64)), (torch.float16, (5, 3)), (torch.float32, (2,))])
@pytest.mark.parametrize("pattern", ["scattered", "two runs", "one run", "one slot"])
def test_transfer_kv_direct_matches_an_indexed_assignment_for_any_slots_and_row_shape(dtype, row, pattern):
    """Slices for long runs, a gather as 8-byte words where the row allows, plain rows where not
    (5 x 3 half floats are 30 bytes): every path leaves exactly what `dst[d] = src[s]` would,
    for separate layers, for views into one host buffer (the layer-first layout) and for
    strided rows."""
    from sgl_kernel.kvcacheio import transfer_kv_direct

    torch.manual_seed(0)
    slots = {"scattered": (torch.randperm(1000)[:300], torch.randperm(800)[:300]),
             "two runs": (torch.cat([torch.arange(100, 250), torch.arange(500, 650)]),
                          torch.cat([torch.arange(0, 150), torch.arange(300, 450)])),
             "one run": (torch.arange(10, 310), torch.arange(400, 700)),
             "one slot": (torch.tensor([7]), torch.tensor([3]))}
    s, d = slots[pattern]
    src = [torch.randn(1000, *row).to(dtype) for _ in range(4)]
    host = torch.zeros(2, 2, 800, *row, dtype=dtype)
    layouts = [[torch.zeros(800, *row, dtype=dtype) for _ in range(4)], [host[i // 2][i % 2] for i in range(4)]]
    if len(row) == 2:  # rows not contiguous on one side only: neither side is viewed as words
        layouts.append([torch.zeros(800, *reversed(row), dtype=dtype).transpose(1, 2) for _ in range(4)])
    for dst in layouts:
        expected = [x.clone() for x in dst]
        for a, b in zip(src, expected):
            b[d] = a[s]
        transfer_kv_direct(src, dst, s.to(torch.int32), d, 1)
        assert all(torch.equal(x, y) for x, y in zip(dst, expected))
