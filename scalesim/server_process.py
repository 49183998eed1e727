"""Start and stop a `scalesim serve` process from Python (demo, benchmarks, tests).

The server runs in its own session (process group) so that stopping it also stops SGLang's
scheduler and detokenizer subprocesses, whatever state they are in.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from scalesim.engine.sglang.launch import BIND_ERROR


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time; carries the log's tail."""


class ServerProcess:
    """One `scalesim serve` process on `127.0.0.1:port`, logging to `log_path`.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(self, serve_args: list[str], port: int, log_path: Path, env: dict[str, str] | None = None):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._argv = [sys.executable, "-m", "scalesim.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args]
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 300.0) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                                      start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = self._proc.poll()  # before the log is read: an exited server's log is whole
            if self._lost_port():
                if exited is None:
                    exited = self._exit_code(within_s=10.0)  # `serve` exits by itself (2) with the cause
                self.stop()
                raise ServerStartError(f"port {self.port} was taken before the server bound it "
                                       f"(server exited with {exited}):\n{self.log_tail()}")
            if exited is not None:
                raise ServerStartError(f"server exited with {exited}:\n{self.log_tail()}")
            try:
                if requests.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise ServerStartError(f"server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def _exit_code(self, within_s: float) -> int | None:
        try:
            return self._proc.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            return None

    def _lost_port(self) -> bool:
        # `scalesim serve` checks the port before it starts, but SGLang binds it only after
        # loading the model; if something takes it meanwhile, uvicorn logs the error (and `serve`
        # exits: `launch.ExitOnBindError`).
        try:
            return BIND_ERROR in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after `grace_s`."""
        if self._proc is None:
            return
        pgid = self._proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pgid):
            self._proc.poll()  # reap our direct child so it stops counting as alive
            time.sleep(0.2)
        _signal_group(pgid, signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies without stopping us (Linux; else no-op).

    A test runner or demo killed with SIGKILL cannot run `stop()`; without this the server
    would outlive it, holding its port and gigabytes of KV pool.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
