"""``opencbs agent run`` end to end, over real processes (issue 16): a real ``opencbs serve``,
a schedule every minute (DAILY, ``BackupInterval`` 1) added in the server's database, and the
agent as a process of its own.

One agent, one server, about 2½ minutes:

- RunBackup.do → a job of mode ``R`` starts within seconds (the agent's long poll is woken);
- SIGHUP → the agent reads its config file again: its log moves to the file now named there;
- the schedule's slots → jobs of mode ``S`` appear, one per slot (two slots are watched);
- SIGTERM while a job runs → the agent exits 0 and the job ends ``BS_STOP_BY_USER``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_support import (
    World,
    add_schedule,
    alive,
    cbs,
    child_pid,
    jobs_today,
    log_text,
    make_set,
    start_agent,
    stop_agent,
    users_for,
    wait_for,
    world_of,
)
from tests.e2e.serving import isolated_env, serving


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    env = isolated_env(tmp_path)
    users_for(env)
    with serving(env, log=tmp_path / "serve.log") as served:
        w = world_of(tmp_path, env, served.url)
        w.agent["OPENCBS_SCHEDULE_JITTER"] = "1"
        make_set(w)
        yield w


def _config(path: Path, log: Path) -> None:
    path.write_text(f'agent_log_file = "{log}"\n')


def test_agent_runs_schedules_run_requests_reloads_and_stops(world: World) -> None:
    config, first_log, second_log = (world.root / n for n in ("agent.toml", "a1.log", "a2.log"))
    _config(config, first_log)
    add_schedule(world)
    known = set(jobs_today(world))
    proc = start_agent(world, "--config", str(config))
    try:
        wait_for("the agent polled", lambda: "schedules from the server" in log_text(first_log), 30)

        # RunBackup.do: a job of mode R within seconds (unless a slot's job runs just then)
        asked = time.monotonic()
        cbs(world, "RunBackup", BackupSetID=world.set_id)
        started = wait_for(
            "a job of mode R",
            lambda: [i for i, j in jobs_today(world).items() if j["mode"] == "R"],
            60,
        )
        assert time.monotonic() - asked < 20 or "mode S" in log_text(first_log)
        job_r = started[0]
        wait_for(
            "the R job ends", lambda: jobs_today(world)[job_r]["status"] != "BS_STILL_RUNNING", 60
        )
        assert jobs_today(world)[job_r]["status"] == "BS_STOP_SUCCESS"

        # SIGHUP: the config file is read again (its log file moves)
        _config(config, second_log)
        proc.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: "configuration reloaded" in log_text(second_log), 20)
        assert proc.poll() is None

        # the schedule's slots: jobs of mode S, one per minute
        def scheduled() -> list[str]:
            jobs = jobs_today(world)
            return [i for i in jobs if i not in known and jobs[i]["mode"] == "S"]

        two = wait_for("two scheduled jobs", lambda: len(scheduled()) >= 2 and scheduled(), 150, 1)
        minutes = sorted({i[:16] for i in two})
        assert len(minutes) == len(two), two  # never two of one slot
        wait_for(
            "the scheduled jobs end",
            lambda: all(jobs_today(world)[i]["status"] != "BS_STILL_RUNNING" for i in two),
            60,
        )
        assert {jobs_today(world)[i]["status"] for i in two} == {"BS_STOP_SUCCESS"}

        # SIGTERM while a job runs: exit 0, the job ends BS_STOP_BY_USER
        assert world.src is not None
        for i in range(2):
            (world.src / f"big-{i}.bin").write_bytes(os.urandom(48 << 20))
        before = set(jobs_today(world))
        cbs(world, "RunBackup", BackupSetID=world.set_id)
        new = wait_for(
            "the second R job runs",
            lambda: [
                i for i, j in jobs_today(world).items()
                if i not in before and j["mode"] == "R" and j["status"] == "BS_STILL_RUNNING"
            ],
            90,
            0.05,
        )  # fmt: skip
        pid = wait_for("its process", lambda: child_pid(second_log, "R"), 5)
        os.kill(pid, signal.SIGSTOP)  # held mid-job while the agent is told to stop
        proc.send_signal(signal.SIGTERM)
        wait_for("the agent stops its job", lambda: "stopping the job" in log_text(second_log), 10)
        os.kill(pid, signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
        assert not alive(pid)
        assert jobs_today(world)[new[0]]["status"] == "BS_STOP_BY_USER"
        said = log_text(second_log)
        assert "BS_STOP_BY_USER" in said and "the agent stopped" in said, said
        assert "Traceback" not in said + log_text(world.root / "agent.err")
    finally:
        stop_agent(proc, signal.SIGKILL)
