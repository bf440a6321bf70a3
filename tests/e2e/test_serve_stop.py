"""How a server started from the command line reports its port and ends, as real processes:
``serve --port 0`` and ``demo --port 0`` name the port they bound (and answer there); Ctrl-C
(SIGINT) ends a server with exit code 130 (interrupted), SIGTERM with 0 (a service manager's
normal stop), neither with an error line (``cli.serve.stop_code``)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import OPENCBS, isolated_env


def _started(proc: subprocess.Popen[str], pattern: str) -> tuple[re.Match[str], list[str]]:
    """Read ``proc``'s lines (stdout and stderr merged) until one matches ``pattern``."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found, seen
    raise AssertionError(f"no line matching {pattern!r}: {''.join(seen)}")


def _healthy(port: int) -> int:
    """The status of ``/healthz`` once the server accepts connections (within 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


@contextmanager
def _running(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """``opencbs ARGS`` for the block, its stdout and stderr merged into one text pipe; killed
    at the end of the block unless it ended."""
    proc = subprocess.Popen(
        [OPENCBS, *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_serve_on_port_0_logs_the_port_bound_and_ends_on_a_signal(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    with _running(isolated_env(tmp_path), "serve", "--port", "0") as proc:
        found, _ = _started(proc, r"opencbs serving on http://127\.0\.0\.1:(\d+) ")
        port = int(found.group(1))
        assert port != 0
        assert _healthy(port) == 200
        returncode, rest = _stop(proc, sig)
        assert returncode == code, rest
        assert "opencbs: error" not in rest and "Traceback" not in rest, rest


def test_demo_on_port_0_names_the_port_bound(tmp_path: Path) -> None:
    env = {**isolated_env(tmp_path), "PYTHONUNBUFFERED": "1"}
    with _running(env, "demo", "--port", "0") as proc:
        found, seen = _started(proc, r"^serving on http://127\.0\.0\.1:(\d+) ")
        port = int(found.group(1))
        assert port != 0
        curl = next(line for line in seen if line.startswith("curl "))
        assert f"http://127.0.0.1:{port}/obs/api/json/" in curl
        assert _healthy(port) == 200
        returncode, rest = _stop(proc, signal.SIGINT)
        assert returncode == 130, rest
