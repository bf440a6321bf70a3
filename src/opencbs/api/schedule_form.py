"""A schedule in CBS form (cbs-api.md §13) and back: the one place where the vendor's keys meet
``model.schedules.Schedule``. Pure: no database, no clock.

The CBS form::

    {"ID": "<decimal>", "Name": str, "Type": "DAILY|WEEKLY|MONTHLY|CUSTOM",
     "BackupInterval": -1 | minutes, "Time": {"Hour": 0..23, "Minute": 0..59,
     "Duration": hours 1..168 | -1}, "FullBackup": bool, "Days": ["MONDAY", …],
     "DayOfMonth": 1..31 | -1 (last day) | 0 (none), "WeekOfMonth": "FIRST|SECOND|THIRD|FOURTH|LAST"
     | "", "Date": "yyyy-MM-dd" | "", "SpaceFreeUpEnabled": bool, "SkipBackupEnabled": bool,
     "Enabled": bool, "BackupType": ""}

Reading it (:func:`parse_schedule`) takes JSON values and their text (a form sends every value
as text: ``"60"``, ``"true"``, ``Time={"Hour":22,…}``, ``Days=["MONDAY"]`` or
``Days=MONDAY,FRIDAY``); an empty value (``null``, ``""``, ``[]``, ``DayOfMonth`` 0,
``BackupInterval`` / ``Duration`` -1) is "none". ``FullBackup`` true means no stop time
(``Duration`` must then be -1 or absent); false needs a ``Duration``; absent, it follows
``Duration``. Given a ``base`` schedule (UpdateSchedule, a ``ScheduleList`` item with an
``ID``), keys left out keep the base's values (the vendor: "It will preserve existing values");
a new ``Type``, or ``DayOfMonth`` / ``WeekOfMonth`` switching a MONTHLY schedule's kind, drops
the base's keys of the old kind. Every wrong shape raises ``ParameterMissing`` or
``ParameterInvalid`` naming the CBS key (``Time.Hour``, ``ScheduleList[2].Days``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from opencbs.api.params import shown_value
from opencbs.errors import ParameterInvalid, ParameterMissing
from opencbs.model.schedules import (
    BACKUP_INTERVALS,
    MAX_STOP_AFTER_HOURS,
    WEEKDAY_NAMES,
    Schedule,
    ScheduleType,
)
from opencbs.model.text import is_text

__all__ = ["SCHEDULE_KEYS", "SCHEDULE_SCHEMA", "WEEK_WORDS", "parse_schedule", "schedule_form"]

#: The CBS keys of a schedule a client may send (``ID`` too, in a ``ScheduleList`` item).
SCHEDULE_KEYS = (
    "Name",
    "Type",
    "BackupInterval",
    "Time",
    "FullBackup",
    "Days",
    "DayOfMonth",
    "WeekOfMonth",
    "Date",
    "SpaceFreeUpEnabled",
    "SkipBackupEnabled",
    "Enabled",
    "BackupType",
)
_TIME_KEYS = ("Hour", "Minute", "Duration")
#: ``WeekOfMonth`` words and the ``Schedule.week_of_month`` each means.
WEEK_WORDS = {"FIRST": 1, "SECOND": 2, "THIRD": 3, "FOURTH": 4, "LAST": -1}
_WEEK_NUMBERS = {n: w for w, n in WEEK_WORDS.items()}
_KIND_KEYS = ("Days", "DayOfMonth", "WeekOfMonth", "Date")
_TRUE = {"true", "y", "yes", "1"}
_FALSE = {"false", "n", "no", "0"}


def schedule_form(schedule: Schedule, schedule_id: int | None = None) -> dict[str, Any]:
    """``schedule`` in CBS form (module docstring), with ``"ID"`` (decimal text) when
    ``schedule_id`` is given. Reading it back with :func:`parse_schedule` gives ``schedule``."""
    form: dict[str, Any] = {} if schedule_id is None else {"ID": str(schedule_id)}
    form |= {
        "Name": schedule.name,
        "Type": schedule.type.value,
        "BackupInterval": schedule.interval_minutes or -1,
        "Time": {
            "Hour": schedule.hour,
            "Minute": schedule.minute,
            "Duration": schedule.stop_after_hours or -1,
        },
        "FullBackup": schedule.stop_after_hours is None,
        "Days": list(schedule.weekdays),
        "DayOfMonth": schedule.day_of_month or 0,
        "WeekOfMonth": _WEEK_NUMBERS.get(schedule.week_of_month or 0, ""),
        "Date": schedule.date.isoformat() if schedule.date else "",
        "SpaceFreeUpEnabled": schedule.retention_after,
        "SkipBackupEnabled": schedule.skip_backup,
        "Enabled": schedule.enabled,
        "BackupType": "",
    }
    return form


# --- reading values ---------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _integer(value: Any, key: str, low: int, high: int) -> int:
    """A whole number (JSON number without fraction, or its decimal text) in low..high."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():
            number = int(text)
    if number is None:
        raise ParameterInvalid(key, shown_value(value), "a whole number")
    if not low <= number <= high:
        raise ParameterInvalid(key, shown_value(value), f"{low} to {high}")
    return number


def _boolean(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ParameterInvalid(key, shown_value(value), "true or false")


def _text(value: Any, key: str) -> str:
    """A string the databases can hold (no NUL, no lone surrogate: ``model.text.is_text``)."""
    if not isinstance(value, str):
        raise ParameterInvalid(key, shown_value(value), "a string")
    if not is_text(value):
        raise ParameterInvalid(key, shown_value(value), "not valid text")
    return value


def _decoded(value: Any, key: str, kind: type) -> Any:
    """``value``, or the JSON it holds when it is text starting like a ``kind`` (dict/list)."""
    if isinstance(value, str) and value.strip()[:1] == ("{" if kind is dict else "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            what = "object" if kind is dict else "array"
            raise ParameterInvalid(key, shown_value(value), f"not a JSON {what}") from None
    return value


def _time(value: Any, key: str) -> dict[str, Any]:
    """``Time`` as an object of its known keys (JSON object or its text)."""
    value = _decoded(value, key, dict)
    if not isinstance(value, dict):
        raise ParameterInvalid(key, shown_value(value), 'an object {"Hour", "Minute", "Duration"}')
    unknown = [k for k in value if k not in _TIME_KEYS]
    if unknown:
        raise ParameterInvalid(f"{key}.{unknown[0]}", shown_value(value[unknown[0]]), "unknown key")
    return dict(value)


def _days(value: Any, key: str) -> tuple[str, ...]:
    """``Days``: a JSON array of weekday names (or its text), or ``MONDAY,FRIDAY``."""
    value = _decoded(value, key, list)
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ParameterInvalid(key, shown_value(value), 'an array such as ["MONDAY", "FRIDAY"]')
    days: list[str] = []
    for item in value:
        word = item.strip().upper() if isinstance(item, str) else None
        name = next((d for d in WEEKDAY_NAMES if word in (d, d[:3])), None)
        if name is None:
            raise ParameterInvalid(key, shown_value(item), "a weekday: MONDAY … SUNDAY")
        if name not in days:
            days.append(name)
    return tuple(days)


def _week(value: Any, key: str) -> int:
    if isinstance(value, str) and value.strip().upper() in WEEK_WORDS:
        return WEEK_WORDS[value.strip().upper()]
    if isinstance(value, int) and not isinstance(value, bool) and value in _WEEK_NUMBERS:
        return value
    raise ParameterInvalid(key, shown_value(value), "FIRST, SECOND, THIRD, FOURTH or LAST")


def _date(value: Any, key: str) -> dt.date:
    text = _text(value, key).strip()
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ParameterInvalid(key, shown_value(value), "a date yyyy-MM-dd") from None


# --- merging with a base ----------------------------------------------------------------------


def _merged(given: Mapping[str, Any], base: Schedule | None, prefix: str) -> dict[str, Any]:
    """The CBS keys to read: ``given``'s over ``base``'s form (the module docstring's rules)."""
    if base is None:
        return dict(given)
    old: dict[str, Any] = schedule_form(base)
    if not _empty(given.get("Type")) and str(given["Type"]).strip().upper() != base.type.value:
        old |= dict.fromkeys(_KIND_KEYS)
    if given.get("DayOfMonth") not in (None, "", 0, "0"):
        old |= {"WeekOfMonth": None, "Days": None}
    if not _empty(given.get("WeekOfMonth")):
        old["DayOfMonth"] = None
    merged = old | {k: v for k, v in given.items() if k != "Time"}
    time_key = _key(prefix, "Time")
    new_time = {} if _empty(given.get("Time")) else _time(given["Time"], time_key)
    merged["Time"] = old["Time"] | new_time
    full = given.get("FullBackup")
    if "Duration" in new_time and _empty(full):
        merged["FullBackup"] = None  # follows the new Duration
    elif not _empty(full) and "Duration" not in new_time:
        if _boolean(full, _key(prefix, "FullBackup")):
            merged["Time"]["Duration"] = -1
    return merged


# --- parse_schedule ---------------------------------------------------------------------------


def _stop_after(values: Mapping[str, Any], time: Mapping[str, Any], prefix: str) -> int | None:
    """``stop_after_hours`` from ``FullBackup`` and ``Time.Duration`` (module docstring)."""
    key = _key(prefix, "Time.Duration")
    raw = time.get("Duration")
    duration = None if _empty(raw) else _integer(raw, key, -1, MAX_STOP_AFTER_HOURS)
    if duration in (-1, 0):
        duration = None
    full = values.get("FullBackup")
    if _empty(full):
        return duration
    if _boolean(full, _key(prefix, "FullBackup")):
        if duration is not None:
            raise ParameterInvalid(
                key, shown_value(raw), "FullBackup true runs until done: give Duration -1"
            )
        return None
    if duration is None:
        raise ParameterInvalid(
            key,
            shown_value(raw) if raw is not None else "",
            f"FullBackup false stops after Duration hours: 1 to {MAX_STOP_AFTER_HOURS}",
        )
    return duration


def _kind_keys(values: Mapping[str, Any], kind: ScheduleType, prefix: str) -> dict[str, Any]:
    """``weekdays``, ``day_of_month``, ``week_of_month``, ``date`` for a schedule of ``kind``;
    a key the kind does not take, or one it lacks, raises naming it."""
    given = {k: values.get(k) for k in _KIND_KEYS}
    if given["DayOfMonth"] in (0, "0"):
        given["DayOfMonth"] = None
    given["Days"] = _decoded(given["Days"], _key(prefix, "Days"), list)  # "[]" is empty too
    present = {k for k, v in given.items() if not _empty(v)}
    wanted: set[str] = {
        ScheduleType.DAILY: set(),
        ScheduleType.WEEKLY: {"Days"},
        ScheduleType.CUSTOM: {"Date"},
        ScheduleType.MONTHLY: {"WeekOfMonth", "Days"}
        if "WeekOfMonth" in present
        else {"DayOfMonth"},
    }[kind]
    if kind is ScheduleType.MONTHLY and {"DayOfMonth", "WeekOfMonth"} <= present:
        raise ParameterInvalid(
            _key(prefix, "DayOfMonth"),
            shown_value(given["DayOfMonth"]),
            "a MONTHLY schedule runs on DayOfMonth or on WeekOfMonth with one of Days, not both",
        )
    extra = sorted(present - wanted, key=_KIND_KEYS.index)
    if extra:
        name = extra[0]
        raise ParameterInvalid(
            _key(prefix, name), shown_value(given[name]), f"a {kind.value} schedule takes no {name}"
        )
    missing = sorted(wanted - present, key=_KIND_KEYS.index)
    if missing:
        raise ParameterMissing(_key(prefix, missing[0]))
    out: dict[str, Any] = {}
    if "Days" in present:
        out["weekdays"] = _days(given["Days"], _key(prefix, "Days"))
        if kind is ScheduleType.MONTHLY and len(out["weekdays"]) != 1:
            raise ParameterInvalid(
                _key(prefix, "Days"),
                shown_value(given["Days"]),
                'WeekOfMonth takes exactly one weekday (e.g. "LAST" with ["FRIDAY"])',
            )
    if "DayOfMonth" in present:
        out["day_of_month"] = _integer(given["DayOfMonth"], _key(prefix, "DayOfMonth"), -1, 31)
    if "WeekOfMonth" in present:
        out["week_of_month"] = _week(given["WeekOfMonth"], _key(prefix, "WeekOfMonth"))
    if "Date" in present:
        out["date"] = _date(given["Date"], _key(prefix, "Date"))
    return out


def _type(values: Mapping[str, Any], prefix: str) -> ScheduleType:
    raw = values.get("Type")
    if _empty(raw):
        raise ParameterMissing(_key(prefix, "Type"))
    word = _text(raw, _key(prefix, "Type")).strip().upper()
    if word not in ScheduleType.__members__:
        raise ParameterInvalid(
            _key(prefix, "Type"), shown_value(raw), "DAILY, WEEKLY, MONTHLY or CUSTOM"
        )
    return ScheduleType(word)


def _interval(values: Mapping[str, Any], prefix: str) -> int | None:
    raw = values.get("BackupInterval")
    if _empty(raw):
        return None
    key = _key(prefix, "BackupInterval")
    number = _integer(raw, key, -1, max(BACKUP_INTERVALS))
    if number == -1:
        return None
    if number not in BACKUP_INTERVALS:
        raise ParameterInvalid(
            key, shown_value(raw), f"-1 or one of {', '.join(map(str, BACKUP_INTERVALS))}"
        )
    return number


def _flag(values: Mapping[str, Any], name: str, prefix: str, *, default: bool) -> bool:
    raw = values.get(name)
    return default if _empty(raw) else _boolean(raw, _key(prefix, name))


def parse_schedule(
    given: Mapping[str, Any], *, base: Schedule | None = None, prefix: str = ""
) -> Schedule:
    """The ``Schedule`` a CBS-form object (``given``: the keys of :data:`SCHEDULE_KEYS`; others
    are the caller's to refuse or ignore) describes, over ``base`` when given (UpdateSchedule:
    keys left out keep its values). ``prefix`` goes before each key an error names
    (``"ScheduleList[0]"``). Raises ``ParameterMissing`` (``Name``, ``Type``, ``Time``,
    ``Time.Hour``, a key the type needs) or ``ParameterInvalid`` naming the key and why
    (cbs-api.md §13); ``BackupType`` other than empty is refused (file sets only)."""
    values = _merged(given, base, prefix)
    name = values.get("Name")
    if _empty(name):
        raise ParameterMissing(_key(prefix, "Name"))
    name = _text(name, _key(prefix, "Name"))
    kind = _type(values, prefix)
    if _empty(values.get("Time")):
        raise ParameterMissing(_key(prefix, "Time"))
    time = _time(values["Time"], _key(prefix, "Time"))
    for part in ("Hour", "Minute"):
        if _empty(time.get(part)):
            raise ParameterMissing(_key(prefix, f"Time.{part}"))
    backup_type = values.get("BackupType")
    if not _empty(backup_type):
        raise ParameterInvalid(
            _key(prefix, "BackupType"),
            shown_value(backup_type),
            "must be empty for a FILE backup set (the only type opencbs keeps)",
        )
    keys: dict[str, Any] = {
        "name": name,
        "type": kind,
        "hour": _integer(time["Hour"], _key(prefix, "Time.Hour"), 0, 23),
        "minute": _integer(time["Minute"], _key(prefix, "Time.Minute"), 0, 59),
        "interval_minutes": _interval(values, prefix),
        "stop_after_hours": _stop_after(values, time, prefix),
        "retention_after": _flag(values, "SpaceFreeUpEnabled", prefix, default=True),
        "skip_backup": _flag(values, "SkipBackupEnabled", prefix, default=False),
        "enabled": _flag(values, "Enabled", prefix, default=True),
        **_kind_keys(values, kind, prefix),
    }
    try:
        return Schedule.model_validate(keys)
    except ValidationError as exc:  # a rule of the model not checked above (a Name too long)
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error.get("loc") else ""
        why = str(error["msg"]).removeprefix("Value error, ")
        key = _key(prefix, _CBS_NAMES.get(field, "")) if field in _CBS_NAMES else prefix
        shown = shown_value(keys.get(field, "")) if field in keys else ""
        raise ParameterInvalid(key or "Schedule", shown, why) from None


_CBS_NAMES = {
    "name": "Name",
    "type": "Type",
    "hour": "Time.Hour",
    "minute": "Time.Minute",
    "interval_minutes": "BackupInterval",
    "stop_after_hours": "Time.Duration",
    "weekdays": "Days",
    "day_of_month": "DayOfMonth",
    "week_of_month": "WeekOfMonth",
    "date": "Date",
}

#: The JSON schema of a schedule in CBS form (GetBackupSet's ``ScheduleList`` items, the answer
#: of AddSchedule / UpdateSchedule / RemoveSchedule).
SCHEDULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A schedule in CBS form (cbs-api.md §13).",
    "properties": {
        "ID": {"type": "string", "description": "Decimal ID as a string."},
        "Name": {"type": "string"},
        "Type": {"type": "string", "enum": [t.value for t in ScheduleType]},
        "BackupInterval": {
            "type": "integer",
            "description": "-1, or minutes: a periodic schedule.",
        },
        "Time": {
            "type": "object",
            "properties": {
                "Hour": {"type": "integer", "minimum": 0, "maximum": 23},
                "Minute": {"type": "integer", "minimum": 0, "maximum": 59},
                "Duration": {"type": "integer", "description": "Stop after N hours; -1: no limit."},
            },
        },
        "FullBackup": {"type": "boolean", "description": "true: run until done (no Duration)."},
        "Days": {"type": "array", "items": {"type": "string", "enum": list(WEEKDAY_NAMES)}},
        "DayOfMonth": {"type": "integer", "description": "1..31, -1 the last day; 0: none."},
        "WeekOfMonth": {"type": "string", "enum": [*WEEK_WORDS, ""]},
        "Date": {"type": "string", "description": 'CUSTOM: yyyy-MM-dd; "" otherwise.'},
        "SpaceFreeUpEnabled": {"type": "boolean"},
        "SkipBackupEnabled": {"type": "boolean"},
        "Enabled": {"type": "boolean"},
        "BackupType": {"type": "string", "description": 'Always "" (file sets).'},
    },
}
