"""Seeded adapters for the tiny model: distinct, reproducible, reused."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from scalesim import paths
from scalesim.models.adapters import make_adapters


@pytest.fixture(scope="module")
def tiny_model():
    path = paths.tiny_model_path()
    if not (path / ".scalesim-complete").exists():
        pytest.fail(f"tiny model missing at {path}: run `make setup`")
    return path


def _weights(adapter_dir):
    return load_file(adapter_dir / "adapter_model.safetensors")


def test_adapters_are_distinct_seeded_and_reused(tiny_model, tmp_path):
    first = make_adapters(tiny_model, tmp_path / "a", 2, rank=4, seed=7)
    again = make_adapters(tiny_model, tmp_path / "b", 2, rank=4, seed=7)
    w0, w1, w0_again = _weights(first[0]), _weights(first[1]), _weights(again[0])
    assert set(w0) == set(w1) and any("lora_B" in k for k in w0)
    assert all((w0[k] == w0_again[k]).all() for k in w0)  # same seed, same weights
    assert any(not (w0[k] == w1[k]).all() for k in w0)  # different adapters differ
    assert all(w0[k].abs().sum() > 0 for k in w0 if "lora_B" in k)  # not PEFT's zero init

    mtime = (first[0] / "adapter_model.safetensors").stat().st_mtime_ns
    assert make_adapters(tiny_model, tmp_path / "a", 2, rank=4, seed=7) == first
    assert (first[0] / "adapter_model.safetensors").stat().st_mtime_ns == mtime


def test_bad_counts_are_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="count and rank must be >= 1"):
        make_adapters(tiny_model, tmp_path, 0)
