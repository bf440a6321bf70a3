"""Missed backups with two real ``opencbs serve`` processes on one PostgreSQL database (issue
16: "exactly once, even with several server processes"): a set with two destinations and an
every-minute schedule whose slots pass with no job; both servers sweep (grace 2 s, a sweep
every 0.5 s); each slot is recorded once, as one ``BS_STOP_MISSED_BACKUP`` job per
destination."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from opencbs.model.schedules import Schedule, slots
from opencbs.reports.vocabulary import JobStatus
from opencbs.store import schedules, sets, users
from opencbs.store.db import Database
from opencbs.store.migrate import upgrade
from opencbs.store.schema import backup_jobs, missed_slots
from opencbs.store.util import now_ms
from tests.conftest import (
    REQUIRE_POSTGRES,
    _drop_postgres_db,
    _new_postgres_db,
    _postgres_available,
)
from tests.e2e.serving import isolated_env, serving

pytestmark = pytest.mark.postgres

UTC = ZoneInfo("UTC")
GRACE_S = 2
EVERY_MINUTE = Schedule(name="Every minute", type="DAILY", interval_minutes=1)  # type: ignore[arg-type]


@pytest.fixture
def pg_url() -> Iterator[str]:
    reason = _postgres_available()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    name, url = _new_postgres_db()
    try:
        yield url
    finally:
        _drop_postgres_db(name)


def _claims_and_jobs(db: Database) -> tuple[list[int], list[tuple[int, str]]]:
    with db.read() as conn:
        claimed = sorted(r[0] for r in conn.execute(select(missed_slots.c.slot_ms)))
        recorded = [
            (r.destination_id, r.job_id)
            for r in conn.execute(
                select(backup_jobs).where(
                    backup_jobs.c.status == JobStatus.STOP_MISSED_BACKUP.value
                )
            )
        ]
    return claimed, recorded


def test_two_servers_record_each_missed_slot_once(tmp_path: Path, pg_url: str) -> None:
    db = Database(pg_url)
    upgrade(db)
    written = now_ms() - 150_000  # two or three slots have passed already, more pass meanwhile
    with db.write() as conn:
        user = users.add_backup_user(conn, "alice", "alice-password")
        bset = sets.add_set(conn, user.id, "Docs")
        for name in ("Local", "Nas"):
            sets.add_destination(conn, user.id, bset.id, name=name, dest_type="LOCAL")
        bset = sets.get_set(conn, user.id, bset.id)
        schedules.add_schedule(conn, bset, EVERY_MINUTE, zone=UTC, at_ms=written)
    env = isolated_env(
        tmp_path, OPENCBS_DATABASE_URL=pg_url, OPENCBS_MISSED_BACKUP_GRACE=str(GRACE_S)
    )
    logs = [tmp_path / "serve-1.log", tmp_path / "serve-2.log"]
    with serving(env, log=logs[0]), serving(env, log=logs[1]):
        started = now_ms()
        deadline = time.monotonic() + 90
        # until a slot that passed while both ran is recorded (at most a minute and the grace)
        while time.monotonic() < deadline:
            claimed, _ = _claims_and_jobs(db)
            if claimed and claimed[-1] > started:
                break
            time.sleep(0.5)
        time.sleep(2)  # both keep sweeping a few rounds more
    ended = now_ms()
    claimed, recorded = _claims_and_jobs(db)
    db.dispose()
    due = list(slots(EVERY_MINUTE, UTC, written + 1, ended - GRACE_S * 1000 + 1))
    assert claimed[-1] > started, claimed
    # every slot judged so far, each once; the last may have become due as the servers stopped
    assert claimed == due[: len(claimed)] and len(claimed) >= len(due) - 1, (claimed, due)
    per_job = Counter(job_id for _, job_id in recorded)
    assert len(per_job) == len(claimed) and set(per_job.values()) == {2}, per_job
    assert len(set(recorded)) == len(recorded)
    said = "".join(p.read_text(errors="replace") for p in logs)
    assert "missed-backup sweep failed" not in said and "Traceback" not in said, said
    assert said.count("recorded as BS_STOP_MISSED_BACKUP") == len(claimed), said
