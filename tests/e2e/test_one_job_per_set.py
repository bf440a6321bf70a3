"""Two backups of one set at once (issue 15, point 11), with real ``opencbs backup`` processes
against a real ``opencbs serve``.

- ``test_backups_started_together``: in each of ``ROUNDS`` rounds (6; 20 with
  ``OPENCBS_SOAK=1``) two backups of one set and
  one of another set start at the same moment. The other set's always runs; of the two of one
  set, one runs and the other, when they overlap, is refused with the one line naming the
  running process (exit 5) and its hint; no other line: no spool "File exists", no disk hint,
  no warning about the agent's own files (``sets.json``). Every job that ran is on the server,
  finished; none of the refused ones reached it.
- ``test_second_backup_refused_while_first_runs``: a backup stopped (SIGSTOP) mid-job holds its
  set; a second one is refused at once, naming its pid, and nothing reaches the server; once
  the first is killed (SIGKILL: the kernel releases its lock, nothing is stale), the next
  backup runs and says that the previous job did not finish.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
    isolated_env,
    ok,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "twice", "twice-pw", "twice-repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
ROUNDS = 20 if os.environ.get("OPENCBS_SOAK") == "1" else 6  # OPENCBS_SOAK=1: the full count
REFUSED = re.compile(
    r"opencbs: error: a job of backup set 'one' \((\d+)\) is running \(pid (\d+)\); "
    r"not starting another\n"
    r"hint: wait for it to end and run the backup again, or `kill (\d+)` stops it cleanly\n"
)


@dataclass(frozen=True)
class Setup:
    url: str
    env: dict[str, str]
    root: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    env = isolated_env(tmp_path, OPENCBS_JOB_HEARTBEAT_TIMEOUT="3")
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env, log=tmp_path / "serve.log") as served:
        agent = agent_env(env, served.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION)
        yield Setup(served.url, agent, tmp_path)


def _jobs_today(setup: Setup) -> list[dict[str, Any]]:
    r = httpx.post(
        f"{setup.url}/obs/api/json/ListBackupJobStatus.do",
        timeout=TIMEOUT,
        json={
            **MONITOR,
            "LoginName": LOGIN,
            "BackupDate": datetime.now(UTC).strftime("%Y-%m-%d"),
        },
    )
    answer = r.json()
    if answer["Status"] != "OK":
        return []
    jobs: list[dict[str, Any]] = answer["Data"]
    return jobs


def _make_set(setup: Setup, name: str) -> Path:
    src = setup.root / f"src-{name}"
    src.mkdir()
    (src / "a.txt").write_text(f"set {name}\n")
    ok(
        setup.env,
        "backup",
        "--set",
        name,
        "--source",
        str(src),
        "--destination",
        str(setup.root / f"dest-{name}"),
    )
    return src


def _start(setup: Setup, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [OPENCBS, "backup", "--set", name, "--json"],
        env=setup.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _no_stray_lines(stderr: str) -> None:
    for bad in ("warning", "File exists", "free space", "Traceback", "cannot write", "spool"):
        assert bad not in stderr, stderr


def test_backups_started_together(setup: Setup) -> None:
    one = _make_set(setup, "one")
    _make_set(setup, "other")
    before = len(_jobs_today(setup))
    ran, refused = 0, 0
    for n in range(ROUNDS):
        (one / "a.txt").write_text(f"round {n}\n" * 1000)  # each job has something to store
        procs = [_start(setup, "one"), _start(setup, "one"), _start(setup, "other")]
        results = [(p.pid, *p.communicate(timeout=TIMEOUT)) for p in procs]
        codes = [p.returncode for p in procs]
        assert codes[2] == 0, results[2]
        assert sorted(codes[:2]) in ([0, 0], [0, 5]), results
        for (_pid, out, err), code, (other_pid, _, _) in zip(
            results[:2], codes[:2], reversed(results[:2]), strict=True
        ):
            if code == 5:
                match = REFUSED.fullmatch(err)
                assert match is not None, err
                assert int(match.group(2)) == int(match.group(3)) == other_pid
                assert out == ""
                refused += 1
            else:
                _no_stray_lines(err)
                assert json.loads(out)["status"] == "BS_STOP_SUCCESS"
                ran += 1
        _no_stray_lines(results[2][2])
        ran += 1
    jobs = _jobs_today(setup)
    assert len(jobs) - before == ran  # every job that ran, and none that was refused
    assert all(j["BackupJobStatus"] == "BS_STOP_SUCCESS" for j in jobs)
    assert ran + refused == 3 * ROUNDS
    assert refused >= 1  # they did meet: started together, they reach the lock together


def test_second_backup_refused_while_first_runs(setup: Setup) -> None:
    one = _make_set(setup, "one")
    (one / "big.bin").write_bytes(os.urandom(64 << 20))
    time.sleep(1.02 - time.time() % 1)
    known = {j["ID"] for j in _jobs_today(setup)}
    first = _start(setup, "one")
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and first.poll() is None:
            if any(j["ID"] not in known for j in _jobs_today(setup)):
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # holds its set while it does nothing
        assert first.poll() is None, "the first job ended before it could be stopped"
        second = run(setup.env, "backup", "--set", "one")
        assert second.returncode == 5, second.stderr
        match = REFUSED.fullmatch(second.stderr)
        assert match is not None, second.stderr
        assert int(match.group(2)) == first.pid
        assert len([j for j in _jobs_today(setup) if j["ID"] not in known]) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=TIMEOUT)
    time.sleep(1.02 - time.time() % 1)
    third = run(setup.env, "backup", "--set", "one")
    assert third.returncode == 0, third.stderr
    assert "opencbs: warning: the previous job " in third.stderr
    assert "of this backup set did not finish" in third.stderr
    assert "BS_BACKUP_NOT_FINISHED" in third.stderr
