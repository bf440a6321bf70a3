"""Helpers the agent's integration tests share (their fixtures are in
``tests/integration/agent/conftest.py``): a local destination with a cheap-KDF repository, a
backup set, and the report of a job as GetBackupJobReport gives it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencbs.agent import AgentClient, NewDestination
from opencbs.agent.job import JobOptions, JobOutcome
from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from tests.conftest import ADMIN

USER = ("alice", "alice-secret")
PASSWORD = "repo-password"
T0 = 1_719_408_275_000  # 2024-06-26 13:24:35 UTC: job start times, one per test job


def new_set(agent: AgentClient, src: Path, dest: Path) -> tuple[str, str]:
    """A backup set of ``src`` with one local destination ``dest``: (set ID, destination ID)."""
    bset = agent.create_set(
        "Docs",
        settings={"sources": [str(src)]},
        destinations=[NewDestination("Local", "LOCAL", {"path": str(dest)})],
    )
    return bset.id, bset.destinations[0].id


def job_options(
    agent: AgentClient, set_id: str, dest_id: str, storage: LocalStorage, **more: Any
) -> JobOptions:
    """The ``JobOptions`` of a test job of set ``set_id`` to ``dest_id`` in ``storage``, under
    the repository password ``PASSWORD``; ``more``: the other options."""
    return JobOptions(
        client=agent,
        set_id=set_id,
        destination_id=dest_id,
        storage=storage,
        password=PASSWORD,
        **more,
    )


def local_storage(dest: Path, **init: Any) -> LocalStorage:
    """A local destination with a repository of cheap KDF (run_backup opens it)."""
    storage = LocalStorage(dest, fsync=False)
    Repository.init(storage, PASSWORD, kdf=KdfParams(1, 8 * 1024, 1), **init)
    return storage


def job_report(client: TestClient, outcome: JobOutcome) -> dict[str, Any]:
    """The job's ``Data`` from GetBackupJobReport, as the administrator."""
    r = client.post(
        "/obs/api/json/GetBackupJobReport.do",
        json={
            "SysUser": ADMIN[0],
            "SysPwd": ADMIN[1],
            "LoginName": USER[0],
            "BackupSetID": outcome.ref.set_id,
            "DestinationID": outcome.ref.destination_id,
            "BackupJobID": outcome.ref.job_id,
        },
    )
    body = r.json()
    assert body["Status"] == "OK", body
    data: dict[str, Any] = body["Data"]
    return data


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=…``: ``20m``, ``256k``) mounted at the new folder
    ``mnt`` while inside; skips the test where it cannot be mounted (not root, no permission).
    A small real file system for "disk full" tests."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {size} tmpfs needs root")
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
