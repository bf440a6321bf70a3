"""The CBS form of a schedule (cbs-api.md §13; ``api.schedule_form``): every kind of schedule
round-trips, form-body text is read like JSON, UpdateSchedule's "keys not given keep their
value", and each wrong shape is refused naming the CBS key."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from opencbs.api.schedule_form import parse_schedule, schedule_form
from opencbs.errors import ParameterInvalid, ParameterMissing
from opencbs.model.schedules import Schedule, ScheduleType

AT_22 = {"Hour": 22, "Minute": 0}

SCHEDULES = [
    Schedule(name="Nightly", type=ScheduleType.DAILY, hour=22, minute=30),
    Schedule(
        name="Office hours",
        type=ScheduleType.WEEKLY,
        hour=8,
        minute=0,
        weekdays=("MONDAY", "FRIDAY"),
        interval_minutes=60,
        stop_after_hours=10,
        retention_after=False,
    ),
    Schedule(name="Month end", type=ScheduleType.MONTHLY, hour=23, day_of_month=-1),
    Schedule(name="Day 31", type=ScheduleType.MONTHLY, hour=1, day_of_month=31, enabled=False),
    Schedule(
        name="Last Friday",
        type=ScheduleType.MONTHLY,
        hour=23,
        minute=59,
        week_of_month=-1,
        weekdays=("FRIDAY",),
        stop_after_hours=168,
    ),
    Schedule(
        name="Once",
        type=ScheduleType.CUSTOM,
        date=dt.date(2028, 2, 29),
        skip_backup=True,
        interval_minutes=720,
    ),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_round_trip(schedule: Schedule) -> None:
    form = schedule_form(schedule, 1_700_000_000_123)
    assert form["ID"] == "1700000000123"
    assert form["BackupType"] == ""
    assert form["FullBackup"] is (schedule.stop_after_hours is None)
    fields = {k: v for k, v in form.items() if k != "ID"}
    assert parse_schedule(fields) == schedule
    # as a form body sends it: every value text, Time and Days their JSON text
    import orjson

    as_text = {
        k: orjson.dumps(v).decode() if isinstance(v, (dict, list, bool, int)) else v
        for k, v in fields.items()
    }
    assert parse_schedule(as_text) == schedule


def test_the_form_of_each_kind() -> None:
    weekly, month_end, last_friday, once = (SCHEDULES[i] for i in (1, 2, 4, 5))
    assert schedule_form(weekly) == {
        "Name": "Office hours",
        "Type": "WEEKLY",
        "BackupInterval": 60,
        "Time": {"Hour": 8, "Minute": 0, "Duration": 10},
        "FullBackup": False,
        "Days": ["MONDAY", "FRIDAY"],
        "DayOfMonth": 0,
        "WeekOfMonth": "",
        "Date": "",
        "SpaceFreeUpEnabled": False,
        "SkipBackupEnabled": False,
        "Enabled": True,
        "BackupType": "",
    }
    assert schedule_form(month_end)["DayOfMonth"] == -1
    assert schedule_form(month_end)["Time"]["Duration"] == -1
    assert schedule_form(month_end)["BackupInterval"] == -1
    assert schedule_form(last_friday)["WeekOfMonth"] == "LAST"
    assert schedule_form(last_friday)["Days"] == ["FRIDAY"]
    assert schedule_form(once)["Date"] == "2028-02-29"


def test_lenient_spellings() -> None:
    parsed = parse_schedule(
        {
            "Name": "N",
            "Type": "weekly",
            "Time": '{"Hour": "7", "Minute": 5.0}',
            "Days": "fri, Mon",
            "BackupInterval": "-1",
            "FullBackup": "Y",
            "Enabled": "false",
            "SpaceFreeUpEnabled": 0,
        }
    )
    assert parsed == Schedule(
        name="N",
        type=ScheduleType.WEEKLY,
        hour=7,
        minute=5,
        weekdays=("MONDAY", "FRIDAY"),
        enabled=False,
        retention_after=False,
    )
    assert (
        parse_schedule(
            {"Name": "N", "Type": "MONTHLY", "Time": AT_22, "WeekOfMonth": 2, "Days": ["tuesday"]}
        ).week_of_month
        == 2
    )


def test_duration_and_full_backup() -> None:
    base = {"Name": "N", "Type": "DAILY"}
    stop_4 = {"Hour": 22, "Minute": 0, "Duration": 4}
    assert parse_schedule({**base, "Time": stop_4}).stop_after_hours == 4
    assert parse_schedule({**base, "Time": stop_4, "FullBackup": False}).stop_after_hours == 4
    assert parse_schedule({**base, "Time": {**stop_4, "Duration": -1}}).stop_after_hours is None
    assert parse_schedule({**base, "Time": AT_22, "FullBackup": True}).stop_after_hours is None


def test_update_keeps_what_is_not_given() -> None:
    weekly = SCHEDULES[1]
    assert parse_schedule({}, base=weekly) == weekly
    assert parse_schedule({"Time": {"Hour": 9}}, base=weekly) == weekly.model_copy(
        update={"hour": 9}
    )
    assert parse_schedule({"Name": "Renamed", "Enabled": False}, base=weekly) == (
        weekly.model_copy(update={"name": "Renamed", "enabled": False})
    )
    # FullBackup true alone drops the Duration; a Duration alone sets FullBackup false
    assert parse_schedule({"FullBackup": True}, base=weekly).stop_after_hours is None
    daily = SCHEDULES[0]
    assert parse_schedule({"Time": {"Duration": 3}}, base=daily).stop_after_hours == 3


def test_update_switching_kinds_drops_the_old_kinds_keys() -> None:
    weekly = SCHEDULES[1]
    daily = parse_schedule({"Type": "DAILY"}, base=weekly)
    assert daily.type is ScheduleType.DAILY and daily.weekdays == ()
    monthly = parse_schedule({"Type": "MONTHLY", "DayOfMonth": 15}, base=weekly)
    assert monthly.day_of_month == 15 and monthly.weekdays == ()
    last_friday = SCHEDULES[4]
    by_day = parse_schedule({"DayOfMonth": 1}, base=last_friday)
    assert (by_day.day_of_month, by_day.week_of_month, by_day.weekdays) == (1, None, ())
    month_end = SCHEDULES[2]
    by_week = parse_schedule({"WeekOfMonth": "FIRST", "Days": ["MONDAY"]}, base=month_end)
    assert (by_week.day_of_month, by_week.week_of_month) == (None, 1)
    with pytest.raises(ParameterMissing, match=r"Parameter Days is null"):
        parse_schedule({"Type": "WEEKLY"}, base=SCHEDULES[0])


def _bad(**changes: Any) -> dict[str, Any]:
    given: dict[str, Any] = {"Name": "N", "Type": "DAILY", "Time": dict(AT_22)}
    given.update(changes)
    return {k: v for k, v in given.items() if v is not ...}


MISSING = [
    (_bad(Name=...), "Name"),
    (_bad(Name=""), "Name"),
    (_bad(Type=...), "Type"),
    (_bad(Time=...), "Time"),
    (_bad(Time={"Hour": 1}), "Time.Minute"),
    (_bad(Time={"Minute": 1}), "Time.Hour"),
    (_bad(Type="WEEKLY"), "Days"),
    (_bad(Type="WEEKLY", Days=[]), "Days"),
    (_bad(Type="MONTHLY"), "DayOfMonth"),
    (_bad(Type="MONTHLY", DayOfMonth=0), "DayOfMonth"),
    (_bad(Type="MONTHLY", WeekOfMonth="LAST"), "Days"),
    (_bad(Type="CUSTOM"), "Date"),
]


@pytest.mark.parametrize(("given", "key"), MISSING)
def test_each_missing_key_is_named(given: dict[str, Any], key: str) -> None:
    with pytest.raises(ParameterMissing) as caught:
        parse_schedule(given, prefix="ScheduleList[3]")
    assert caught.value.message == f"[Error] Parameter ScheduleList[3].{key} is null / empty!"


INVALID = [
    (_bad(Name=7), "Name", "a string"),
    (_bad(Name="N\x00"), "Name", "not valid text"),
    (_bad(Name="x" * 256), "Name", "at most 255 characters"),
    (_bad(Type="HOURLY"), "Type", "DAILY, WEEKLY, MONTHLY or CUSTOM"),
    (_bad(Time="{"), "Time", "not a JSON object"),
    (_bad(Time=[1]), "Time", "an object"),
    (_bad(Time={"Hour": 1, "Minute": 0, "Second": 0}), "Time.Second", "unknown key"),
    (_bad(Time={"Hour": 24, "Minute": 0}), "Time.Hour", "0 to 23"),
    (_bad(Time={"Hour": "ten", "Minute": 0}), "Time.Hour", "a whole number"),
    (_bad(Time={"Hour": 1.5, "Minute": 0}), "Time.Hour", "a whole number"),
    (_bad(Time={"Hour": 1, "Minute": 60}), "Time.Minute", "0 to 59"),
    (_bad(Time={"Hour": 1, "Minute": 0, "Duration": 169}), "Time.Duration", "-1 to 168"),
    (
        _bad(Time={"Hour": 1, "Minute": 0, "Duration": 2}, FullBackup=True),
        "Time.Duration",
        "FullBackup true runs until done",
    ),
    (_bad(FullBackup=False), "Time.Duration", "FullBackup false stops after Duration hours"),
    (_bad(FullBackup="maybe"), "FullBackup", "true or false"),
    (_bad(BackupInterval=7), "BackupInterval", "-1 or one of 1, 2, 3"),
    (_bad(BackupInterval=1440), "BackupInterval", "-1 to 720"),
    (_bad(Days=["MONDAY"]), "Days", "a DAILY schedule takes no Days"),
    (_bad(Date="2027-01-01"), "Date", "a DAILY schedule takes no Date"),
    (_bad(Type="WEEKLY", Days=["FUNDAY"]), "Days", "a weekday"),
    (_bad(Type="WEEKLY", Days="[1"), "Days", "not a JSON array"),
    (_bad(Type="WEEKLY", Days={"d": 1}), "Days", "an array"),
    (_bad(Type="MONTHLY", DayOfMonth=32), "DayOfMonth", "-1 to 31"),
    (
        _bad(Type="MONTHLY", DayOfMonth=3, WeekOfMonth="LAST", Days=["FRIDAY"]),
        "DayOfMonth",
        "not both",
    ),
    (_bad(Type="MONTHLY", WeekOfMonth="FIFTH", Days=["FRIDAY"]), "WeekOfMonth", "FIRST"),
    (
        _bad(Type="MONTHLY", WeekOfMonth="LAST", Days=["MONDAY", "FRIDAY"]),
        "Days",
        "exactly one weekday",
    ),
    (_bad(Type="MONTHLY", DayOfMonth=3, Days=["FRIDAY"]), "Days", "takes no Days"),
    (_bad(Type="CUSTOM", Date="2027-02-30"), "Date", "a date yyyy-MM-dd"),
    (_bad(Type="CUSTOM", Date="27-1-1"), "Date", "a date yyyy-MM-dd"),
    (_bad(Type="CUSTOM", Date=20270101), "Date", "a string"),
    (_bad(Enabled="on"), "Enabled", "true or false"),
    (_bad(BackupType="DATABASE"), "BackupType", "must be empty for a FILE backup set"),
]


@pytest.mark.parametrize(("given", "key", "why"), INVALID)
def test_each_wrong_value_is_named(given: dict[str, Any], key: str, why: str) -> None:
    with pytest.raises(ParameterInvalid) as caught:
        parse_schedule(given)
    assert caught.value.name == key
    assert caught.value.message.startswith(f"[Error] Parameter {key} is invalid: ")
    assert why in caught.value.message


def test_a_form_empty_value_is_none() -> None:
    parsed = parse_schedule(
        _bad(BackupInterval="", Days="", DayOfMonth="0", WeekOfMonth="", Date="", BackupType="")
    )
    assert parsed == Schedule(name="N", type=ScheduleType.DAILY, hour=22)
