"""``store.schedules`` on SQLite and PostgreSQL (cbs-api.md §13): names unique within a set,
at most ``MAX_SCHEDULES``, ``replace_schedules`` keeping IDs and positions, the next checked
slot computed from the write's moment (and again by ``rezone``), schedules of several sets."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from opencbs.errors import Conflict, InvalidInput
from opencbs.model.schedules import Schedule, ScheduleType
from opencbs.store import schedules, sets, users
from opencbs.store.db import Database
from opencbs.store.schedules import MAX_SCHEDULES, ScheduleNotFound
from opencbs.store.schema import schedules as schedules_table
from opencbs.store.sets import BackupSet

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
#: 2030-01-07 12:00 UTC (a Monday)
AT = 1_894_017_600_000
HOUR = 3_600_000


def daily(name: str, hour: int = 22) -> Schedule:
    return Schedule(name=name, type=ScheduleType.DAILY, hour=hour)


@pytest.fixture
def bset(db: Database) -> BackupSet:
    with db.write() as conn:
        user = users.add_backup_user(conn, "alice", "alice-password")
        return sets.add_set(conn, user.id, "Docs")


def test_add_get_update_remove(db: Database, bset: BackupSet) -> None:
    with db.write() as conn:
        row = schedules.add_schedule(conn, bset, daily("Nightly"), zone=UTC, at_ms=AT)
    assert (row.set_id, row.position, row.created_at, row.updated_at) == (bset.id, 0, AT, AT)
    assert row.next_check_ms == AT + 10 * HOUR  # today's 22:00 UTC
    with db.write() as conn:
        assert schedules.get_schedule(conn, bset, str(row.id)) == row
        later = AT + 11 * HOUR  # 23:00: today's 22:00 has passed
        changed = schedules.update_schedule(
            conn, bset, row.id, daily("Nightly", 23), zone=UTC, at_ms=later
        )
    assert (changed.id, changed.created_at, changed.updated_at) == (row.id, AT, later)
    assert changed.next_check_ms == AT + 35 * HOUR  # tomorrow 23:00
    with db.write() as conn:
        assert schedules.remove_schedule(conn, bset, row.id) == changed
        assert schedules.list_schedules(conn, bset.id) == []
        for missing in (row.id, "nope", ""):
            with pytest.raises(ScheduleNotFound):
                schedules.get_schedule(conn, bset, missing)


def test_names_are_unique_within_a_set(db: Database, bset: BackupSet) -> None:
    with db.write() as conn:
        first = schedules.add_schedule(conn, bset, daily("A"), zone=UTC, at_ms=AT)
        second = schedules.add_schedule(conn, bset, daily("B"), zone=UTC, at_ms=AT)
        with pytest.raises(Conflict, match="schedule named 'A' already"):
            schedules.add_schedule(conn, bset, daily("A", 3), zone=UTC, at_ms=AT)
        with pytest.raises(Conflict):
            schedules.update_schedule(conn, bset, second.id, daily("A"), zone=UTC, at_ms=AT)
        # its own name is no conflict
        schedules.update_schedule(conn, bset, first.id, daily("A", 5), zone=UTC, at_ms=AT)
        other = sets.add_set(conn, bset.user_id, "Other")
        schedules.add_schedule(conn, other, daily("A"), zone=UTC, at_ms=AT)  # another set
        # a schedule of another set is not found through this one
        with pytest.raises(ScheduleNotFound):
            schedules.get_schedule(conn, other, first.id)


def test_at_most_max_schedules(db: Database, bset: BackupSet) -> None:
    with db.write() as conn:
        for i in range(MAX_SCHEDULES):
            schedules.add_schedule(conn, bset, daily(f"S{i}"), zone=UTC, at_ms=AT)
        with pytest.raises(InvalidInput, match=f"at most {MAX_SCHEDULES}"):
            schedules.add_schedule(conn, bset, daily("one more"), zone=UTC, at_ms=AT)
        rows = schedules.list_schedules(conn, bset.id)
        assert [r.position for r in rows] == list(range(MAX_SCHEDULES))
        assert len({r.id for r in rows}) == MAX_SCHEDULES
        too_many = [(None, daily(f"T{i}")) for i in range(MAX_SCHEDULES + 1)]
        with pytest.raises(InvalidInput):
            schedules.replace_schedules(conn, bset, too_many, zone=UTC, at_ms=AT)


def test_replace_keeps_ids_and_positions(db: Database, bset: BackupSet) -> None:
    with db.write() as conn:
        a = schedules.add_schedule(conn, bset, daily("A"), zone=UTC, at_ms=AT)
        b = schedules.add_schedule(conn, bset, daily("B"), zone=UTC, at_ms=AT)
        c = schedules.add_schedule(conn, bset, daily("C"), zone=UTC, at_ms=AT)
    later = AT + 11 * HOUR
    with db.write() as conn:
        rows = schedules.replace_schedules(
            conn,
            bset,
            [(c.id, c.schedule), (a.id, daily("A", 23)), (None, daily("D", 1))],
            zone=UTC,
            at_ms=later,
        )
    assert [(r.id, r.position, r.schedule.name) for r in rows[:2]] == [
        (c.id, 0, "C"),
        (a.id, 1, "A"),
    ]
    assert rows[2].id not in (a.id, b.id, c.id) and rows[2].position == 2
    # C moved but did not change: its next check stays; A changed: recomputed from `later`
    assert (rows[0].next_check_ms, rows[0].updated_at) == (c.next_check_ms, later)
    assert rows[1].next_check_ms == AT + 35 * HOUR
    assert rows[2].next_check_ms == AT + 13 * HOUR  # tomorrow 01:00
    assert rows[2].created_at == later
    with db.write() as conn:
        with pytest.raises(ScheduleNotFound):
            schedules.replace_schedules(conn, bset, [(b.id, daily("B"))], zone=UTC, at_ms=later)
        with pytest.raises(Conflict, match="two schedules are named 'X'"):
            schedules.replace_schedules(
                conn, bset, [(None, daily("X")), (None, daily("X"))], zone=UTC, at_ms=later
            )
        assert schedules.replace_schedules(conn, bset, [], zone=UTC, at_ms=later) == []


def test_rezone_and_schedules_of_sets(db: Database, bset: BackupSet) -> None:
    with db.write() as conn:
        row = schedules.add_schedule(conn, bset, daily("Nightly"), zone=UTC, at_ms=AT)
        other = sets.add_set(conn, bset.user_id, "Other")
        schedules.add_schedule(conn, other, daily("X", 3), zone=UTC, at_ms=AT)
        moved = sets.update_set(
            conn, bset.user_id, bset.id, settings={"time_zone": "Europe/Berlin"}
        )
        assert schedules.set_zone(moved, UTC) == BERLIN
        assert schedules.set_zone(bset, UTC) is UTC
        schedules.rezone(conn, moved, zone=BERLIN, at_ms=AT)
        [again] = schedules.list_schedules(conn, bset.id)
        # 22:00 in Berlin (winter: UTC+1) is 21:00 UTC
        berlin_22 = dt.datetime(2030, 1, 7, 22, tzinfo=BERLIN)
        assert again.next_check_ms == int(berlin_22.timestamp() * 1000) == AT + 9 * HOUR
        assert again.id == row.id
        both = schedules.schedules_of_sets(conn, [bset.id, other.id, 999])
        assert set(both) == {bset.id, other.id}
        assert schedules.schedules_of_sets(conn, []) == {}
        # a stored schedule that no longer reads is left out, not an error
        conn.execute(
            update(schedules_table)
            .where(schedules_table.c.id == row.id)
            .values(settings={"name": "broken", "type": "HOURLY"})
        )
        assert schedules.list_schedules(conn, bset.id) == []


def test_a_schedule_added_after_removals_is_the_last(db: Database, bset: BackupSet) -> None:
    with db.write() as conn:
        rows = [
            schedules.add_schedule(conn, bset, daily(n), zone=UTC, at_ms=AT + i)
            for i, n in enumerate(("e1", "e2", "e3", "e4"))
        ]
        for row in rows[:2]:
            schedules.remove_schedule(conn, bset, row.id)
        schedules.add_schedule(conn, bset, daily("a1"), zone=UTC, at_ms=AT + 9)
        names = [r.schedule.name for r in schedules.list_schedules(conn, bset.id)]
        for huge in ("99999999999999999999999999", 2**70):
            with pytest.raises(ScheduleNotFound):
                schedules.get_schedule(conn, bset, huge)
    assert names == ["e3", "e4", "a1"]
