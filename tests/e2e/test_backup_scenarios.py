"""Scenario tests of issue 3: real trees backed up by the agent to a real ``opencbs serve``
process over real HTTP, each job's report read back with GetBackupJobReport and checked in
full — every counter of cbs-api.md §5 and the exact contents of every list (type, full paths,
original sizes, times), the log's warnings and the job's status.

Scenarios: a first backup (everything new, directories and links counted); one job with one
change of each kind; an unchanged re-run; a file that vanishes during the scan; an unreadable
file (the agent runs as uid 65534 through ``agent_driver.py`` when the tests run as root, so a
mode-000 file is really unreadable); a file that grows while it is read. The races are made
deterministic by hooks, never by sleeps: ``os.scandir`` (the scan lists a directory, then a
file goes) and the agent's reader (a file grows on its first read).

The server is one process for the module (SQLite in a temp data directory, ``--timezone UTC``);
its system user and backup user are made with the real CLI; each test makes its own backup set
through the agent API, so the job IDs of different tests never meet.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencbs import __version__
from opencbs.agent import backup as backup_mod
from opencbs.agent import reading as reading_mod
from opencbs.agent.client import AgentClient, NewDestination
from opencbs.agent.job import JobOptions, JobOutcome, run_backup
from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from opencbs.engine.scan import Scan
from tests.e2e.serving import TIMEOUT, add_sysuser, add_user, serving

DRIVER = Path(__file__).with_name("agent_driver.py")
SYSUSER = ("scenarios", "scenarios-pw")
LOGIN = ("carol", "carol-secret")
REPO_PASSWORD = "scenario repository password"
T0 = 1_719_408_275_000  # 2024-06-26 13:24:35 UTC: the first job of each set; then +1 min each
M0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC: file mtimes (seconds), one apart
NOBODY = 65534
NON_UTF8 = b"caf\xe9.txt"

#: Every key of §5's ``Data`` (the arrays included).
REPORT_KEYS = (
    "ID FromIp SuccessDatabase MissedDatabase SuccessPublicFolder MissedPublicFolder Logs "
    "NumOfNewFiles NumOfNewDirCount NumOfNewLinkDirCount NumOfNewLinkFileCount "
    "NumOfDeletedDirCount NumOfDeletedLinkFileCount TotalNewFilesSize TotalUnzipNewFilesSize "
    "NewFilesZipRatio NumOfUpdatedFiles TotalUpdatedFilesSize TotalUnzipUpdatedFilesSize "
    "UpdatedFilesZipRatio UpdatedFilesZipRation NumOfUpdatedPermissionFiles "
    "TotalUpdatedPermissionFilesSize TotalUnzipUpdatedPermissionFilesSize "
    "UpdatedPermissionFilesZipRatio NumOfDeletedFiles TotalDeletedFilesSize "
    "TotalUnzipDeletedFilesSize DeletedFilesZipRatio NumOfMovedFiles TotalMovedFilesSize "
    "TotalUnzipMovedFilesSize MovedFilesZipRatio NumOfCopiedFiles TotalCopiedSize "
    "TotalUnzipCopiedFilesSize CopiedFilesZipRatio StartTime EndTime BackupJobStatus "
    "NumOfWarnEntries NumOfErrorEntries DedupeEnabled DedupeOriginalSize DedupeSaving "
    "info new upd pmt del mov cpy"
).split()

#: Per file list: its count keys by entry type, then its size, original size and ratio keys.
LIST_KEYS: dict[str, tuple[dict[str, str], str, str, str]] = {
    "new": (
        {
            "F": "NumOfNewFiles",
            "D": "NumOfNewDirCount",
            "LF": "NumOfNewLinkFileCount",
            "LD": "NumOfNewLinkDirCount",
        },
        "TotalNewFilesSize",
        "TotalUnzipNewFilesSize",
        "NewFilesZipRatio",
    ),
    "upd": (
        {"*": "NumOfUpdatedFiles"},
        "TotalUpdatedFilesSize",
        "TotalUnzipUpdatedFilesSize",
        "UpdatedFilesZipRatio",
    ),
    "pmt": (
        {"*": "NumOfUpdatedPermissionFiles"},
        "TotalUpdatedPermissionFilesSize",
        "TotalUnzipUpdatedPermissionFilesSize",
        "UpdatedPermissionFilesZipRatio",
    ),
    "del": (
        {
            "F": "NumOfDeletedFiles",
            "D": "NumOfDeletedDirCount",
            "LF": "NumOfDeletedLinkFileCount",
            "LD": "NumOfDeletedLinkFileCount",
        },
        "TotalDeletedFilesSize",
        "TotalUnzipDeletedFilesSize",
        "DeletedFilesZipRatio",
    ),
    "mov": (
        {"*": "NumOfMovedFiles"},
        "TotalMovedFilesSize",
        "TotalUnzipMovedFilesSize",
        "MovedFilesZipRatio",
    ),
    "cpy": (
        {"*": "NumOfCopiedFiles"},
        "TotalCopiedSize",
        "TotalUnzipCopiedFilesSize",
        "CopiedFilesZipRatio",
    ),
}


# --- the server: a real process ---------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    store_args: tuple[str, ...]  # --data-dir and --database-url of the CLI commands
    env: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``opencbs serve`` on a free port, its users made with ``opencbs sysuser add`` and
    ``opencbs user add``; killed at the end of the module."""
    root = tmp_path_factory.mktemp("scenario-server")
    data = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBS_")}
    env.update(HOME=str(root), XDG_CONFIG_HOME=str(root / ".config"))
    data.mkdir()  # with an explicit --database-url the CLI does not create it (exit 70)
    store = ("--data-dir", str(data), "--database-url", f"sqlite:///{data / 'opencbs.db'}")
    add_sysuser(env, SYSUSER[0], SYSUSER[1], "--role", "admin", *store)
    add_user(env, LOGIN[0], LOGIN[1], *store)
    with serving(env, "--timezone", "UTC", *store) as srv:
        yield Server(srv.url, store, env)


@pytest.fixture
def agent(server: Server) -> Iterator[AgentClient]:
    with AgentClient(server.url, *LOGIN) as client:
        yield client


# --- trees, sets, jobs and reports ------------------------------------------------------------


class Tree:
    """A source folder; paths relative to it, files with fixed mtimes (one second apart)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tick = 0
        root.mkdir(parents=True)
        root.chmod(0o755)

    def path(self, rel: str | bytes) -> bytes:
        return os.fsencode(self.root) + b"/" + os.fsencode(rel)

    def put(self, rel: str | bytes, data: bytes, mode: int = 0o644) -> None:
        path = self.path(rel)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        self._tick += 1
        os.utime(path, (M0 + self._tick, M0 + self._tick))

    def mkdir(self, rel: str) -> None:
        os.mkdir(self.path(rel), 0o755)

    def entry(self, rel: str | bytes) -> tuple[str, str, int, str]:
        """What the report must show of the path as it is now: (Type, display path relative to
        the tree's parent, original bytes, LastModified)."""
        st = os.lstat(self.path(rel))
        if stat.S_ISREG(st.st_mode):
            etype, size = "F", st.st_size
        elif stat.S_ISLNK(st.st_mode):  # a link's data is its target (cbs-api.md §5)
            etype, size = "L", st.st_size
        else:
            etype, size = "D", 0
        return etype, self.rel_name(rel), size, _report_time(st.st_mtime_ns // 1_000_000)

    def rel_name(self, rel: str | bytes) -> str:
        """The path as the report shows it, relative to the tree's parent (``src/a.txt``)."""
        name = os.fsencode(rel).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
        return f"{self.root.name}/{name}" if name else self.root.name

    def source(self) -> tuple[str, str, int, str]:
        st = os.lstat(self.root)
        return "D", self.root.name, 0, _report_time(st.st_mtime_ns // 1_000_000)


def _report_time(ms: int) -> str:
    """``LastModified`` of a time (epoch ms) in UTC (cbs-api.md §4)."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y/%m/%d %H:%M:%S")


def _ratio(stored: int, unzipped: int) -> str:
    """The ratio rule of cbs-api.md §4, written again here so the server's is checked."""
    if unzipped <= 0:
        return "0%"
    return f"{min(100, max(0, (unzipped - stored) * 100 // unzipped))}%"


@dataclass
class BackupSet:
    set_id: str
    dest_id: str
    dest: Path
    storage: LocalStorage


def _new_set(agent: AgentClient, tree: Tree, dest: Path) -> BackupSet:
    """A set of one source through the agent API, and its repository (a cheap KDF)."""
    bset = agent.create_set(
        f"scenario {tree.root}",
        settings={"sources": [str(tree.root)]},
        destinations=[NewDestination("Local", "LOCAL", {"path": str(dest)})],
    )
    storage = LocalStorage(dest, fsync=False)
    Repository.init(storage, REPO_PASSWORD, kdf=KdfParams(1, 8 * 1024, 1))
    return BackupSet(bset.id, bset.destinations[0].id, dest, storage)


def _backup(agent: AgentClient, bs: BackupSet, job_no: int) -> JobOutcome:
    return run_backup(
        JobOptions(
            client=agent,
            set_id=bs.set_id,
            destination_id=bs.dest_id,
            storage=bs.storage,
            password=REPO_PASSWORD,
            start_time_ms=T0 + job_no * 60_000,
        )
    )


def _report(server: Server, bs: BackupSet, job_id: str) -> dict[str, Any]:
    r = httpx.post(
        server.url + "/obs/api/json/GetBackupJobReport.do",
        timeout=TIMEOUT,
        json={
            "SysUser": SYSUSER[0],
            "SysPwd": SYSUSER[1],
            "LoginName": LOGIN[0],
            "BackupSetID": bs.set_id,
            "DestinationID": bs.dest_id,
            "BackupJobID": job_id,
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["Status"] == "OK", body
    data: dict[str, Any] = body["Data"]
    return data


Row = tuple[Any, ...]


def _rows(data: dict[str, Any], key: str, tree: Tree) -> list[Row]:
    """A report list as sorted tuples: ``(Type, Name, UnzipFilesSize, LastModified)``; copies
    ``(Type, Name, FromFile, …)``; moves ``(Type, FromFile, ToFile, …)``; paths relative to the
    tree's parent. Checks each entry's own sizes and ratio on the way."""
    base = str(tree.root.parent) + "/"

    def rel(p: str) -> str:
        assert p.startswith(base), p
        return p[len(base) :]

    rows: list[Row] = []
    for e in data[key]:
        _check_entry_sizes(e)
        tail = (int(e["UnzipFilesSize"]), e["LastModified"])
        if key == "mov":
            assert set(e) == {
                "Type",
                "LastModified",
                "FromFile",
                "ToFile",
                "FileSize",
                "UnzipFilesSize",
                "Ratio",
            }
            rows.append((e["Type"], rel(e["FromFile"]), rel(e["ToFile"]), *tail))
        elif key == "cpy":
            rows.append((e["Type"], rel(e["Name"]), rel(e["FromFile"]), *tail))
        else:
            assert set(e) == {"Type", "LastModified", "Name", "FileSize", "UnzipFilesSize", "Ratio"}
            rows.append((e["Type"], rel(e["Name"]), *tail))
    return sorted(rows)


def _check_entry_sizes(e: dict[str, Any]) -> None:
    stored, original = int(e["FileSize"]), int(e["UnzipFilesSize"])
    if e["Type"] == "F":
        assert (stored > 0) == (original > 0), e  # content stored, compressed or raw
    elif e["Type"] == "L":  # a link's data is its target, kept as is (cbs-api.md §5)
        assert stored == original > 0, e
    else:
        assert stored == original == 0, e  # directories carry no content
    assert e["Ratio"] == _ratio(stored, original), e


@dataclass
class Expected:
    """What a job's report must hold: each list's rows (``_rows`` shape), link kinds for the
    counters (path → ``LF``/``LD``), warnings (path, phrase) and dedupe figures (bytes)."""

    new: list[Row]
    upd: list[Row]
    pmt: list[Row]
    dele: list[Row]
    mov: list[Row]
    cpy: list[Row]
    links: dict[str, str]
    warnings: list[tuple[str, str]]
    status: str
    dedupe_original: int
    dedupe_saving: int | None = None  # None: not predictable (chunk boundaries)


def _nothing(**kw: Any) -> Expected:
    base: dict[str, Any] = dict(
        new=[],
        upd=[],
        pmt=[],
        dele=[],
        mov=[],
        cpy=[],
        links={},
        warnings=[],
        status="BS_STOP_SUCCESS",
        dedupe_original=0,
        dedupe_saving=0,
    )
    base.update(kw)
    return Expected(**base)


def _check_report(
    data: dict[str, Any],
    job_id: str,
    tree: Tree,
    exp: Expected,
    outcome_warnings: int | None = None,
) -> None:
    """The whole report against ``exp``: keys, lists, every counter, logs, status, dedupe."""
    assert [k for k in REPORT_KEYS if k not in data] == []
    assert data["ID"] == job_id
    assert data["FromIp"] == "127.0.0.1"
    assert data["BackupJobStatus"] == exp.status
    assert data["EndTime"] != "" and data["StartTime"] != ""
    lists = {
        "new": exp.new,
        "upd": exp.upd,
        "pmt": exp.pmt,
        "del": exp.dele,
        "mov": exp.mov,
        "cpy": exp.cpy,
    }
    for key, rows in lists.items():
        assert _rows(data, key, tree) == sorted(rows), key
        _check_counters(data, key, rows, exp.links)
    assert data["UpdatedFilesZipRation"] == data["UpdatedFilesZipRatio"]
    # the log: start line naming the agent, end line last, the warnings naming their paths
    logs = data["Logs"]
    assert logs == data["info"]
    assert (logs[0]["Type"], logs[0]["Message"]) == ("start", f"Start [opencbs {__version__}]")
    assert logs[-1]["Type"] == "end" and exp.status in logs[-1]["Message"]
    assert all(e["Type"] == e["LogType"] for e in logs)
    warns = [e["Message"] for e in logs if e["Type"] == "warn"]
    assert len(warns) == len(exp.warnings), warns
    for message, (rel, phrase) in zip(sorted(warns), sorted(exp.warnings), strict=True):
        assert message.startswith(str(tree.root.parent) + "/" + rel + ": "), (message, rel)
        assert phrase in message, (message, phrase)
    assert data["NumOfWarnEntries"] == len(exp.warnings)
    assert data["NumOfErrorEntries"] == 0 == sum(1 for e in logs if e["Type"] == "error")
    if outcome_warnings is not None:
        assert outcome_warnings == len(exp.warnings)
    assert data["DedupeEnabled"] is True
    assert data["DedupeOriginalSize"] == exp.dedupe_original
    if exp.dedupe_saving is not None:
        assert data["DedupeSaving"] == exp.dedupe_saving


def _check_counters(data: dict[str, Any], key: str, rows: list[Row], links: dict[str, str]) -> None:
    """The counts of list ``key`` by type, exactly; its sizes are the sums of its entries."""
    count_keys, size_key, unzip_key, ratio_key = LIST_KEYS[key]
    expected: dict[str, int] = dict.fromkeys(count_keys.values(), 0)
    for row in rows:
        kind = row[0] if row[0] != "L" else links[row[1]]
        expected[count_keys.get(kind, count_keys.get("*", ""))] += 1
    assert {k: data[k] for k in expected} == expected, key
    stored = sum(int(e["FileSize"]) for e in data[key])
    unzipped = sum(row[-2] for row in rows)
    assert (data[size_key], data[unzip_key]) == (stored, unzipped), key
    assert data[ratio_key] == _ratio(stored, unzipped), key


# --- the first, changed and unchanged jobs ----------------------------------------------------


def _first_tree(tree: Tree) -> None:
    """Distinct contents (no copy in the first job), an empty file, a file too large for one
    read and of random bytes, links to a file and to a directory, a non-UTF-8 name."""
    tree.mkdir("sub")
    tree.mkdir("old")
    tree.put("a.txt", b"alpha " * 100)
    tree.put("b.txt", b"bravo content")
    tree.put("empty", b"")
    tree.put("ren.txt", b"to be renamed in place")
    tree.put("mv.txt", b"to be moved to another directory")
    tree.put("exec.sh", b"#!/bin/sh\necho hi\n", mode=0o751)
    tree.put("sub/c.bin", os.urandom(1_500_000))
    tree.put("sub/d.txt", b"delta, deleted in job 2")
    tree.put("old/x.txt", b"x of old")
    tree.put("old/y.txt", b"y of old")
    tree.put(NON_UTF8, b"latin-1 name")
    os.symlink(b"a.txt", tree.path("link"))
    os.symlink(b"sub", tree.path("dirlink"))
    for d in ("sub", "old"):  # directory mtimes fixed too, after their contents
        os.utime(tree.path(d), (M0 + 100, M0 + 100))


def test_first_then_one_of_each_change_then_unchanged(
    server: Server, agent: AgentClient, tmp_path: Path
) -> None:
    tree = Tree(tmp_path / "src")
    _first_tree(tree)
    bs = _new_set(agent, tree, tmp_path / "dest")

    # Job 1: everything is new — the source folder, its directories and links included.
    files: list[str | bytes] = [
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
        NON_UTF8,
    ]
    new = [tree.source(), *(tree.entry(p) for p in [*files, "sub", "old", "link", "dirlink"])]
    first = _backup(agent, bs, 0)
    assert first.status.value == "BS_STOP_SUCCESS" and first.snapshot_id is not None
    data = _report(server, bs, first.ref.job_id)
    total = sum(row[2] for row in new if row[0] == "F")  # content read (not link targets)
    _check_report(
        data,
        first.ref.job_id,
        tree,
        _nothing(new=new, links={"src/link": "LF", "src/dirlink": "LD"}, dedupe_original=total),
    )
    assert (
        data["NumOfNewFiles"],
        data["NumOfNewDirCount"],
        data["NumOfNewLinkFileCount"],
        data["NumOfNewLinkDirCount"],
    ) == (11, 3, 1, 1)
    assert data["StartTime"] == "2024-06-26 13:24:35"
    sizes = {e["Name"].rpartition("/")[2]: e for e in data["new"]}
    assert int(sizes["a.txt"]["FileSize"]) < 600  # compressed
    assert int(sizes["c.bin"]["FileSize"]) >= 1_500_000  # random: stored raw

    # Job 2: one content update, one chmod, one delete, one rename in place, one move to
    # another directory, one copy, one new directory, one deleted directory with files and one
    # symlink added.
    deleted = [tree.entry(p) for p in ("sub/d.txt", "old", "old/x.txt", "old/y.txt")]
    renamed, moved = tree.entry("ren.txt"), tree.entry("mv.txt")
    tree.put("a.txt", b"alpha changed " * 70)  # upd
    os.chmod(tree.path("b.txt"), 0o600)  # pmt
    os.unlink(tree.path("sub/d.txt"))  # del F
    os.rename(tree.path("ren.txt"), tree.path("ren2.txt"))  # mov, same dir
    os.rename(tree.path("mv.txt"), tree.path("sub/mv.txt"))  # mov, other dir
    shutil.copy2(tree.path("sub/c.bin"), tree.path("c-copy.bin"))  # cpy
    tree.mkdir("newdir")  # new D
    shutil.rmtree(tree.path("old"))  # del D + 2 F
    os.symlink(b"b.txt", tree.path("link2"))  # new L
    new_a = len(b"alpha changed " * 70)
    read = (
        new_a
        + len(b"to be renamed in place")
        + len(b"to be moved to another directory")
        + 1_500_000
    )  # ren2, sub/mv, c-copy read; b.txt read again too, but its content is the same: no
    # upload to dedupe (cbs-api.md §5: new and updated content)
    second = _backup(agent, bs, 1)
    assert second.status.value == "BS_STOP_SUCCESS"
    data = _report(server, bs, second.ref.job_id)
    _check_report(
        data,
        second.ref.job_id,
        tree,
        _nothing(
            new=[tree.entry("newdir"), tree.entry("link2")],
            upd=[tree.entry("a.txt")],
            pmt=[tree.entry("b.txt")],
            dele=deleted,
            mov=[
                ("F", renamed[1], tree.rel_name("ren2.txt"), *renamed[2:]),
                ("F", moved[1], tree.rel_name("sub/mv.txt"), *moved[2:]),
            ],
            cpy=[("F", "src/c-copy.bin", "src/sub/c.bin", *tree.entry("c-copy.bin")[2:])],
            links={"src/link2": "LF"},
            dedupe_original=read,
            dedupe_saving=read - new_a,
        ),
    )
    assert (data["NumOfDeletedFiles"], data["NumOfDeletedDirCount"]) == (3, 1)

    # Job 3: nothing changed — nothing reported, nothing read.
    third = _backup(agent, bs, 2)
    data = _report(server, bs, third.ref.job_id)
    _check_report(data, third.ref.job_id, tree, _nothing())


# --- a file that vanishes during the scan -----------------------------------------------------


class _Listing:
    """What ``os.scandir`` returns, over a listing taken already."""

    def __init__(self, entries: list[os.DirEntry[bytes]]) -> None:
        self._entries = entries

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self) -> Iterator[os.DirEntry[bytes]]:
        return iter(self._entries)


def _remove_after_listing(
    monkeypatch: pytest.MonkeyPatch, directory: bytes, victims: list[bytes]
) -> list[bytes]:
    """Make ``os.scandir(directory)`` list the directory, then remove ``victims``: they vanish
    between the listing and their ``lstat``. Returns the victims removed so far."""
    real = os.scandir
    removed: list[bytes] = []
    # the scan runs in this process, where the patched scandir is (not in its helper process)
    monkeypatch.setattr(backup_mod, "ScanProcess", Scan)

    def scandir(path: Any = ".") -> Any:
        if path != directory or removed:
            return real(path)
        with real(path) as it:
            listing = list(it)
        for victim in victims:
            os.unlink(victim)
            removed.append(victim)
        return _Listing(listing)

    monkeypatch.setattr(os, "scandir", scandir)
    return removed


def test_files_vanishing_during_the_scan_are_warnings_and_a_backed_up_one_is_deleted(
    server: Server, agent: AgentClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = Tree(tmp_path / "src")
    tree.mkdir("v")
    tree.put("v/a.txt", b"stays")
    tree.put("v/b.txt", b"vanishes in job 2, was backed up in job 1")
    tree.put("v/z.txt", b"stays too")
    bs = _new_set(agent, tree, tmp_path / "dest")
    first = _backup(agent, bs, 0)
    assert first.status.value == "BS_STOP_SUCCESS"

    tree.put("v/c.txt", b"new in job 2, vanishes before it is backed up")
    gone_b = tree.entry("v/b.txt")
    removed = _remove_after_listing(
        monkeypatch, tree.path("v"), [tree.path("v/b.txt"), tree.path("v/c.txt")]
    )
    second = _backup(agent, bs, 1)
    monkeypatch.undo()
    assert len(removed) == 2  # the hook did run
    assert second.status.value == "BS_STOP_SUCCESS_WITH_WARNING"
    data = _report(server, bs, second.ref.job_id)
    vanished = "vanished during the scan"
    _check_report(
        data,
        second.ref.job_id,
        tree,
        _nothing(
            status="BS_STOP_SUCCESS_WITH_WARNING",
            dele=[gone_b],
            warnings=[("src/v/b.txt", vanished), ("src/v/c.txt", vanished)],
        ),
        second.warnings,
    )

    # The deletion was reported once: the next job finds nothing to report.
    third = _backup(agent, bs, 2)
    data = _report(server, bs, third.ref.job_id)
    _check_report(data, third.ref.job_id, tree, _nothing())


# --- special files: named in warnings, never silent (issue 15, point 3) -----------------------


def test_fifos_sockets_and_devices_are_each_a_warning_not_backed_up(
    server: Server, agent: AgentClient, tmp_path: Path
) -> None:
    tree = Tree(tmp_path / "src")
    tree.put("plain.txt", b"a regular file")
    os.mkfifo(tree.path("pipe"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    expected = [("src/pipe", "a FIFO (named pipe): not backed up")]
    try:
        sock.bind(os.fsdecode(tree.path("sock")))
        expected.append(("src/sock", "a socket: not backed up"))
        if os.geteuid() == 0:  # making a device file takes root
            os.mknod(tree.path("null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
            expected.append(("src/null", "a character device: not backed up"))
        bs = _new_set(agent, tree, tmp_path / "dest")
        first = _backup(agent, bs, 0)
    finally:
        sock.close()
    assert first.status.value == "BS_STOP_SUCCESS_WITH_WARNING"
    data = _report(server, bs, first.ref.job_id)
    _check_report(
        data,
        first.ref.job_id,
        tree,
        _nothing(
            status="BS_STOP_SUCCESS_WITH_WARNING",
            new=[tree.source(), tree.entry("plain.txt")],
            warnings=expected,
            dedupe_original=len(b"a regular file"),
        ),
        first.warnings,
    )


# --- a file that grows while it is read -------------------------------------------------------


def _grow_on_first_read(monkeypatch: pytest.MonkeyPatch, victims: dict[bytes, bytes]) -> set[bytes]:
    """Make the agent's reader append ``victims[path]`` to ``path`` just before the first read
    of it: the file grows while it is read. Returns the paths grown so far."""
    by_inode = {(os.stat(p).st_dev, os.stat(p).st_ino): p for p in victims}
    grown: set[bytes] = set()
    original = reading_mod._CancellableReader.read

    def read(self: reading_mod._CancellableReader, size: int = -1) -> bytes:
        st = os.fstat(self.fd)
        path = by_inode.get((st.st_dev, st.st_ino))
        if path is not None and path not in grown:
            grown.add(path)
            with open(path, "ab") as f:
                f.write(victims[path])
        return original(self, size)

    monkeypatch.setattr(reading_mod._CancellableReader, "read", read)
    return grown


def test_files_growing_while_read_are_warnings_and_backed_up_as_read(
    server: Server, agent: AgentClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = Tree(tmp_path / "src")
    tree.put("g.log", b"line 1\n")
    tree.put("steady.txt", b"steady")
    bs = _new_set(agent, tree, tmp_path / "dest")
    first = _backup(agent, bs, 0)
    assert first.status.value == "BS_STOP_SUCCESS"

    tree.put("g.log", b"line 1\nline 2\n")  # updated: read in job 2, grows meanwhile
    tree.put("h.log", b"new log\n")  # new: read in job 2, grows meanwhile
    g, h = tree.entry("g.log"), tree.entry("h.log")  # as the read begins
    grown = _grow_on_first_read(
        monkeypatch, {tree.path("g.log"): b"line 3\n", tree.path("h.log"): b"more\n"}
    )
    second = _backup(agent, bs, 1)
    monkeypatch.undo()
    assert grown == {tree.path("g.log"), tree.path("h.log")}
    assert second.status.value == "BS_STOP_SUCCESS_WITH_WARNING"
    data = _report(server, bs, second.ref.job_id)
    changed = "changed while it was read (it grew"
    # Backed up as read, up to their sizes when the read began (what they were when opened).
    _check_report(
        data,
        second.ref.job_id,
        tree,
        _nothing(
            upd=[g],
            new=[h],
            status="BS_STOP_SUCCESS_WITH_WARNING",
            warnings=[("src/g.log", changed), ("src/h.log", changed)],
            dedupe_original=14 + 8,
            dedupe_saving=0,
        ),
        second.warnings,
    )

    # They grew since: updated, the whole of them now that they are still.
    third = _backup(agent, bs, 2)
    data = _report(server, bs, third.ref.job_id)
    g, h = tree.entry("g.log"), tree.entry("h.log")
    assert (g[2], h[2]) == (21, 13)
    _check_report(
        data,
        third.ref.job_id,
        tree,
        _nothing(upd=[g, h], dedupe_original=21 + 13, dedupe_saving=0),
    )


# --- an unreadable file: the agent as an unprivileged user ------------------------------------


def _as_unprivileged() -> list[str]:
    """The command prefix that runs a program as uid/gid 65534 (root), or ``[]`` when the
    tests already run unprivileged (mode 000 then suffices)."""
    if os.geteuid() != 0:
        return []
    setpriv, runuser = shutil.which("setpriv"), shutil.which("runuser")
    if setpriv:
        return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if runuser:
        return [runuser, "-u", "nobody", "--"]
    pytest.fail(
        "running as root, but neither setpriv nor runuser is installed: the "
        "unreadable-file scenario cannot drop privileges (install util-linux)"
    )


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own temp directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="opencbs-e2e-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _driver(
    server: Server, bs: BackupSet, job_no: int, prefix: list[str], home: Path
) -> dict[str, Any]:
    """``agent_driver.py`` run as a process (as ``prefix`` says); its JSON outcome."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENCBS_E2E_PASSWORD": LOGIN[1],
        "OPENCBS_E2E_REPO_PASSWORD": REPO_PASSWORD,
    }
    res = subprocess.run(
        [
            *prefix,
            sys.executable,
            str(DRIVER),
            server.url,
            LOGIN[0],
            bs.set_id,
            bs.dest_id,
            str(bs.dest),
            str(T0 + job_no * 60_000),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert res.returncode == 0, (res.stdout, res.stderr)
    outcome: dict[str, Any] = json.loads(res.stdout)
    return outcome


def _usable_by(prefix: list[str], home: Path) -> None:
    """Fail clearly when the unprivileged user cannot run the venv's Python with opencbs."""
    if not prefix:
        return
    res = subprocess.run(
        [*prefix, sys.executable, "-c", "import opencbs.agent.job"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if res.returncode != 0:
        pytest.fail(
            f"uid {NOBODY} cannot import opencbs from {sys.prefix} (make the venv and "
            f"its base interpreter readable by all users): {res.stderr.strip()[-300:]}"
        )


def test_an_unreadable_file_is_a_warning_naming_it(
    server: Server, agent: AgentClient, open_dir: Path
) -> None:
    prefix = _as_unprivileged()
    home = open_dir / "home"
    home.mkdir()
    _usable_by(prefix, home)
    tree = Tree(open_dir / "src")
    tree.mkdir("sub")
    tree.put("ok.txt", b"readable")
    tree.put("secret.txt", b"nobody may read this", mode=0o000)
    tree.put("sub/ok2.txt", b"readable too")
    os.utime(tree.path("sub"), (M0 + 100, M0 + 100))
    bs = _new_set(agent, tree, open_dir / "dest")
    if prefix:
        for path in (home, bs.dest, *bs.dest.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
    expected_new = [
        tree.source(),
        tree.entry("ok.txt"),
        tree.entry("sub"),
        tree.entry("sub/ok2.txt"),
    ]

    first = _driver(server, bs, 0, prefix, home)
    assert first["status"] == "BS_STOP_SUCCESS_WITH_WARNING", first
    assert first["snapshot_id"] is not None and first["warnings"] == 1
    data = _report(server, bs, first["job_id"])
    _check_report(
        data,
        first["job_id"],
        tree,
        _nothing(
            status="BS_STOP_SUCCESS_WITH_WARNING",
            new=expected_new,
            warnings=[("src/secret.txt", "Permission denied")],
            dedupe_original=len(b"readable") + len(b"readable too"),
        ),
    )

    # Readable again: the file is backed up as new, and nothing else is reported.
    os.chmod(tree.path("secret.txt"), 0o644)
    second = _driver(server, bs, 1, prefix, home)
    assert second["status"] == "BS_STOP_SUCCESS", second
    data = _report(server, bs, second["job_id"])
    _check_report(
        data,
        second["job_id"],
        tree,
        _nothing(new=[tree.entry("secret.txt")], dedupe_original=len(b"nobody may read this")),
    )

    # chmod 000 on the file now backed up: its content cannot be read (a warning) and its
    # permissions changed (a pmt entry); the snapshot keeps its content as last stored
    os.chmod(tree.path("secret.txt"), 0o000)
    third = _driver(server, bs, 2, prefix, home)
    assert third["status"] == "BS_STOP_SUCCESS_WITH_WARNING", third
    data = _report(server, bs, third["job_id"])
    _check_report(
        data,
        third["job_id"],
        tree,
        _nothing(
            status="BS_STOP_SUCCESS_WITH_WARNING",
            pmt=[tree.entry("secret.txt")],
            warnings=[("src/secret.txt", "Permission denied")],
        ),
    )
