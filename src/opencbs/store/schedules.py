"""A backup set's schedules (cbs-api.md §13): add, update, remove, list, and the next slot the
missed-backup sweep checks.

A schedule is stored as its JSON form (``model.schedules.Schedule``) with an ID (the creation
time in epoch ms, as a set's, cbs-api.md §4) and its position in the set. ``next_check_ms`` is
the first slot after the moment a schedule was written (or its zone changed): a slot before
that is never reported missed, so a schedule added at 22:05 for 22:00 is not missed today.
Names are unique within a set (``Conflict``). A set holds at most :data:`MAX_SCHEDULES`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, delete, func, select, update

from opencbs.errors import Conflict, InvalidInput, NotFound
from opencbs.model.schedules import Schedule, next_slot
from opencbs.store.schema import schedules
from opencbs.store.sets import BackupSet, parse_id
from opencbs.store.users import new_id

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SCHEDULES",
    "ScheduleNotFound",
    "ScheduleRow",
    "add_schedule",
    "get_schedule",
    "list_schedules",
    "remove_schedule",
    "replace_schedules",
    "rezone",
    "schedules_of_sets",
    "set_zone",
    "update_schedule",
]

#: Most schedules one backup set may have.
MAX_SCHEDULES = 50


class ScheduleNotFound(NotFound):
    """Unknown schedule of that backup set (cbs-api.md §13)."""

    code = "schedule_not_found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"Schedule '{schedule_id}' not found.")


@dataclass(frozen=True)
class ScheduleRow:
    """A stored schedule: ``id``, ``set_id``, ``position`` (0 first), the ``schedule``,
    ``created_at`` / ``updated_at`` (epoch ms) and ``next_check_ms`` (the next slot the
    missed-backup sweep checks, epoch ms; ``None``: none left)."""

    id: int
    set_id: int
    position: int
    schedule: Schedule
    created_at: int
    updated_at: int
    next_check_ms: int | None


def set_zone(bset: BackupSet, server_zone: tzinfo) -> tzinfo:
    """The zone a set's schedules run in: its ``time_zone`` setting, else ``server_zone``."""
    name = bset.settings.time_zone
    return ZoneInfo(name) if name else server_zone


def _row(row: Row) -> ScheduleRow:  # type: ignore[type-arg]
    return ScheduleRow(
        id=row.id,
        set_id=row.set_id,
        position=row.position,
        schedule=Schedule.parse(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_check_ms=row.next_check_ms,
    )


def list_schedules(conn: Connection, set_id: int) -> list[ScheduleRow]:
    """The schedules of one set, in position order."""
    return schedules_of_sets(conn, (set_id,)).get(set_id, [])


def schedules_of_sets(conn: Connection, set_ids: Iterable[int]) -> dict[int, list[ScheduleRow]]:
    """The schedules of several sets, ``{set_id: [rows in position order]}`` (sets without
    one absent). A stored schedule that no longer validates is left out with a warning."""
    ids = list(set_ids)
    out: dict[int, list[ScheduleRow]] = {}
    if not ids:
        return out
    rows = conn.execute(
        select(schedules)
        .where(schedules.c.set_id.in_(ids))
        .order_by(schedules.c.set_id, schedules.c.position, schedules.c.id)
    )
    for row in rows:
        try:
            out.setdefault(row.set_id, []).append(_row(row))
        except InvalidInput as exc:
            log.warning("schedule %s of set %s left out: %s", row.id, row.set_id, exc.message)
    return out


def _require_unique_name(
    conn: Connection, set_id: int, name: str, *, except_id: int | None = None
) -> None:
    query = select(schedules.c.id, schedules.c.settings).where(schedules.c.set_id == set_id)
    for row in conn.execute(query):
        if row.id != except_id and (row.settings or {}).get("name") == name:
            raise Conflict(
                f"backup set has a schedule named {name!r} already",
                "choose another name, or update that schedule (UpdateSchedule)",
            )


def add_schedule(
    conn: Connection, bset: BackupSet, schedule: Schedule, *, zone: tzinfo, at_ms: int
) -> ScheduleRow:
    """Add ``schedule`` to ``bset`` as its last one; its first checked slot is the first after
    ``at_ms`` (epoch ms) in ``zone``. Raises ``Conflict`` for a name the set has, and
    ``InvalidInput`` past :data:`MAX_SCHEDULES`."""
    _require_unique_name(conn, bset.id, schedule.name)
    count, last = conn.execute(
        select(func.count(), func.max(schedules.c.position)).where(schedules.c.set_id == bset.id)
    ).one()
    if count >= MAX_SCHEDULES:
        raise InvalidInput(
            f"a backup set has at most {MAX_SCHEDULES} schedules", "remove one first"
        )
    sid = new_id(conn, schedules, at_ms)
    conn.execute(
        schedules.insert().values(
            id=sid,
            set_id=bset.id,
            position=0 if last is None else last + 1,  # the set's last, after removals too
            settings=schedule.model_dump(mode="json"),
            created_at=at_ms,
            updated_at=at_ms,
            next_check_ms=next_slot(schedule, zone, at_ms),
        )
    )
    return _get(conn, bset.id, sid)


def _get(conn: Connection, set_id: int, schedule_id: int | str) -> ScheduleRow:
    sid = parse_id(schedule_id)
    if sid is None:  # not a 64-bit ID: no schedule has it
        raise ScheduleNotFound(str(schedule_id))
    row = conn.execute(
        select(schedules).where(schedules.c.id == sid, schedules.c.set_id == set_id)
    ).first()
    if row is None:
        raise ScheduleNotFound(str(schedule_id))
    return _row(row)


def get_schedule(conn: Connection, bset: BackupSet, schedule_id: int | str) -> ScheduleRow:
    """One schedule of ``bset``; ``ScheduleNotFound`` for an unknown ID or one of another set."""
    return _get(conn, bset.id, schedule_id)


def update_schedule(
    conn: Connection,
    bset: BackupSet,
    schedule_id: int | str,
    schedule: Schedule,
    *,
    zone: tzinfo,
    at_ms: int,
) -> ScheduleRow:
    """Replace schedule ``schedule_id`` of ``bset`` by ``schedule`` (same ID and position);
    its next checked slot is recomputed from ``at_ms``. Raises ``ScheduleNotFound``,
    ``Conflict`` (a name another schedule of the set has)."""
    current = _get(conn, bset.id, schedule_id)
    _require_unique_name(conn, bset.id, schedule.name, except_id=current.id)
    conn.execute(
        update(schedules)
        .where(schedules.c.id == current.id)
        .values(
            settings=schedule.model_dump(mode="json"),
            updated_at=at_ms,
            next_check_ms=next_slot(schedule, zone, at_ms),
        )
    )
    return _get(conn, bset.id, current.id)


def remove_schedule(conn: Connection, bset: BackupSet, schedule_id: int | str) -> ScheduleRow:
    """Remove one schedule of ``bset`` (what was removed); ``ScheduleNotFound`` otherwise. The
    slots it had missed stay recorded as jobs."""
    current = _get(conn, bset.id, schedule_id)
    conn.execute(delete(schedules).where(schedules.c.id == current.id))
    return current


def replace_schedules(
    conn: Connection,
    bset: BackupSet,
    wanted: Sequence[tuple[int | None, Schedule]],
    *,
    zone: tzinfo,
    at_ms: int,
) -> list[ScheduleRow]:
    """Make ``bset``'s schedules exactly ``wanted`` (UpdateBackupSet's whole list): pairs of
    an existing schedule's ID (kept, updated when changed) or ``None`` (added); the others are
    removed. Raises ``ScheduleNotFound`` for an ID the set does not have, ``Conflict`` for two
    of one name, ``InvalidInput`` past :data:`MAX_SCHEDULES`."""
    if len(wanted) > MAX_SCHEDULES:
        raise InvalidInput(f"a backup set has at most {MAX_SCHEDULES} schedules")
    names = [s.name for _, s in wanted]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise Conflict(f"two schedules are named {duplicate!r}", "give each its own name")
    current = {row.id: row for row in list_schedules(conn, bset.id)}
    keep = {sid for sid, _ in wanted if sid is not None}
    unknown = sorted(keep - set(current))
    if unknown:
        raise ScheduleNotFound(str(unknown[0]))
    conn.execute(delete(schedules).where(schedules.c.id.in_(set(current) - keep)))
    for position, (sid, schedule) in enumerate(wanted):
        values: dict[str, object] = {
            "position": position,
            "settings": schedule.model_dump(mode="json"),
        }
        if sid is None:
            new = new_id(conn, schedules, at_ms)
            conn.execute(
                schedules.insert().values(
                    id=new,
                    set_id=bset.id,
                    created_at=at_ms,
                    updated_at=at_ms,
                    next_check_ms=next_slot(schedule, zone, at_ms),
                    **values,
                )
            )
            continue
        if current[sid].schedule != schedule or current[sid].position != position:
            values |= {"updated_at": at_ms}
            if current[sid].schedule != schedule:
                values |= {"next_check_ms": next_slot(schedule, zone, at_ms)}
        conn.execute(update(schedules).where(schedules.c.id == sid).values(**values))
    return list_schedules(conn, bset.id)


def rezone(conn: Connection, bset: BackupSet, *, zone: tzinfo, at_ms: int) -> None:
    """Recompute the next checked slot of each of ``bset``'s schedules after its time zone
    changed to ``zone``."""
    for row in list_schedules(conn, bset.id):
        conn.execute(
            update(schedules)
            .where(schedules.c.id == row.id)
            .values(next_check_ms=next_slot(row.schedule, zone, at_ms))
        )
