"""What the end-to-end tests share: the venv's ``opencbs`` run as a process in an isolated
environment, the users a test makes with it, and a real ``opencbs serve`` on 127.0.0.1.

Every server is started by :func:`start_serve` (or :func:`serving`, which also stops it): its
stdout goes to ``/dev/null`` (or to the log, ``with_stdout=True``), its stderr (the server's log)
is appended to a file, so that no pipe nobody reads can fill and block it, and a test can read
the log afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

OPENCBS = str(Path(sys.executable).with_name("opencbs"))
TIMEOUT = 60  # seconds a CLI command may take
UP_WITHIN = 30  # seconds a server may take to answer /openapi.json
STOP_WITHIN = 30  # seconds a server may take to end after its stop signal


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """The process environment without any ``OPENCBS_*`` variable, with its own home, config
    and data directories in ``root`` (``root/home``, ``root/data``), time zone UTC, and
    ``extra`` (names and values of environment variables) on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBS_")}
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        OPENCBS_DATA_DIR=str(root / "data"),
        OPENCBS_TIMEZONE="UTC",
        **extra,
    )
    return env


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``opencbs ARGS`` to completion (at most ``TIMEOUT`` s), its output captured as
    text; whatever its exit code."""
    return subprocess.run(
        [OPENCBS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )


def ok(env: dict[str, str], *args: str, stdin: str = "") -> str:
    """Run ``opencbs ARGS``, expect exit code 0 (AssertionError with its output otherwise),
    return its stdout."""
    res = run(env, *args, stdin=stdin)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout


def free_port() -> int:
    """A TCP port of 127.0.0.1 free when asked (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def add_user(env: dict[str, str], login: str, password: str, *args: str) -> None:
    """``opencbs user add LOGIN ARGS --password-stdin``: a backup user."""
    ok(env, "user", "add", login, *args, "--password-stdin", stdin=password + "\n")


def add_sysuser(env: dict[str, str], name: str, password: str, *args: str) -> None:
    """``opencbs sysuser add NAME ARGS --password-stdin``: a system user (an administrator
    unless ``ARGS`` give another ``--role``)."""
    ok(env, "sysuser", "add", name, *args, "--password-stdin", stdin=password + "\n")


def agent_env(
    env: dict[str, str], url: str, *, login: str, password: str, encryption: str
) -> dict[str, str]:
    """``env`` for the agent's commands: the server's URL, the backup user's login name and
    password, and the repository's password (``OPENCBS_ENCRYPTION_PASSWORD``)."""
    return {
        **env,
        "OPENCBS_SERVER_URL": url,
        "OPENCBS_LOGIN_NAME": login,
        "OPENCBS_PASSWORD": password,
        "OPENCBS_ENCRYPTION_PASSWORD": encryption,
    }


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: IO[bytes], start: int) -> None:
    """Return once ``url/openapi.json`` answers; AssertionError with the server's stderr
    (``log`` from byte ``start``) if it exits first, or after ``UP_WITHIN`` s."""
    deadline = time.monotonic() + UP_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(start)
            said = log.read().decode(errors="replace")
            raise AssertionError(f"server exited with {proc.returncode}: {said}")
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"server did not start within {UP_WITHIN} s")


def start_serve(
    env: dict[str, str],
    *args: str,
    port: int,
    log: Path | None = None,
    with_stdout: bool = False,
) -> subprocess.Popen[bytes]:
    """``opencbs serve --port PORT ARGS`` with ``env``, returned once it answers on
    ``http://127.0.0.1:PORT``. Its stderr is appended to ``log`` (an unnamed temporary file
    when None), with its stdout too when ``with_stdout`` (else to ``/dev/null``).

    Raises AssertionError (the server's stderr in its message) when the server exits before
    it answers, or does not answer within ``UP_WITHIN`` s; it is killed then."""
    with open(log, "a+b") if log is not None else tempfile.TemporaryFile() as err:
        start = err.seek(0, os.SEEK_END)
        proc = subprocess.Popen(
            [OPENCBS, "serve", "--port", str(port), *args],
            env=env,
            stdout=err if with_stdout else subprocess.DEVNULL,
            stderr=err,
        )
        try:
            _wait_until_up(f"http://127.0.0.1:{port}", proc, err, start)
        except BaseException:
            stop_serve(proc, signal.SIGKILL)
            raise
    return proc


def stop_serve(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    """Send ``sig`` to a running server and wait for its end (SIGKILL after ``STOP_WITHIN`` s
    without one); its exit code (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@dataclass(frozen=True)
class Served:
    """A server :func:`serving` started: its base URL (``http://127.0.0.1:PORT``), port and
    process (its ``returncode`` set once the block ends)."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]


@contextmanager
def serving(
    env: dict[str, str],
    *args: str,
    port: int | None = None,
    log: Path | None = None,
    stop: signal.Signals = signal.SIGKILL,
) -> Iterator[Served]:
    """``opencbs serve ARGS`` on ``port`` (a free one when None) for the block, as
    :func:`start_serve` starts it (stderr appended to ``log``); ended by ``stop`` (SIGKILL
    unless given: SIGTERM is a service manager's normal stop) when the block ends, however it
    ends."""
    port = free_port() if port is None else port
    proc = start_serve(env, *args, port=port, log=log)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, proc)
    finally:
        stop_serve(proc, stop)


class Serve:
    """``opencbs serve`` with ``env`` on a fixed ``port`` of 127.0.0.1 (``url``), which a test
    kills (SIGKILL: a lost server) and starts again, as :func:`start_serve` starts it."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server; returns once it answers (AssertionError otherwise)."""
        self.proc = start_serve(self.env, port=self.port)

    def kill(self) -> None:
        """SIGKILL the server, if it runs, and wait for its end."""
        if self.proc is not None:
            stop_serve(self.proc, signal.SIGKILL)
