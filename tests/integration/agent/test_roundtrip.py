"""Backup → restore → verify on real trees: byte-identical restores (modes, mtimes, owners, links,
empty, sparse and non-UTF-8 files, a 10,000-file tree), damage found by verify and survived by
restore, a damaged snapshot that does not block the next backup, and a server that drops off.

SQLite only (this file tests the agent, not the store); the app is reached through the
TestClient transport, wrapped where a test needs the server to fail.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from opencbs.agent import AgentClient
from opencbs.agent import restore as restore_module
from opencbs.agent.client import ServerUnreachable
from opencbs.agent.job import run_backup
from opencbs.agent.restore import (
    HOLE_BLOCK,
    RestoreIncomplete,
    RestoreProgress,
    _write_sparse,
    restore,
)
from opencbs.engine.repo_verify import VerifyProblem
from opencbs.engine.repository import Repository
from opencbs.reports.vocabulary import EntryType, JobStatus
from tests.agent_support import PASSWORD, T0, USER, job_options
from tests.agent_support import job_report as _report
from tests.agent_support import local_storage as _storage
from tests.agent_support import new_set as _new_set

NO_RETRY_WAIT = (0.0, 0.0, 0.0)
MiB = 1024 * 1024
ROOT = os.geteuid() == 0


def _tree(root: bytes, *, owners: bool = True) -> dict[bytes, tuple[Any, ...]]:
    """Every path below ``root`` (relative): type, mode, mtime, owner, content or target."""
    out: dict[bytes, tuple[Any, ...]] = {}

    def visit(path: bytes) -> None:
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        owner = (st.st_uid, st.st_gid) if owners else None
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("L", os.readlink(path), st.st_mtime_ns, owner)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("D", stat.S_IMODE(st.st_mode), st.st_mtime_ns, owner)
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name))
        else:
            with open(path, "rb") as f:
                out[rel] = ("F", stat.S_IMODE(st.st_mode), st.st_mtime_ns, owner, f.read())

    visit(root)
    return out


def _restored(target: Path, src: Path) -> bytes:
    return os.fsencode(target) + os.fsencode(src)


def _set_times(root: Path, mtime_ns: int) -> None:
    """Give every entry below ``root`` (links included, not followed) a distinct mtime,
    directories last and deepest first, so creating entries does not change them again."""
    paths = sorted(root.rglob("*"), key=lambda p: -len(p.parts))
    for i, p in enumerate([q for q in paths if not q.is_dir() or q.is_symlink()]):
        os.utime(p, ns=(mtime_ns + i, mtime_ns + i * 1_000_003), follow_symlinks=False)
    for i, p in enumerate([q for q in paths if q.is_dir() and not q.is_symlink()] + [root]):
        os.utime(p, ns=(mtime_ns, mtime_ns - 7 * i), follow_symlinks=False)


# --- byte-identical round trips ---------------------------------------------------------------


@pytest.fixture
def rich_src(tmp_path: Path) -> Path:
    """Modes, links (file, dir, dangling), empty files, a 64 MiB sparse file with two data
    regions, non-UTF-8 names (a file and a directory), owners when running as root."""
    root = tmp_path / "src"
    (root / "dir" / "deep").mkdir(parents=True)
    (root / "private").mkdir(mode=0o700)
    (root / "dir" / "a.txt").write_bytes(b"alpha\n" * 1000)
    (root / "dir" / "deep" / "rand.bin").write_bytes(os.urandom(700_000))
    (root / "empty").write_bytes(b"")
    (root / "dir" / "empty2").write_bytes(b"")
    (root / "private" / "secret").write_bytes(b"s3cret")
    (root / "private" / "secret").chmod(0o400)
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "run.sh").chmod(0o4755)
    (root / "dir").chmod(0o750)
    with open(root / "sparse.img", "wb") as f:
        f.truncate(64 * MiB)
        f.seek(5 * MiB + 123)
        f.write(os.urandom(10_000))
        f.seek(40 * MiB)
        f.write(b"middle" * 1000)
    os.symlink("dir/a.txt", root / "to-file")
    os.symlink("dir", root / "to-dir")
    os.symlink("nowhere/at/all", root / "dangling")
    raw = os.fsencode(root)
    os.mkdir(raw + b"/d\xe9j\xe0")
    with open(raw + b"/d\xe9j\xe0/caf\xe9.txt", "wb") as f:
        f.write(b"latin-1 names")
    os.symlink(b"caf\xe9.txt", raw + b"/d\xe9j\xe0/\xff-link")
    if ROOT:
        os.chown(root / "dir" / "a.txt", 1234, 5678)
        os.chown(root / "to-file", 4321, 8765, follow_symlinks=False)
        os.chown(root / "dir" / "deep", 2222, 3333)
        os.chown(root / "run.sh", 1000, 1000)
        (root / "run.sh").chmod(0o4755)  # chown cleared the set-user-ID bit
    _set_times(root, 1_600_000_000_123_456_789)
    return root


def test_backup_restore_is_byte_identical(
    agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, rich_src, tmp_path / "dest")
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert outcome.status is JobStatus.STOP_SUCCESS, outcome
    assert outcome.report_delivered

    target = tmp_path / "restored"
    result = restore(storage, PASSWORD, outcome.ref.job_id, target, same_owner=True)
    assert result.complete and result.skipped == ()
    restored = _restored(target, rich_src)
    assert _tree(restored, owners=ROOT) == _tree(os.fsencode(rich_src), owners=ROOT)

    sparse = os.stat(restored + b"/sparse.img")
    assert sparse.st_size == 64 * MiB
    assert sparse.st_blocks * 512 < 1 * MiB  # the zeros are holes, not written blocks
    assert Repository.open(storage, PASSWORD).verify(read_data=True).ok


def test_ten_thousand_files_round_trip(
    client: TestClient, agent: AgentClient, tmp_path: Path
) -> None:
    src = tmp_path / "many"
    for d in range(100):
        sub = src / f"d{d:03}"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"f{i:03}").write_bytes(f"{d}/{i} ".encode() * (1 + i % 7))
    _set_times(src, 1_650_000_000_000_000_000)
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, src, tmp_path / "dest")
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
            batch_size=5000,
        )
    )
    assert outcome.status is JobStatus.STOP_SUCCESS
    assert int(_report(client, outcome)["NumOfNewFiles"]) == 10_000
    target = tmp_path / "restored"
    result = restore(storage, PASSWORD, outcome.ref.job_id, target)
    assert (result.files, result.dirs) == (10_000, 101)
    assert _tree(_restored(target, src)) == _tree(os.fsencode(src))


@pytest.mark.parametrize("offset", [0, 1, HOLE_BLOCK - 1, 3 * HOLE_BLOCK])
def test_sparse_writes_are_byte_identical_whatever_the_alignment(
    tmp_path: Path, offset: int
) -> None:
    z = bytes(HOLE_BLOCK)
    pieces = [b"x" * 10, z * 3, b"y", z * 2 + b"\x00" * 100, b"z" * 5000, z, z[:-1] + b"q", z]
    data = b"".join(pieces)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        _write_sparse(fd, data[:7000], offset)
        _write_sparse(fd, data[7000:], offset + 7000)
        os.ftruncate(fd, offset + len(data))
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(offset) + data


# --- damage -----------------------------------------------------------------------------------


def test_flipped_byte_in_a_pack_is_found_by_verify_and_survived_by_restore(
    agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, rich_src, dest)
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert outcome.snapshot_id is not None
    repo = Repository.open(storage, PASSWORD)
    victim_path = os.fsencode(rich_src / "dir" / "deep" / "rand.bin")
    chunks = next(c for e, c in repo.load_snapshot(outcome.snapshot_id)[1] if e.path == victim_path)
    loc = repo.chunk_location(chunks[0])
    assert loc is not None
    pack_file = dest / "data" / loc.pack_id[:2] / loc.pack_id
    raw = bytearray(pack_file.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x01
    pack_file.write_bytes(bytes(raw))

    assert Repository.open(storage, PASSWORD).verify().ok  # structure is intact
    checked = Repository.open(storage, PASSWORD).verify(read_data=True)
    assert not checked.ok
    text = [f"{p.subject}: {[c.chunk_id for c in p.chunks]}" for p in checked.errors]
    assert any(chunks[0].hex() in t and loc.pack_id in t for t in text), text

    target = tmp_path / "restored"
    with pytest.raises(RestoreIncomplete) as caught:
        restore(storage, PASSWORD, outcome.ref.job_id, target, same_owner=True)
    assert "rand.bin" in caught.value.message
    result = caught.value.result
    assert [d.path for d in result.damaged] == [str(rich_src / "dir" / "deep" / "rand.bin")]
    assert chunks[0].hex() in result.damaged[0].message
    restored = _restored(target, rich_src)
    assert not os.path.lexists(restored + b"/dir/deep/rand.bin")  # no wrong content left
    expected = _tree(os.fsencode(rich_src), owners=ROOT)
    del expected[b"dir/deep/rand.bin"]
    assert _tree(restored, owners=ROOT) == expected
    # strict=False returns the same result instead of raising
    again = restore(storage, PASSWORD, outcome.ref.job_id, tmp_path / "again", strict=False)
    assert not again.complete and again.files == result.files


def test_damaged_snapshot_does_not_block_the_next_backup(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, rich_src, dest)
    first = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert first.snapshot_id is not None
    second = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    assert second.snapshot_id is not None
    snap_file = dest / "snapshots" / second.snapshot_id
    raw = bytearray(snap_file.read_bytes())
    raw[len(raw) // 2] ^= 0x80
    snap_file.write_bytes(bytes(raw))

    repo = Repository.open(storage, PASSWORD)
    damaged: list[VerifyProblem] = []
    assert [i.id for i in repo.list_snapshots(damaged=damaged)] == [first.snapshot_id]
    assert [p.subject for p in damaged] == [f"snapshot {second.snapshot_id}"]
    problems = repo.verify().errors
    assert any(second.snapshot_id in p.subject for p in problems)

    (rich_src / "new.txt").write_bytes(b"after the damage")
    third = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 120_000,
        )
    )
    assert third.status is JobStatus.STOP_SUCCESS_WITH_WARNING and third.snapshot_id
    data = _report(client, third)
    warns = [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]
    assert len(warns) == 1 and second.snapshot_id in warns[0]
    # Compared with the first (readable) snapshot: only the new file is new.
    assert [e["Name"] for e in data["new"]] == [str(rich_src / "new.txt")]
    restored = restore(storage, PASSWORD, third.snapshot_id, tmp_path / "restored")
    assert restored.complete


def test_damaged_snapshot_tree_falls_back_to_an_older_snapshot(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, rich_src, dest)
    first = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    (rich_src / "second.txt").write_bytes(b"only in the second backup")
    second = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    assert first.snapshot_id and second.snapshot_id
    repo = Repository.open(storage, PASSWORD)
    loc = repo.chunk_location(repo.snapshot_info(second.snapshot_id).tree[0])
    assert loc is not None
    pack = dest / "data" / loc.pack_id[:2] / loc.pack_id
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x01  # inside the tree chunk of the second snapshot
    pack.write_bytes(bytes(raw))

    third = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 120_000,
        )
    )
    assert third.status is JobStatus.STOP_SUCCESS_WITH_WARNING and third.snapshot_id
    data = _report(client, third)
    warns = [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]
    assert len(warns) == 1 and second.snapshot_id in warns[0]
    # compared with the first snapshot, the readable one: second.txt is new again
    assert [e["Name"] for e in data["new"]] == [str(rich_src / "second.txt")]
    assert restore(storage, PASSWORD, third.snapshot_id, tmp_path / "restored").complete


def test_a_lost_pack_is_stored_again_by_the_next_backup(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, rich_src, dest)
    first = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert first.snapshot_id
    packs = sorted(dest.glob("data/*/*"), key=lambda p: p.stat().st_size)
    packs[-1].unlink()  # the largest pack is lost
    second = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0 + 60_000,
        )
    )
    assert second.status is JobStatus.STOP_SUCCESS_WITH_WARNING and second.snapshot_id
    data = _report(client, second)
    warns = [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]
    assert any("1 pack missing from the destination" in w for w in warns), warns
    restored = restore(storage, PASSWORD, second.snapshot_id, tmp_path / "restored")
    assert restored.complete and restored.files > 0


# --- the server dropping off ------------------------------------------------------------------


class FlakyTransport(httpx.BaseTransport):
    """Passes requests to ``inner``; requests number ``fail`` (0-based, counted over every
    request, or only those whose path ends with ``only``) raise ``httpx.ConnectError``."""

    def __init__(self, inner: httpx.BaseTransport, fail: range, only: str = "") -> None:
        self.inner = inner
        self.fail = fail
        self.only = only
        self.calls = 0
        self.paths: list[str] = []
        self.failed: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        if not self.only or path.endswith(self.only):
            n = self.calls
            self.calls += 1
            if n in self.fail:
                self.failed.append(path)
                raise httpx.ConnectError("connection refused (test)", request=request)
        return self.inner.handle_request(request)


def _flaky_agent(
    client: TestClient, fail: range, only: str = ""
) -> tuple[AgentClient, FlakyTransport]:
    transport = FlakyTransport(client._transport, fail, only)
    return AgentClient("http://testserver", *USER, transport=transport), transport


def test_server_dropping_off_mid_job_leaves_a_committed_snapshot(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, rich_src, tmp_path / "dest")
    # get_set, start_job and the start batch pass; then the server is gone for good.
    flaky, transport = _flaky_agent(client, range(3, 10_000))
    with flaky:
        outcome = run_backup(
            job_options(
                flaky,
                set_id,
                dest_id,
                storage,
                start_time_ms=T0,
                retry_delays=NO_RETRY_WAIT,
                batch_size=5,
            )
        )
    assert outcome.status is JobStatus.STOP_SUCCESS
    assert not outcome.report_delivered and "batch 1" in outcome.report_error
    batch_tries = [p for p in transport.failed if p.endswith("/batches/1")]
    assert len(batch_tries) == 1 + len(NO_RETRY_WAIT)  # retried, then given up
    assert not any(p.endswith("/finish") for p in transport.paths)  # no lying finish
    assert outcome.snapshot_id is not None
    repo = Repository.open(storage, PASSWORD)
    assert [i.id for i in repo.list_snapshots()] == [outcome.snapshot_id]
    assert restore(storage, PASSWORD, outcome.snapshot_id, tmp_path / "restored").complete
    job = agent.get_job(outcome.ref)
    assert job.running  # the server's sweeper closes it later


def test_transient_server_failures_are_retried_and_the_report_is_whole(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, rich_src, tmp_path / "dest")
    # Batch 1 fails three times in a row, then gets through on its last retry.
    flaky, transport = _flaky_agent(client, range(0, 3), only="/batches/1")
    with flaky:
        outcome = run_backup(
            job_options(
                flaky,
                set_id,
                dest_id,
                storage,
                start_time_ms=T0,
                retry_delays=NO_RETRY_WAIT,
                batch_size=5,
                progress_interval=0,
            )
        )
    assert outcome.report_delivered and outcome.report_error == ""
    assert transport.failed == [transport.failed[0]] * 3
    assert transport.failed[0].endswith("/batches/1")
    data = _report(client, outcome)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert int(data["NumOfNewFiles"]) == sum(
        1 for p in rich_src.rglob("*") if p.is_file() and not p.is_symlink()
    )


def test_progress_and_finish_failures_never_fail_the_job(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, rich_src, tmp_path / "dest")
    progress_down, t1 = _flaky_agent(client, range(0, 10_000), only="/progress")
    with progress_down:
        first = run_backup(
            job_options(
                progress_down,
                set_id,
                dest_id,
                storage,
                start_time_ms=T0,
                retry_delays=NO_RETRY_WAIT,
                progress_interval=0,
            )
        )
    assert t1.failed and first.report_delivered
    assert first.status is JobStatus.STOP_SUCCESS
    assert _report(client, first)["BackupJobStatus"] == "BS_STOP_SUCCESS"

    finish_flaky, t2 = _flaky_agent(client, range(0, 2), only="/finish")
    with finish_flaky:
        second = run_backup(
            job_options(
                finish_flaky,
                set_id,
                dest_id,
                storage,
                start_time_ms=T0 + 60_000,
                retry_delays=NO_RETRY_WAIT,
            )
        )
    assert len(t2.failed) == 2 and second.report_delivered
    assert _report(client, second)["BackupJobStatus"] == "BS_STOP_SUCCESS"

    finish_down, _ = _flaky_agent(client, range(0, 100), only="/finish")
    with finish_down:
        third = run_backup(
            job_options(
                finish_down,
                set_id,
                dest_id,
                storage,
                start_time_ms=T0 + 120_000,
                retry_delays=NO_RETRY_WAIT,
            )
        )
    assert not third.report_delivered and third.report_error.startswith("finish")
    assert third.snapshot_id is not None and third.status is JobStatus.STOP_SUCCESS


def test_server_unreachable_at_start_fails_clearly(
    client: TestClient, agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, rich_src, tmp_path / "dest")
    down, _ = _flaky_agent(client, range(0, 100))
    with down, pytest.raises(ServerUnreachable):
        run_backup(
            job_options(
                down,
                set_id,
                dest_id,
                storage,
                start_time_ms=T0,
                retry_delays=NO_RETRY_WAIT,
            )
        )
    assert list(storage.list("snapshots/")) == []


# --- progress ---------------------------------------------------------------------------------


def test_restore_progress_ends_with_the_results_counts(
    agent: AgentClient, rich_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _storage(tmp_path / "dest")
    set_id, dest_id = _new_set(agent, rich_src, tmp_path / "dest")
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert outcome.snapshot_id is not None
    entries = list(Repository.open(storage, PASSWORD).load_snapshot(outcome.snapshot_id)[1])
    sizes = sum(e.size for e, _ in entries if e.etype is EntryType.FILE)

    monkeypatch.setattr(restore_module, "PROGRESS_INTERVAL", 0.0)  # every entry and chunk
    calls: list[RestoreProgress] = []
    result = restore(storage, PASSWORD, outcome.ref.job_id, tmp_path / "all", progress=calls.append)
    first, last = calls[0], calls[-1]
    assert (first.files, first.bytes, first.entries_done, first.finished) == (0, 0, 0, False)
    assert [c.finished for c in calls].count(True) == 1 and last.finished
    assert (last.snapshot_id, last.files, last.dirs, last.links, last.bytes) == (
        result.snapshot_id,
        result.files,
        result.dirs,
        result.links,
        result.bytes,
    )
    assert (last.entries_done, last.entries_total) == (len(entries), len(entries))
    assert (
        (last.files_total, last.bytes_total)
        == (result.files, result.bytes)
        == (sum(e.etype is EntryType.FILE for e, _ in entries), sizes)
    )
    done = [c.bytes for c in calls]
    assert done == sorted(done)  # never goes back, also within a file
    # the 64 MiB sparse file is reported chunk by chunk, not only when it is whole
    assert len({c.bytes for c in calls if c.current.endswith("/sparse.img")}) > 2

    # a selection: its totals, not the snapshot's; the interval holds back all but two calls
    monkeypatch.setattr(restore_module, "PROGRESS_INTERVAL", 1e9)
    calls.clear()
    part = restore(
        storage,
        PASSWORD,
        outcome.ref.job_id,
        tmp_path / "part",
        paths=[str(rich_src / "dir")],
        progress=calls.append,
    )
    assert [c.finished for c in calls] == [False, True]
    assert (calls[0].entries_total, calls[0].files_total) == (5, 3)  # dir, deep, 3 files
    assert (
        (calls[-1].files, calls[-1].dirs, calls[-1].bytes)
        == (part.files, part.dirs, part.bytes)
        == (3, 2, 706_000)
    )


def test_restore_progress_final_call_comes_before_restore_incomplete(
    agent: AgentClient, rich_src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    storage = _storage(dest)
    set_id, dest_id = _new_set(agent, rich_src, dest)
    outcome = run_backup(
        job_options(
            agent,
            set_id,
            dest_id,
            storage,
            start_time_ms=T0,
        )
    )
    assert outcome.snapshot_id is not None
    repo = Repository.open(storage, PASSWORD)
    victim = os.fsencode(rich_src / "dir" / "a.txt")
    chunks = next(c for e, c in repo.load_snapshot(outcome.snapshot_id)[1] if e.path == victim)
    loc = repo.chunk_location(chunks[0])
    assert loc is not None
    pack_file = dest / "data" / loc.pack_id[:2] / loc.pack_id
    raw = bytearray(pack_file.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x01
    pack_file.write_bytes(bytes(raw))

    calls: list[RestoreProgress] = []
    with pytest.raises(RestoreIncomplete) as caught:
        restore(storage, PASSWORD, outcome.ref.job_id, tmp_path / "restored", progress=calls.append)
    result, last = caught.value.result, calls[-1]
    assert last.finished and len(result.damaged) == 1
    assert (last.files, last.dirs, last.links, last.bytes) == (
        result.files,
        result.dirs,
        result.links,
        result.bytes,
    )
    assert last.files_total == last.files + 1  # the damaged file is handled, not restored
    assert last.entries_done == last.entries_total
