"""What the end-to-end tests of the unattended agent (``opencbs agent run``) share: a backup
user with one set made by a real ``opencbs backup``, a schedule added in the server's
database (``store.schedules``), the CBS calls that show jobs and start one, and the agent run
as a process whose log file the test reads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from opencbs.model.schedules import Schedule
from opencbs.settings import sqlite_url
from opencbs.store import schedules, sets, users
from opencbs.store.db import Database
from tests.e2e.serving import OPENCBS, TIMEOUT, add_sysuser, add_user, agent_env, ok

LOGIN, PASSWORD, ENCRYPTION = "nightly", "nightly-pw", "nightly-repo-secret"
ADMIN = {"SysUser": "admin", "SysPwd": "admin-pw-1"}
EVERY_MINUTE = Schedule.parse(
    {"name": "Every minute", "type": "DAILY", "hour": 0, "minute": 0, "interval_minutes": 1}
)


@dataclass
class World:
    """A server's environment (``env``, its data in ``root/data``), the agent's environment
    (``agent``) and the set the tests back up (``set_id``, its sources in ``src``)."""

    root: Path
    env: dict[str, str]
    agent: dict[str, str]
    url: str
    set_id: str = ""
    src: Path | None = None


def users_for(env: dict[str, str]) -> None:
    """The backup user and an administrator (for RunBackup.do and the job lists)."""
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, ADMIN["SysUser"], ADMIN["SysPwd"])


def world_of(root: Path, env: dict[str, str], url: str) -> World:
    agent = agent_env(env, url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION)
    return World(root, env, agent, url)


def make_set(world: World, name: str = "docs") -> None:
    """The set ``name`` with a small source, made (and backed up once, mode M) by ``opencbs
    backup``; its ID kept in ``world``."""
    src = world.root / f"src-{name}"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    ok(world.agent, "backup", "--set", name, "--source", str(src),
       "--destination", str(world.root / f"dest-{name}"))  # fmt: skip
    db = Database(sqlite_url(world.root / "data" / "opencbs.db"))
    try:
        with db.read() as conn:
            user = users.find_backup_user(conn, LOGIN)
            assert user is not None
            found = sets.find_set_by_name(conn, user.id, name)
            assert found is not None
        world.set_id, world.src = str(found.id), src
    finally:
        db.dispose()


def add_schedule(world: World, schedule: Schedule = EVERY_MINUTE) -> None:
    """Add ``schedule`` to the world's set in the server's database (UTC)."""
    db = Database(sqlite_url(world.root / "data" / "opencbs.db"))
    try:
        with db.write() as conn:
            user = users.find_backup_user(conn, LOGIN)
            assert user is not None
            bset = sets.get_set(conn, user.id, world.set_id)
            schedules.add_schedule(
                conn, bset, schedule, zone=ZoneInfo("UTC"), at_ms=int(time.time() * 1000)
            )
    finally:
        db.dispose()


def cbs(world: World, call: str, **params: str) -> Any:
    """A CBS call as the administrator, for the backup user; its ``Data`` (``[]`` for the
    "no job" error of a job list)."""
    r = httpx.post(
        f"{world.url}/obs/api/json/{call}.do",
        timeout=TIMEOUT,
        json={**ADMIN, "LoginName": LOGIN, **params},
    )
    answer = r.json()
    if answer["Status"] != "OK" and call.startswith("List"):
        return []
    assert answer["Status"] == "OK", (call, answer)
    return answer.get("Data")


def jobs_today(world: World) -> dict[str, dict[str, str]]:
    """Today's (UTC) jobs of the backup user by ID: status and mode."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    status = cbs(world, "ListBackupJobStatus", BackupDate=day)
    modes = {j["ID"]: j["BackupJobMode"] for j in cbs(world, "ListBackupJobMode", BackupDate=day)}
    return {
        j["ID"]: {"status": j["BackupJobStatus"], "mode": modes.get(j["ID"], "?")} for j in status
    }


def wait_for(what: str, check: Callable[[], Any], within: float, step: float = 0.2) -> Any:
    """``check()``'s first truthy answer, asked every ``step`` s; AssertionError naming
    ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(step)


def start_agent(world: World, *args: str) -> subprocess.Popen[bytes]:
    """``opencbs ARGS agent run`` with the agent's environment; its stderr to ``root/
    agent.err`` (appended), its stdout to ``/dev/null``."""
    with open(world.root / "agent.err", "ab") as err:
        return subprocess.Popen(
            [OPENCBS, *args, "agent", "run"],
            env=world.agent,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def stop_agent(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    """Send ``sig``, wait (SIGKILL after ``TIMEOUT`` s); the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def child_pid(log: Path, mode: str) -> int | None:
    """The pid of the newest job of ``mode`` the agent's log says it started."""
    found = re.findall(rf"job started \(pid (\d+)\): .*mode {mode}\b", log_text(log))
    return int(found[-1]) if found else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
