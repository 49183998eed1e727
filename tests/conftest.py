"""Shared fixtures. One live SGLang server (default model, two LoRA adapters) per test session."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from scalesim import paths
from scalesim.engine.sglang.launch import configure_device_env

# SGLang modules read SGLANG_USE_CPU_ENGINE when imported; tests import some of them directly.
configure_device_env()

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ADAPTER_NAMES = ("a0", "a1")


def free_port() -> int:
    """A free port below the kernel's ephemeral range, for a server that binds it later.

    A port from `bind(0)` is an ephemeral one, the kind the kernel also gives to outgoing
    connections: in CI one was taken by a connection in the 30 s before a server bound it, and
    the server hung. Below the range only another listener can take it.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low - 1000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@pytest.fixture(scope="session")
def default_model() -> Path:
    path = paths.default_model_path()
    if not (path / ".scalesim-complete").exists():
        pytest.fail(f"default model missing at {path}: run `make setup`")
    return path


@pytest.fixture(scope="session")
def adapter_dirs(default_model: Path) -> dict[str, Path]:
    from scalesim.models.adapters import make_adapters

    made = make_adapters(default_model, paths.cache_root() / "adapters" / "tests-smollm2", len(ADAPTER_NAMES))
    return dict(zip(ADAPTER_NAMES, made))


def server_args(adapter_dirs: dict[str, Path]) -> list[str]:
    """The serve arguments of the shared test server (also used for the plugin-disabled twin)."""
    return [
        "--enable-lora",
        "--lora-paths", *(f"{name}={path}" for name, path in adapter_dirs.items()),
        "--max-loras-per-batch", "2",
        "--max-lora-rank", "8",
        "--lora-target-modules", *LORA_TARGETS,
        "--max-total-tokens", "16384",
        "--enable-cache-report",
    ]


@pytest.fixture(scope="session")
def server(adapter_dirs, tmp_path_factory):
    from scalesim.server_process import ServerProcess

    log = tmp_path_factory.mktemp("server") / "server.log"
    with ServerProcess(server_args(adapter_dirs), free_port(), log) as proc:
        yield proc
