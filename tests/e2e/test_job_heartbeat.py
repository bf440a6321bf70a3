"""Jobs whose agent dies, and jobs that only look quiet (issue 15, point 5), with real processes:
a real ``opencbs serve`` with ``job_heartbeat_timeout`` 3 s and real ``opencbs backup`` runs.

- ``test_killed_agent_job_closed_then_said_by_next_run``: a backup SIGKILLed as soon as its job
  runs on the server reads ``BS_STILL_RUNNING``, then ``BS_BACKUP_NOT_FINISHED`` within the
  heartbeat timeout (not the hour of ``job_idle_timeout``), the server's log saying why; the next
  ``opencbs backup`` of the set says on stderr and in its report that the previous job did not
  finish and how the server has it.
- ``test_slow_single_file_read_keeps_its_job``: a file whose every read takes 4 s (``strace``
  delays the read system calls on that one path: a slow disk or a hung network mount, for the
  agent) is read while no batch or progress can be sent for longer than the timeout; the
  heartbeats keep the job, which ends ``BS_STOP_SUCCESS``. Skipped where ``strace`` cannot
  trace (not installed, ptrace not allowed).
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

LOGIN, PASSWORD, ENCRYPTION = "hearty", "hearty-pw", "hearty-repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
HEARTBEAT_TIMEOUT = 3.0  # seconds (the default is 120)
READ_DELAY = 4  # seconds each read of the slow file takes: longer than the timeout


@dataclass(frozen=True)
class Setup:
    url: str
    env: dict[str, str]  # the agent's
    log: Path  # the server's stderr
    root: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    env = isolated_env(tmp_path, OPENCBS_JOB_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT))
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    log = tmp_path / "serve.log"
    with serving(env, log=log) as served:
        agent = agent_env(env, served.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION)
        yield Setup(served.url, agent, log, tmp_path)


def _cbs(setup: Setup, call: str, **params: str) -> Any:
    r = httpx.post(
        f"{setup.url}/obs/api/json/{call}.do",
        timeout=TIMEOUT,
        json={**MONITOR, "LoginName": LOGIN, **params},
    )
    answer = r.json()
    assert answer["Status"] == "OK", (call, answer)
    return answer["Data"]


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
    if answer["Status"] != "OK":  # no job yet today
        return []
    jobs: list[dict[str, Any]] = answer["Data"]
    return jobs


def _job(setup: Setup, job_id: str) -> dict[str, Any]:
    found = [j for j in _jobs_today(setup) if j["ID"] == job_id]
    assert len(found) == 1, (job_id, found)
    return found[0]


def _first_backup(setup: Setup, src: Path) -> dict[str, str]:
    """The set's first job (creates the set and its repository); its IDs."""
    out = ok(
        setup.env,
        "backup",
        "--set",
        "beat",
        "--source",
        str(src),
        "--destination",
        str(setup.root / "dest"),
        "--json",
    )
    doc: dict[str, str] = json.loads(out)
    assert doc["status"] == "BS_STOP_SUCCESS", doc
    return doc


def _next_second() -> None:
    time.sleep(1.02 - time.time() % 1)  # a job's ID is its start second (cbs-api.md §4)


def test_killed_agent_job_closed_then_said_by_next_run(setup: Setup) -> None:
    src = setup.root / "src"
    src.mkdir()
    (src / "small.txt").write_text("hello\n")
    first = _first_backup(setup, src)
    (src / "big.bin").write_bytes(os.urandom(96 << 20))  # a second or more to read
    _next_second()
    known = {j["ID"] for j in _jobs_today(setup)}
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", "beat"],
        env=setup.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        running: list[dict[str, Any]] = []
        while not running and time.monotonic() < deadline and proc.poll() is None:
            running = [j for j in _jobs_today(setup) if j["ID"] not in known]
            time.sleep(0.02)
        assert running, "the job never showed on the server"
        proc.send_signal(signal.SIGKILL)  # mid-job: its agent is gone, no finish is sent
        killed_at = time.monotonic()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    job_id = running[0]["ID"]
    assert _job(setup, job_id)["BackupJobStatus"] == "BS_STILL_RUNNING"

    while _job(setup, job_id)["BackupJobStatus"] == "BS_STILL_RUNNING":
        assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT + 5, "not closed in time"
        time.sleep(0.1)
    closed_after = time.monotonic() - killed_at
    assert _job(setup, job_id)["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED"
    assert closed_after >= HEARTBEAT_TIMEOUT - 1.0  # a few heartbeats missed, not one
    said = setup.log.read_text()
    assert f"backup job {job_id}: no heartbeat or report from its agent" in said

    # the next run of the set says how the previous job ended, on stderr and in its report
    _next_second()
    res = run(setup.env, "backup", "--set", "beat", "--json")
    assert res.returncode == 0, res.stderr
    line = (
        f"opencbs: warning: the previous job {job_id} of this backup set did not finish: its "
        "agent stopped before the job ended (killed, or its machine stopped); the server "
        "closed it as BS_BACKUP_NOT_FINISHED"
    )
    assert line in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    now = json.loads(res.stdout)
    assert now["status"] == "BS_STOP_SUCCESS"
    assert [d["abandoned"] for d in now["flushed"]] == [True]
    report = _cbs(
        setup,
        "GetBackupJobReport",
        BackupSetID=now["backup_set_id"],
        DestinationID=now["destination_id"],
        BackupJobID=now["job_id"],
    )
    infos = [e["Message"] for e in report["Logs"] if e["Type"] == "info"]
    assert any(
        m.startswith(f"The previous job {job_id} of this backup set did not finish") for m in infos
    )
    assert first["job_id"] != job_id != now["job_id"]


def _strace_works(tmp: Path) -> str | None:
    """``None`` when ``strace`` can delay a read here, else why not."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed"
    probe = tmp / "probe"
    probe.write_bytes(b"x")
    res = subprocess.run(
        [
            strace,
            "-qq",
            "-o",
            os.devnull,
            "-P",
            str(probe),
            "-e",
            "inject=read:delay_enter=1ms",
            "cat",
            str(probe),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        return f"strace cannot trace here: {res.stderr.strip()[:200]}"
    return None


def test_slow_single_file_read_keeps_its_job(setup: Setup) -> None:
    why = _strace_works(setup.root)
    if why is not None:
        if os.environ.get("CI"):  # .ci/run installs strace: the test runs there
            pytest.fail(why)
        pytest.skip(why)
    src = setup.root / "src"
    src.mkdir()
    (src / "small.txt").write_text("hello\n")
    _first_backup(setup, src)
    slow = src / "slow.bin"
    slow.write_bytes(os.urandom(3 << 20))  # a few reads of it, each READ_DELAY s
    traced = setup.root / "strace.out"
    calls = "read,pread64,readv,preadv,preadv2"
    _next_second()
    started = time.monotonic()
    res = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "signal=none",
            "-o",
            str(traced),
            "-e",
            f"trace={calls}",
            "-P",
            str(slow),
            "-e",
            f"inject={calls}:delay_enter={READ_DELAY}s",
            OPENCBS,
            "backup",
            "--set",
            "beat",
            "--json",
        ],
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    delayed = traced.read_text().count("(DELAYED)")
    assert delayed >= 1 and took >= READ_DELAY  # reads of the file really were slow
    assert doc["status"] == "BS_STOP_SUCCESS" and doc["report_delivered"] is True, doc
    assert _job(setup, doc["job_id"])["BackupJobStatus"] == "BS_STOP_SUCCESS"
    said = setup.log.read_text()
    assert f"backup job {doc['job_id']}: no heartbeat" not in said
    beats = said.count(f'/jobs/{doc["job_id"]}/heartbeat HTTP/1.1" 200')
    assert beats >= READ_DELAY / HEARTBEAT_TIMEOUT * 2, beats  # a quarter of the timeout apart


def test_agent_paused_longer_than_the_timeout_finishes_its_job(setup: Setup) -> None:
    """An agent stopped (SIGSTOP: a laptop asleep) for longer than the heartbeat timeout: the
    server closes its job as ``BS_BACKUP_NOT_FINISHED``; when the agent goes on (SIGCONT), the
    job runs again and ends ``BS_STOP_SUCCESS`` with its whole report, nothing dropped."""
    src = setup.root / "src"
    src.mkdir()
    (src / "small.txt").write_text("hello\n")
    _first_backup(setup, src)
    for i in range(3):
        (src / f"big-{i}.bin").write_bytes(os.urandom(48 << 20))
    _next_second()
    known = {j["ID"] for j in _jobs_today(setup)}
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", "beat", "--json"],
        env=setup.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        running: list[dict[str, Any]] = []
        while not running and time.monotonic() < deadline and proc.poll() is None:
            running = [j for j in _jobs_today(setup) if j["ID"] not in known]
            time.sleep(0.02)
        assert running, "the job never showed on the server"
        proc.send_signal(signal.SIGSTOP)
        job_id = running[0]["ID"]
        paused_at = time.monotonic()
        while _job(setup, job_id)["BackupJobStatus"] == "BS_STILL_RUNNING":
            assert time.monotonic() - paused_at < HEARTBEAT_TIMEOUT + 5, "not closed in time"
            time.sleep(0.1)
        assert _job(setup, job_id)["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED"
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "not delivered" not in err and "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["job_id"] == job_id and doc["status"] == "BS_STOP_SUCCESS", doc
    on_server = _job(setup, job_id)
    assert on_server["BackupJobStatus"] == "BS_STOP_SUCCESS", on_server
    report = _cbs(
        setup,
        "GetBackupJobReport",
        BackupSetID=doc["backup_set_id"],
        DestinationID=doc["destination_id"],
        BackupJobID=job_id,
    )
    assert report["NumOfNewFiles"] == 3, report["NumOfNewFiles"]
