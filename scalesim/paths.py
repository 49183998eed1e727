"""Where ScaleSim keeps what setup builds: models and adapters. Never inside the checkout's git tree.

The cache root is `$SCALESIM_CACHE` if set, else `~/.cache/scalesim`.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
TINY_MODEL_NAME = "tiny-qwen2"


def cache_root() -> Path:
    env = os.environ.get("SCALESIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scalesim"


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def default_model_path() -> Path:
    """The embedded default model: SmolLM2-135M-Instruct as bf16 safetensors."""
    return model_dir(DEFAULT_MODEL_NAME)


def tiny_model_path() -> Path:
    """A tiny synthetic Qwen2 model (random seeded weights) for fast tests."""
    return model_dir(TINY_MODEL_NAME)
