"""GPU check: host-to-device bandwidth for KV pages and LoRA adapter weights, and copy/compute overlap.

Needs only PyTorch and one CUDA GPU; runs in about a minute (`--quick`: seconds):

    python benchmarks/gpu/transfer_check.py [--quick] [--json OUT]

What it measures (CUDA events, medians of repeated runs):
1. KV pages host->device and device->host, from pinned and from pageable memory, for batches of
   1, 16 and 256 pages (a page: 64 tokens of a 28-layer model with 4 KV heads of 128, bf16, the
   shape of Qwen2.5-7B), laid out page-first (one contiguous block per page).
2. LoRA adapter weights host->device (rank 16 on q/k/v/o of that model): one copy per tensor, as
   a slot load does, and one flat copy, both from pinned memory.
3. Overlap: a bf16 matrix product on the compute stream with a pinned host->device copy on a
   side stream. Overlap = (t_matmul + t_copy - t_both) / min(t_matmul, t_copy): 1.0 means the
   copy was completely hidden, 0.0 that the two ran one after the other.

Prints a table; `--json` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

TOKENS_PER_PAGE = 64
LAYERS, KV_HEADS, HEAD_DIM = 28, 4, 128
HIDDEN, KV_DIM, LORA_RANK = 3584, KV_HEADS * HEAD_DIM, 16
DTYPE = torch.bfloat16
PAGE_BYTES = TOKENS_PER_PAGE * LAYERS * 2 * KV_HEADS * HEAD_DIM * 2  # K and V, 2 bytes each


def timed(fn, repeats: int, stream: torch.cuda.Stream | None = None) -> float:
    """Median seconds of `fn` over `repeats` runs, measured with CUDA events on `stream`."""
    stream = stream or torch.cuda.current_stream()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream):
            start.record(stream)
            fn()
            end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def kv_rows(repeats: int, page_counts: list[int]) -> list[dict]:
    rows = []
    for pages in page_counts:
        elems = pages * PAGE_BYTES // 2
        dev = torch.empty(elems, dtype=DTYPE, device="cuda")
        for pinned in (True, False):
            host = torch.empty(elems, dtype=DTYPE, pin_memory=pinned)
            host.fill_(1)
            h2d = timed(lambda: dev.copy_(host, non_blocking=pinned), repeats)
            d2h = timed(lambda: host.copy_(dev, non_blocking=pinned), repeats)
            size = elems * 2
            rows.append({"what": f"KV {pages} page(s)", "memory": "pinned" if pinned else "pageable",
                         "bytes": size, "h2d_GBps": size / h2d / 1e9, "d2h_GBps": size / d2h / 1e9})
    return rows


def adapter_tensors() -> list[tuple[int, int]]:
    """Shapes of one adapter's LoRA A and B matrices (q, k, v, o of every layer)."""
    out_dims = {"q": HIDDEN, "k": KV_DIM, "v": KV_DIM, "o": HIDDEN}
    shapes = []
    for _ in range(LAYERS):
        for out_dim in out_dims.values():
            shapes += [(LORA_RANK, HIDDEN), (out_dim, LORA_RANK)]
    return shapes


def adapter_rows(repeats: int) -> list[dict]:
    shapes = adapter_tensors()
    host = [torch.randn(s, dtype=torch.float32).to(DTYPE).pin_memory() for s in shapes]
    dev = [torch.empty(s, dtype=DTYPE, device="cuda") for s in shapes]
    size = sum(t.numel() * 2 for t in host)
    flat_host = torch.cat([t.flatten() for t in host]).pin_memory()
    flat_dev = torch.empty_like(flat_host, device="cuda")

    def per_tensor() -> None:
        for d, h in zip(dev, host):
            d.copy_(h, non_blocking=True)

    t_many = timed(per_tensor, repeats)
    t_flat = timed(lambda: flat_dev.copy_(flat_host, non_blocking=True), repeats)
    return [
        {"what": f"adapter, {len(shapes)} tensors", "memory": "pinned", "bytes": size,
         "h2d_GBps": size / t_many / 1e9, "seconds": t_many},
        {"what": "adapter, one flat copy", "memory": "pinned", "bytes": size,
         "h2d_GBps": size / t_flat / 1e9, "seconds": t_flat},
    ]


def overlap_row(repeats: int, n: int, copy_pages: int) -> dict:
    a = torch.randn(n, n, device="cuda", dtype=DTYPE)
    b = torch.randn(n, n, device="cuda", dtype=DTYPE)
    host = torch.empty(copy_pages * PAGE_BYTES // 2, dtype=DTYPE, pin_memory=True)
    dev = torch.empty_like(host, device="cuda")
    side = torch.cuda.Stream()
    compute = torch.cuda.current_stream()

    def matmul() -> None:
        for _ in range(4):
            torch.matmul(a, b)

    def copy() -> None:
        dev.copy_(host, non_blocking=True)

    def both() -> None:
        side.wait_stream(compute)
        with torch.cuda.stream(side):
            copy()
        matmul()
        compute.wait_stream(side)

    matmul(), copy()  # warm-up
    torch.cuda.synchronize()
    t_mm, t_copy, t_both = timed(matmul, repeats), timed(copy, repeats), timed(both, repeats)
    overlap = (t_mm + t_copy - t_both) / min(t_mm, t_copy)
    return {"matmul_s": t_mm, "copy_s": t_copy, "both_s": t_both, "overlap": overlap,
            "copy_bytes": host.numel() * 2, "matmul": f"4 x {n}x{n} bf16"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (seconds)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("transfer_check: no CUDA device: nothing measured", file=sys.stderr)
        return 2
    repeats = 5 if args.quick else 20
    pages = [1, 16] if args.quick else [1, 16, 256]
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; KV page {PAGE_BYTES / 2**20:.2f} MiB "
          f"({TOKENS_PER_PAGE} tokens x {LAYERS} layers x K,V x {KV_HEADS} heads x {HEAD_DIM}, bf16)")
    kv, adapters = kv_rows(repeats, pages), adapter_rows(repeats)
    ov = overlap_row(repeats, 4096 if args.quick else 8192, 64 if args.quick else 256)

    print(f"\n{'transfer':28} {'memory':9} {'MiB':>9} {'H2D GB/s':>9} {'D2H GB/s':>9}")
    for r in kv + adapters:
        d2h = f"{r['d2h_GBps']:9.1f}" if "d2h_GBps" in r else f"{'-':>9}"
        print(f"{r['what']:28} {r['memory']:9} {r['bytes'] / 2**20:9.2f} {r['h2d_GBps']:9.1f} {d2h}")
    print(f"\noverlap: {ov['matmul']} {ov['matmul_s'] * 1e3:.2f} ms alone; copy of {ov['copy_bytes'] / 2**20:.0f} MiB "
          f"{ov['copy_s'] * 1e3:.2f} ms alone; both {ov['both_s'] * 1e3:.2f} ms; overlap {ov['overlap']:.2f} "
          "(1.0 = copy fully hidden)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "kv": kv, "adapters": adapters, "overlap": ov}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
