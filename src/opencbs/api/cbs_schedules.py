"""CBS calls about a backup set's schedules (cbs-api.md §13): AddSchedule, UpdateSchedule and
RemoveSchedule (v1 and ``2/``), and the schedule parts of GetBackupSet / UpdateBackupSet
(``ScheduleList``, ``TimeZone``) that ``api.cbs_sets`` serves.

Choices where the contract leaves room (cbs-api.md §13 says each):

- A schedule travels in CBS form (``api.schedule_form``); each call answers
  ``{"Status": "OK", "Data": {the schedule with its "ID"}}`` (an opencbs addition: a script
  learns the new ID; RemoveSchedule answers what it removed).
- UpdateSchedule keeps the values of the keys it is not given (the vendor: "It will preserve
  existing values"); so does a ``ScheduleList`` item with an ``ID``.
- ``ScheduleList`` (UpdateBackupSet) is the set's whole list, in order: items with an ``ID``
  update that schedule, items without are added, schedules not listed are removed; ``[]``
  removes them all.
- ``TimeZone`` is the IANA name of the zone the set's schedules run in (GetBackupSet shows the
  server's when the set has none of its own); a change recomputes each schedule's next checked
  slot from now (``store.schedules.rezone``).
- Only roles that may change state call them (``READ_ONLY_API``: ``PermissionDenied``); a
  reseller reaches only its own users' sets (another's user is "not found", §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection
from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import (
    LOGIN,
    OWNER,
    SET_ID,
    ParamDoc,
    backup_set,
    backup_user,
    cbs_call,
    require_write,
)
from opencbs.api.envelope import ok
from opencbs.api.params import Params, printable, shown_value
from opencbs.api.schedule_form import SCHEDULE_KEYS, SCHEDULE_SCHEMA, parse_schedule, schedule_form
from opencbs.api.state import ServerState
from opencbs.errors import ParameterInvalid, ParameterMissing
from opencbs.model.schedules import Schedule
from opencbs.store import schedules, sets
from opencbs.store.schedules import ScheduleNotFound, ScheduleRow
from opencbs.store.sets import BackupSet
from opencbs.store.util import now_ms

__all__ = [
    "SCHEDULE_LIST",
    "SCHEDULE_LIST_PARAM",
    "TIME_ZONE",
    "TIME_ZONE_PARAM",
    "apply_schedule_settings",
    "read_schedule_list",
    "read_time_zone",
    "schedule_settings",
    "zone_name",
]

SCHEDULE_LIST = "ScheduleList"
TIME_ZONE = "TimeZone"

# --- parameters -------------------------------------------------------------------------------

_SCHEDULE_ID = ParamDoc(
    "ID", required=True, description="ID of the schedule (GetBackupSet's ScheduleList)."
)
_FORM_NOTE = " In a form or query: its JSON text."
_SCHEDULE_PARAMS = (
    ParamDoc("Name", description="Name of the schedule, unique within the set (1–255 chars)."),
    ParamDoc("Type", description="DAILY, WEEKLY, MONTHLY or CUSTOM."),
    ParamDoc(
        "BackupInterval",
        type="integer",
        description="-1 (default): one job a day; or minutes between jobs within the day "
        "(1, 2, 3, 4, 5, 10, 12, 15, 20, 30, 60, 120, 240, 360, 480, 720): periodic.",
    ),
    ParamDoc(
        "Time",
        type="object",
        description='The start and the stop: {"Hour": 0..23, "Minute": 0..59, "Duration": '
        "hours 1..168, or -1: no limit}, local time of the set's zone." + _FORM_NOTE,
    ),
    ParamDoc(
        "FullBackup",
        type="boolean",
        description="true: the job runs until done (Duration -1); false: it stops after "
        "Duration hours (BS_STOP_BY_SCHEDULER). Absent: follows Duration.",
    ),
    ParamDoc(
        "Days",
        type="array",
        description='WEEKLY: the weekdays ["MONDAY", …]; MONTHLY with WeekOfMonth: the one '
        "weekday." + _FORM_NOTE + " MONDAY,FRIDAY is read too.",
    ),
    ParamDoc("DayOfMonth", type="integer", description="MONTHLY: 1..31, -1 the last day."),
    ParamDoc(
        "WeekOfMonth",
        description="MONTHLY: FIRST, SECOND, THIRD, FOURTH or LAST (with one weekday in Days).",
    ),
    ParamDoc("Date", description="CUSTOM: the one day, yyyy-MM-dd."),
    ParamDoc(
        "SpaceFreeUpEnabled",
        type="boolean",
        description="Run the set's retention policy after each job of this schedule "
        "(default true).",
    ),
    ParamDoc("SkipBackupEnabled", type="boolean", description="Kept and shown (default false)."),
    ParamDoc("Enabled", type="boolean", description="Run this schedule (default true)."),
    ParamDoc("BackupType", description='Must be empty: "" (file backup sets).'),
)
SCHEDULE_LIST_PARAM = ParamDoc(
    SCHEDULE_LIST,
    type="array",
    description="The set's whole list of schedules in CBS form (cbs-api.md §13): items with an "
    "ID update that schedule (keys left out keep their value), items without are added, "
    "schedules not listed are removed; [] removes all." + _FORM_NOTE,
)
TIME_ZONE_PARAM = ParamDoc(
    TIME_ZONE,
    description='IANA name of the time zone the set\'s schedules run in, e.g. "Europe/Berlin" '
    "(an opencbs extension, cbs-api.md §13).",
)

# --- ScheduleList and TimeZone of GetBackupSet / UpdateBackupSet -----------------------------


def zone_name(zone: tzinfo) -> str:
    """The IANA name of ``zone`` (``ZoneInfo.key``), else what it calls itself (``UTC``)."""
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone.tzname(None) or zone)


def schedule_settings(conn: Connection, bset: BackupSet, server_zone: tzinfo) -> dict[str, Any]:
    """GetBackupSet's ``ScheduleList`` (CBS form, in order) and ``TimeZone`` (the set's zone,
    or the server's name when the set has none)."""
    return {
        SCHEDULE_LIST: [
            schedule_form(row.schedule, row.id) for row in schedules.list_schedules(conn, bset.id)
        ],
        TIME_ZONE: zone_name(schedules.set_zone(bset, server_zone)),
    }


def read_time_zone(params: Params) -> str | None:
    """UpdateBackupSet's ``TimeZone``: an IANA name ``zoneinfo`` knows, ``None`` when absent or
    empty. Raises ``ParameterInvalid``."""
    name = params.str_or_empty(TIME_ZONE).strip()
    if not name:
        return None
    if len(name) > 64:
        raise ParameterInvalid(TIME_ZONE, printable(name), "at most 64 characters")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ParameterInvalid(
            TIME_ZONE, printable(name), 'an IANA time zone name such as "Europe/Berlin"'
        ) from None
    return name


def read_schedule_list(params: Params) -> list[dict[str, Any]] | None:
    """UpdateBackupSet's ``ScheduleList``: a JSON array (or its text) of objects with only
    schedule keys and ``ID``; ``None`` when absent, null or ``""``. Raises
    ``ParameterInvalid`` naming the item (``ScheduleList[1].Foo``)."""
    value = params.json_array(SCHEDULE_LIST)
    if value is None:
        return None
    for i, item in enumerate(value):
        where = f"{SCHEDULE_LIST}[{i}]"
        if not isinstance(item, dict):
            raise ParameterInvalid(where, shown_value(item), "not a JSON object")
        unknown = [k for k in item if k not in SCHEDULE_KEYS and k != "ID"]
        if unknown:
            raise ParameterInvalid(
                f"{where}.{unknown[0]}", shown_value(item[unknown[0]]), "unknown key"
            )
    return value


def _item_id(item: Mapping[str, Any], where: str) -> int | None:
    raw = item.get("ID")
    if raw is None or raw == "":
        return None
    text = str(raw).strip() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise ParameterInvalid(f"{where}.ID", shown_value(raw), "a schedule ID (decimal)")
    return int(text)


def _wanted(
    items: list[dict[str, Any]], current: Mapping[int, ScheduleRow]
) -> list[tuple[int | None, Schedule]]:
    """The ``(ID or None, Schedule)`` pairs of a ``ScheduleList``; an item with an ``ID`` is
    read over that schedule. Raises ``ScheduleNotFound``, ``ParameterInvalid``."""
    wanted: list[tuple[int | None, Schedule]] = []
    seen: set[int] = set()
    for i, item in enumerate(items):
        where = f"{SCHEDULE_LIST}[{i}]"
        sid = _item_id(item, where)
        base = None
        if sid is not None:
            if sid not in current:
                raise ScheduleNotFound(str(item["ID"]))
            if sid in seen:
                raise ParameterInvalid(f"{where}.ID", str(sid), "listed twice")
            seen.add(sid)
            base = current[sid].schedule
        fields = {k: v for k, v in item.items() if k != "ID"}
        wanted.append((sid, parse_schedule(fields, base=base, prefix=where)))
    return wanted


def apply_schedule_settings(
    conn: Connection,
    bset: BackupSet,
    *,
    items: list[dict[str, Any]] | None,
    time_zone: str | None,
    server_zone: tzinfo,
) -> BackupSet:
    """UpdateBackupSet's schedule part, in the caller's write transaction: ``time_zone`` (when
    given and different) stored in the set's settings, then ``items`` (when given) made the
    set's whole list (``store.schedules.replace_schedules``), next checked slots from now.
    Returns the set as it now is. Raises ``ScheduleNotFound``, ``Conflict`` (two of one name),
    ``InvalidInput`` (too many), ``ParameterInvalid``."""
    at = now_ms()
    current_zone = schedules.set_zone(bset, server_zone)
    if time_zone is not None and time_zone != zone_name(current_zone):
        bset = sets.update_set(conn, bset.user_id, bset.id, settings={"time_zone": time_zone})
        schedules.rezone(conn, bset, zone=schedules.set_zone(bset, server_zone), at_ms=at)
    if items is not None:
        rows = {row.id: row for row in schedules.list_schedules(conn, bset.id)}
        zone = schedules.set_zone(bset, server_zone)
        schedules.replace_schedules(conn, bset, _wanted(items, rows), zone=zone, at_ms=at)
    return bset


# --- AddSchedule, UpdateSchedule, RemoveSchedule ----------------------------------------------


def _given(params: Params) -> dict[str, Any]:
    """The schedule keys among a call's parameters."""
    return {k: params.values[k] for k in SCHEDULE_KEYS if k in params.values}


def _answer(row: ScheduleRow) -> Response:
    return ok(schedule_form(row.schedule, row.id))


_ANSWER_NOTE = (
    ' Answers {"Status": "OK", "Data": the schedule in CBS form with its ID} (an opencbs '
    "addition). Not for READ_ONLY_API system users."
)


@cbs_call(
    "AddSchedule",
    params=(LOGIN, OWNER, SET_ID, *_SCHEDULE_PARAMS),
    summary="Add a schedule to a backup set (cbs-api.md §13): Name, Type and Time are "
    "required, the keys its Type needs (Days, DayOfMonth or WeekOfMonth with Days, Date) too."
    + _ANSWER_NOTE,
    answer=SCHEDULE_SCHEMA,
    v2=True,
)
def add_schedule(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, "AddSchedule")
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    schedule = parse_schedule(_given(params))
    with state.db.write() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        zone = schedules.set_zone(bset, state.tz)
        row = schedules.add_schedule(conn, bset, schedule, zone=zone, at_ms=now_ms())
    return _answer(row)


def _schedule_id(params: Params) -> str:
    """The ``ID`` parameter; ``ParameterMissing`` when absent or empty."""
    value = params.str_or_empty("ID").strip()
    if not value:
        raise ParameterMissing("ID")
    return value


@cbs_call(
    "UpdateSchedule",
    params=(LOGIN, OWNER, SET_ID, _SCHEDULE_ID, *_SCHEDULE_PARAMS),
    summary="Change a schedule of a backup set (cbs-api.md §13); keys not given keep their "
    "value. Unknown ID: ScheduleNotFound." + _ANSWER_NOTE,
    answer=SCHEDULE_SCHEMA,
    v2=True,
)
def update_schedule(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, "UpdateSchedule")
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    schedule_id = _schedule_id(params)
    given = _given(params)
    with state.db.write() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        current = schedules.get_schedule(conn, bset, schedule_id)
        schedule = parse_schedule(given, base=current.schedule)
        zone = schedules.set_zone(bset, state.tz)
        row = schedules.update_schedule(conn, bset, current.id, schedule, zone=zone, at_ms=now_ms())
    return _answer(row)


@cbs_call(
    "RemoveSchedule",
    params=(LOGIN, OWNER, SET_ID, _SCHEDULE_ID),
    summary="Remove a schedule of a backup set (cbs-api.md §13); Data: the removed schedule "
    "in CBS form. Jobs it ran, and the slots it missed, stay. Unknown ID: ScheduleNotFound. "
    "Not for READ_ONLY_API system users.",
    answer=SCHEDULE_SCHEMA,
    v2=True,
)
def remove_schedule(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, "RemoveSchedule")
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    schedule_id = _schedule_id(params)
    with state.db.write() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        row = schedules.remove_schedule(conn, bset, schedule_id)
    return _answer(row)
