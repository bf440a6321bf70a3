"""``opencbs schedule add``, ``list`` and ``remove``: a backup set's schedules
(``store.schedules``, ``model.schedules``; cbs-api.md §13) kept on the server, as AddSchedule,
GetBackupSet's ``ScheduleList`` and RemoveSchedule change and show them. Times of day are in
the set's time zone (``opencbs set timezone``), else the server's (setting ``timezone``)."""

from __future__ import annotations

import datetime as dt
import re
from datetime import tzinfo
from typing import Any

import click
from pydantic import ValidationError

from opencbs.cli.admin import find_set, find_user
from opencbs.cli.common import (
    JSON,
    TIMEZONE,
    echo,
    note,
    open_database,
    print_json,
    print_table,
    with_settings,
)
from opencbs.errors import Conflict, InvalidInput
from opencbs.model.schedules import (
    BACKUP_INTERVALS,
    MAX_STOP_AFTER_HOURS,
    Schedule,
    ScheduleType,
    describe,
    next_slot,
)
from opencbs.settings import Settings
from opencbs.store import schedules, sets
from opencbs.store.schedules import ScheduleNotFound, ScheduleRow
from opencbs.store.sets import BackupSet
from opencbs.store.util import now_ms

_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_WEEKS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
#: ``Schedule`` keys as the options of ``schedule add`` name them (in error messages).
_OPTIONS = {
    "interval_minutes": "--every",
    "stop_after_hours": "--stop-after",
    "day_of_month": "--day-of-month",
    "week_of_month": "--week-of-month",
    "weekdays": "--days",
    "date": "--date",
    "name": "--name",
}
_HINT = "see `opencbs schedule add --help`"


@click.group()
def schedule() -> None:
    """Schedules of backup sets: when the agent (`opencbs agent run`) backs a set up."""


def _at(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    """``--at HH:MM`` as (hour, minute)."""
    found = _TIME.match(value.strip())
    if not found or int(found[1]) > 23 or int(found[2]) > 59:
        raise click.BadParameter(f"{value!r} is not a time of day HH:MM (00:00 to 23:59)")
    return int(found[1]), int(found[2])


def _days(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    """``--days mon,fri`` as the words given (the model reads mon, Monday, MONDAY)."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _day_of_month(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().lower() == "last":
        return -1
    if not value.strip().isdigit() or not 1 <= int(value) <= 31:
        raise click.BadParameter(f"{value!r} is not a day of the month 1..31 or `last`")
    return int(value)


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD") from None
    return value


def build_schedule(spec: dict[str, Any]) -> Schedule:
    """The ``Schedule`` of ``schedule add``'s options (``spec``: its JSON keys). Raises
    ``InvalidInput`` naming the option (``--days``) for a combination the type refuses."""
    try:
        return Schedule.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error.get("loc") else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        for key, option in _OPTIONS.items():
            message = message.replace(key, option)
        where = f"{_OPTIONS[field]}: " if field in _OPTIONS else ""
        raise InvalidInput(f"invalid schedule: {where}{message}", _HINT) from None


def _when(row: ScheduleRow, zone: tzinfo, at_ms: int) -> str:
    """The next run of ``row`` after ``at_ms`` in ``zone`` (``2030-01-07 22:00 CET``), or
    ``none``."""
    slot = next_slot(row.schedule, zone, at_ms)
    if slot is None:
        return "none"
    return dt.datetime.fromtimestamp(slot / 1000, zone).strftime("%Y-%m-%d %H:%M %Z")


def schedule_json(bset: BackupSet, row: ScheduleRow, zone: tzinfo, at_ms: int) -> dict[str, Any]:
    """A schedule as ``--json`` prints it: ``ID`` and ``SetID`` (strings), ``Set``,
    ``Schedule`` (its JSON form, ``model_dump``), ``Description``, ``TimeZone`` and
    ``NextRun`` (epoch ms after ``at_ms``, or null)."""
    return {
        "ID": str(row.id),
        "SetID": str(bset.id),
        "Set": bset.name,
        "Schedule": row.schedule.model_dump(mode="json"),
        "Description": describe(row.schedule),
        "TimeZone": str(zone),
        "NextRun": next_slot(row.schedule, zone, at_ms),
    }


@schedule.command("add")
@click.argument("login")
@click.argument("set_name", metavar="SET")
@click.option(
    "--type",
    "kind",
    type=click.Choice([t.value.lower() for t in ScheduleType], case_sensitive=False),
    required=True,
    help="daily, weekly (--days), monthly (--day-of-month, or --week-of-month with one "
    "--days), custom (--date: one day).",
)
@click.option("--at", required=True, callback=_at, metavar="HH:MM", help="Start, local time.")
@click.option("--days", callback=_days, metavar="DAYS", help="Weekdays, e.g. mon,fri.")
@click.option(
    "--day-of-month", callback=_day_of_month, metavar="N|last", help="Monthly: day 1..31 or last."
)
@click.option(
    "--week-of-month",
    type=click.Choice(list(_WEEKS), case_sensitive=False),
    default=None,
    help="Monthly: the first..fourth or last of the weekday given by --days.",
)
@click.option("--date", callback=_date, metavar="YYYY-MM-DD", help="Custom: the one day.")
@click.option(
    "--every",
    type=click.Choice([str(n) for n in BACKUP_INTERVALS]),
    default=None,
    metavar="MINUTES",
    help="Periodic: a job every MINUTES within the day from --at "
    f"({', '.join(map(str, BACKUP_INTERVALS))}).",
)
@click.option(
    "--stop-after",
    type=click.IntRange(1, MAX_STOP_AFTER_HOURS),
    default=None,
    metavar="HOURS",
    help="Stop a job after HOURS (a periodic schedule: its window); default: run until done.",
)
@click.option("--name", default=None, help="Name, unique in the set [default: e.g. daily 22:00].")
@click.option(
    "--no-retention-after",
    is_flag=True,
    help="Do not run the set's retention policy after each job of this schedule.",
)
@click.option("--disabled", is_flag=True, help="Add it switched off.")
@JSON
@with_settings(TIMEZONE)
def schedule_add(
    settings: Settings,
    *,
    login: str,
    set_name: str,
    kind: str,
    at: tuple[int, int],
    days: tuple[str, ...],
    day_of_month: int | None,
    week_of_month: str | None,
    date: str | None,
    every: str | None,
    stop_after: int | None,
    name: str | None,
    no_retention_after: bool,
    disabled: bool,
    as_json: bool,
) -> None:
    """Add a schedule to backup set SET (name or ID) of backup user LOGIN (cbs-api.md §13).
    Prints its ID (--json: the schedule with its next run)."""
    spec = {
        "name": name or f"{kind.lower()} {at[0]:02d}:{at[1]:02d}",
        "type": kind.upper(),
        "hour": at[0],
        "minute": at[1],
        "interval_minutes": int(every) if every else None,
        "stop_after_hours": stop_after,
        "weekdays": days,
        "day_of_month": day_of_month,
        "week_of_month": _WEEKS[week_of_month.lower()] if week_of_month else None,
        "date": date,
        "retention_after": not no_retention_after,
        "enabled": not disabled,
    }
    wanted = build_schedule(spec)
    at_ms = now_ms()
    database = open_database(settings)
    try:
        with database.write() as conn:
            bset = find_set(conn, find_user(conn, login).id, set_name)
            zone = schedules.set_zone(bset, settings.tz())
            try:
                row = schedules.add_schedule(conn, bset, wanted, zone=zone, at_ms=at_ms)
            except Conflict as exc:
                exc.hint = "give it another --name, or remove that one (`opencbs schedule remove`)"
                raise
    finally:
        database.dispose()
    if as_json:
        print_json(schedule_json(bset, row, zone, at_ms))
        return
    note(
        f"schedule {wanted.name!r} added to backup set {bset.name!r}: {describe(wanted)}; "
        f"next run {_when(row, zone, at_ms)}"
    )
    echo(str(row.id))


@schedule.command("list")
@click.argument("login")
@click.argument("set_name", metavar="[SET]", required=False)
@JSON
@with_settings(TIMEZONE)
def schedule_list(settings: Settings, *, login: str, set_name: str | None, as_json: bool) -> None:
    """List the schedules of backup user LOGIN's sets (or of SET, a name or ID), each with its
    next run in the set's time zone."""
    at_ms = now_ms()
    database = open_database(settings)
    try:
        with database.read() as conn:
            owner = find_user(conn, login)
            found = (
                [find_set(conn, owner.id, set_name)] if set_name else sets.list_sets(conn, owner.id)
            )
            by_set = schedules.schedules_of_sets(conn, [s.id for s in found])
    finally:
        database.dispose()
    listed = [
        (bset, row, schedules.set_zone(bset, settings.tz()))
        for bset in found
        for row in by_set.get(bset.id, [])
    ]
    if as_json:
        print_json([schedule_json(b, r, z, at_ms) for b, r, z in listed])
        return
    print_table(
        f"Schedules of {login}",
        ["Set", "ID", "Name", "When", "Next run"],
        [
            [b.name, r.id, r.schedule.name, describe(r.schedule), _when(r, z, at_ms)]
            for b, r, z in listed
        ],
        no_wrap=["ID"],
    )


@schedule.command("remove")
@click.argument("login")
@click.argument("set_name", metavar="SET")
@click.argument("which", metavar="SCHEDULE")
@with_settings()
def schedule_remove(settings: Settings, *, login: str, set_name: str, which: str) -> None:
    """Remove schedule SCHEDULE (its name or ID) of backup set SET (name or ID) of backup user
    LOGIN. The jobs it ran, and the slots it missed, stay."""
    database = open_database(settings)
    try:
        with database.write() as conn:
            bset = find_set(conn, find_user(conn, login).id, set_name)
            rows = schedules.list_schedules(conn, bset.id)
            named = next((r for r in rows if r.schedule.name == which), None)
            try:
                removed = schedules.remove_schedule(conn, bset, named.id if named else which)
            except ScheduleNotFound as exc:
                exc.hint = f"see `opencbs schedule list {login} {set_name}`"
                raise
    finally:
        database.dispose()
    note(f"schedule {removed.schedule.name!r} removed from backup set {bset.name!r}")
