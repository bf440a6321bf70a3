"""Schedule arithmetic (model.schedules): DST changes, month ends, leap days, intervals across
midnight, CUSTOM days, and the shapes a schedule may have."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbs.errors import InvalidInput
from opencbs.model.schedules import (
    BACKUP_INTERVALS,
    Schedule,
    describe,
    next_slot,
    previous_slot,
    slots,
    stop_time,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, zone: dt.tzinfo = BERLIN) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=zone).timestamp() * 1000)


def local(values: list[int], zone: dt.tzinfo = BERLIN) -> list[str]:
    return [dt.datetime.fromtimestamp(v / 1000, zone).strftime("%Y-%m-%d %H:%M %Z") for v in values]


def sched(**kw: object) -> Schedule:
    return Schedule.parse({"name": "s", **kw})


def test_daily_across_spring_forward_runs_once_after_the_jump() -> None:
    s = sched(type="DAILY", hour=2, minute=30)
    got = local(list(slots(s, BERLIN, ms(2026, 3, 28), ms(2026, 3, 31))))
    assert got == ["2026-03-28 02:30 CET", "2026-03-29 03:30 CEST", "2026-03-30 02:30 CEST"]


def test_daily_across_fall_back_runs_once_at_the_first_occurrence() -> None:
    s = sched(type="DAILY", hour=2, minute=30)
    got = list(slots(s, BERLIN, ms(2026, 10, 25), ms(2026, 10, 26)))
    assert local(got) == ["2026-10-25 02:30 CEST"]
    # the repeated 02:30 exists an hour later in CET: it is not a second slot
    assert got[0] == int(dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp() * 1000)


def test_hourly_interval_counts_elapsed_time_on_25_and_23_hour_days() -> None:
    s = sched(type="DAILY", hour=0, interval_minutes=60)
    assert len(list(slots(s, BERLIN, ms(2026, 10, 25), ms(2026, 10, 26)))) == 25
    assert len(list(slots(s, BERLIN, ms(2026, 3, 29), ms(2026, 3, 30)))) == 23


def test_interval_window_crosses_midnight_and_stops_after_its_hours() -> None:
    s = sched(type="DAILY", hour=22, interval_minutes=60, stop_after_hours=4)
    got = local(list(slots(s, BERLIN, ms(2026, 12, 5, 12), ms(2026, 12, 6, 12))))
    assert got == [
        "2026-12-05 22:00 CET",
        "2026-12-05 23:00 CET",
        "2026-12-06 00:00 CET",
        "2026-12-06 01:00 CET",
    ]
    assert stop_time(s, BERLIN, ms(2026, 12, 6, 0)) == ms(2026, 12, 6, 2)


def test_interval_without_stop_ends_at_local_midnight() -> None:
    s = sched(type="WEEKLY", weekdays=["SAT"], hour=23, interval_minutes=15)
    got = local(list(slots(s, BERLIN, ms(2026, 12, 5), ms(2026, 12, 7))))
    assert got == [f"2026-12-05 23:{m:02d} CET" for m in (0, 15, 30, 45)]
    assert stop_time(s, BERLIN, ms(2026, 12, 5, 23)) is None


def test_day_31_runs_on_each_month_end_and_on_leap_day() -> None:
    s = sched(type="MONTHLY", day_of_month=31, hour=1)
    got = local(list(slots(s, BERLIN, ms(2028, 1, 1), ms(2028, 5, 1))))
    assert got == [
        "2028-01-31 01:00 CET",
        "2028-02-29 01:00 CET",
        "2028-03-31 01:00 CEST",
        "2028-04-30 01:00 CEST",
    ]
    feb = local(list(slots(s, BERLIN, ms(2027, 2, 1), ms(2027, 3, 1))))
    assert feb == ["2027-02-28 01:00 CET"]


def test_day_29_of_february_in_a_common_year_is_the_28th() -> None:
    s = sched(type="MONTHLY", day_of_month=29, hour=3)
    assert local([next_slot(s, BERLIN, ms(2027, 2, 1)) or 0]) == ["2027-02-28 03:00 CET"]


def test_last_day_and_last_friday_of_the_month() -> None:
    last = sched(type="MONTHLY", day_of_month=-1, hour=20)
    assert local(list(slots(last, BERLIN, ms(2026, 1, 1), ms(2026, 3, 1)))) == [
        "2026-01-31 20:00 CET",
        "2026-02-28 20:00 CET",
    ]
    friday = sched(type="MONTHLY", week_of_month=-1, weekdays=["friday"], hour=23)
    assert local(list(slots(friday, BERLIN, ms(2026, 1, 1), ms(2026, 4, 1)))) == [
        "2026-01-30 23:00 CET",
        "2026-02-27 23:00 CET",
        "2026-03-27 23:00 CET",
    ]
    first_monday = sched(type="MONTHLY", week_of_month=1, weekdays=["MONDAY"], hour=6)
    assert local([next_slot(first_monday, BERLIN, ms(2026, 12, 5)) or 0]) == [
        "2026-12-07 06:00 CET"
    ]


def test_weekly_days_and_previous_slot() -> None:
    s = sched(type="WEEKLY", weekdays=["fri", "Mon", "MONDAY"], hour=3)
    assert s.weekdays == ("MONDAY", "FRIDAY")
    assert local([next_slot(s, BERLIN, ms(2026, 12, 5)) or 0]) == ["2026-12-07 03:00 CET"]
    assert local([previous_slot(s, BERLIN, ms(2026, 12, 5)) or 0]) == ["2026-12-04 03:00 CET"]
    exact = ms(2026, 12, 7, 3)
    assert previous_slot(s, BERLIN, exact) == exact
    assert next_slot(s, BERLIN, exact) == ms(2026, 12, 11, 3)


def test_custom_runs_once() -> None:
    s = sched(type="CUSTOM", date="2027-01-01", hour=0, minute=5)
    assert next_slot(s, NEW_YORK, ms(2026, 12, 5, zone=NEW_YORK)) == ms(2027, 1, 1, 0, 5, NEW_YORK)
    assert next_slot(s, NEW_YORK, ms(2027, 1, 1, 0, 5, NEW_YORK)) is None


def test_disabled_schedule_has_no_slot() -> None:
    s = sched(type="DAILY", enabled=False)
    assert next_slot(s, BERLIN, ms(2026, 1, 1)) is None
    assert list(slots(s, BERLIN, ms(2026, 1, 1), ms(2026, 2, 1))) == []
    assert describe(s).endswith("(disabled)")


def test_stop_after_hours_of_a_plain_schedule() -> None:
    s = sched(type="DAILY", hour=22, stop_after_hours=3)
    assert stop_time(s, BERLIN, ms(2026, 12, 5, 22)) == ms(2026, 12, 6, 1)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"type": "WEEKLY"}, "needs weekdays"),
        ({"type": "MONTHLY"}, "day_of_month or week_of_month"),
        ({"type": "MONTHLY", "week_of_month": 2}, "exactly one weekday"),
        ({"type": "CUSTOM"}, "needs a date"),
        ({"type": "DAILY", "date": "2027-01-01"}, "only a CUSTOM"),
        ({"type": "DAILY", "interval_minutes": 7}, "interval_minutes must be one of"),
        ({"type": "DAILY", "hour": 24}, "hour"),
        ({"type": "DAILY", "weekdays": ["SUN"]}, "takes no weekdays"),
        ({"type": "DAILY", "day_of_month": 3}, "only a MONTHLY"),
        ({"type": "HOURLY"}, "type"),
        ({"type": "DAILY", "colour": "red"}, "colour"),
    ],
)
def test_wrong_shapes_are_refused_with_the_key(given: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        sched(**given)
    assert words in caught.value.message


_ZONES = [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC")]


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(_ZONES),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    interval=st.one_of(st.none(), st.sampled_from(BACKUP_INTERVALS)),
    stop=st.one_of(st.none(), st.integers(1, 30)),
    start=st.integers(ms(2025, 1, 1, zone=UTC), ms(2030, 1, 1, zone=UTC)),
)
def test_slots_ascend_and_next_slot_agrees(
    zone: dt.tzinfo, hour: int, minute: int, interval: int | None, stop: int | None, start: int
) -> None:
    s = sched(
        type="DAILY", hour=hour, minute=minute, interval_minutes=interval, stop_after_hours=stop
    )
    got = list(slots(s, zone, start, start + 3 * 86_400_000))
    assert got == sorted(set(got))
    assert got, "a daily schedule has a slot in any three days"
    assert next_slot(s, zone, start - 1) == got[0]
    for a, b in zip(got[:20], got[1:21], strict=False):
        assert next_slot(s, zone, a) == b
        assert previous_slot(s, zone, b - 1) == a
    if interval is None:
        # one slot per local day, at the time asked (or just after a skipped time)
        days = [dt.datetime.fromtimestamp(v / 1000, zone).date() for v in got]
        assert len(days) == len(set(days))
