"""`scalesim serve`: SGLang's OpenAI-compatible server with ScaleSim's plugin, in this process.

Every argument that is not a ScaleSim option (prefix `--scalesim-`) goes to SGLang unchanged.
Before anything is spawned the arguments are parsed with SGLang's own parser and checked (model
path, port), so a bad invocation exits non-zero with one line and leaves no process behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from scalesim import paths
from scalesim.engine.sglang import DEVICE_PLUGIN_NAME, PLUGIN_GROUP, PLUGIN_NAME, targets

# What SGLang needs to run on a machine without a GPU (see the notes on SGLang on CPU).
# `--sleep-on-idle`: an idle scheduler otherwise busy-polls its sockets and holds a whole core,
# which on a 2-core machine starves the tokenizer, the clients and any other model process.
CPU_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--device", "cpu"),
    ("--attention-backend", "torch_native"),
    ("--cuda-graph-backend-decode", "disabled"),
    ("--cuda-graph-backend-prefill", "disabled"),
    ("--lora-backend", "torch_native"),
    ("--sleep-on-idle", None),
)


# CPU features with which PyTorch runs bfloat16 matrix products natively. Without them the
# model's bf16 weights are served in float32: on an AMD EPYC with AVX2 only (2026-12-01) a bf16
# GEMM of the default model's shapes ran at 1.2 GFLOP/s against 154 in float32, and the server
# prefilled 70 tokens a second (against some 1,000 in bf16 on the AVX-512 machines of earlier runs).
# float32 doubles the KV cache's bytes per token (pools are sized in tokens).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (Linux's /proc/cpuinfo), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((l for l in f if l.startswith("flags")), None)
    except OSError:
        return None
    return frozenset(line.split(":", 1)[1].split()) if line is not None else None


def cpu_runs_bf16(flags: frozenset[str] | None) -> bool:
    """Whether a model in bf16 runs in bf16 on this CPU: unknown flags (another OS or
    architecture) keep the model's own type; only an x86 CPU known to lack them gets float32."""
    return flags is None or bool(flags & NATIVE_BF16_FLAGS)


class ServeError(Exception):
    """A reason `scalesim serve` refuses to start, as one line."""


@dataclass(frozen=True)
class ScaleSimOptions:
    """ScaleSim's own serve options; everything else belongs to SGLang."""

    disable: bool = False


_OPTION_FLAGS = {"--scalesim-disable": "disable"}


def split_argv(argv: list[str]) -> tuple[ScaleSimOptions, list[str]]:
    """Separate `--scalesim-*` options from SGLang's arguments (kept in order)."""
    options: dict[str, bool] = {}
    rest: list[str] = []
    for arg in argv:
        if arg.startswith("--scalesim-"):
            field = _OPTION_FLAGS.get(arg)
            if field is None:
                valid = ", ".join(sorted(_OPTION_FLAGS))
                raise ServeError(f"unknown ScaleSim option {arg} (valid: {valid})")
            options[field] = True
        else:
            rest.append(arg)
    return ScaleSimOptions(**options), rest


def _has_flag(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _flag_value(argv: list[str], *flags: str) -> str | None:
    """The value given to the first of `flags` found in `argv` (`--flag value` or `--flag=value`)."""
    for i, a in enumerate(argv):
        for flag in flags:
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
            if a == flag and i + 1 < len(argv):
                return argv[i + 1]
    return None


def model_dtype(model_path: str | None) -> str | None:
    """The weights' type a local model's `config.json` declares (`dtype`, or the older
    `torch_dtype`); None where it cannot be read (a hub id, no such file)."""
    if model_path is None:
        return None
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = (config.get("dtype") or config.get("torch_dtype")) if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def with_defaults(argv: list[str], *, has_gpu: bool, bf16: bool | None = None) -> list[str]:
    """Add the embedded default model when none is given, and CPU defaults when there is no GPU:
    with `bf16` False (default: `cpu_runs_bf16` of this CPU) `--dtype float32`, and for a bf16
    model `--kv-cache-dtype bfloat16` with it.

    float32 is a compute workaround (bf16 matrix products are slow on such CPUs), not a choice of
    storage: in float32 the KV cache of a pool sized in tokens takes twice the bytes, and the
    issue's 200-agent budget (an unlimited pool of about 400,000 tokens, 18 GB in float32) no
    longer fits in 24 GiB. Keeping the model's bf16 in the cache costs a conversion per gather
    (decode-heavy requests about 25% slower on an AVX2-only EPYC, cold prefills about the same).

    Flags the user gave always win over defaults; a `--dtype` of the user's adds neither.
    """
    out = list(argv)
    if not _has_flag(out, "--model-path") and not _has_flag(out, "--model"):
        out += ["--model-path", str(paths.default_model_path())]
    if not has_gpu:
        from scalesim.engine.sglang.host_tier import CPU_HICACHE_DEFAULTS

        hicache = CPU_HICACHE_DEFAULTS if _has_flag(out, "--enable-hierarchical-cache") else ()
        if bf16 is None:
            bf16 = cpu_runs_bf16(cpu_flags())
        dtype: tuple[tuple[str, str | None], ...] = ()
        if not bf16 and not _has_flag(out, "--dtype"):
            dtype = (("--dtype", "float32"),)
            if model_dtype(_flag_value(out, "--model-path", "--model")) == "bfloat16":
                dtype += (("--kv-cache-dtype", "bfloat16"),)
        for flag, value in (*CPU_DEFAULTS, *hicache, *dtype):
            if not _has_flag(out, flag):
                out += [flag] if value is None else [flag, value]
    return out


def plugin_filter(current: str | None, *, enabled: bool) -> str:
    """The `SGLANG_PLUGINS` whitelist that loads (or skips) ScaleSim, always loads its device
    seams (`scalesim-device`), and keeps the others.

    SGLang treats an unset or empty variable as "load all"; a lone "," is a non-empty list
    naming nothing, so it loads none.
    """
    if current:
        names = [n.strip() for n in current.split(",") if n.strip()]
    else:
        names = [ep.name for ep in entry_points(group=PLUGIN_GROUP)]
    names = [n for n in names if n not in (PLUGIN_NAME, DEVICE_PLUGIN_NAME)]
    names.append(DEVICE_PLUGIN_NAME)  # device seams: stock SGLang needs them on CPU too
    if enabled:
        names.append(PLUGIN_NAME)
    return ",".join(names) if names else ","


class _RaisingParser(argparse.ArgumentParser):
    """SGLang's argument parser, but errors raise instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise ServeError(message)


def _sglang_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` with every SGLang server argument added."""
    from sglang.srt.server_args import ServerArgs

    ServerArgs.add_cli_args(parser)
    return parser


def parse_sglang_args(argv: list[str]) -> argparse.Namespace:
    return _sglang_parser(_RaisingParser(prog="scalesim serve", add_help=False)).parse_args(argv)


def check_model_path(model_path: str) -> None:
    """A local-looking path must exist; a bare `org/name` is left to SGLang unless offline."""
    path = Path(model_path).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ServeError(f"model path {model_path} has no config.json")
        return
    looks_local = model_path.startswith(("/", ".", "~")) or os.environ.get("HF_HUB_OFFLINE") == "1"
    if looks_local:
        hint = " (run `make setup` to build the default model)" if path == paths.default_model_path() else ""
        raise ServeError(f"model path {model_path} does not exist{hint}")


# uvicorn's log line when it cannot bind (asyncio's OSError, logged to `uvicorn.error`).
BIND_ERROR = "error while attempting to bind on address"


class ExitOnBindError(logging.Filter):
    """On uvicorn's bind error: one line, stop SGLang's processes, exit 2.

    `serve` checks the port first, but SGLang binds it only after loading the model, and something
    can take it meanwhile. uvicorn then logs the error and awaits the app's shutdown, where SGLang
    waits for its warmup thread, which waits for the server that never came up: the process
    would hang. A filter rather than a handler: uvicorn's logging config replaces the logger's
    handlers and keeps its filters."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.where = f"port {port} on {host}"

    def filter(self, record: logging.LogRecord) -> bool:
        if BIND_ERROR in record.getMessage():
            from sglang.srt.utils import kill_process_tree

            # The filter runs before uvicorn's handlers, so its own line is not written: ours carries it.
            print(f"scalesim serve: error: {self.where} was taken before the server bound it "
                  f"({record.getMessage()})", file=sys.stderr, flush=True)
            kill_process_tree(os.getpid(), include_parent=False)
            os._exit(2)
        return True


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn does: connections in TIME_WAIT from an earlier server must not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeError(f"port {port} on {host} is not available ({exc.strerror})") from exc


def configure_device_env() -> bool:
    """Detect a GPU; without one, select SGLang's CPU engine. Returns whether a GPU is present.

    Must run before any SGLang module is imported: they read `SGLANG_USE_CPU_ENGINE` at
    import time (without it the CPU path dies importing vllm).
    """
    import torch

    has_gpu = torch.cuda.is_available()
    if not has_gpu:
        os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    return has_gpu


def prepare(argv: list[str]) -> tuple[ScaleSimOptions, list[str]]:
    """Everything `serve` checks before starting SGLang; sets the process environment.

    Returns the options and the final SGLang argv. Raises `ServeError` on any bad input.
    """
    options, sglang_argv = split_argv(argv)
    has_gpu = configure_device_env()
    os.environ["SGLANG_PLUGINS"] = plugin_filter(os.environ.get("SGLANG_PLUGINS"), enabled=not options.disable)
    sglang_argv = with_defaults(sglang_argv, has_gpu=has_gpu)
    try:
        targets.check_version()
        targets.check_targets(targets.LAUNCH_TARGETS)
    except targets.TargetMissingError as exc:
        raise ServeError(str(exc)) from exc
    if not options.disable:
        sglang_argv = with_plugin_defaults(sglang_argv)
    args = parse_sglang_args(sglang_argv)
    check_model_path(args.model_path)
    check_port_free(args.host, args.port)
    if not options.disable and args.radix_eviction_policy == eviction_policy_name():
        check_eviction_setup(args.radix_eviction_policy_config)
    return options, sglang_argv


def eviction_policy_name() -> str:
    from scalesim.engine.sglang.eviction import POLICY_NAME

    return POLICY_NAME


def with_plugin_defaults(argv: list[str]) -> list[str]:
    """With the plugin on: ScaleSim's eviction policy, unless the user chose a policy; with the
    host tier on, write-back (`host_tier.PLUGIN_HICACHE_DEFAULTS`), unless the user chose."""
    from scalesim.engine.sglang.eviction import register_policy
    from scalesim.engine.sglang.host_tier import PLUGIN_HICACHE_DEFAULTS

    register_policy()  # the CLI choice must exist before SGLang's parser is built
    # LoRA slots: SGLang's --lora-eviction-policy has fixed choices, so ours is the default
    # and an explicit flag selects SGLang's own (the scheduler reads the environment).
    from scalesim.engine.sglang.lora_slots import POLICY_ENV

    if _has_flag(argv, "--lora-eviction-policy"):
        os.environ.pop(POLICY_ENV, None)
    else:
        os.environ[POLICY_ENV] = "distance"
    out = list(argv)
    if _has_flag(out, "--enable-hierarchical-cache"):
        out += [item for flag, value in PLUGIN_HICACHE_DEFAULTS if not _has_flag(out, flag) for item in (flag, value)]
    if not _has_flag(out, "--radix-eviction-policy"):
        out += ["--radix-eviction-policy", eviction_policy_name()]
    return out


def check_eviction_setup(config: object) -> None:
    """Our policy's options, and the tree core it needs (set here when the user did not)."""
    from scalesim.engine.sglang.eviction import TREE_CORE, TREE_CORE_ENV, parse_config

    if config is not None and not isinstance(config, dict):
        raise ServeError(f"--radix-eviction-policy-config must be a JSON object, got {config!r}")
    try:
        parse_config(config)
    except (TypeError, ValueError) as exc:
        raise ServeError(f"--radix-eviction-policy-config: {exc}") from exc
    core = os.environ.setdefault(TREE_CORE_ENV, TREE_CORE)
    if core != TREE_CORE:
        raise ServeError(f"the {eviction_policy_name()} eviction policy needs {TREE_CORE_ENV}={TREE_CORE} "
                         f"(SGLang's Rust tree core knows only its built-in policies), got {core!r}")


def print_help() -> None:
    _sglang_parser(argparse.ArgumentParser(
        prog="scalesim serve",
        description="SGLang's server with ScaleSim. ScaleSim options: --scalesim-disable (stock SGLang: "
        "the plugin is not loaded). Every other argument is SGLang's, listed below.",
    )).print_help()


def serve(argv: list[str]) -> int:
    """Run the server until it stops; return the exit code. Raises `ServeError` before launch."""
    if "-h" in argv or "--help" in argv:
        configure_device_env()
        print_help()
        return 0
    _, sglang_argv = prepare(argv)
    from sglang.launch_server import run_server
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    load_plugins()
    try:
        server_args = prepare_server_args(sglang_argv)
    except (ValueError, AssertionError, TypeError) as exc:
        raise ServeError(f"invalid server arguments: {exc}") from exc
    logging.getLogger("uvicorn.error").addFilter(ExitOnBindError(server_args.host, server_args.port))
    try:
        run_server(server_args)
    finally:
        # SGLang's own launcher does the same: no scheduler or detokenizer outlives us.
        kill_process_tree(os.getpid(), include_parent=False)
    return 0
