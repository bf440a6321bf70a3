"""Files that change while the agent reads them, for real: a writer thread of the test appends
to a log every few milliseconds (or rewrites a file in place) while ``opencbs backup`` runs as
its own process against a real ``opencbs serve``.

The rule: the data of a file that changed while it was read is part of the snapshot (the file
is listed, with a warning that it changed) or is never written; never stored but unreferenced
and uncounted. So each job's report is checked (the file in its list, the counters, the
warning naming it), the restore gives back exactly what was read (a prefix of the growing log;
for a rewritten file, bytes each of the old or the new content), every chunk of the repository
is referenced by a snapshot, and later jobs compare sensibly against what was recorded: a
file still growing is updated again, one that stopped is read once more and then left alone.

Two jobs run in this process (the agent's ``run_backup`` against the same server) to place the
event exactly: a log that starts growing only once its read began (so its data was stored
before the change was seen), and a file whose read fails part-way (still a warning and left
out, as before, and none of what was read of it is stored).

Nothing here waits on a guess: the writer threads are started and checked to have written
before a job runs, and each job is bounded by the CLI's own timeout.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencbs.agent import reading as reading_mod
from opencbs.agent.client import AgentClient, NewDestination
from opencbs.agent.job import JobOptions, JobOutcome, run_backup
from opencbs.agent.restore import restore
from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from tests.e2e.serving import (
    TIMEOUT,
    add_sysuser,
    add_user,
    agent_env,
    isolated_env,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "dora", "dora-password", "changing files secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-password"}
CHANGED = "changed while it was read"
#: The growing log: its size before the first job, and what the writer appends how often
#: (about 10 MB/s, as the report of the problem measured).
PREFILL = 8 << 20
PIECE = 20 << 10
EVERY = 0.002


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]  # the agent's environment: server, login, passwords


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("changed-while-read")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env) as srv:
        yield Server(
            srv.url,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
        )


class _Writer(threading.Thread):
    """Calls ``step(n)`` (n = 0, 1, …) every ``every`` seconds until :meth:`stop`; the first
    error it meets is kept and raised by :meth:`stop`."""

    def __init__(self, step: Any, every: float) -> None:
        super().__init__(daemon=True)
        self.step = step
        self.every = every
        self.steps = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self.step(self.steps)
                self.steps += 1
                self._halt.wait(self.every)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def wait_steps(self, count: int) -> None:
        """Return once ``count`` more steps were made (at most 10 s)."""
        goal, deadline = self.steps + count, time.monotonic() + 10
        while self.steps < goal:
            assert self.error is None and time.monotonic() < deadline, self.error
            time.sleep(0.005)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def _appender(path: Path) -> _Writer:
    """A writer thread appending ``PIECE`` bytes to ``path`` every ``EVERY`` seconds."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    piece = os.urandom(PIECE)

    def step(n: int) -> None:
        os.write(fd, n.to_bytes(8, "little") + piece[8:])

    writer = _Writer(step, EVERY)
    writer.start()
    return writer


def _repository(dest: Path) -> None:
    """A repository in ``dest`` with a cheap key derivation (each CLI command derives it)."""
    Repository.init(LocalStorage(dest, fsync=False), ENCRYPTION, kdf=KdfParams(1, 8 * 1024, 1))


def _backup(srv: Server, *args: str) -> dict[str, Any]:
    res = run(srv.env, "backup", *args, "--json")
    job: dict[str, Any] = json.loads(res.stdout)
    expected = 0 if job["status"] in ("BS_STOP_SUCCESS", "BS_STOP_SUCCESS_WITH_WARNING") else -1
    assert res.returncode == expected, (res.returncode, res.stderr)
    return job


def _report(srv: Server, job: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(
        srv.url + "/obs/api/json/GetBackupJobReport.do",
        timeout=TIMEOUT,
        json={
            **MONITOR,
            "LoginName": LOGIN,
            "BackupSetID": job["backup_set_id"],
            "DestinationID": job["destination_id"],
            "BackupJobID": job["job_id"],
        },
    )
    answer: dict[str, Any] = r.json()
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


def _listed(data: dict[str, Any], key: str) -> dict[str, int]:
    """The files of report list ``key``: name → original bytes."""
    return {e["Name"]: int(e["UnzipFilesSize"]) for e in data[key] if e["Type"] == "F"}


def _warnings(data: dict[str, Any]) -> list[str]:
    return [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]


def _restore(job: dict[str, Any], dest: Path, target: Path, path: Path) -> bytes:
    """The content of ``path`` as the job's snapshot restores it (the agent's restore, in this
    process: a command's start is most of a small restore's time)."""
    restore(LocalStorage(dest), ENCRYPTION, job["job_id"], target, paths=[str(path)])
    return (target / path.relative_to("/")).read_bytes()


def _unreferenced_chunks(dest: Path) -> int:
    """Chunks in the repository's index that no snapshot refers to (file contents and the
    snapshots' own trees)."""
    repo = Repository.open(LocalStorage(dest), ENCRYPTION)
    used: set[bytes] = set()
    for info in repo.list_snapshots():
        used.update(info.tree)
        for _entry, chunk_ids in repo.load_snapshot(info.id)[1]:
            used.update(chunk_ids)
    stored = [cid for _pack, chunks in repo.index.by_pack() for cid, _loc in chunks]
    return sum(1 for cid in stored if cid not in used)


def _job_options(agent: AgentClient, src: Path, dest: Path) -> JobOptions:
    """A job of a new set of ``src`` to a new repository in ``dest``, run in this process."""
    _repository(dest)
    storage = LocalStorage(dest, fsync=False)
    bset = agent.create_set(
        f"in-process {src}",
        settings={"sources": [str(src)]},
        destinations=[NewDestination("Local", "LOCAL", {"path": str(dest)})],
    )
    return JobOptions(
        client=agent,
        set_id=bset.id,
        destination_id=bset.destinations[0].id,
        storage=storage,
        password=ENCRYPTION,
    )


def _job(outcome: JobOutcome) -> dict[str, Any]:
    """What ``_report`` needs of a job run in this process."""
    return {
        "backup_set_id": outcome.ref.set_id,
        "destination_id": outcome.ref.destination_id,
        "job_id": outcome.ref.job_id,
    }


def test_a_log_growing_during_the_jobs_is_backed_up_as_read_and_counted(
    server: Server, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "steady.txt").write_bytes(b"steady content\n")
    log = src / "busy.log"
    log.write_bytes(os.urandom(PREFILL))
    _repository(dest)
    appender = _appender(log)
    try:
        appender.wait_steps(3)
        first = _backup(server, "--set", "busy", "--source", str(src), "--destination", str(dest))
        appender.wait_steps(3)
        second = _backup(server, "--set", "busy")
    finally:
        appender.stop()
    third = _backup(server, "--set", "busy")  # the log is still now
    fourth = _backup(server, "--set", "busy")
    final = log.read_bytes()

    # Job 1: the new log is listed with what was read, the warning names it, all is counted.
    data = _report(server, first)
    assert first["status"] == data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    new = _listed(data, "new")
    read1 = new.pop(str(log))
    assert new == {str(src / "steady.txt"): 15}
    assert PREFILL <= read1 < len(final)
    warns = _warnings(data)
    assert len(warns) == 1 and warns[0].startswith(f"{log}: {CHANGED}"), warns
    assert first["warnings"] == data["NumOfWarnEntries"] == 1
    assert data["NumOfNewFiles"] == 2 and first["counts"]["new"] == 3  # and the folder
    assert data["TotalUnzipNewFilesSize"] == read1 + 15
    assert data["TotalNewFilesSize"] > PREFILL  # random bytes: stored about as large
    assert data["DedupeOriginalSize"] == first["dedupe_original_size"] == read1 + 15

    # Job 2: still growing: updated, again with the warning.
    data = _report(server, second)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    upd = _listed(data, "upd")
    assert list(upd) == [str(log)] and read1 < upd[str(log)] < len(final)
    assert [w.split(": ")[0] for w in _warnings(data)] == [str(log)]
    assert data["NumOfUpdatedFiles"] == 1
    assert data["TotalUnzipUpdatedFilesSize"] == data["DedupeOriginalSize"] == upd[str(log)]

    # Job 3: the log stopped: read once more, the whole of it, without a warning.
    data = _report(server, third)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert _listed(data, "upd") == {str(log): len(final)} and _warnings(data) == []
    # Job 4: nothing changed, nothing read.
    data = _report(server, fourth)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert data["upd"] == data["new"] == [] and data["DedupeOriginalSize"] == 0

    # Each restore gives back exactly the bytes read: a prefix of the log, then all of it.
    got1 = _restore(first, dest, tmp_path / "r1", log)
    assert len(got1) == read1 and got1 == final[:read1]
    got3 = _restore(third, dest, tmp_path / "r3", log)
    assert got3 == final
    assert _unreferenced_chunks(dest) == 0


def test_a_file_rewritten_in_place_during_the_job_is_backed_up_as_read(
    server: Server, tmp_path: Path
) -> None:
    """Same size, other content, written over in 64 KiB pieces while the job reads it."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    size, piece = 8 << 20, 64 << 10
    db = src / "table.db"
    db.write_bytes(b"A" * size)
    _repository(dest)
    first = _backup(server, "--set", "db", "--source", str(src), "--destination", str(dest))
    assert first["status"] == "BS_STOP_SUCCESS"

    fd = os.open(db, os.O_WRONLY)
    pieces = size // piece

    def step(n: int) -> None:  # passes of B, then of C, then of B…, over the whole file
        byte = b"BC"[(n // pieces) % 2 : (n // pieces) % 2 + 1]
        os.pwrite(fd, byte * piece, (n % pieces) * piece)

    rewriter = _Writer(step, 0.0005)
    rewriter.start()
    try:
        rewriter.wait_steps(pieces)  # no A left: whatever is read differs from job 1's
        second = _backup(server, "--set", "db")
    finally:
        rewriter.stop()
        # one more piece after the job: a rewriter starved of CPU near the job's end could
        # leave the file as job 2 read it, and job 3 would then find the same content again
        os.pwrite(fd, b"D" * piece, 0)
        os.close(fd)
    third = _backup(server, "--set", "db")
    fourth = _backup(server, "--set", "db")

    data = _report(server, second)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    assert _listed(data, "upd") == {str(db): size}
    warns = _warnings(data)
    assert len(warns) == 1 and warns[0].startswith(f"{db}: {CHANGED}"), warns
    assert data["NumOfUpdatedFiles"] == 1
    assert data["TotalUnzipUpdatedFilesSize"] == data["DedupeOriginalSize"] == size
    got = _restore(second, dest, tmp_path / "r2", db)
    assert len(got) == size and set(got) <= set(b"BC")

    # Stopped: read once more (its time differs from the one recorded), then left alone.
    data = _report(server, third)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS" and _warnings(data) == []
    assert data["DedupeOriginalSize"] == size
    assert str(db) in {**_listed(data, "upd"), **_listed(data, "pmt")}
    data = _report(server, fourth)
    assert data["DedupeOriginalSize"] == 0 and data["upd"] == data["pmt"] == []
    assert _restore(third, dest, tmp_path / "r3", db) == db.read_bytes()
    assert _unreferenced_chunks(dest) == 0


def test_a_log_that_starts_growing_once_its_read_began_leaves_no_unreferenced_data(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is as scanned when the job opens it; the writer starts at the job's first read
    of it (and has appended before that read returns), so the change happens during the read
    only: what was read is stored, and so it must be referenced and counted."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    log = src / "app.log"
    log.write_bytes(os.urandom(PREFILL))
    inode = log.stat().st_ino
    writers: list[_Writer] = []
    original = reading_mod._CancellableReader.read

    def read(self: reading_mod._CancellableReader, size: int = -1) -> bytes:
        if not writers and os.fstat(self.fd).st_ino == inode:
            writers.append(_appender(log))
            writers[0].wait_steps(3)
        return original(self, size)

    monkeypatch.setattr(reading_mod._CancellableReader, "read", read)
    with AgentClient(server.url, LOGIN, PASSWORD) as agent:
        options = _job_options(agent, src, dest)
        try:
            outcome = run_backup(options)
        finally:
            assert len(writers) == 1
            writers[0].stop()
    data = _report(server, _job(outcome))
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    assert _listed(data, "new") == {str(log): PREFILL}  # its size when the read began
    warns = _warnings(data)
    assert len(warns) == 1 and warns[0].startswith(f"{log}: {CHANGED} (it grew from {PREFILL} ")
    assert warns[0].endswith(f"backed up as read: its first {PREFILL} bytes"), warns
    assert data["DedupeOriginalSize"] == data["TotalUnzipNewFilesSize"] == PREFILL
    assert _restore(_job(outcome), dest, tmp_path / "r", log) == log.read_bytes()[:PREFILL]
    assert _unreferenced_chunks(dest) == 0


def test_a_file_whose_read_fails_part_way_is_a_warning_and_nothing_of_it_is_stored(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's rule for an unreadable file (a warning, not in the snapshot) holds when the
    error comes part-way through: the chunks already read are taken back, none is stored."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"readable\n")
    bad = src / "bad.bin"
    bad.write_bytes(os.urandom(24 << 20))
    inode = bad.stat().st_ino
    original = reading_mod._CancellableReader.read

    def read(self: reading_mod._CancellableReader, size: int = -1) -> bytes:
        # a bad sector 20 MiB in: past the chunker's window (16 MiB), so chunks were stored
        if self.count >= 20 << 20 and os.fstat(self.fd).st_ino == inode:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return original(self, size)

    monkeypatch.setattr(reading_mod._CancellableReader, "read", read)
    with AgentClient(server.url, LOGIN, PASSWORD) as agent:
        outcome = run_backup(_job_options(agent, src, dest))
    data = _report(server, _job(outcome))
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    assert _listed(data, "new") == {str(src / "ok.txt"): 9}
    assert _warnings(data) == [f"{bad}: cannot read: {os.strerror(errno.EIO)}"]
    assert data["DedupeOriginalSize"] == 9
    assert _unreferenced_chunks(dest) == 0
