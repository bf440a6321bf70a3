"""Restores as real processes against a real ``opencbs serve`` (issue 15, points 8 and 10):
each restore is a restore job the server lists (ListRestoreJobStatus, ListRestoreJobs) and
reports (GetRestoreJobReport) with its status, files and bytes; a restore into a folder that
holds files refuses by default, naming the first one, writes nothing and is reported as failed;
``--overwrite always|if-changed|never`` each on real files; and a restore with no server (or
no credentials) still restores, saying in one line that its report was not delivered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.serving import (
    OPENCBS,
    TIMEOUT,
    add_sysuser,
    add_user,
    agent_env,
    free_port,
    isolated_env,
    ok,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "alice", "alice-pw", "repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
JOB_ID = re.compile(r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d")


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]  # the agent's environment: server, login, passwords


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("restore-jobs")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "READ_ONLY_API")
    with serving(env) as srv:
        yield Server(
            srv.url,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
        )


def _cbs(srv: Server, call: str, **params: str) -> dict[str, Any]:
    r = httpx.post(f"{srv.url}/obs/api/json/{call}.do", json={**MONITOR, **params}, timeout=30)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _tree(root: Path) -> dict[str, bytes]:
    """Five files (one empty), a link and two folders below ``root``; their contents."""
    files = {
        "a.txt": b"alpha\n" * 100,
        "r.bin": os.urandom(200_000),
        "sub/b.txt": b"beta",
        "sub/deeper/empty": b"",
        "sub/c.txt": b"gamma" * 50,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink("a.txt", root / "link")
    return files


@dataclass(frozen=True)
class Backup:
    src: Path
    dest: Path
    files: dict[str, bytes]
    job: dict[str, Any]


def _backup(srv: Server, tmp_path: Path, name: str) -> Backup:
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = _tree(src)
    out = ok(
        srv.env,
        "backup",
        "--set",
        name,
        "--source",
        str(src),
        "--destination",
        str(dest),
        "--json",
    )
    return Backup(src, dest, files, json.loads(out))


def _restore(
    srv: Server, b: Backup, target: Path, *args: str, env: dict[str, str] | None = None
) -> Any:
    return run(
        env or srv.env,
        "restore",
        b.job["job_id"],
        "--destination",
        str(b.dest),
        "--target",
        str(target),
        *args,
    )


def _report(srv: Server, b: Backup, job_id: str) -> dict[str, Any]:
    answer = _cbs(
        srv,
        "GetRestoreJobReport",
        LoginName=LOGIN,
        BackupSetID=b.job["backup_set_id"],
        JobID=job_id,
    )
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


def _restores_of_day(srv: Server, day: str) -> list[dict[str, Any]]:
    answer = _cbs(srv, "ListRestoreJobStatus", LoginName=LOGIN, RestoreDate=day)
    assert answer["Status"] == "OK", answer
    rows: list[dict[str, Any]] = answer["Data"]
    return rows


def test_a_restore_is_a_job_the_server_lists_and_reports(server: Server, tmp_path: Path) -> None:
    b = _backup(server, tmp_path, "jobs")
    target = tmp_path / "t"
    res = _restore(server, b, target, "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # delivered: nothing to say
    doc = json.loads(res.stdout)
    assert doc["report_delivered"] is True and JOB_ID.fullmatch(doc["restore_job_id"])
    size = sum(len(d) for d in b.files.values())
    assert (doc["files"], doc["bytes"], doc["links"]) == (5, size, 1)
    for rel, data in b.files.items():
        assert (target / b.src.relative_to("/") / rel).read_bytes() == data

    job_id = doc["restore_job_id"]
    listed = [r for r in _restores_of_day(server, job_id[:10]) if r["ID"] == job_id]
    assert len(listed) == 1, listed
    row = listed[0]
    assert row["RestoreJobStatus"] == "RESTORE_STOP_SUCCESS"
    assert (row["RestoreFileCount"], row["RestoreSize"]) == ("5", str(size))
    assert row["BackupSetID"] == b.job["backup_set_id"] and row["BackupSetName"] == "jobs"
    assert row["DestinationID"] == b.job["destination_id"]
    assert row["BackupJobID"] == b.job["job_id"] and row["RestoreJobMode"] == "M"
    assert row["EndTime"] != ""

    data = _report(server, b, job_id)
    assert data["Status"] == "RESTORE_STOP_SUCCESS"
    assert (data["TotalFileCount"], data["TotalFileSize"]) == (5, size)
    assert (data["NumOfRestoredDirs"], data["NumOfRestoredLinks"]) == (doc["dirs"], 1)
    assert data["SnapshotID"] == b.job["snapshot_id"] and data["Overwrite"] == "refuse"
    assert data["RestoreTo"] == str(target)
    assert data["StartTime"] <= data["EndTime"]
    assert data["FromIp"] == "127.0.0.1"
    assert [e["Type"] for e in data["Logs"]] == ["start", "info", "end"]
    assert "Restored 5 files" in data["Logs"][1]["Message"]

    jobs = _cbs(server, "ListRestoreJobs", LoginName=LOGIN, BackupSetID=b.job["backup_set_id"])
    assert jobs["Data"][0]["RestoreJob"] == [job_id]


def test_a_conflict_refuses_writes_nothing_and_is_reported_failed(
    server: Server, tmp_path: Path
) -> None:
    b = _backup(server, tmp_path, "conflict")
    target = tmp_path / "t"
    first = _restore(server, b, target, "--json")
    assert first.returncode == 0, first.stderr
    out = target / b.src.relative_to("/")
    (out / "a.txt").write_bytes(b"mine, not the backup's")
    (out / "sub" / "c.txt").unlink()  # missing: would be restored, but nothing is written

    res = _restore(server, b, target)
    assert res.returncode == 5, res.stdout + res.stderr
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert lines == [
        f"opencbs: error: the target already holds {out / 'a.txt'}: not overwritten "
        "(nothing was restored)",
        lines[1],
    ], res.stderr
    assert lines[1].startswith("hint: choose --overwrite always") and "never" in lines[1]
    assert (out / "a.txt").read_bytes() == b"mine, not the backup's"
    assert not (out / "sub" / "c.txt").exists()

    day = json.loads(first.stdout)["restore_job_id"][:10]
    failed = [r for r in _restores_of_day(server, day) if r["BackupSetName"] == "conflict"]
    assert [r["RestoreJobStatus"] for r in failed] == [
        "RESTORE_STOP_SUCCESS",
        "RESTORE_STOP_BY_ERROR",
    ]
    data = _report(server, b, failed[1]["ID"])
    assert (data["TotalFileCount"], data["TotalFileSize"], data["NumOfErrorEntries"]) == (0, 0, 1)
    errors = [e["Message"] for e in data["Logs"] if e["Type"] == "error"]
    assert errors == [
        f"the target already holds {out / 'a.txt'}: not overwritten (nothing was restored)"
    ]

    # --json: the document on stdout all the same, the error in it and on stderr, exit code 5
    res = _restore(server, b, target, "--json")
    assert res.returncode == 5, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["error"] == errors[0] and doc["complete"] is False
    assert (doc["files"], doc["bytes"], doc["report_delivered"]) == (0, 0, True)
    assert _report(server, b, doc["restore_job_id"])["Status"] == "RESTORE_STOP_BY_ERROR"
    assert res.stderr.startswith(f"opencbs: error: {errors[0]}\n"), res.stderr

    # a target that cannot be created: exit code 7, the document too
    (tmp_path / "a-file").write_bytes(b"")
    res = _restore(server, b, tmp_path / "a-file" / "t", "--json")
    assert res.returncode == 7, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["error"].startswith("cannot create target") and doc["complete"] is False


def _state(root: Path) -> dict[str, tuple[int, bytes]]:
    """Each regular file below ``root``: its inode and content."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_overwrite_always_replaces_what_is_there(server: Server, tmp_path: Path) -> None:
    b = _backup(server, tmp_path, "always")
    target = tmp_path / "t"
    assert _restore(server, b, target).returncode == 0
    out = target / b.src.relative_to("/")
    (out / "a.txt").write_bytes(b"x" * 600)  # same size, other content
    (out / "link").unlink()
    (out / "link").write_bytes(b"a file where the link was")
    (out / "extra.txt").write_bytes(b"not in the backup")

    res = _restore(server, b, target, "--overwrite", "always", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["files"], doc["kept"]) == (5, 0)
    assert (out / "a.txt").read_bytes() == b.files["a.txt"]
    assert os.readlink(out / "link") == "a.txt"
    assert (out / "extra.txt").read_bytes() == b"not in the backup"  # not the snapshot's: left


def test_overwrite_if_changed_rewrites_only_what_differs(server: Server, tmp_path: Path) -> None:
    b = _backup(server, tmp_path, "if-changed")
    target = tmp_path / "t"
    assert _restore(server, b, target).returncode == 0
    out = target / b.src.relative_to("/")
    before = _state(out)
    restored_mtime = (out / "sub" / "b.txt").stat().st_mtime_ns
    (out / "a.txt").write_bytes(b"x" * 600)  # same size, other content, new mtime
    os.utime(out / "sub" / "b.txt", ns=(1, 1))  # touched: content the same
    (out / "sub" / "c.txt").unlink()  # missing

    res = _restore(server, b, target, "--overwrite", "if-changed", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    # rewritten: a.txt (changed) and c.txt (missing); kept: r.bin, b.txt, empty, the link
    assert (doc["files"], doc["kept"]) == (2, 4)
    after = _state(out)
    assert after["a.txt"][1] == b.files["a.txt"]
    assert after["sub/c.txt"][1] == b.files["sub/c.txt"]
    for kept in ("r.bin", "sub/b.txt", "sub/deeper/empty"):
        assert after[kept] == before[kept], kept  # same inode: not written again
    assert (out / "sub" / "b.txt").stat().st_mtime_ns == restored_mtime  # its time put back
    data = _report(server, b, doc["restore_job_id"])
    assert (data["Status"], data["TotalFileCount"], data["NumOfKeptFiles"]) == (
        "RESTORE_STOP_SUCCESS",
        2,
        4,
    )
    assert data["Overwrite"] == "if-changed"


def test_overwrite_never_keeps_and_says_how_many(server: Server, tmp_path: Path) -> None:
    b = _backup(server, tmp_path, "never")
    target = tmp_path / "t"
    assert _restore(server, b, target).returncode == 0
    out = target / b.src.relative_to("/")
    (out / "a.txt").write_bytes(b"mine")
    (out / "sub" / "c.txt").unlink()
    (out / "sub" / "deeper" / "empty").unlink()
    (out / "sub" / "deeper").rmdir()
    (out / "sub" / "deeper").write_bytes(b"a file where a folder was")

    res = _restore(server, b, target, "--overwrite", "never", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    # kept: a.txt, r.bin, b.txt, the link, the file "deeper"; the entry below it was never
    # there: not restored, said in a warning, and the job ends with a warning
    assert (doc["files"], doc["kept"], doc["blocked"]) == (1, 5, 1)
    warning = (
        f"{b.src / 'sub' / 'deeper'}: a file where the snapshot has a folder: its 1 entry "
        "not restored (--overwrite never)"
    )
    assert doc["warnings"] == [warning]
    assert f"opencbs: warning: {warning}" in res.stderr.splitlines(), res.stderr
    assert _report(server, b, doc["restore_job_id"])["Status"] == (
        "RESTORE_STOP_SUCCESS_WITH_WARNING"
    )
    assert (out / "a.txt").read_bytes() == b"mine"
    assert (out / "sub" / "c.txt").read_bytes() == b.files["sub/c.txt"]
    assert (out / "sub" / "deeper").read_bytes() == b"a file where a folder was"

    res = _restore(server, b, target, "--overwrite", "never")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(
        ", 6 existing paths kept as they were, 1 path not restored (in the way: see the warnings)"
    ), res.stdout


def test_no_server_no_report_but_the_restore(server: Server, tmp_path: Path) -> None:
    b = _backup(server, tmp_path, "offline")
    gone = {**server.env, "OPENCBS_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    res = _restore(server, b, tmp_path / "t1", env=gone)
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "report not delivered" in line]
    assert len(said) == 1 and said[0].startswith(
        "opencbs: restore report not delivered: cannot reach the server"
    ), res.stderr
    assert (tmp_path / "t1" / b.src.relative_to("/") / "a.txt").read_bytes() == b.files["a.txt"]

    anonymous = {
        k: v for k, v in server.env.items() if k not in ("OPENCBS_LOGIN_NAME", "OPENCBS_PASSWORD")
    }
    res = _restore(server, b, tmp_path / "t2", "--json", env=anonymous)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "opencbs: restore report not delivered: no backup user given (--login, "
        "OPENCBS_LOGIN_NAME or login_name)"
    ]
    doc = json.loads(res.stdout)
    assert doc["restore_job_id"] is None and doc["report_delivered"] is False
    assert doc["files"] == 5


def test_sigterm_stops_a_restore_reported_by_user(server: Server, tmp_path: Path) -> None:
    """SIGTERM during a restore stops it as Ctrl-C does: exit code 130, the job
    ``RESTORE_STOP_BY_USER`` with the files restored so far; ``--json`` prints its document
    all the same."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    for i in range(40):
        (src / f"d{i}").mkdir(parents=True)
        for j in range(100):
            (src / f"d{i}" / f"f{j}").write_bytes(os.urandom(2048))
    job = json.loads(
        ok(
            server.env,
            "backup",
            "--set",
            "stopped",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    env = {**server.env, "OPENCBS_PROGRESS_INTERVAL": "0.1"}
    target = tmp_path / "t"
    args = ["restore", job["job_id"], "--destination", str(dest), "--target", str(target)]
    proc = subprocess.Popen(
        [OPENCBS, *args, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = target / src.relative_to("/") / "d0"
    deadline = time.monotonic() + TIMEOUT
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # inside the restore (it made the first folder)
    out, rest = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, rest
    doc = json.loads(out)
    assert (doc["error"], doc["complete"], doc["report_delivered"]) == ("interrupted", False, True)
    assert doc["files"] < 4000
    assert "report not delivered" not in rest
    rows = _restores_of_day(server, job["job_id"][:10])
    row = [r for r in rows if r["BackupSetName"] == "stopped"][-1]
    assert row["RestoreJobStatus"] == "RESTORE_STOP_BY_USER"
    restored = sum(1 for p in (tmp_path / "t").rglob("f*") if p.is_file())
    assert int(row["RestoreFileCount"]) <= restored < 4000
    assert row["ID"] == doc["restore_job_id"]


#: ``opencbs`` on a target that fills up: the third ``pwrite`` and every later one fail with
#: ``ENOSPC``, as on a full file system (the restore writes contents with ``pwrite`` only).
_FILLING = """
import errno, os, sys
real, calls = os.pwrite, [0]
def pwrite(fd, data, offset):
    calls[0] += 1
    if calls[0] >= 3:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, data, offset)
os.pwrite = pwrite
from opencbs.cli.main import main
sys.argv = ["opencbs", *sys.argv[1:]]
raise SystemExit(main())
"""


def test_a_full_target_stops_the_restore_and_json_says_how_far(
    server: Server, tmp_path: Path
) -> None:
    b = _backup(server, tmp_path, "full target")
    target = tmp_path / "t"
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _FILLING,
            "restore",
            b.job["job_id"],
            "--destination",
            str(b.dest),
            "--target",
            str(target),
            "--json",
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert res.returncode == 7, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["error"].startswith(f"cannot write into target {target}: ")
    assert doc["complete"] is False and 1 <= doc["files"] < 5, doc
    restored = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(restored) == doc["files"]  # the file being written was removed
    assert _report(server, b, doc["restore_job_id"])["Status"] == "RESTORE_STOP_BY_ERROR"
