"""The missed-backup sweep (issue 16; store/missed.py) with an injected clock, on SQLite and
PostgreSQL: each missed slot recorded exactly once, a job within the grace answers its slot, a
late job leaves both, long outages bounded per sweep, DST days, schedules changed meanwhile,
removed sets and suspended users, two sweeping processes at once, and the recorded jobs as the
CBS calls show them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from opencbs.api.app import sweep_missed_once
from opencbs.api.state import ServerState
from opencbs.model.schedules import Schedule
from opencbs.reports.vocabulary import AccountStatus, JobMode, JobStatus
from opencbs.store import jobs, missed, schedules, sets, users
from opencbs.store.db import Database
from opencbs.store.missed import EARLY_TOLERANCE_MS, sweep_missed
from opencbs.store.schema import backup_jobs, backup_sets, backup_users, missed_slots
from tests.conftest import ADMIN

API = "/obs/api/json"
HOUR = 3_600_000
MINUTE = 60_000
GRACE = HOUR
BERLIN = ZoneInfo("Europe/Berlin")
NIGHTLY = Schedule(name="Nightly", type="DAILY", hour=22, minute=0)  # type: ignore[arg-type]


def ms(text: str, zone: Any = UTC) -> int:
    """Epoch ms of ``yyyy-MM-dd HH:mm`` in ``zone``."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=zone).timestamp() * 1000)


@dataclass(frozen=True)
class World:
    user_id: int
    bset: sets.BackupSet
    schedule_id: int


_counter = iter(range(10_000))


def make_world(
    db: Database,
    schedule: Schedule = NIGHTLY,
    *,
    created: str = "2026-03-02 00:00",
    destinations: int = 2,
    time_zone: str | None = None,
    login: str | None = None,
) -> World:
    """A backup user with one set (``destinations`` LOCAL destinations) and ``schedule``,
    written at ``created`` (UTC)."""
    n = next(_counter)
    with db.write() as conn:
        user = users.add_backup_user(conn, login or f"user{n}", "user-password-1")
        settings = {"time_zone": time_zone} if time_zone else {}
        bset = sets.add_set(conn, user.id, "Docs", settings)
        for d in range(destinations):
            sets.add_destination(conn, user.id, bset.id, name=f"Dest{d}", dest_type="LOCAL")
        bset = sets.get_set(conn, user.id, bset.id)
        zone = schedules.set_zone(bset, UTC)
        row = schedules.add_schedule(conn, bset, schedule, zone=zone, at_ms=ms(created))
    return World(user.id, bset, row.id)


def sweep(db: Database, at: int, **kw: Any) -> missed.SweepOutcome:
    return sweep_missed(db, now_ms=at, grace_ms=GRACE, tz=UTC, **kw)


def job_rows(db: Database, set_id: int) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                select(backup_jobs)
                .where(backup_jobs.c.set_id == set_id)
                .order_by(backup_jobs.c.start_time, backup_jobs.c.destination_id)
            )
        )


def missed_rows(db: Database, set_id: int) -> list[Any]:
    return [r for r in job_rows(db, set_id) if r.status == JobStatus.STOP_MISSED_BACKUP.value]


def claims(db: Database) -> list[tuple[int, int]]:
    with db.read() as conn:
        rows = conn.execute(select(missed_slots.c.schedule_id, missed_slots.c.slot_ms))
        return sorted((r[0], r[1]) for r in rows)


def next_check(db: Database, schedule_id: int) -> int | None:
    with db.read() as conn:
        return conn.execute(
            select(schedules.schedules.c.next_check_ms).where(
                schedules.schedules.c.id == schedule_id
            )
        ).scalar_one()


def run_job(db: Database, w: World, start: int, *, end: int | None = None) -> jobs.Job:
    """A job of ``w``'s set to its first destination started at ``start`` (finished at ``end``
    when given, else still running)."""
    with db.write() as conn:
        job = jobs.start_job(
            conn, w.bset, w.bset.destinations[0].id, tz=UTC, start_ms=start, mode=JobMode.SCHEDULED
        )
        if end is not None:
            job = jobs.finish_job(conn, job.pk, JobStatus.STOP_SUCCESS, end_ms=end)
    return job


# --- exactly once ------------------------------------------------------------------------------


def test_a_missed_slot_is_recorded_once_per_destination(db: Database) -> None:
    w = make_world(db)
    slot = ms("2026-03-02 22:00")
    assert next_check(db, w.schedule_id) == slot
    # not yet: the grace has not passed
    assert sweep(db, slot + GRACE - 1).judged == 0
    assert job_rows(db, w.bset.id) == []
    ended: list[int] = []
    outcome = sweep(db, slot + GRACE, on_job_ended=lambda conn, pk, *, at_ms: ended.append(pk))
    assert outcome.judged == 1 and len(outcome.recorded) == 1 and not outcome.more
    rec = outcome.recorded[0]
    assert (rec.schedule_name, rec.slot_ms, rec.job_id) == ("Nightly", slot, "2026-03-02-22-00-00")
    rows = missed_rows(db, w.bset.id)
    assert [r.destination_id for r in rows] == [d.id for d in w.bset.destinations]
    assert sorted(ended) == sorted(r.pk for r in rows) == sorted(rec.job_pks)
    for r in rows:
        assert (r.mode, r.job_id, r.start_time, r.end_time) == ("S", rec.job_id, slot, slot)
        assert r.new_files == 0 and r.warn_entries == 0 and r.error_entries == 0
    assert claims(db) == [(w.schedule_id, slot)]
    assert next_check(db, w.schedule_id) == slot + 24 * HOUR
    # again, and later the same day: nothing more
    for at in (slot + GRACE, slot + GRACE + 1, slot + 20 * HOUR):
        assert sweep(db, at).recorded == []
    assert len(missed_rows(db, w.bset.id)) == 2


def test_a_job_within_the_grace_answers_the_slot(db: Database) -> None:
    slot = ms("2026-03-02 22:00")
    on_time = make_world(db)
    run_job(db, on_time, slot + 10 * MINUTE, end=slot + 20 * MINUTE)
    late_in_grace = make_world(db)
    run_job(db, late_in_grace, slot + GRACE)  # the last instant of the grace, still running
    early = make_world(db)
    run_job(db, early, slot - EARLY_TOLERANCE_MS + 1000, end=slot - 4 * MINUTE)
    running = make_world(db)  # an earlier job still running at the slot: the agent skips it
    run_job(db, running, slot - 3 * HOUR, end=slot + 30 * MINUTE)
    outcome = sweep(db, slot + GRACE)
    assert outcome.judged == 4 and outcome.recorded == []
    for w in (on_time, late_in_grace, early, running):
        assert missed_rows(db, w.bset.id) == []
        assert next_check(db, w.schedule_id) == slot + 24 * HOUR
    assert claims(db) == []


def test_jobs_that_do_not_answer_the_slot(db: Database) -> None:
    slot = ms("2026-03-02 22:00")
    too_early = make_world(db)  # ended before the slot, started before the tolerance
    run_job(db, too_early, slot - EARLY_TOLERANCE_MS - 1000, end=slot - 1000)
    other_set = make_world(db)
    stranger = make_world(db, destinations=1)
    run_job(db, stranger, slot + 5 * MINUTE, end=slot + 6 * MINUTE)
    outcome = sweep(db, slot + GRACE)
    assert {r.set_id for r in outcome.recorded} == {too_early.bset.id, other_set.bset.id}
    assert len(missed_rows(db, too_early.bset.id)) == 2


def test_a_job_after_the_grace_leaves_both(db: Database) -> None:
    slot = ms("2026-03-02 22:00")
    w = make_world(db, destinations=1)
    late = run_job(db, w, slot + GRACE + 1000, end=slot + GRACE + 5 * MINUTE)  # before the sweep
    w2 = make_world(db, destinations=1)
    assert len(sweep(db, slot + GRACE + 2 * MINUTE).recorded) == 2
    late2 = run_job(db, w2, slot + GRACE + 3 * MINUTE, end=slot + GRACE + 9 * MINUTE)  # after it
    assert sweep(db, slot + GRACE + 10 * MINUTE).recorded == []
    for world, job in ((w, late), (w2, late2)):
        rows = job_rows(db, world.bset.id)
        assert [(r.status, r.job_id) for r in rows] == [
            ("BS_STOP_MISSED_BACKUP", "2026-03-02-22-00-00"),
            ("BS_STOP_SUCCESS", job.job_id),
        ]


# --- long outages, DST, changes meanwhile ----------------------------------------------------


def test_a_long_outage_records_each_slot_once_over_bounded_sweeps(db: Database) -> None:
    w = make_world(db, destinations=1)
    first = ms("2026-03-02 22:00")
    at = first + 9 * 24 * HOUR + GRACE  # ten nightly slots judgeable
    seen: list[int] = []
    sweeps = 0
    while True:
        outcome = sweep(db, at, limit=3)
        sweeps += 1
        seen += [r.slot_ms for r in outcome.recorded]
        assert outcome.judged <= 3
        if not outcome.more:
            break
    assert sweeps == 4
    assert seen == [first + d * 24 * HOUR for d in range(10)]
    assert [r.start_time for r in missed_rows(db, w.bset.id)] == seen
    assert claims(db) == [(w.schedule_id, s) for s in seen]
    assert sweep(db, at).recorded == []


def test_an_interval_schedule_after_an_outage(db: Database) -> None:
    every_hour = Schedule(name="Hourly", type="DAILY", hour=8, minute=0, interval_minutes=60)  # type: ignore[arg-type]
    w = make_world(db, every_hour, destinations=1)
    run_job(db, w, ms("2026-03-02 10:58"), end=ms("2026-03-02 11:10"))
    at = ms("2026-03-02 14:00") + GRACE
    outcome = sweep(db, at)
    # 08:00 … 14:00; the 10:58 job answers 10:00 (within its grace) and 11:00 (just early)
    assert [r.slot_ms for r in outcome.recorded] == [
        ms("2026-03-02 08:00"),
        ms("2026-03-02 09:00"),
        ms("2026-03-02 12:00"),
        ms("2026-03-02 13:00"),
        ms("2026-03-02 14:00"),
    ]
    assert next_check(db, w.schedule_id) == ms("2026-03-02 15:00")


def test_dst_days_in_the_sets_zone(db: Database) -> None:
    early = Schedule(name="Early", type="DAILY", hour=2, minute=30)  # type: ignore[arg-type]
    spring = make_world(
        db, early, created="2026-03-28 12:00", time_zone="Europe/Berlin", destinations=1
    )
    fall = make_world(
        db, early, created="2026-10-24 12:00", time_zone="Europe/Berlin", destinations=1
    )
    # 2026-03-29 02:30 does not exist in Berlin: 03:30 CEST (01:30 UTC); 2026-10-25 02:30 is
    # there twice: once, the first (CEST, 00:30 UTC)
    skipped = ms("2026-03-29 01:30")
    twice = ms("2026-10-25 00:30")
    assert next_check(db, spring.schedule_id) == skipped
    assert next_check(db, fall.schedule_id) == twice
    db_tz = BERLIN  # job IDs in the server zone
    sweep_missed(db, now_ms=skipped + 30 * HOUR, grace_ms=GRACE, tz=db_tz)
    assert [(r.job_id, r.start_time) for r in missed_rows(db, spring.bset.id)] == [
        ("2026-03-29-03-30-00", skipped),
        ("2026-03-30-02-30-00", ms("2026-03-30 00:30")),  # CEST from then on
    ]
    sweep_missed(db, now_ms=twice + 30 * HOUR, grace_ms=GRACE, tz=db_tz)
    assert [(r.job_id, r.start_time) for r in missed_rows(db, fall.bset.id)] == [
        ("2026-10-25-02-30-00", twice),
        ("2026-10-26-02-30-00", ms("2026-10-26 01:30")),  # CET
    ]


def test_a_schedule_updated_or_removed_meanwhile(db: Database) -> None:
    slot = ms("2026-03-02 22:00")
    changed = make_world(db, destinations=1)
    removed = make_world(db, destinations=1)
    later = slot + GRACE + 5 * MINUTE
    with db.write() as conn:  # at 22:30, before the sweep judged 22:00
        moved = NIGHTLY.model_copy(update={"hour": 23})
        schedules.update_schedule(
            conn, changed.bset, changed.schedule_id, moved, zone=UTC, at_ms=slot + 30 * MINUTE
        )
        schedules.remove_schedule(conn, removed.bset, removed.schedule_id)
    # the update restarts checking after its own time: 22:00 of today is not judged any more
    assert next_check(db, changed.schedule_id) == ms("2026-03-02 23:00")
    assert sweep(db, later).recorded == []
    outcome = sweep(db, ms("2026-03-03 00:00") + 1)
    assert [(r.set_id, r.slot_ms) for r in outcome.recorded] == [
        (changed.bset.id, ms("2026-03-02 23:00"))
    ]
    assert missed_rows(db, removed.bset.id) == []


def test_the_compare_and_set_leaves_a_schedule_changed_after_it_was_read(db: Database) -> None:
    w = make_world(db, destinations=1)
    slot = ms("2026-03-02 22:00")
    with db.write() as conn:
        row = missed._due(conn, slot + GRACE, 10)[0]
        # another writer moves the schedule on before this one advances it
        conn.execute(
            update(schedules.schedules)
            .where(schedules.schedules.c.id == w.schedule_id)
            .values(next_check_ms=slot + 24 * HOUR)
        )
        outcome = missed.SweepOutcome()
        missed._handle(conn, row, missed._Context(slot + GRACE, GRACE, UTC, None), outcome)
    assert outcome.judged == 0 and outcome.recorded == []
    assert missed_rows(db, w.bset.id) == []


def test_removed_sets_and_suspended_users_are_not_reported(db: Database) -> None:
    slot = ms("2026-03-02 22:00")
    gone = make_world(db)
    away = make_world(db)
    with db.write() as conn:
        conn.execute(
            update(backup_sets).where(backup_sets.c.id == gone.bset.id).values(removed=True)
        )
        conn.execute(
            update(backup_users)
            .where(backup_users.c.id == away.user_id)
            .values(status=AccountStatus.SUSPENDED.value)
        )
    at = slot + 3 * 24 * HOUR + GRACE + MINUTE  # four nights
    outcome = sweep(db, at)
    assert outcome.recorded == [] and outcome.passed_over == 2
    assert job_rows(db, gone.bset.id) == job_rows(db, away.bset.id) == []
    # passed over up to now: the user taken back is not reported the nights of the suspension
    assert next_check(db, away.schedule_id) == slot + 4 * 24 * HOUR
    with db.write() as conn:
        conn.execute(
            update(backup_users)
            .where(backup_users.c.id == away.user_id)
            .values(status=AccountStatus.ENABLE.value)
        )
    outcome = sweep(db, slot + 4 * 24 * HOUR + GRACE)
    assert [(r.set_id, r.slot_ms) for r in outcome.recorded] == [
        (away.bset.id, slot + 4 * 24 * HOUR)
    ]


def test_a_set_without_destinations_records_no_job(db: Database) -> None:
    w = make_world(db, destinations=0)
    slot = ms("2026-03-02 22:00")
    outcome = sweep(db, slot + GRACE)
    assert [(r.slot_ms, r.job_pks) for r in outcome.recorded] == [(slot, ())]
    assert job_rows(db, w.bset.id) == []


def test_two_schedules_of_one_slot_record_one_job_per_destination(db: Database) -> None:
    slot = ms("2026-03-02 22:00")  # a Monday
    w = make_world(db)
    mondays = Schedule(name="Mondays", type="WEEKLY", hour=22, minute=0, weekdays=("MONDAY",))  # type: ignore[arg-type]
    with db.write() as conn:
        second = schedules.add_schedule(
            conn, w.bset, mondays, zone=UTC, at_ms=ms("2026-03-02 00:00")
        )
    outcome = sweep(db, slot + GRACE)
    # both slots claimed; the second finds the jobs of that ID there already and adds none
    assert sorted(len(r.job_pks) for r in outcome.recorded) == [0, 2]
    assert claims(db) == sorted([(w.schedule_id, slot), (second.id, slot)])
    assert len(missed_rows(db, w.bset.id)) == 2


# --- two processes -----------------------------------------------------------------------------


def test_two_sweepers_at_once_record_each_slot_once(db: Database) -> None:
    worlds = [make_world(db, destinations=2) for _ in range(12)]
    first = ms("2026-03-02 22:00")
    at = first + 2 * 24 * HOUR + GRACE  # three slots each
    other = Database(db.url)
    results: list[missed.SweepOutcome] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(database: Database) -> None:
        try:
            start.wait()
            while True:
                outcome = sweep_missed(database, now_ms=at, grace_ms=GRACE, tz=UTC, limit=5)
                results.append(outcome)
                if not outcome.more:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in (db, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    other.dispose()
    assert errors == []
    recorded = [(r.schedule_id, r.slot_ms) for o in results for r in o.recorded]
    expected = [(w.schedule_id, first + d * 24 * HOUR) for w in worlds for d in range(3)]
    assert sorted(recorded) == sorted(expected)  # each once, by one of the two
    assert claims(db) == sorted(expected)
    with db.read() as conn:
        count = conn.execute(
            select(func.count()).where(backup_jobs.c.status == JobStatus.STOP_MISSED_BACKUP.value)
        ).scalar_one()
    assert count == len(expected) * 2


# --- the server's sweep and the CBS calls -------------------------------------------------------


def call(client: TestClient, name: str, **params: Any) -> Any:
    r = client.post(f"{API}/{name}.do", json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1], **params})
    body = r.json()
    assert r.status_code == 200 and body["Status"] == "OK", body
    return body["Data"]


def test_the_missed_job_in_the_cbs_calls(client: TestClient, state: ServerState) -> None:
    w = make_world(state.db, login="alice")
    slot = ms("2026-03-02 22:00")
    state.started_ms = 0
    state.missed_backup_grace = GRACE / 1000
    outcome = sweep_missed_once(state, at_ms=slot + GRACE)
    job_id = "2026-03-02-22-00-00"
    assert [r.job_id for r in outcome.recorded] == [job_id]
    listed = call(client, "ListBackupJobStatus", LoginName="alice", BackupDate="2026-03-02")
    assert [(r["ID"], r["BackupJobStatus"], r["DestinationID"]) for r in listed] == [
        (job_id, "BS_STOP_MISSED_BACKUP", str(d.id)) for d in w.bset.destinations
    ]
    assert {(r["StartTime"], r["EndTime"], r["UploadSize"]) for r in listed} == {
        ("2026-03-02 22:00:00", "2026-03-02 22:00:00", "0")
    }
    modes = call(
        client,
        "ListBackupJobMode",
        LoginName="alice",
        BackupSetID=str(w.bset.id),
        BackupDate="2026-03-02",
    )
    assert {(r["ID"], r["BackupJobMode"]) for r in modes} == {(job_id, "S")}
    ref = {"LoginName": "alice", "BackupSetID": str(w.bset.id), "BackupJobID": job_id}
    for dest in w.bset.destinations:
        report = call(client, "GetBackupJobReport", **ref, DestinationID=str(dest.id))
        assert report["BackupJobStatus"] == "BS_STOP_MISSED_BACKUP"
        assert report["StartTime"] == report["EndTime"] == "2026-03-02 22:00:00"
        assert report["new"] == report["upd"] == report["del"] == []
        assert [log["Type"] for log in report["Logs"]] == ["info"]
        message = report["Logs"][0]["Message"]
        assert "schedule 'Nightly'" in message and "2026-03-02 22:00:00" in message
        summary = call(client, "GetBackupJobReportSummary", **ref, DestinationID=str(dest.id))
        assert summary["BackupJobStatus"] == "BS_STOP_MISSED_BACKUP"
        counts = {k: v for k, v in summary.items() if k.startswith(("NumOf", "Total"))}
        assert counts and all(v == 0 for v in counts.values()), counts


def test_the_server_sweep_waits_for_the_grace_after_its_start(state: ServerState) -> None:
    make_world(state.db)
    slot = ms("2026-03-02 22:00")
    state.missed_backup_grace = GRACE / 1000
    state.started_ms = slot + GRACE  # started just now: agents' spooled jobs may still come
    assert sweep_missed_once(state, at_ms=slot + GRACE + 1).judged == 0
    assert len(sweep_missed_once(state, at_ms=slot + 2 * GRACE).recorded) == 1


def test_each_job_answers_one_slot_of_an_every_minute_schedule(db: Database) -> None:
    """A periodic schedule's slot is answered by a job started at most half its interval
    early and before its next slot: one job does not answer the five slots around it."""
    every = Schedule(name="Minutely", type="DAILY", interval_minutes=1)  # type: ignore[arg-type]
    w = make_world(db, every, created="2026-03-02 09:59", destinations=1)
    run_job(db, w, ms("2026-03-02 10:00") + 1_000, end=ms("2026-03-02 10:00") + 3_000)
    run_job(db, w, ms("2026-03-02 10:03") - 20_000, end=ms("2026-03-02 10:03") - 5_000)
    run_job(db, w, ms("2026-03-02 10:04") + 61_000, end=ms("2026-03-02 10:04") + 62_000)
    sweep(db, ms("2026-03-02 10:05") + GRACE + 1)
    recorded = [r.job_id for r in missed_rows(db, w.bset.id)]
    # 10:00 on time; the job of 10:02:40 is late for 10:02 and 20 s early for 10:03: it
    # answers both; the one of 10:05:01 came after 10:04's next slot: it answers 10:05 only
    assert recorded == ["2026-03-02-10-01-00", "2026-03-02-10-04-00"]
