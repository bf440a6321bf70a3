"""The agent's job runner and restore on a real tree: reports as GetBackupJobReport shows them
(cbs-api.md §5), snapshots, destination failures, cancel, and byte-identical restores.

SQLite only (this file tests the agent, not the store); the app is reached through the
TestClient transport.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencbs import __version__
from opencbs.agent import AgentClient
from opencbs.agent import reading as reading_mod
from opencbs.agent.job import ChangeEvent, JobOptions, JobOutcome, Progress, run_backup
from opencbs.agent.restore import restore
from opencbs.destinations.base import DestinationError
from opencbs.destinations.local import LocalStorage
from opencbs.destinations.memory import MemoryStorage
from opencbs.engine.classify import Reason
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.repository import Repository
from opencbs.reports.vocabulary import JobStatus, ReportList
from tests.agent_support import PASSWORD, T0, USER, job_options
from tests.agent_support import job_report as _report
from tests.agent_support import local_storage as _storage
from tests.agent_support import new_set as _new_set
from tests.conftest import ADMIN

NON_UTF8 = b"caf\xe9.txt"


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A tree: distinct contents (no copies in the first job), an empty file, a larger file,
    links to a file and to a directory, a directory of two files, a non-UTF-8 name."""
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "old").mkdir()
    _write(root / "a.txt", b"alpha " * 100)
    _write(root / "b.txt", b"bravo content")
    _write(root / "empty", b"")
    _write(root / "ren.txt", b"to be renamed in place")
    _write(root / "mv.txt", b"to be moved to another directory")
    _write(root / "sub" / "c.bin", os.urandom(300_000))
    _write(root / "sub" / "d.txt", b"delta, deleted in job 2")
    _write(root / "old" / "x.txt", b"x of old")
    _write(root / "old" / "y.txt", b"y of old")
    (root / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "exec.sh").chmod(0o751)
    os.symlink("a.txt", root / "link")
    os.symlink("sub", root / "dirlink")
    with open(os.path.join(os.fsencode(root), NON_UTF8), "wb") as f:
        f.write(b"latin-1 name")
    return root


def _names(data: dict[str, Any], key: str, src: Path) -> set[tuple[str, str]]:
    """(Type, path relative to the source's parent) of a list; moves as 'from -> to'."""
    base = str(src.parent) + "/"

    def rel(p: str) -> str:
        return p[len(base) :] if p.startswith(base) else p

    if key == "mov":
        return {(e["Type"], f"{rel(e['FromFile'])} -> {rel(e['ToFile'])}") for e in data[key]}
    return {(e["Type"], rel(e["Name"])) for e in data[key]}


def _check_counters(data: dict[str, Any]) -> None:
    """Every counter of §5 equals what its list holds."""

    def n(key: str, t: str) -> int:
        return sum(1 for e in data[key] if e["Type"] == t)

    assert int(data["NumOfNewFiles"]) == n("new", "F")
    assert int(data["NumOfNewDirCount"]) == n("new", "D")
    assert int(data["NumOfNewLinkFileCount"]) + int(data["NumOfNewLinkDirCount"]) == n("new", "L")
    assert int(data["NumOfUpdatedFiles"]) == len(data["upd"])
    assert int(data["NumOfUpdatedPermissionFiles"]) == len(data["pmt"])
    assert int(data["NumOfDeletedFiles"]) == n("del", "F")
    assert int(data["NumOfDeletedDirCount"]) == n("del", "D")
    assert int(data["NumOfDeletedLinkFileCount"]) == n("del", "L")
    assert int(data["NumOfMovedFiles"]) == len(data["mov"])
    assert int(data["NumOfCopiedFiles"]) == len(data["cpy"])
    warns = sum(1 for e in data["Logs"] if e["Type"] == "warn")
    errors = sum(1 for e in data["Logs"] if e["Type"] == "error")
    assert int(data["NumOfWarnEntries"]) == warns
    assert int(data["NumOfErrorEntries"]) == errors


def _snapshot_tree(root: bytes) -> dict[bytes, tuple[Any, ...]]:
    """Every path below ``root`` (relative) with type, mode, mtime and content or target."""
    out: dict[bytes, tuple[Any, ...]] = {}

    def visit(path: bytes) -> None:
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("L", os.readlink(path), st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("D", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name))
        else:
            with open(path, "rb") as f:
                out[rel] = ("F", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read())

    visit(root)
    return out


def _snapshot_count(storage: LocalStorage | MemoryStorage) -> int:
    return len(list(storage.list("snapshots/")))


# --- the three jobs and the restore -----------------------------------------------------------


def test_first_changed_and_unchanged_jobs_then_restore(
    client: TestClient, agent: AgentClient, src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)

    # Job 1: everything is new, the source folder included.
    seen: list[Progress] = []
    first = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
            progress_interval=0,
        ),
        on_progress=seen.append,
    )
    assert first.status is JobStatus.STOP_SUCCESS and first.snapshot_id is not None
    data = _report(client, first)
    _check_counters(data)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert data["Logs"][0]["Message"] == f"Start [opencbs {__version__}]"
    assert data["Logs"][0]["Type"] == "start" and data["Logs"][-1]["Type"] == "end"
    files = {
        "a.txt",
        "b.txt",
        "empty",
        "ren.txt",
        "mv.txt",
        "exec.sh",
        "sub/c.bin",
        "sub/d.txt",
        "old/x.txt",
        "old/y.txt",
        "caf\\xe9.txt",
    }
    assert _names(data, "new", src) == (
        {("F", f"src/{f}") for f in files}
        | {("D", "src"), ("D", "src/sub"), ("D", "src/old")}
        | {("L", "src/link"), ("L", "src/dirlink")}
    )
    assert (int(data["NumOfNewLinkFileCount"]), int(data["NumOfNewLinkDirCount"])) == (1, 1)
    for key in ("upd", "pmt", "del", "mov", "cpy"):
        assert data[key] == []
    a_entry = next(e for e in data["new"] if e["Name"].endswith("/a.txt"))
    assert int(a_entry["UnzipFilesSize"]) == 600
    assert 0 < int(a_entry["FileSize"]) < 600  # compressed
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    targets = sum(p.lstat().st_size for p in src.rglob("*") if p.is_symlink())  # link's data
    assert int(data["TotalUnzipNewFilesSize"]) == total + targets
    assert int(data["DedupeOriginalSize"]) == total and int(data["DedupeSaving"]) == 0
    assert seen and seen[-1].files_done == len(files)

    # Job 2: one of each change.
    _write(src / "a.txt", b"alpha changed " * 70)  # upd
    (src / "b.txt").chmod(0o600)  # pmt
    (src / "sub" / "d.txt").unlink()  # del F
    os.rename(src / "ren.txt", src / "ren2.txt")  # mov (in place)
    os.rename(src / "mv.txt", src / "sub" / "mv.txt")  # mov (other dir)
    shutil.copy2(src / "sub" / "c.bin", src / "c-copy.bin")  # cpy
    (src / "newdir").mkdir()  # new D
    shutil.rmtree(src / "old")  # del D + 2 del F
    os.symlink("b.txt", src / "link2")  # new L
    second = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    assert second.status is JobStatus.STOP_SUCCESS
    data = _report(client, second)
    _check_counters(data)
    assert _names(data, "new", src) == {("D", "src/newdir"), ("L", "src/link2")}
    assert _names(data, "upd", src) == {("F", "src/a.txt")}
    assert _names(data, "pmt", src) == {("F", "src/b.txt")}
    assert _names(data, "del", src) == {
        ("F", "src/sub/d.txt"),
        ("D", "src/old"),
        ("F", "src/old/x.txt"),
        ("F", "src/old/y.txt"),
    }
    assert _names(data, "mov", src) == {
        ("F", "src/ren.txt -> src/ren2.txt"),
        ("F", "src/mv.txt -> src/sub/mv.txt"),
    }
    assert _names(data, "cpy", src) == {("F", "src/c-copy.bin")}
    # the source is an unchanged file: named by the second pass over the previous snapshot
    assert data["cpy"][0]["FromFile"] == str(src / "sub" / "c.bin")
    assert second.counts[ReportList.DEL] == 4
    # Read this job: a.txt (new content) and ren2, sub/mv, c-copy (content stored); b.txt is
    # read again too, but its content is the same: no upload to dedupe (cbs-api.md §5).
    new_a = len(b"alpha changed " * 70)
    read = (
        new_a + len(b"to be renamed in place") + len(b"to be moved to another directory") + 300_000
    )
    assert int(data["DedupeOriginalSize"]) == read
    assert int(data["DedupeSaving"]) == read - new_a
    upd = data["upd"][0]
    assert int(upd["UnzipFilesSize"]) == new_a
    assert int(data["cpy"][0]["UnzipFilesSize"]) == 300_000

    # Job 3: nothing changed.
    third = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 120_000,
        )
    )
    assert third.status is JobStatus.STOP_SUCCESS
    data = _report(client, third)
    for key in ("new", "upd", "pmt", "del", "mov", "cpy"):
        assert data[key] == [], key
    assert int(data["DedupeOriginalSize"]) == 0
    assert _snapshot_count(storage) == 3

    # Restore of the last job, by job ID: byte-identical.
    target = tmp_path / "restored"
    result = restore(storage, PASSWORD, third.ref.job_id, target)
    assert result.skipped == ()
    restored_root = os.fsencode(target) + os.fsencode(src)
    assert _snapshot_tree(restored_root) == _snapshot_tree(os.fsencode(src))

    # Chosen paths only.
    part = tmp_path / "part"
    restore(storage, PASSWORD, third.snapshot_id or "", part, paths=[str(src / "sub")])
    assert sorted(os.listdir(os.fsencode(part) + os.fsencode(src))) == [b"sub"]
    sub = os.fsencode(part) + os.fsencode(src / "sub")
    assert _snapshot_tree(sub) == _snapshot_tree(os.fsencode(src / "sub"))


# --- soft errors, destination failures, cancel ------------------------------------------------


@pytest.mark.parametrize("read_ahead", [True, False], ids=["read-ahead", "streamed"])
def test_file_changing_while_read_is_a_warning_and_backed_up_as_read(
    client: TestClient,
    agent: AgentClient,
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    read_ahead: bool,
) -> None:
    if not read_ahead:  # every file read in the job's thread, as a stream
        monkeypatch.setattr(reading_mod, "PREFETCH_MAX_FILE", -1)
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    _write(src / "b.txt", b"bravo, second version")
    victim = os.stat(src / "b.txt").st_ino
    original_read = reading_mod._CancellableReader.read

    def growing_read(self: reading_mod._CancellableReader, size: int = -1) -> bytes:
        if os.fstat(self.fd).st_ino == victim and self.count == 0:
            with open(src / "b.txt", "ab") as f:
                f.write(b" and more")
        return original_read(self, size)

    monkeypatch.setattr(reading_mod._CancellableReader, "read", growing_read)
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    assert outcome.status is JobStatus.STOP_SUCCESS_WITH_WARNING
    data = _report(client, outcome)
    _check_counters(data)
    warns = [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]
    assert len(warns) == 1 and "b.txt" in warns[0] and "changed while it was read" in warns[0]
    assert "grew from 21 to 30 bytes); backed up as read: its first 21 bytes" in warns[0]
    # what was read (up to its size when opened) is listed, counted and restored
    assert [(e["Name"], e["UnzipFilesSize"]) for e in data["upd"]] == [(str(src / "b.txt"), 21)]
    assert data["TotalUnzipUpdatedFilesSize"] == data["DedupeOriginalSize"] == 21
    assert _snapshot_count(storage) == 2
    restore(storage, PASSWORD, outcome.ref.job_id, tmp_path / "r", paths=[str(src / "b.txt")])
    restored = tmp_path / "r" / (src / "b.txt").relative_to("/")
    assert restored.read_bytes() == b"bravo, second version"


def test_file_vanishing_before_its_read_is_a_warning_and_a_deletion(
    client: TestClient,
    agent: AgentClient,
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    _write(src / "b.txt", b"bravo, second version")  # changed: it will be read
    original_open = os.open

    def vanishing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsencode(path).endswith(b"/b.txt"):
            os.unlink(path)  # gone between the scan and the read
        return original_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", vanishing_open)
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    monkeypatch.undo()
    assert outcome.status is JobStatus.STOP_SUCCESS_WITH_WARNING
    data = _report(client, outcome)
    _check_counters(data)
    warns = [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]
    assert len(warns) == 1 and "b.txt" in warns[0] and "vanished" in warns[0]
    assert [e["Name"] for e in data["del"]] == [str(src / "b.txt")]
    assert data["upd"] == [] and data["new"] == []


def test_vanished_file_during_scan_is_a_warning(
    client: TestClient,
    agent: AgentClient,
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no read-ahead: the scan is then at most one entry ahead of the progress callback
    monkeypatch.setattr(reading_mod, "PREFETCH_FILES", 0)
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)

    def remove_later_file(p: Progress) -> None:
        # after sub/c.bin the listing of sub is made and d.txt, next, is not stat'ed yet
        if (src / "sub" / "d.txt").exists() and p.current_file.endswith("sub/c.bin"):
            (src / "sub" / "d.txt").unlink()

    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
            progress_interval=0,
        ),
        on_progress=remove_later_file,
    )
    # d.txt was listed, then vanished before its stat: a warning, the job goes on.
    assert outcome.status is JobStatus.STOP_SUCCESS_WITH_WARNING
    data = _report(client, outcome)
    _check_counters(data)
    assert int(data["NumOfWarnEntries"]) == 1
    assert ("F", "src/sub/d.txt") not in _names(data, "new", src)
    assert outcome.snapshot_id is not None


class FailingStorage(MemoryStorage):
    """Writes of packs fail once ``armed`` puts of packs have succeeded."""

    def __init__(self) -> None:
        super().__init__()
        self.pack_puts_left: int | None = None

    def put(self, name: str, data: bytes | memoryview) -> None:
        if name.startswith("data/") and self.pack_puts_left is not None:
            if self.pack_puts_left == 0:
                raise DestinationError("disk full (test)")
            self.pack_puts_left -= 1
        super().put(name, data)


def test_destination_failing_mid_job_is_a_system_error_without_snapshot(
    client: TestClient, agent: AgentClient, src: Path, tmp_path: Path
) -> None:
    storage = FailingStorage()
    Repository.init(storage, PASSWORD, kdf=KdfParams(1, 8 * 1024, 1), pack_target_size=1024)
    set_id, dest_id = _new_set(agent, src, tmp_path / "unused")
    storage.pack_puts_left = 3  # tiny packs: the fourth pack of the job fails
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert outcome.status is JobStatus.STOP_BY_SYSTEM_ERROR
    assert outcome.snapshot_id is None
    assert _snapshot_count(storage) == 0
    data = _report(client, outcome)
    assert data["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"
    errors = [e["Message"] for e in data["Logs"] if e["Type"] == "error"]
    assert len(errors) == 1 and "disk full (test)" in errors[0]
    assert data["Logs"][-1]["Type"] == "end"


def test_cancel_stops_by_user_without_snapshot(
    client: TestClient, agent: AgentClient, src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    cancel = threading.Event()

    def cancel_after_two(p: Progress) -> None:
        if p.files_done >= 2:
            cancel.set()

    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
            progress_interval=0,
        ),
        cancel=cancel,
        on_progress=cancel_after_two,
    )
    assert outcome.status is JobStatus.STOP_BY_USER and outcome.snapshot_id is None
    assert _snapshot_count(storage) == 0
    data = _report(client, outcome)
    assert data["BackupJobStatus"] == "BS_STOP_BY_USER"
    assert data["new"] == []
    # The next job starts afresh: with no snapshot committed everything is new again.
    again = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    assert again.status is JobStatus.STOP_SUCCESS
    assert again.counts[ReportList.NEW] == len(_snapshot_tree(os.fsencode(src)))


def test_progress_is_visible_while_the_job_runs(
    client: TestClient, agent: AgentClient, src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    answers: list[dict[str, Any]] = []
    seen: list[Progress] = []

    def ask(p: Progress) -> None:
        """The server's view while the job runs; it gets a progress at most every
        PROGRESS_INTERVAL (and the last one always), so it shows one of those seen so far."""
        seen.append(p)
        r = client.post(
            "/obs/api/json/GetBackupJobProgress.do",
            json={
                "SysUser": ADMIN[0],
                "SysPwd": ADMIN[1],
                "LoginName": USER[0],
                "BackupSetID": set_id,
                "DestinationID": dest_id,
                "BackupJobID": "2024-06-26-13-24-35",
            },
        )
        answers.append(r.json())

    run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
            progress_interval=0,
        ),
        on_progress=ask,
    )
    assert all(a["Status"] == "OK" and a["Data"]["EndTime"] == "" for a in answers), answers
    reported = {(s.files_seen, s.files_done, s.current_file) for s in seen}
    for a in answers:
        shown = a["Data"]
        key = (
            int(shown["TotalFileCount"]),
            int(shown["CurrentFileCount"]),
            shown["CurrentFileName"],
        )
        assert key in reported, (key, reported)
    last = answers[-1]["Data"]  # the job's last progress reaches the server too
    assert int(last["CurrentFileCount"]) == seen[-1].files_done >= 1
    assert last["CurrentFileName"] == seen[-1].current_file
    assert any(s.current_file == str(src / "a.txt") for s in seen)


def test_on_change_tells_each_reported_change_with_its_reason(
    client: TestClient, agent: AgentClient, src: Path, tmp_path: Path
) -> None:
    """``on_change`` gets one event per entry of the report's file lists, with the
    classifier's reason and what differs (style.md §20: a callback, not a log format)."""
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)

    def job(start_ms: int, seen: list[ChangeEvent]) -> JobOutcome:
        options = job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=start_ms,
        )
        return run_backup(options, on_change=seen.append)

    first: list[ChangeEvent] = []
    outcome = job(T0, first)
    assert {e.kind for e in first} == {ReportList.NEW}
    assert len(first) == outcome.counts[ReportList.NEW]
    assert all(e.reason is Reason.NEW_PATH and e.detail == "" for e in first)

    _write(src / "a.txt", b"alpha, longer now " * 100)
    (src / "b.txt").chmod(0o600)
    os.rename(src / "mv.txt", src / "sub" / "mv.txt")
    second: list[ChangeEvent] = []
    outcome = job(T0 + 60_000, second)
    by_path = {(e.kind, e.path): e for e in second}
    assert len(second) == sum(outcome.counts.values())
    upd = by_path[(ReportList.UPD, os.fsencode(src / "a.txt"))]
    assert upd.reason is Reason.CONTENT_CHANGED
    assert upd.detail.startswith("size 600→1800, mtime ")
    assert upd.why == f"{Reason.CONTENT_CHANGED.text} ({upd.detail})"
    pmt = by_path[(ReportList.PMT, os.fsencode(src / "b.txt"))]
    assert pmt.reason is Reason.MODE_CHANGED and pmt.detail.startswith("ctime ")
    assert "mode " in pmt.detail
    mov = by_path[(ReportList.MOV, os.fsencode(src / "sub" / "mv.txt"))]
    assert mov.detail == f"from {src / 'mv.txt'}"
    data = _report(client, outcome)
    assert {("upd", e["Name"]) for e in data["upd"]} == {
        ("upd", os.fsdecode(e.path)) for e in second if e.kind is ReportList.UPD
    }


# --- restore safety -----------------------------------------------------------------------------


def test_restore_never_writes_through_a_link_in_the_target(
    agent: AgentClient, src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    outside.mkdir()
    # A planted link where the restore will create a directory, and one where it writes a file.
    planted = Path(os.fsdecode(os.fsencode(target) + os.fsencode(src)))
    planted.parent.mkdir(parents=True)
    os.symlink(outside, planted)
    restore(storage, PASSWORD, outcome.ref.job_id, target)
    assert list(outside.iterdir()) == []
    assert planted.is_dir() and not planted.is_symlink()
    (planted / "b.txt").unlink()
    os.symlink(outside / "victim", planted / "b.txt")
    restore(storage, PASSWORD, outcome.ref.job_id, target)
    assert list(outside.iterdir()) == []
    assert (planted / "b.txt").read_bytes() == b"bravo content"


def test_two_jobs_started_in_the_same_second_both_run(
    client: TestClient,
    agent: AgentClient,
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time
    from zoneinfo import ZoneInfo

    from opencbs.reports.timefmt import job_id_at

    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    now_ms = (time.time_ns() // 1_000_000 // 1000) * 1000
    taken = agent.start_job(set_id, dest_id, start_time=now_ms)
    # the agent's clock reads the same second: that job ID is taken, so it starts a second later
    monkeypatch.setattr(time, "time_ns", lambda: now_ms * 1_000_000 + 1)
    outcome = run_backup(
        JobOptions(
            client=agent, set_id=set_id, destination_id=dest_id, storage=storage, password=PASSWORD
        )
    )
    monkeypatch.undo()
    assert outcome.status is JobStatus.STOP_SUCCESS
    assert taken.ref.job_id == job_id_at(now_ms, ZoneInfo("UTC"))
    assert outcome.ref.job_id == job_id_at(now_ms + 1000, ZoneInfo("UTC"))


def test_a_file_replaced_by_a_fifo_after_the_scan_is_a_warning_not_a_hang(
    tmp_path: Path,
) -> None:
    """The read opens non-blocking: a path that became a FIFO since the scan is refused by the
    type check ("changed between the scan and the read") instead of waiting for a writer that
    never comes (where Ctrl-C and SIGTERM could not stop the job)."""
    from opencbs.engine.scan import Scan

    path = tmp_path / "src" / "z_target"
    path.parent.mkdir()
    path.write_bytes(b"t\n")
    entry = next(e for e in Scan([path]).entries())
    path.unlink()
    os.mkfifo(path)
    repo = Repository.init(MemoryStorage(), PASSWORD, kdf=KdfParams(1, 8 * 1024, 1))
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            with repo.writer() as writer:
                reading_mod._read_file(writer, entry, threading.Event())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the read blocked on the FIFO"
    assert isinstance(outcome[0], reading_mod._SoftError)
    assert "changed between the scan and the read" in str(outcome[0])


def test_a_file_made_unreadable_is_a_warning_and_a_permission_change(
    client: TestClient,
    agent: AgentClient,
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``chmod 000`` on a file backed up before: its content cannot be read (a warning; the
    content as last stored stays in the snapshot) and its mode changed (a ``pmt`` entry);
    the next job, with nothing changed, says neither again (issue 15)."""
    monkeypatch.setattr(reading_mod, "PREFETCH_FILES", 0)  # every open goes through _open
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, src, dest)
    first = run_backup(job_options(agent, set_id, dest_id, storage, start_time_ms=T0))
    assert first.status is JobStatus.STOP_SUCCESS
    target = src / "a.txt"
    os.chmod(target, 0)
    real_open = reading_mod._open

    def refused(entry: Entry) -> int:  # what a non-root agent meets (root reads mode 000)
        if entry.path == os.fsencode(target):
            raise reading_mod._SoftError("cannot open: permission denied")
        return real_open(entry)

    monkeypatch.setattr(reading_mod, "_open", refused)
    second = run_backup(job_options(agent, set_id, dest_id, storage, start_time_ms=T0 + 60_000))
    assert second.status is JobStatus.STOP_SUCCESS_WITH_WARNING
    data = _report(client, second)
    _check_counters(data)
    assert _names(data, "pmt", src) == {("F", "src/a.txt")}
    warns = [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]
    assert len(warns) == 1 and "a.txt" in warns[0] and "permission denied" in warns[0]
    assert data["upd"] == [] and data["new"] == [] and data["del"] == []
    third = run_backup(job_options(agent, set_id, dest_id, storage, start_time_ms=T0 + 120_000))
    assert third.status is JobStatus.STOP_SUCCESS
    assert _report(client, third)["pmt"] == []
    # the snapshot holds the content as last stored, with the mode it has now
    os.chmod(target, 0o644)
    restored = restore(storage, PASSWORD, third.snapshot_id, tmp_path / "restored")
    assert restored.complete
    back = tmp_path / "restored" / str(target).lstrip("/")
    assert back.read_bytes() == b"alpha " * 100 and (back.stat().st_mode & 0o777) == 0
