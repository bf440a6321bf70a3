"""``opencbs agent run`` keeps running its schedules while the server is away, over real
processes (issue 16), and ``opencbs backup --mode S --stop-at`` ends a job
``BS_STOP_BY_SCHEDULER``.

- ``test_agent_runs_cached_schedule_with_the_server_away``: the agent fetches a schedule every
  minute, stops (SIGTERM: exit 0); the server is killed; the agent starts again without it and
  runs the next slot from its cache (the job's report spooled); the server comes back and the
  job is on it, mode ``S``: the agent, started again, delivers its spool when it reaches the
  server (no ``agent flush`` needed). A slot it ran is not run again after
  a restart (its state file).
- ``test_stop_at_ends_the_job_by_the_scheduler``: the job's stop time already passed when it
  starts: it ends ``BS_STOP_BY_SCHEDULER`` with exit code 130, as mode ``S``.
- ``test_retention_after_overrides_the_sets_flag``: ``--retention-after`` runs the set's
  policy after the backup though the set says not to, ``--no-retention-after`` keeps it from
  running though the set says to (a schedule's ``retention_after``).
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.daemon_support import (
    LOGIN,
    PASSWORD,
    World,
    add_schedule,
    cbs,
    jobs_today,
    log_text,
    make_set,
    start_agent,
    stop_agent,
    users_for,
    wait_for,
    world_of,
)
from tests.e2e.serving import Serve, free_port, isolated_env, ok, run, serving

ENDED = re.compile(r"job ended \(BS_STOP_SUCCESS\): backup set 'docs' \(\d+\), mode S")


def test_agent_runs_cached_schedule_with_the_server_away(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    users_for(env)
    server = Serve(env, free_port())
    server.start()
    world = world_of(tmp_path, env, server.url)
    log = tmp_path / "agent.log"
    world.agent.update(OPENCBS_SCHEDULE_JITTER="1", OPENCBS_AGENT_LOG_FILE=str(log))
    proc = None
    try:
        make_set(world)
        add_schedule(world)
        proc = start_agent(world)
        wait_for("the schedule", lambda: "1 schedule(s)" in log_text(log), 30)
        assert stop_agent(proc) == 0
        server.kill()

        # the server is away: the agent starts from its cache and runs the next slot
        proc = start_agent(world)
        wait_for("the cache read", lambda: "cached schedules of" in log_text(log), 20)
        wait_for("a scheduled job", lambda: ENDED.search(log_text(log)), 90, 0.5)
        said = log_text(log)
        assert "cannot reach the server" in said, said
        assert "report spooled" in said, said
        ran = re.findall(r"slot (\S+): starts at", said)
        assert stop_agent(proc) == 0

        # started again at once: the slot it ran is not run again
        proc = start_agent(world)
        wait_for("the restart", lambda: log_text(log).count("cached schedules of") == 2, 20)
        time.sleep(3)
        assert re.findall(r"slot (\S+): starts at", log_text(log)) == ran
        assert stop_agent(proc) == 0

        # the server back: the agent delivers the job of the slot run offline by itself
        # (before the server could judge that slot missed), mode S
        server.start()
        before = set(jobs_today(world))
        proc = start_agent(world)
        wait_for(
            "the spooled report delivered",
            lambda: "spooled job reports delivered" in log_text(log),
            60,
            0.5,
        )
        jobs = jobs_today(world)
        delivered = sorted(i for i in jobs if i not in before)
        assert delivered, (before, jobs)
        assert jobs[delivered[0]] == {"status": "BS_STOP_SUCCESS", "mode": "S"}
        assert delivered[0] < time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(time.time() - 5))
        assert stop_agent(proc) == 0
    finally:
        if proc is not None:
            stop_agent(proc, signal.SIGKILL)
        server.kill()


def test_stop_at_ends_the_job_by_the_scheduler(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    users_for(env)
    with serving(env) as served:
        world = world_of(tmp_path, env, served.url)
        make_set(world)
        time.sleep(1.02 - time.time() % 1)  # a job's ID is its start second
        past = str(int(time.time() * 1000) - 1000)
        done = run(world.agent, "backup", "--set", world.set_id, "--mode", "S",
                   "--stop-at", past, "--no-retention-after", "--json")  # fmt: skip
        assert done.returncode == 130, done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["status"] == "BS_STOP_BY_SCHEDULER", outcome
        assert "schedule" in outcome["message"], outcome
        assert jobs_today(world)[outcome["job_id"]] == {
            "status": "BS_STOP_BY_SCHEDULER",
            "mode": "S",
        }
        clash = run(world.agent, "backup", "--set", world.set_id, "--mode", "R", "--scheduled")
        assert clash.returncode == 2 and "disagree" in clash.stderr, clash.stderr


def _retention_said(world: World, *flag: str) -> bool:
    """Back up with ``flag``; whether the job's report log says the policy ran."""
    time.sleep(1.02 - time.time() % 1)  # a job's ID is its start second
    done = json.loads(ok(world.agent, "backup", "--set", world.set_id, *flag, "--json"))
    assert done["status"] == "BS_STOP_SUCCESS", done
    report = cbs(world, "GetBackupJobReport", BackupSetID=done["backup_set_id"],
                 DestinationID=done["destination_id"], BackupJobID=done["job_id"])  # fmt: skip
    return any(e["Message"].startswith("Retention policy") for e in report["Logs"])


def _set_retention(world: World, retention: dict[str, Any]) -> None:
    r = httpx.patch(
        f"{world.url}/api/agent/v1/backup-sets/{world.set_id}",
        json={"settings": {"retention": retention}},
        auth=(LOGIN, PASSWORD),
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_retention_after_overrides_the_sets_flag(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    users_for(env)
    with serving(env) as served:
        world = world_of(tmp_path, env, served.url)
        make_set(world)
        _set_retention(world, {"mode": "SIMPLE", "jobs": 3, "after_backup": False})
        assert not _retention_said(world)
        assert _retention_said(world, "--mode", "S", "--retention-after")
        _set_retention(world, {"mode": "SIMPLE", "jobs": 3, "after_backup": True})
        assert _retention_said(world)
        assert not _retention_said(world, "--mode", "S", "--no-retention-after")
