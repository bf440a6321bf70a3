"""The whole of issue 16 over real processes: a real ``opencbs serve`` with a short grace for
missed backups, a schedule every minute, ``opencbs agent run`` backing it up (jobs of mode
``S``), then the agent killed: the next slot becomes ``BS_STOP_MISSED_BACKUP`` and a real
webhook receiver and a real SMTP sink (aiosmtpd) each get exactly one alert of it.

About 2½ minutes: a first scheduled job within a minute, then one slot with nobody to run it,
its grace (20 s) and the server's sweep (every 5 s).
"""

from __future__ import annotations

import calendar
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alert_support import Sink, smtp_sink, webhook_receiver
from tests.e2e.daemon_support import (
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
from tests.e2e.serving import isolated_env, serving

GRACE = 20  # seconds after a slot within which its job must start


def _missed(world: World) -> list[str]:
    return sorted(i for i, j in jobs_today(world).items() if j["status"] == "BS_STOP_MISSED_BACKUP")


def _emails_of(sink: Sink, event: str) -> list[str]:
    return [str(m["Subject"]) for m in sink.messages if event in str(m["Subject"])]


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as s:
        yield s


def test_a_killed_agent_makes_one_missed_backup_and_one_alert_per_channel(
    tmp_path: Path, sink: Sink
) -> None:
    env = isolated_env(
        tmp_path,
        OPENCBS_MISSED_BACKUP_GRACE=str(GRACE),
        OPENCBS_SMTP_HOST="127.0.0.1",
        OPENCBS_SMTP_PORT=str(sink.port),
        OPENCBS_SMTP_SECURITY="none",
        OPENCBS_ALERT_FROM="backup@example.com",
    )
    users_for(env)
    with webhook_receiver() as receiver, serving(env, log=tmp_path / "serve.log") as served:
        world = world_of(tmp_path, env, served.url)
        world.agent["OPENCBS_SCHEDULE_JITTER"] = "1"
        make_set(world)
        hook = cbs(world, "AddAlertRule", Event="MISSED", Channel="WEBHOOK", Target=receiver.url)
        cbs(world, "AddAlertRule", Event="MISSED", Channel="EMAIL", Target="ops@example.com")
        add_schedule(world)
        agent = start_agent(world)
        try:
            scheduled = wait_for(
                "a scheduled job that ended",
                lambda: [
                    i for i, j in jobs_today(world).items()
                    if j["mode"] == "S" and j["status"] == "BS_STOP_SUCCESS"
                ],
                100,
                0.5,
            )  # fmt: skip
            # killed between two slots, while no job of the set runs (a running job answers
            # its next slot: it is not missed)
            assert all(j["status"] != "BS_STILL_RUNNING" for j in jobs_today(world).values())
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)
            killed_at = time.time()
        finally:
            stop_agent(agent, signal.SIGKILL)
        first = wait_for("a missed slot", lambda: _missed(world), 60 + GRACE + 30, 0.5)
        # no later slot: the schedule goes, so what follows is this slot's alerts alone
        schedule_id = cbs(world, "GetBackupSet", BackupSetID=world.set_id)["ScheduleList"][0]["ID"]
        cbs(world, "RemoveSchedule", BackupSetID=world.set_id, ID=schedule_id)
        missed = _missed(world)
        assert len(missed) == 1, missed  # one destination, one slot
        slot = calendar.timegm(time.strptime(first[0], "%Y-%m-%d-%H-%M-%S"))  # the zone is UTC
        assert slot > killed_at - 1 and scheduled[0] < first[0]
        wait_for("the webhook", lambda: receiver.received, 30)
        wait_for("the email", lambda: _emails_of(sink, "MISSED"), 30)
        time.sleep(12)  # the server's next rounds send nothing more
        bodies = [r.json() for r in receiver.received]
        assert [(b["event"], b["job_id"], b["status"]) for b in bodies] == [
            ("MISSED", first[0], "BS_STOP_MISSED_BACKUP")
        ], bodies
        assert receiver.received[0].signed_with(hook["WebhookSecret"])
        emails = _emails_of(sink, "MISSED")
        assert len(emails) == 1 and first[0] in emails[0], emails
        assert len(sink.messages) == 1
        report = cbs(
            world,
            "GetBackupJobReportSummary",
            BackupSetID=world.set_id,
            BackupJobID=first[0],
        )
        assert report["BackupJobStatus"] == "BS_STOP_MISSED_BACKUP"
        assert "Traceback" not in log_text(tmp_path / "serve.log")
