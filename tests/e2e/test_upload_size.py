"""``UploadSize`` is what a job really wrote to its destination (cbs-api.md §7; issue 15, point
12), with a real ``opencbs serve``, real ``opencbs backup`` processes and real repositories in
folders, read back with ListBackupJobStatus as a monitoring tool does:

- a first job of random data: its ``UploadSize`` is the growth of the repository's packs, index
  objects and snapshots, to the byte (the snapshot list and locks are not counted: the list is
  rewritten in place, a lock removed); a second job after a file that duplicates stored content
  was added uploads only its snapshot (a few KiB) while it examined the whole file;
- the issue's case: a job stopped (SIGTERM) after it had stored some packs, then a job that
  completes: the stopped job's ``UploadSize`` is what it stored, the second's what it wrote,
  not the size of the whole set it examined; the two add up to what the repository holds.

The destination's repositories are made beforehand with 1 MiB packs (a cheap key derivation),
so a job stores several packs of a few MiB of data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from tests.e2e.serving import (
    OPENCBS,
    TIMEOUT,
    add_sysuser,
    add_user,
    agent_env,
    isolated_env,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "uma", "uma-password", "upload size repository secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
MIB = 1 << 20
PACK = MIB
#: What a job adds to a repository and ``UploadSize`` counts (cbs-api.md §7).
ADDED = ("data", "index", "snapshots")


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]  # the agent's environment: server, login, passwords


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("upload-size")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env) as srv:
        yield Server(
            srv.url,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
        )


def _repository(dest: Path) -> None:
    Repository.init(
        LocalStorage(dest, fsync=False),
        ENCRYPTION,
        pack_target_size=PACK,
        kdf=KdfParams(1, 8 * 1024, 1),
    )


def _objects(folder: Path) -> list[Path]:
    """The objects under ``folder`` (not the temporary files of a ``put`` under way)."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]


def _held(dest: Path) -> int:
    """Bytes of the objects a job adds (``ADDED``) that ``dest`` holds."""
    return sum(p.stat().st_size for d in ADDED for p in _objects(dest / d))


def _cbs(srv: Server, name: str, **params: Any) -> Any:
    r = httpx.post(f"{srv.url}/obs/api/json/{name}.do", json={**MONITOR, **params}, timeout=30)
    answer = r.json()
    assert answer["Status"] == "OK", answer
    return answer["Data"]


def _status(srv: Server, job_id: str) -> dict[str, Any]:
    records = _cbs(srv, "ListBackupJobStatus", LoginName=LOGIN, BackupDate=job_id)
    (record,) = [r for r in records if r["ID"] == job_id]
    return dict(record)


def _report(srv: Server, job: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = _cbs(
        srv,
        "GetBackupJobReportSummary",
        LoginName=LOGIN,
        BackupSetID=job["backup_set_id"],
        DestinationID=job["destination_id"],
        BackupJobID=job["job_id"],
    )
    return data


def _backup(srv: Server, name: str, src: Path, dest: Path) -> dict[str, Any]:
    """``opencbs backup --json`` of set ``name``; its outcome, after the job's second (job IDs
    are start seconds: the next job of the set starts in another)."""
    res = run(
        srv.env, "backup", "--set", name, "--source", str(src), "--destination", str(dest), "--json"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    outcome: dict[str, Any] = json.loads(res.stdout)
    time.sleep(1.05)
    return outcome


def _random_files(src: Path, count: int, size: int, seed: int) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (src / f"r{seed:02}-{i:03}.bin").write_bytes(os.urandom(size))


def test_upload_size_is_the_repository_growth_and_nothing_for_stored_content(
    server: Server, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _random_files(src, 6, MIB, 1)  # 6 MiB of random data: stored raw, sealed
    _repository(dest)
    before = _held(dest)

    first = _backup(server, "growth", src, dest)
    grown = _held(dest) - before
    status = _status(server, first["job_id"])
    assert status["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert int(status["UploadSize"]) == first["uploaded_bytes"] == grown
    assert 6 * MIB < grown < 6 * MIB + 64 * 1024  # the data, sealed, and some metadata

    # a copy of stored content: read whole, written not at all (but its snapshot)
    shutil.copyfile(src / "r01-002.bin", src / "copy.bin")
    before = _held(dest)
    second = _backup(server, "growth", src, dest)
    grown = _held(dest) - before
    status = _status(server, second["job_id"])
    assert int(status["UploadSize"]) == second["uploaded_bytes"] == grown
    assert 0 < grown < 16 * 1024  # a snapshot's tree, its index and the snapshot object
    report = _report(server, second)
    assert report["DedupeOriginalSize"] == MIB and report["DedupeSaving"] == MIB  # examined
    assert report["NumOfCopiedFiles"] == 1  # the copy: content already in the backup
    # the earlier rule counted what was examined: every stored size of new and updated files
    assert report["TotalNewFilesSize"] + report["TotalUpdatedFilesSize"] < grown


def test_a_stopped_job_then_a_completed_one_report_what_each_wrote(
    server: Server, tmp_path: Path
) -> None:
    """The issue's case: the second job's UploadSize is what it wrote, not the set's size."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    _random_files(src, 40, MIB, 2)  # 40 MiB: 40 packs of 1 MiB to store
    _repository(dest)
    stopped = _stopped_backup(server, "stopped", src, dest)
    stored_first = _held(dest)
    status = _status(server, stopped["job_id"])
    assert status["BackupJobStatus"] == "BS_STOP_BY_USER"
    assert int(status["UploadSize"]) == stored_first  # the packs it stored before it stopped
    assert 2 * PACK <= stored_first < 40 * MIB  # stopped midway

    time.sleep(1.05)
    done = _backup(server, "stopped", src, dest)
    wrote = _held(dest) - stored_first
    status = _status(server, done["job_id"])
    assert status["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert int(status["UploadSize"]) == done["uploaded_bytes"] == wrote
    # what the first job stored was not written again ...
    assert wrote < 40 * MIB - stored_first + 128 * 1024
    assert int(status["UploadSize"]) + stored_first == _held(dest)
    # ... though the whole set was examined (what UploadSize counted before)
    report = _report(server, done)
    examined = report["TotalNewFilesSize"] + report["TotalUpdatedFilesSize"]
    assert examined >= 40 * MIB and report["DedupeOriginalSize"] == 40 * MIB
    assert report["DedupeSaving"] >= stored_first - PACK  # the chunks the first job stored
    assert int(status["UploadSize"]) < examined - stored_first + 128 * 1024


def _stopped_backup(srv: Server, name: str, src: Path, dest: Path) -> dict[str, Any]:
    """``opencbs backup --json`` stopped by SIGTERM once at least two packs are stored: the
    agent is frozen (SIGSTOP) when the destination shows them, signalled, then let go, so it
    stops wherever it is without a race against the end of the job. Its outcome."""
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", name, "--source", str(src), "--destination", str(dest)]
        + ["--json"],
        env=srv.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(_objects(dest / "index")) < 2:  # a pack's index object follows the pack
            assert proc.poll() is None and time.monotonic() < deadline, "no two packs stored"
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, out + err
    outcome: dict[str, Any] = json.loads(out)
    assert outcome["status"] == "BS_STOP_BY_USER" and outcome["snapshot_id"] is None, outcome
    assert outcome["uploaded_bytes"] == _held(dest), outcome
    return outcome
