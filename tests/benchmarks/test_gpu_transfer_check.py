"""The GPU check script stays runnable: it imports with PyTorch alone and, without a GPU, says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "transfer_check.py"


def test_shapes_and_refusal_without_a_gpu():
    import torch

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import transfer_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    shapes = transfer_check.adapter_tensors()
    assert len(shapes) == 28 * 4 * 2 and transfer_check.PAGE_BYTES == 64 * 28 * 2 * 4 * 128 * 2
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run the script itself")
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no CUDA device: nothing measured" in out.stderr
