"""A fleet in a fresh database for ``bench/schedules.py`` (not a public entry): N backup users
(``agent00000`` …, one password, its argon2 hash computed once and stored for all), one backup
set each with one LOCAL destination and four schedules, and a finished job for each slot that
was answered — inserted in bulk (SQLAlchemy Core ``executemany``) in a few seconds instead of
hours of password hashing through ``store.users``.

The four schedules of set ``i`` (minute ``i % 60``, so a daily slot falls due for a sixtieth of
the sets each minute): ``Nightly`` (DAILY 22:mm), ``Weekdays`` (WEEKLY MONDAY–FRIDAY 01:mm),
``Month end`` (MONTHLY, the last day, 23:mm) and ``Weekend`` (WEEKLY SATURDAY, SUNDAY 10:mm).
Each schedule's ``next_check_ms`` is its last slot at or before ``now - grace``: every schedule
has exactly one slot due when the sweep runs at ``now`` (all due at once). A fraction
``answered`` of the slots (seeded random) has a job that started 7 minutes after the slot.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import tzinfo
from functools import cache
from typing import Any

from opencbs.model.schedules import Schedule, ScheduleType, previous_slot
from opencbs.model.sets import BackupSetSettings
from opencbs.reports.counters import COUNTER_NAMES
from opencbs.reports.timefmt import job_id_at
from opencbs.security import hash_password
from opencbs.store.db import Database
from opencbs.store.jobs import zero_seq
from opencbs.store.schema import backup_jobs, backup_sets, backup_users, destinations, schedules

PASSWORD = "agent-password-1"
CHUNK = 2_000
USER_BASE = 1_600_000_000_000
SET_BASE = 1_700_000_000_000
DEST_BASE = 1_750_000_000_000
SCHEDULE_BASE = 1_800_000_000_000
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")


def login(i: int) -> str:
    """The login name of agent ``i``."""
    return f"agent{i:05d}"


def fleet_schedules(i: int) -> list[Schedule]:
    """The four schedules of set ``i`` (module docstring)."""
    m = i % 60
    return [
        Schedule(name="Nightly", type=ScheduleType.DAILY, hour=22, minute=m),
        Schedule(name="Weekdays", type=ScheduleType.WEEKLY, hour=1, minute=m, weekdays=WEEKDAYS),
        Schedule(name="Month end", type=ScheduleType.MONTHLY, hour=23, minute=m, day_of_month=-1),
        Schedule(
            name="Weekend",
            type=ScheduleType.WEEKLY,
            hour=10,
            minute=m,
            weekdays=("SATURDAY", "SUNDAY"),
        ),
    ]


@dataclass(frozen=True)
class Fleet:
    """What was made: counts, the answered slots, and the seconds it took."""

    users: int
    schedules: int
    answered: int
    seconds: float
    hash_seconds: float


def _insert(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        with db.write() as conn:
            conn.execute(table.insert(), rows[start : start + CHUNK])


def make_fleet(
    db: Database, count: int, *, now_ms: int, grace_ms: int, zone: tzinfo, answered: float
) -> Fleet:
    """``count`` users, sets, destinations, ``4 × count`` schedules all due at ``now_ms`` (in
    ``zone``), and jobs answering a fraction ``answered`` of their slots (module docstring)."""
    t0 = time.monotonic()
    password_hash = hash_password(PASSWORD)
    hash_seconds = time.monotonic() - t0
    rng = random.Random(16)
    settings = BackupSetSettings(sources=("/home",)).as_json()
    users_rows, set_rows, dest_rows, sched_rows, job_rows = [], [], [], [], []

    @cache
    def due_slot(s: Schedule) -> int:
        slot = previous_slot(s, zone, now_ms - grace_ms)
        assert slot is not None
        return slot

    created = now_ms - 40 * 24 * 3_600_000
    for i in range(count):
        uid, sid, did = USER_BASE + i, SET_BASE + i, DEST_BASE + i
        users_rows.append(
            dict(
                id=uid,
                login_name=login(i),
                owner="",
                password_hash=password_hash,
                alias="",
                email="",
                client_type="OBM",
                status="ENABLE",
                quota=0,
                data_size=0,
                created_at=created,
            )
        )
        set_rows.append(
            dict(
                id=sid,
                user_id=uid,
                name="Files",
                type="FILE",
                settings=settings,
                removed=False,
                created_at=created,
            )
        )
        dest_rows.append(
            dict(id=did, set_id=sid, position=0, name="Local", type="LOCAL", settings={})
        )
        for pos, s in enumerate(fleet_schedules(i)):
            slot = due_slot(s)
            sched_rows.append(
                dict(
                    id=SCHEDULE_BASE + 4 * i + pos,
                    set_id=sid,
                    position=pos,
                    settings=s.model_dump(mode="json"),
                    created_at=created,
                    updated_at=created,
                    next_check_ms=slot,
                )
            )
            if rng.random() < answered:
                job_rows.append(_job(sid, did, slot + 7 * 60_000, zone))
    for table, rows in (
        (backup_users, users_rows),
        (backup_sets, set_rows),
        (destinations, dest_rows),
        (schedules, sched_rows),
        (backup_jobs, job_rows),
    ):
        _insert(db, table, rows)
    return Fleet(count, len(sched_rows), len(job_rows), time.monotonic() - t0, hash_seconds)


def _job(set_id: int, dest_id: int, start: int, zone: tzinfo) -> dict[str, Any]:
    row: dict[str, Any] = dict(
        set_id=set_id,
        destination_id=dest_id,
        job_id=job_id_at(start, zone),
        cdp=False,
        mode="S",
        status="BS_STOP_SUCCESS",
        start_time=start,
        end_time=start + 13 * 60_000,
        from_ip="127.0.0.1",
        run_version="",
        dedupe_enabled=True,
        next_seq=zero_seq(),
        last_activity=start + 13 * 60_000,
    )
    row.update({n: 0 for n in COUNTER_NAMES})
    return row
