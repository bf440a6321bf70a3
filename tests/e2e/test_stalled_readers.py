"""Clients that ask for a large report and never read it (issue 11): a real ``opencbs serve``
on SQLite and on PostgreSQL, twenty raw sockets that send GetBackupJobReport and read nothing.

While they stall, the server must hold no database connection or transaction for them (the
report is read in pages, each in its own short transaction): other calls answer at once, the
SQLite WAL can be checkpointed, PostgreSQL shows no session "idle in transaction". Once they go
away, or once the write timeout drops them, the whole pool serves again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
from sqlalchemy import text

from opencbs.reports.vocabulary import JobStatus, ReportList, SystemRole
from opencbs.store import jobs, sets, users
from opencbs.store.db import Database
from tests.conftest import UTC
from tests.e2e.serving import isolated_env, serving

ENTRIES = 100_000  # about 22 MB of answer: far more than the socket buffers of a stalled reader
STALLED = 20
SYS = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
CALL = "/obs/api/json/{}.do"


@dataclass(frozen=True)
class BigJob:
    request: dict[str, str]
    bset: sets.BackupSet


def _load_big_job(db: Database) -> BigJob:
    """A system user, a backup user with one set and destination, and a finished job of
    ``ENTRIES`` entries stored through the store's own functions, in batches of 5,000."""
    with db.write() as conn:
        users.add_system_user(conn, SYS["SysUser"], SYS["SysPwd"], SystemRole.ADMIN)
        user = users.add_backup_user(conn, "stall-user", "stall-user-pw")
        bset = sets.add_set(conn, user.id, "big", {"sources": ["/srv"]})
        sets.add_destination(conn, user.id, bset.id, name="dest", dest_type="LOCAL")
        bset = sets.get_set(conn, user.id, bset.id)
        job = jobs.start_job(conn, bset, bset.destinations[0].id, tz=UTC)
    batch = 5000
    for no in range(ENTRIES // batch):
        entries = [
            jobs.EntryIn(
                ReportList.NEW,
                "F",
                f"/srv/share/project-{i % 977:04d}/documents/report_{i:08d}_final.docx",
                mtime_ms=1_704_067_200_000,
                size=1000 + i,
                unzip_size=3000 + i,
            )
            for i in range(no * batch, (no + 1) * batch)
        ]
        with db.write() as conn:
            jobs.append_batch(conn, job.pk, no, entries)
    with db.write() as conn:
        jobs.finish_job(conn, job.pk, JobStatus.STOP_SUCCESS)
    return BigJob(
        {
            **SYS,
            "LoginName": "stall-user",
            "BackupSetID": str(bset.id),
            "DestinationID": str(bset.destinations[0].id),
            "BackupJobID": job.job_id,
        },
        bset,
    )


@contextmanager
def _server(db: Database, root: Path, *, write_timeout: float) -> Iterator[str]:
    """``opencbs serve`` over ``db`` on a free port, ``write_timeout`` set, running jobs
    closed by the sweeper after 1 s without a sign of life."""
    env = isolated_env(root, OPENCBS_WRITE_TIMEOUT=str(write_timeout), OPENCBS_JOB_IDLE_TIMEOUT="1")
    with serving(env, "--database-url", db.url) as srv:
        yield srv.url


def _stalled_readers(url: str, request: dict[str, str]) -> list[socket.socket]:
    """``STALLED`` sockets that each send one GetBackupJobReport and never read."""
    port = int(url.rsplit(":", 1)[1])
    body = orjson.dumps(request)
    head = (
        f"POST {CALL.format('GetBackupJobReport')} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    out = []
    for _ in range(STALLED):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(head + body)
        out.append(s)
    return out


def _summary(url: str, request: dict[str, str]) -> float:
    """Seconds GetBackupJobReportSummary took; asserts it answered OK."""
    t0 = time.monotonic()
    r = httpx.post(url + CALL.format("GetBackupJobReportSummary"), json=request, timeout=30)
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["Status"] == "OK", r.text
    assert r.json()["Data"]["NumOfNewFiles"] == ENTRIES
    return took


def _pool_serves_all(url: str, request: dict[str, str]) -> None:
    """Twenty concurrent calls (more than the PostgreSQL pool's 16) all answer within 10 s."""
    with ThreadPoolExecutor(20) as ex:
        took = list(ex.map(lambda _: _summary(url, request), range(20)))
    assert max(took) < 10, took


def _held_transactions(db: Database) -> int:
    """Sessions of this database that hold a transaction open while idle: PostgreSQL's
    ``idle in transaction``; on SQLite, whether a reader keeps the WAL from being
    checkpointed whole (``PRAGMA wal_checkpoint(TRUNCATE)`` busy)."""
    with db.engine.connect() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql("PRAGMA busy_timeout=100")
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
            conn.exec_driver_sql("PRAGMA busy_timeout=30000")
            return int(busy)
        q = (
            "select count(*) from pg_stat_activity where datname = current_database() "
            "and state like 'idle in transaction%'"
        )
        return int(conn.execute(text(q)).scalar_one())


def _until_none_held(db: Database, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (held := _held_transactions(db)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held == 0, f"{held} transaction(s) still held after {within} s"


def _server_pid(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise AssertionError("no process listens on the server's port")


def _open_connections(pid: int, port: int) -> int:
    """Established connections of the server process on ``port``."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def _until_no_connections(pid: int, port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _open_connections(pid, port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _open_connections(pid, port) == 0


def _while_stalled(db: Database, url: str, job: BigJob) -> None:
    """With the stalled readers open: quick answers, no transaction held, and the server's job
    sweeper (a write transaction) closes an idle job."""
    with db.write() as conn:
        idle = jobs.start_job(conn, job.bset, job.bset.destinations[0].id, tz=UTC)
    time.sleep(1.0)  # let every stalled report fill its socket buffers and block
    took = [_summary(url, job.request) for _ in range(5)]
    assert max(took) < 2.0, took
    _until_none_held(db)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.read() as conn:
            status = jobs.get_job_by_pk(conn, idle.pk).status
        if status != JobStatus.STILL_RUNNING.value:
            break
        time.sleep(0.2)
    assert status == JobStatus.BACKUP_NOT_FINISHED.value


def test_stalled_readers_hold_nothing_and_leave_nothing(db: Database, tmp_path: Path) -> None:
    job = _load_big_job(db)
    with _server(db, tmp_path, write_timeout=600) as url:
        _summary(url, job.request)  # the system user's password verified once (cached)
        pid, port = _server_pid(url), int(url.rsplit(":", 1)[1])
        readers = _stalled_readers(url, job.request)
        try:
            _while_stalled(db, url, job)
        finally:
            for s in readers:
                s.close()
        _pool_serves_all(url, job.request)
        _until_none_held(db)
        _until_no_connections(pid, port)


def test_write_timeout_drops_stalled_readers(db: Database, tmp_path: Path) -> None:
    job = _load_big_job(db)
    with _server(db, tmp_path, write_timeout=2) as url:
        _summary(url, job.request)
        port = int(url.rsplit(":", 1)[1])
        pid = _server_pid(url)
        readers = _stalled_readers(url, job.request)
        try:
            _while_stalled(db, url, job)
            time.sleep(3.0)  # past the write timeout: every stalled answer is dropped
            _pool_serves_all(url, job.request)
            _until_none_held(db)
            _until_no_connections(pid, port)
            for s in readers:  # what was sent is an unfinished answer, then the end
                s.settimeout(10)
                data = b""
                try:
                    while chunk := s.recv(1 << 20):
                        data += chunk
                except ConnectionResetError:  # the server aborted: what was unsent is gone
                    pass
                assert data.startswith(b"HTTP/1.1 200 ")
                assert not data.endswith(b"0\r\n\r\n")
        finally:
            for s in readers:
                s.close()
