"""`scalesim doctor`: what is installed, what device runs, whether patches and plugin are in place."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import NamedTuple

from scalesim import SGLANG_VERSION, __version__, paths
from scalesim.engine.sglang import PLUGIN_GROUP, PLUGIN_NAME, patches, targets
from scalesim.engine.sglang.launch import configure_device_env, cpu_flags, cpu_runs_bf16


class Check(NamedTuple):
    name: str
    value: str
    ok: bool


def _pkg_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_flags() -> str:
    flags = cpu_flags()
    if flags is None:
        return "flags unknown"
    amx = sorted(f for f in flags if f.startswith("amx"))
    dtype = ("bf16 models run in bf16" if cpu_runs_bf16(flags)
             else "no native bf16: bf16 models are served in float32, their KV cache in bf16")
    return "AMX: " + (" ".join(amx) if amx else "none") + f"; {dtype}"


def _kernel() -> Check:
    ours = _pkg_version("scalesim-sgl-kernel-cpu")
    if ours != "not installed":
        return Check("sgl_kernel", f"scalesim-sgl-kernel-cpu {ours} (pure PyTorch, CPU)", True)
    theirs = _pkg_version("sglang-kernel")
    return Check("sgl_kernel", f"sglang-kernel {theirs}", theirs != "not installed")


def _device() -> Check:
    import torch

    if torch.cuda.is_available():
        return Check("device", f"cuda: {torch.cuda.get_device_name(0)}", True)
    return Check("device", f"cpu ({platform.processor() or platform.machine()}, {_cpu_flags()})", True)


def _model(name: str, path: Path) -> Check:
    built = (path / ".scalesim-complete").exists()
    return Check(f"model {name}", f"{path} ({'built' if built else 'missing: run make setup'})", built)


def _plugin() -> Check:
    names = [ep.name for ep in entry_points(group=PLUGIN_GROUP)]
    if PLUGIN_NAME not in names:
        return Check("plugin", f"entry point {PLUGIN_NAME!r} not registered in {PLUGIN_GROUP}", False)
    try:
        targets.check_version()
        targets.check_targets(targets.HOOK_TARGETS + targets.LAUNCH_TARGETS)
    except targets.TargetMissingError as exc:
        return Check("plugin", str(exc), False)
    n = len(targets.HOOK_TARGETS) + len(targets.LAUNCH_TARGETS)
    return Check("plugin", f"registered; {n} SGLang targets present", True)


def _patches() -> list[Check]:
    try:
        found = patches.statuses()
    except patches.PatchError as exc:
        return [Check("patches", str(exc), False)]
    return [Check(f"patch {s.name}", s.state.value, s.state is patches.PatchState.APPLIED) for s in found]


def checks() -> list[Check]:
    """Every check, in display order. Imports torch and SGLang (several seconds)."""
    configure_device_env()
    sglang_version = _pkg_version("sglang")
    out = [
        Check("scalesim", __version__, True),
        Check("python", platform.python_version(), True),
        Check("sglang", f"{sglang_version} (pinned {SGLANG_VERSION})", sglang_version == SGLANG_VERSION),
        Check("torch", _pkg_version("torch"), True),
        Check("transformers", _pkg_version("transformers"), True),
        _kernel(),
        _device(),
        Check("cache", str(paths.cache_root()), True),
        _model(paths.DEFAULT_MODEL_NAME, paths.default_model_path()),
        _model(paths.TINY_MODEL_NAME, paths.tiny_model_path()),
    ]
    return out + _patches() + [_plugin()]


def report() -> int:
    """Print the checks; 0 if all passed, 1 otherwise."""
    results = checks()
    width = max(len(c.name) for c in results)
    for c in results:
        print(f"{'ok ' if c.ok else 'BAD'} {c.name:<{width}}  {c.value}")
    return 0 if all(c.ok for c in results) else 1
