"""Hard links, for real (issue 15, point 1): a tree of 1,000 hard-linked pairs backed up by
``opencbs backup`` to a real repository through a real ``opencbs serve``, then restored by
``opencbs restore``.

What must hold: the content is read and stored once (the repository grows by one copy of it;
the job examined each file once), the job report lists both names of each file as new files,
the second with no stored bytes, a job after it with nothing changed reports nothing, the
restore gives back 1,000 files of two names each (``st_nlink == 2``) with the same bytes, and
``opencbs verify`` and ``opencbs snapshots`` read the snapshots. A later job that makes a path
another name of a file, or adds a name, reports each sensibly (cbs-api.md §5, "Hard links").
A link that cannot be made at restore (the first name replaced meanwhile) is a warning and a
copy, never a link to something else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencbs.agent import restore as restore_mod
from opencbs.agent.client import AgentClient, NewDestination
from opencbs.agent.job import JobOptions, JobOutcome, run_backup
from opencbs.agent.restore import RestoreProgress, restore
from opencbs.destinations.local import LocalStorage
from opencbs.engine import snapshot_format
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from tests.e2e.serving import (
    TIMEOUT,
    add_sysuser,
    add_user,
    agent_env,
    isolated_env,
    ok,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "hana", "hana-password", "hard links secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-password"}
PAIRS = 1000
SIZE = 16 << 10  # bytes of each file: random, so compression changes little
LISTS = ("new", "upd", "pmt", "del", "mov", "cpy")


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]  # the agent's environment: server, login, passwords


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hard-links")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env) as srv:
        yield Server(
            srv.url,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
        )


def _repository(dest: Path) -> None:
    """A repository in ``dest`` with a cheap key derivation (each CLI command derives it)."""
    Repository.init(LocalStorage(dest, fsync=False), ENCRYPTION, kdf=KdfParams(1, 8 * 1024, 1))


def _backup(srv: Server, *args: str) -> dict[str, Any]:
    res = run(srv.env, "backup", *args, "--json")
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    job: dict[str, Any] = json.loads(res.stdout)
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


def _files(data: dict[str, Any], key: str) -> dict[str, tuple[int, int]]:
    """The regular files of report list ``key``: name → (stored bytes, original bytes)."""
    return {
        e["Name"]: (int(e["FileSize"]), int(e["UnzipFilesSize"]))
        for e in data[key]
        if e["Type"] == "F"
    }


def _stored_bytes(dest: Path) -> int:
    """Bytes of the repository's pack files (content and snapshot trees)."""
    return sum(p.stat().st_size for p in (dest / "data").rglob("*") if p.is_file())


def _pairs_tree(src: Path) -> list[bytes]:
    """``src/a/fNNNN`` and ``src/b/fNNNN``: two names of each of ``PAIRS`` files of random
    content; their contents."""
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    contents = []
    for i in range(PAIRS):
        data = os.urandom(SIZE)
        (src / "a" / f"f{i:04}").write_bytes(data)
        os.link(src / "a" / f"f{i:04}", src / "b" / f"f{i:04}")
        contents.append(data)
    return contents


def test_a_thousand_hard_linked_pairs_are_stored_once_reported_and_restored_as_links(
    server: Server, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    contents = _pairs_tree(src)
    _repository(dest)
    empty = _stored_bytes(dest)
    first = _backup(server, "--set", "pairs", "--source", str(src), "--destination", str(dest))
    assert first["status"] == "BS_STOP_SUCCESS", first

    # Stored once: the repository grew by one copy of the content (plus the tree's records).
    content = PAIRS * SIZE
    grown = _stored_bytes(dest) - empty
    assert content <= grown < content + content // 20, (grown, content)

    # Reported: 2,000 new files (each name is a path), the second names with nothing stored;
    # each file's content examined once.
    data = _report(server, first)
    new = _files(data, "new")
    firsts = {str(src / "a" / f"f{i:04}") for i in range(PAIRS)}
    seconds = {str(src / "b" / f"f{i:04}") for i in range(PAIRS)}
    assert set(new) == firsts | seconds
    assert all(new[n][0] >= SIZE and new[n][1] == SIZE for n in firsts)
    assert all(new[n] == (0, SIZE) for n in seconds)
    assert data["NumOfNewFiles"] == 2 * PAIRS and data["NumOfNewDirCount"] == 3  # src, a, b
    assert data["NumOfCopiedFiles"] == 0 and data["cpy"] == []
    assert data["TotalUnzipNewFilesSize"] == 2 * content
    assert data["TotalNewFilesSize"] == sum(new[n][0] for n in firsts)
    assert data["DedupeOriginalSize"] == content and data["DedupeSaving"] == 0

    # A second job, nothing changed: nothing reported, nothing read, nothing stored.
    before = _stored_bytes(dest)
    second = _backup(server, "--set", "pairs")
    data = _report(server, second)
    assert second["status"] == data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert all(data[key] == [] for key in LISTS), {k: data[k][:3] for k in LISTS}
    assert data["DedupeOriginalSize"] == 0
    assert _stored_bytes(dest) - before < content // 100  # a snapshot tree, no content

    # verify and snapshots read them
    checked = run(server.env, "verify", "--destination", str(dest), "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("ok: 2 snapshots")
    listed = json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json"))
    assert [s["job_id"] for s in listed] == [first["job_id"], second["job_id"]]

    # Restored as links: 1,000 files of two names each, with the same bytes.
    target = tmp_path / "restored"
    ok(server.env, "restore", first["job_id"], "--destination", str(dest), "--target", str(target))
    root = target / src.relative_to("/")
    for i, data_i in enumerate(contents):
        a, b = (root / "a" / f"f{i:04}").stat(), (root / "b" / f"f{i:04}").stat()
        assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), i
        assert a.st_nlink == 2
        assert (root / "b" / f"f{i:04}").read_bytes() == data_i
    inodes = {(root / "a" / f"f{i:04}").stat().st_ino for i in range(PAIRS)}
    assert len(inodes) == PAIRS


def test_making_and_adding_names_later_is_reported_as_what_it_is(
    server: Server, tmp_path: Path
) -> None:
    """``ln -f x1 x2`` (two files of equal content become one): x2 ``pmt``, x1 not reported;
    a new name of a file backed up before: ``new`` with nothing stored, never a copy."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    same = os.urandom(SIZE)
    for name in ("x1", "x2"):
        (src / name).write_bytes(same)
    (src / "solo").write_bytes(os.urandom(SIZE))
    _repository(dest)
    first = _backup(server, "--set", "later", "--source", str(src), "--destination", str(dest))
    assert _report(server, first)["NumOfCopiedFiles"] == 1  # x2: equal content, not a link

    os.unlink(src / "x2")
    os.link(src / "x1", src / "x2")
    os.link(src / "solo", src / "solo-too")
    data = _report(server, _backup(server, "--set", "later"))
    # x2's content was read at x1 (earlier in walk order): counted there, so 0 stored here
    assert _files(data, "pmt") == {str(src / "x2"): (0, SIZE)}
    assert _files(data, "new") == {str(src / "solo-too"): (0, SIZE)}
    assert all(data[key] == [] for key in ("upd", "del", "mov", "cpy"))
    assert data["NumOfUpdatedPermissionFiles"] == 1 and data["NumOfNewFiles"] == 1
    data = _report(server, _backup(server, "--set", "later"))
    assert all(data[key] == [] for key in LISTS)

    target = tmp_path / "restored"
    ok(server.env, "restore", "latest", "--destination", str(dest), "--target", str(target))
    root = target / src.relative_to("/")
    assert (root / "x1").stat().st_ino == (root / "x2").stat().st_ino
    assert (root / "solo").stat().st_ino == (root / "solo-too").stat().st_ino
    assert (root / "x2").read_bytes() == same and (root / "x1").stat().st_nlink == 2


@pytest.mark.parametrize("planted", ["another file", "a symbolic link out of the target"])
def test_a_link_that_cannot_be_made_is_restored_as_a_copy_with_a_warning(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    planted: str,
) -> None:
    """The first name of a file is replaced between its restore and its second name's (as
    another process could), by another file or by a link to a file outside the target: the
    second name is linked to neither but written as a copy of its own content, with a warning
    naming both, and nothing outside the target gains a name."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    content = os.urandom(SIZE)
    (src / "a").write_bytes(content)
    os.link(src / "a", src / "z")
    _repository(dest)
    name = f"swap {planted}"
    job = _backup(server, "--set", name, "--source", str(src), "--destination", str(dest))
    target = tmp_path / "restored"
    first_name = target / src.relative_to("/") / "a"
    outside = tmp_path / "outside"
    outside.write_bytes(content)
    monkeypatch.setattr(restore_mod, "PROGRESS_INTERVAL", 0.0)

    def swap(progress: RestoreProgress) -> None:
        if progress.current == str(src / "a") and progress.files == 1:
            first_name.unlink()
            if planted == "another file":
                first_name.write_bytes(b"a stranger")
            else:
                first_name.symlink_to(outside)

    result = restore(LocalStorage(dest), ENCRYPTION, job["job_id"], target, progress=swap)
    assert result.files == 2 and result.complete
    second = target / src.relative_to("/") / "z"
    assert second.read_bytes() == content and second.stat().st_nlink == 1
    assert not second.is_symlink() and outside.stat().st_nlink == 1
    assert any(
        f"{src / 'z'}: cannot restore as a hard link of {src / 'a'}" in w for w in result.warnings
    ), result.warnings


def test_a_snapshot_written_before_hard_links_were_recorded_is_read_as_it_always_was(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job 1 writes its snapshot as the version before hard links did (the record flag off:
    the records are then byte for byte what it wrote). Job 2, nothing changed, reports nothing
    and records the links; job 1 still restores two files, job 2 one file of two names."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    content = os.urandom(SIZE)
    (src / "a").write_bytes(content)
    os.link(src / "a", src / "b")
    _repository(dest)
    with AgentClient(server.url, LOGIN, PASSWORD) as agent:
        bset = agent.create_set(
            "before links",
            settings={"sources": [str(src)]},
            destinations=[NewDestination("Local", "LOCAL", {"path": str(dest)})],
        )
        options = JobOptions(
            client=agent,
            set_id=bset.id,
            destination_id=bset.destinations[0].id,
            storage=LocalStorage(dest, fsync=False),
            password=ENCRYPTION,
        )
        with monkeypatch.context() as m:
            m.setattr(snapshot_format, "_HARD_LINK", 0)
            old = run_backup(options)
        new = run_backup(options)
    assert old.snapshot_id and new.snapshot_id

    repo = Repository.open(LocalStorage(dest), ENCRYPTION)
    flagged = {
        sid: {e.path for e, _ in repo.load_snapshot(sid)[1] if e.hard_link}
        for sid in (old.snapshot_id, new.snapshot_id)
    }
    names = {os.fsencode(src / "a"), os.fsencode(src / "b")}
    assert flagged == {old.snapshot_id: set(), new.snapshot_id: names}
    data = _report(server, _job(new))
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert all(data[key] == [] for key in LISTS) and data["DedupeOriginalSize"] == 0

    for outcome, nlink in ((old, 1), (new, 2)):
        target = tmp_path / f"restored-{nlink}"
        restore(repo.storage, ENCRYPTION, outcome.snapshot_id, target, repository=repo)
        a, b = (target / src.relative_to("/") / name for name in ("a", "b"))
        assert a.read_bytes() == b.read_bytes() == content
        assert a.stat().st_nlink == b.stat().st_nlink == nlink


def _job(outcome: JobOutcome) -> dict[str, Any]:
    """What ``_report`` needs of a job run in this process."""
    return {
        "backup_set_id": outcome.ref.set_id,
        "destination_id": outcome.ref.destination_id,
        "job_id": outcome.ref.job_id,
    }


def test_if_changed_and_never_keep_hard_links_and_never_touch_a_file_outside(
    server: Server, tmp_path: Path
) -> None:
    """``restore --overwrite if-changed|never`` over a target holding some names of a
    hard-linked file: the missing names become hard links of a name kept; a name that is a
    hard link of a file outside the target is replaced, the file outside left as it was."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    content = os.urandom(SIZE)
    (src / "a").write_bytes(content)
    os.link(src / "a", src / "z")
    _repository(dest)
    job = _backup(server, "--set", "kept links", "--source", str(src), "--destination", str(dest))
    target = tmp_path / "restored"
    a, z = target / src.relative_to("/") / "a", target / src.relative_to("/") / "z"

    def restored(*args: str) -> dict[str, Any]:
        res = run(
            server.env,
            "restore",
            job["job_id"],
            "--destination",
            str(dest),
            "--target",
            str(target),
            "--json",
            *args,
        )
        assert res.returncode == 0, (res.stdout, res.stderr)
        doc: dict[str, Any] = json.loads(res.stdout)
        assert doc["warnings"] == [] and doc["complete"], doc
        return doc

    restored()
    for mode in ("if-changed", "never"):
        z.unlink()
        doc = restored("--overwrite", mode)
        assert (doc["kept"], doc["files"], doc["bytes"]) == (1, 1, 0), doc  # linked: no content
        assert z.stat().st_ino == a.stat().st_ino and a.stat().st_nlink == 2, mode
    doc = restored("--overwrite", "if-changed")  # the whole group again: still one file
    assert z.stat().st_ino == a.stat().st_ino and z.read_bytes() == content

    outside = tmp_path / "outside"
    outside.write_bytes(content)
    os.utime(outside, ns=(10**9, 10**9))
    a.unlink()
    os.link(outside, a)
    before = outside.stat()
    doc = restored("--overwrite", "never")
    assert a.stat().st_ino == before.st_ino and outside.stat().st_ctime_ns == before.st_ctime_ns
    doc = restored("--overwrite", "if-changed")
    after = outside.stat()
    assert (after.st_nlink, after.st_mtime_ns, after.st_mode) == (
        1,
        before.st_mtime_ns,
        before.st_mode,
    )
    assert outside.read_bytes() == content
    assert a.stat().st_ino != before.st_ino and a.stat().st_ino == z.stat().st_ino
    assert a.read_bytes() == content
