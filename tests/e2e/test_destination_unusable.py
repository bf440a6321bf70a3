"""A destination that cannot be created or written when its job starts (issue 15, point 4), with
real ``opencbs backup`` processes against a real ``opencbs serve``: the job reaches the server and
ends ``BS_STOP_BY_SYSTEM_ERROR`` with the reason in its report's log, as any other failure; the
command exits 9 (a failed job) with one error line and a hint.

- a set's folder under a regular file (it can never be created: ``Not a directory``, which
  holds for root too, unlike a folder's permission bits);
- a set's repository made immutable (``chattr -R +i``: ``Operation not permitted`` for root
  too; skipped where the file system refuses the attribute);
- a set's repository on a file system remounted read-only (a tmpfs): no lock it could not
  write is removed, no raw log record is printed;
- a set's repository whose config object is damaged (the job names the destination and
  what to do; so does a verify, without pointing to itself);
- a set's destination path that became a regular file is refused before any job (exit 7),
  saying it is a file, not a folder;
- a set's folder on a full file system (a 1 MiB tmpfs filled up; skipped where it cannot be
  mounted);
- a new set named on the command line with such a folder is refused before anything is
  recorded (exit 7, no set, no job): there is no set on the server to hold a job yet.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent_support import tmpfs
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

LOGIN, PASSWORD, ENCRYPTION = "unusable", "unusable-pw", "unusable-repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}


@dataclass(frozen=True)
class Setup:
    url: str
    env: dict[str, str]  # the agent's
    admin_env: dict[str, str]  # the server's (opencbs set add)
    root: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    env = isolated_env(tmp_path)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env, log=tmp_path / "serve.log") as served:
        agent = agent_env(env, served.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION)
        yield Setup(served.url, agent, env, tmp_path)


def _source(setup: Setup) -> Path:
    src = setup.root / "src"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("some data\n")
    return src


def _set_on_server(setup: Setup, name: str, destination: Path) -> None:
    ok(
        setup.admin_env,
        "set",
        "add",
        LOGIN,
        name,
        "--source",
        str(_source(setup)),
        "--destination",
        str(destination),
    )


def _report(setup: Setup, job: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(
        f"{setup.url}/obs/api/json/GetBackupJobReport.do",
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


def _fails_on_server(setup: Setup, name: str, reason: str) -> str:
    """``opencbs backup --set NAME`` exits 9 with an error line and a hint, and the server
    has its job as ``BS_STOP_BY_SYSTEM_ERROR`` with an ``error`` log entry naming ``reason``."""
    res = run(setup.env, "backup", "--set", name, "--json")
    assert res.returncode == 9, (res.stdout, res.stderr)
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_BY_SYSTEM_ERROR" and job["report_delivered"] is True
    assert job["snapshot_id"] is None
    assert f"opencbs: error: backup job {job['job_id']} failed (BS_STOP_BY_SYSTEM_ERROR)" in (
        res.stderr
    )
    assert "\nhint: " in res.stderr and "Traceback" not in res.stderr
    # the library's log records are said as the CLI's lines, never as raw records; no lock
    # that could not be written is removed (engine.locks)
    raw = re.findall(r"^.*\b(?:DEBUG|INFO|WARNING|ERROR) opencbs\.\S+: .*$", res.stderr, re.M)
    assert raw == [], res.stderr
    assert "could not remove the repository lock" not in res.stderr
    data = _report(setup, job)
    assert data["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR" and data["EndTime"] != ""
    errors = [e["Message"] for e in data["Logs"] if e["Type"] == "error"]
    assert any(reason in m for m in errors), errors
    return res.stderr


def test_folder_under_a_regular_file(setup: Setup) -> None:
    blocker = setup.root / "a-file"
    blocker.write_text("not a folder\n")
    _set_on_server(setup, "under-file", blocker / "backups")
    _fails_on_server(setup, "under-file", "Not a directory")


def test_repository_made_read_only(setup: Setup) -> None:
    dest = setup.root / "dest"
    ok(
        setup.env,
        "backup",
        "--set",
        "frozen",
        "--source",
        str(_source(setup)),
        "--destination",
        str(dest),
    )
    (setup.root / "src" / "b.txt").write_text("more data\n")
    frozen = subprocess.run(["chattr", "-R", "+i", str(dest)], capture_output=True, check=False)
    if frozen.returncode != 0:
        pytest.skip(f"chattr +i is refused here: {frozen.stderr.decode().strip()}")
    try:
        _fails_on_server(setup, "frozen", "Operation not permitted")
    finally:
        subprocess.run(["chattr", "-R", "-i", str(dest)], check=False)


def test_repository_on_a_read_only_file_system(setup: Setup) -> None:
    # a repository on a disk remounted read-only: the job fails, and the agent neither
    # removes a lock it could not write nor prints a raw log record (engine.locks)
    with tmpfs(setup.root / "disk", "16m") as mnt:
        ok(
            setup.env,
            "backup",
            "--set",
            "read-only",
            "--source",
            str(_source(setup)),
            "--destination",
            str(mnt / "backups"),
        )
        assert (mnt / "backups" / "locks").is_dir()
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True, check=False
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
        _fails_on_server(setup, "read-only", "Read-only file system")


def test_repository_with_a_damaged_config(setup: Setup) -> None:
    # the config object overwritten: the backup's job fails on the server naming the
    # destination, with a next step that is not "run a verify"; the verify says the same
    dest = setup.root / "dest"
    ok(
        setup.env,
        "backup",
        "--set",
        "damaged",
        "--source",
        str(_source(setup)),
        "--destination",
        str(dest),
    )
    (dest / "config").write_text("garbage\n")
    said = f"the repository in {dest} cannot be opened: its config object is damaged"
    stderr = _fails_on_server(setup, "damaged", said)
    assert said in stderr
    hint = f"hint: put back {dest}/config from a copy of the destination"
    assert hint in stderr and "verify" not in stderr.split("hint: ", 1)[1], stderr
    res = run(setup.env, "verify", "--destination", str(dest), "--read-data")
    assert res.returncode == 8, (res.stdout, res.stderr)  # refused: the repository is damaged
    error, shown_hint = res.stderr.strip().splitlines()
    assert error.startswith(f"opencbs: error: {said} ("), res.stderr
    assert shown_hint.startswith(hint) and "verify" not in shown_hint, res.stderr


def test_destination_replaced_by_a_file(setup: Setup) -> None:
    # the folder of the backups moved away and a file put at its path: refused before any
    # job (exit 7), saying the path is a file, with what to do
    dest = setup.root / "dest"
    ok(
        setup.env,
        "backup",
        "--set",
        "moved",
        "--source",
        str(_source(setup)),
        "--destination",
        str(dest),
    )
    dest.rename(setup.root / "dest.bak")
    dest.write_text("x\n")
    res = run(setup.env, "backup", "--set", "moved")
    assert res.returncode == 7, (res.stdout, res.stderr)
    error, hint = res.stderr.strip().splitlines()
    assert error == (
        f"opencbs: error: destination {dest} is a file, not a folder; nothing was written there"
    )
    assert hint.startswith("hint: if the folder of the backups was moved or renamed, put it back")
    assert dest.read_text() == "x\n"


def test_folder_on_a_full_file_system(setup: Setup) -> None:
    with tmpfs(setup.root / "small", "1m") as mnt:
        filler = mnt / "filler"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        _set_on_server(setup, "full", mnt / "backups")
        _fails_on_server(setup, "full", "No space left on device")


def test_new_set_with_such_a_folder_is_refused_before_anything(setup: Setup) -> None:
    blocker = setup.root / "a-file"
    blocker.write_text("not a folder\n")
    res = run(
        setup.env,
        "backup",
        "--set",
        "never",
        "--source",
        str(_source(setup)),
        "--destination",
        str(blocker / "backups"),
    )
    assert res.returncode == 7, res.stderr
    assert "Not a directory" in res.stderr and "\nhint: " in res.stderr
    sets = httpx.post(
        f"{setup.url}/obs/api/json/ListBackupSets.do",
        timeout=TIMEOUT,
        json={**MONITOR, "LoginName": LOGIN},
    ).json()
    assert sets["Status"] == "OK" and sets["Data"] == []
