"""`scalesim serve` refuses bad invocations with one line and a non-zero exit, leaving nothing running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import free_port

PREFIX = "scalesim serve: error: "


def run_serve(*args: str) -> tuple[int, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "scalesim.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        # Nothing of the process group may survive the launcher.
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    errors = [line for line in err.splitlines() if line.startswith(PREFIX)]
    return proc.returncode, errors


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--model-path", "/nonexistent/model"], "model path /nonexistent/model does not exist"),
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag 1"),
        (["--scalesim-bogus"], "unknown ScaleSim option --scalesim-bogus (valid: --scalesim-disable)"),
        (["--max-total-tokens", "lots"], "argument --max-total-tokens: Invalid integer value: 'lots'. Use a plain integer, "
         "SI suffixes (1k, 1M), or IEC suffixes (1Ki, 1Mi). Suffixes are case-sensitive."),
    ],
)
def test_bad_invocation_exits_with_one_line(args, reason):
    code, errors = run_serve("--port", str(free_port()), *args)
    assert code == 2
    assert errors == [PREFIX + reason]


def test_port_in_use_is_refused():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, errors = run_serve("--port", str(port))
    assert code == 2
    assert errors == [f"{PREFIX}port {port} on 127.0.0.1 is not available (Address already in use)"]


@pytest.mark.server
def test_port_taken_after_the_check_fails_the_start_at_once(tmp_path):
    """The port is free when `scalesim serve` checks it and taken before uvicorn binds it.

    SGLang alone would hang in its shutdown; `serve` exits with status 2 and the cause, and the
    start fails with it straight away, not after the health timeout.
    """
    from scalesim import paths
    from scalesim.server_process import ServerProcess, ServerStartError

    port, log = free_port(), tmp_path / "server.log"
    proc = ServerProcess(["--model-path", str(paths.tiny_model_path()), "--max-total-tokens", "1024",
                          "--dtype", "float32"], port, log)
    taker = socket.socket()
    stop = threading.Event()

    def take_port_after_check() -> None:
        # SGLang prints its arguments after our launcher checked the port, seconds before it binds.
        while not stop.is_set():
            if log.exists() and "server_args=" in log.read_text(errors="replace"):
                taker.bind(("127.0.0.1", port))
                taker.listen()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=take_port_after_check, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServerStartError, match=f"port {port} was taken before the server bound it "
                                                   r"\(server exited with 2\)") as failed:
            proc.start(timeout_s=240)
        assert f"scalesim serve: error: port {port} on 127.0.0.1 was taken before the server bound it" in \
            str(failed.value)
    finally:
        stop.set()
        thread.join()
        taker.close()
