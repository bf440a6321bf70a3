"""A backup set's schedules and their calendar arithmetic (issue 16; cbs-api.md §13). Pure:
times in, times out; no clock, no database.

A :class:`Schedule` says on which days a set's backup runs (its ``type``: ``DAILY``; ``WEEKLY``
on ``weekdays``; ``MONTHLY`` on ``day_of_month`` or on the ``week_of_month``-th ``weekdays[0]``,
"the last Friday"; ``CUSTOM`` on one ``date``), at which local time (``hour``, ``minute``), in
the time zone of its set. A *slot* is one instant a job is due (epoch ms, UTC). The calendar is
``dateutil.rrule``'s; the rules this module adds, each tested in
``tests/unit/test_schedules.py``:

- **Local time.** Every time of day is wall-clock time in the zone given. A time the clock skips
  (spring forward: 02:30 on the day the clock goes from 02:00 to 03:00) runs at the same
  distance after the jump (03:30): Python's ``fold=0`` reading of a time in the gap. A time the
  clock shows twice (fall back) runs once, at its first occurrence.
- **Month ends.** ``day_of_month`` 31 runs on the last day of the months shorter than that
  (February 28 or 29, April 30); ``day_of_month`` -1 is the last day of every month.
- **Periodic schedules.** With ``interval_minutes`` (CBS ``BackupInterval``: one of
  :data:`BACKUP_INTERVALS`), a run day's slots are its start time and every ``interval_minutes``
  of elapsed time after it, while before the end of the day's *window*: ``stop_after_hours``
  after the start when given (so a window may cross midnight: 22:00 every 60 minutes for 4 hours
  is 22:00, 23:00, 00:00, 01:00), else the next local midnight; never past the next run day's
  start. Elapsed time, not wall-clock time: every 60 minutes across a DST change is still one
  job an hour.
- **Stopping.** A job of a slot must stop at :func:`stop_time` (``BS_STOP_BY_SCHEDULER``):
  ``stop_after_hours`` after its slot, or for a periodic schedule the end of its window when
  ``stop_after_hours`` is given; ``None``: it runs until done.

``Schedule.parse`` reads the stored and agent-API JSON form (``model_dump(mode="json")``);
a wrong shape raises ``InvalidInput`` naming the key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from enum import StrEnum
from itertools import takewhile
from typing import Annotated, Any

from dateutil import rrule
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from opencbs.errors import InvalidInput

__all__ = [
    "BACKUP_INTERVALS",
    "MAX_STOP_AFTER_HOURS",
    "WEEKDAY_NAMES",
    "Schedule",
    "ScheduleType",
    "describe",
    "next_slot",
    "previous_slot",
    "slots",
    "stop_time",
]


class ScheduleType(StrEnum):
    """A schedule's ``Type`` (cbs-api.md §13, the vendor's AddSchedule)."""

    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    CUSTOM = "CUSTOM"


#: The vendor's allowed ``BackupInterval`` values (minutes); -1 in CBS, ``None`` here: not periodic.
BACKUP_INTERVALS = (1, 2, 3, 4, 5, 10, 12, 15, 20, 30, 60, 120, 240, 360, 480, 720)
#: Longest ``stop_after_hours`` (one week).
MAX_STOP_AFTER_HOURS = 168
#: Weekday names as stored and served, Monday first (``datetime.weekday()`` order).
WEEKDAY_NAMES = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
_RRULE_DAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)
_WEEK_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}
_HOUR_MS = 3_600_000
_MINUTE_MS = 60_000
_UTC = dt.UTC


def _weekday(value: Any) -> Any:
    """``"mon"``, ``"Monday"`` or ``"MONDAY"`` as ``"MONDAY"``; anything else as given (refused)."""
    if isinstance(value, str):
        word = value.strip().upper()
        for name in WEEKDAY_NAMES:
            if word in (name, name[:3]):
                return name
    return value


Weekday = Annotated[str, Field(pattern="^(MON|TUES|WEDNES|THURS|FRI|SATUR|SUN)DAY$")]


class Schedule(BaseModel):
    """One schedule of a backup set: when its backup job runs, in the set's time zone.

    ``name`` (1–255 characters), ``type`` (:class:`ScheduleType`), ``hour`` 0–23 and ``minute``
    0–59 (the start, local time), ``interval_minutes`` (``None`` or one of
    :data:`BACKUP_INTERVALS`), ``stop_after_hours`` (``None`` or 1–168: CBS ``Duration``),
    ``weekdays`` (``WEEKLY``: the days, at least one; ``MONTHLY`` with ``week_of_month``: the one
    day), ``day_of_month`` (``MONTHLY``: 1–31, -1 the last day), ``week_of_month`` (``MONTHLY``:
    1–4, -1 the last), ``date`` (``CUSTOM``: the one day), ``retention_after`` (run the set's
    retention policy after each job of this schedule: CBS ``SpaceFreeUpEnabled``),
    ``skip_backup`` (CBS ``SkipBackupEnabled``: kept and served; opencbs gives it no meaning
    yet), ``enabled``. Raises ``InvalidInput`` (via :meth:`parse`) for a key its type does not
    take or lacks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255)
    type: ScheduleType
    hour: int = Field(default=0, ge=0, le=23)
    minute: int = Field(default=0, ge=0, le=59)
    interval_minutes: int | None = None
    stop_after_hours: int | None = Field(default=None, ge=1, le=MAX_STOP_AFTER_HOURS)
    weekdays: tuple[Weekday, ...] = Field(default=(), max_length=7)
    day_of_month: int | None = Field(default=None, ge=-1, le=31)
    week_of_month: int | None = Field(default=None, ge=-1, le=4)
    date: dt.date | None = None
    retention_after: bool = True
    skip_backup: bool = False
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _canonical_days(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("weekdays"), (list, tuple)):
            data = dict(data)
            days = [_weekday(d) for d in data["weekdays"]]
            unknown = [d for d in days if isinstance(d, str) and d not in WEEKDAY_NAMES]
            if unknown:
                raise ValueError(
                    f"weekdays: unknown weekday {unknown[0]!r} (MONDAY..SUNDAY, or mon..sun)"
                )
            data["weekdays"] = (
                sorted(set(days), key=_day_order) if all(isinstance(d, str) for d in days) else days
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Schedule:
        problem = _shape_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @classmethod
    def parse(cls, value: Any) -> Schedule:
        """A schedule from its JSON form; ``InvalidInput`` naming the first wrong key."""
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            raise InvalidInput(
                f"schedule: {where}: {message}" if where else f"schedule: {message}",
                hint='e.g. {"name": "Nightly", "type": "DAILY", "hour": 22, '
                '"minute": 0}; see cbs-api.md §13',
            ) from exc


def _day_order(name: str) -> int:
    return WEEKDAY_NAMES.index(name) if name in WEEKDAY_NAMES else 7


def _shape_problem(s: Schedule) -> str | None:
    """What is wrong with a schedule's keys for its type, or ``None``."""
    if s.interval_minutes is not None and s.interval_minutes not in BACKUP_INTERVALS:
        return f"interval_minutes must be one of {', '.join(map(str, BACKUP_INTERVALS))}"
    if s.day_of_month == 0 or s.week_of_month == 0:
        return "day_of_month and week_of_month count from 1 (-1: the last)"
    kind = s.type
    if kind is ScheduleType.WEEKLY and not s.weekdays:
        return "a WEEKLY schedule needs weekdays"
    if kind is ScheduleType.MONTHLY:
        if s.day_of_month is not None and s.week_of_month is not None:
            return "a MONTHLY schedule has day_of_month or week_of_month, not both"
        if s.day_of_month is None and s.week_of_month is None:
            return "a MONTHLY schedule needs day_of_month or week_of_month (with one weekday)"
        if s.week_of_month is not None and len(s.weekdays) != 1:
            return "week_of_month needs exactly one weekday (e.g. the last FRIDAY)"
        if s.day_of_month is not None and s.weekdays:
            return "day_of_month takes no weekdays"
    if kind is ScheduleType.CUSTOM and s.date is None:
        return "a CUSTOM schedule needs a date (yyyy-MM-dd)"
    if kind is not ScheduleType.CUSTOM and s.date is not None:
        return "only a CUSTOM schedule has a date"
    if kind in (ScheduleType.DAILY, ScheduleType.CUSTOM) and s.weekdays:
        return f"a {kind} schedule takes no weekdays"
    if kind is not ScheduleType.MONTHLY and (s.day_of_month or s.week_of_month):
        return "only a MONTHLY schedule has day_of_month or week_of_month"
    return None


def _run_days(s: Schedule, first: dt.date) -> Iterator[dt.datetime]:
    """The local (naive) start of each run day from ``first`` on, in order."""
    start = dt.datetime.combine(first, dt.time(s.hour, s.minute))
    if s.type is ScheduleType.CUSTOM:
        assert s.date is not None
        if s.date >= first:
            yield dt.datetime.combine(s.date, dt.time(s.hour, s.minute))
        return
    rule: rrule.rrule
    if s.type is ScheduleType.DAILY:
        rule = rrule.rrule(rrule.DAILY, dtstart=start)
    elif s.type is ScheduleType.WEEKLY:
        days = [_RRULE_DAYS[WEEKDAY_NAMES.index(d)] for d in s.weekdays]
        rule = rrule.rrule(rrule.WEEKLY, dtstart=start, byweekday=days)
    elif s.week_of_month is not None:
        day = _RRULE_DAYS[WEEKDAY_NAMES.index(s.weekdays[0])]
        rule = rrule.rrule(rrule.MONTHLY, dtstart=start, byweekday=day(s.week_of_month))
    elif s.day_of_month == -1:
        rule = rrule.rrule(rrule.MONTHLY, dtstart=start, bymonthday=-1)
    else:
        assert s.day_of_month is not None
        # the day, or the month's last day when the month is shorter: the latest day of
        # min(day, 28)..day that the month has
        wanted = tuple(range(min(s.day_of_month, 28), s.day_of_month + 1))
        rule = rrule.rrule(rrule.MONTHLY, dtstart=start, bymonthday=wanted, bysetpos=-1)
    yield from rule


def _instant(local: dt.datetime, zone: dt.tzinfo) -> int:
    """Epoch ms of a naive local time in ``zone``: a skipped time read with ``fold=0`` (after
    the jump by the gap), a repeated time at its first occurrence."""
    aware = local.replace(tzinfo=zone, fold=0)
    return int(aware.astimezone(_UTC).timestamp() * 1000)


def _local_date(ms: int, zone: dt.tzinfo) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, zone).date()


def _window(s: Schedule, zone: dt.tzinfo, local: dt.datetime, next_start: int | None) -> int:
    """End (epoch ms, exclusive) of a periodic run day's window that starts at ``local``."""
    first = _instant(local, zone)
    if s.stop_after_hours is not None:
        end = first + s.stop_after_hours * _HOUR_MS
    else:
        end = _instant(dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time()), zone)
    return min(end, next_start) if next_start is not None else end


def _iter_slots(s: Schedule, zone: dt.tzinfo, start_ms: int) -> Iterator[int]:
    """Every slot at or after ``start_ms``, ascending, without repeats (endless for all but
    ``CUSTOM``)."""
    # a periodic window can begin up to its length (at most a week) before start_ms
    back = 0 if s.interval_minutes is None else (s.stop_after_hours or 24) * _HOUR_MS
    first_day = _local_date(start_ms - back, zone) - dt.timedelta(days=1)
    days = _run_days(s, first_day)
    current = next(days, None)
    last = -1
    while current is not None:
        following = next(days, None)
        begin = _instant(current, zone)
        if s.interval_minutes is None:
            candidates: Iterator[int] = iter((begin,))
        else:
            nxt = _instant(following, zone) if following is not None else None
            end = _window(s, zone, current, nxt)
            step = s.interval_minutes * _MINUTE_MS
            candidates = iter(range(begin, end, step))
        for slot in candidates:
            if slot >= start_ms and slot > last:
                last = slot
                yield slot
        current = following


def slots(s: Schedule, zone: dt.tzinfo, start_ms: int, end_ms: int) -> Iterator[int]:
    """The slots (epoch ms) of ``s`` in ``[start_ms, end_ms)``, ascending; none when disabled."""
    if not s.enabled:
        return iter(())
    return takewhile(lambda ms: ms < end_ms, _iter_slots(s, zone, start_ms))


def next_slot(s: Schedule, zone: dt.tzinfo, after_ms: int) -> int | None:
    """The first slot strictly after ``after_ms`` (epoch ms), or ``None`` (a disabled
    schedule, a ``CUSTOM`` one whose day has passed)."""
    if not s.enabled:
        return None
    return next(_iter_slots(s, zone, after_ms + 1), None)


def previous_slot(s: Schedule, zone: dt.tzinfo, at_ms: int) -> int | None:
    """The last slot at or before ``at_ms`` (epoch ms), or ``None``: looks back 2, then 8,
    then 62 days (two months: every type but ``CUSTOM`` has a slot in any such span)."""
    if not s.enabled:
        return None
    for days in (2, 8, 62):
        found = None
        for slot in slots(s, zone, at_ms - days * 24 * _HOUR_MS, at_ms + 1):
            found = slot
        if found is not None:
            return found
    return None


def stop_time(s: Schedule, zone: dt.tzinfo, slot_ms: int) -> int | None:
    """When a job started for the slot ``slot_ms`` must stop (epoch ms; the job then ends
    ``BS_STOP_BY_SCHEDULER``), or ``None``: it runs until done. Without
    ``stop_after_hours`` none; with it, that long after the slot, or for a periodic schedule
    the end of the slot's window."""
    if s.stop_after_hours is None:
        return None
    if s.interval_minutes is None:
        return slot_ms + s.stop_after_hours * _HOUR_MS
    day = _local_date(slot_ms - s.stop_after_hours * _HOUR_MS, zone) - dt.timedelta(days=1)
    days = _run_days(s, day)
    current = next(days, None)
    while current is not None:
        following = next(days, None)
        begin = _instant(current, zone)
        nxt = _instant(following, zone) if following is not None else None
        end = _window(s, zone, current, nxt)
        if begin <= slot_ms < end:
            return end
        if begin > slot_ms:
            break
        current = following
    return slot_ms + s.stop_after_hours * _HOUR_MS


def describe(s: Schedule) -> str:
    """The schedule in words, e.g. ``every day at 22:00``, ``MONDAY, FRIDAY at 03:30, every 60
    min for 4 h``, ``the last FRIDAY of each month at 23:00``, ``on 2027-01-01 at 00:00``."""
    at = f"at {s.hour:02d}:{s.minute:02d}"
    if s.type is ScheduleType.DAILY:
        when = f"every day {at}"
    elif s.type is ScheduleType.WEEKLY:
        when = f"{', '.join(s.weekdays)} {at}"
    elif s.week_of_month is not None:
        when = f"the {_WEEK_WORDS[s.week_of_month]} {s.weekdays[0]} of each month {at}"
    elif s.day_of_month == -1:
        when = f"the last day of each month {at}"
    elif s.type is ScheduleType.MONTHLY:
        when = f"day {s.day_of_month} of each month {at}"
    else:
        when = f"on {s.date} {at}"
    if s.interval_minutes is not None:
        when += f", every {s.interval_minutes} min"
    if s.stop_after_hours is not None:
        when += (
            f" for {s.stop_after_hours} h"
            if s.interval_minutes
            else f", stop after {s.stop_after_hours} h"
        )
    return when if s.enabled else f"{when} (disabled)"
