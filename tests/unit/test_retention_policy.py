"""The retention policy (``opencbs.model.retention``, issue 14) and a backup set's ``retention``
setting (``opencbs.model.sets.Retention``): restic's ``forget --keep-*`` rules in local time,
checked on the calendar's edges (month ends, leap days, DST changes, ISO weeks across a year
end, equal times) and against a slow reference that computes the same policy another way
(buckets grouped and ranked, ``dateutil``'s ``relativedelta`` for ``within``)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from opencbs.errors import InvalidInput
from opencbs.model.retention import (
    KEEP_RULES_HINT,
    Decision,
    Duration,
    KeepRules,
    SnapshotTime,
    apply_policy,
)
from opencbs.model.sets import BackupSetSettings, Retention

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NS = 1_000_000_000


def at(text: str, tz: tzinfo = UTC_ZONE, *, fold: int = 0) -> int:
    """Epoch ns of the local wall time ``text`` (``2024-03-31 12:00``) in ``tz``."""
    wall = datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold)
    return int(wall.timestamp()) * NS


def snaps(*texts: str, tz: tzinfo = UTC_ZONE) -> list[SnapshotTime]:
    """Snapshots named by their local wall times in ``tz``."""
    return [SnapshotTime(text, at(text, tz)) for text in texts]


def kept(decisions: Iterable[Decision]) -> list[str]:
    return [d.id for d in decisions if d.keep]


def why(decisions: Iterable[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.id: d.reasons for d in decisions}


# --- Duration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "duration", "canonical"),
    [
        ("7d", Duration(days=7), "7d"),
        ("12h", Duration(hours=12), "12h"),
        ("1y2m3d4h", Duration(years=1, months=2, days=3, hours=4), "1y2m3d4h"),
        ("1y", Duration(years=1), "1y"),
        ("2m", Duration(months=2), "2m"),
        ("1y4h", Duration(years=1, hours=4), "1y4h"),
        ("0y7d", Duration(days=7), "7d"),
        ("007d0h", Duration(days=7), "7d"),
        ("999999999h", Duration(hours=999_999_999), "999999999h"),
    ],
)
def test_a_duration_is_read_and_written_back_canonically(
    text: str, duration: Duration, canonical: str
) -> None:
    assert Duration.parse(text) == duration
    assert str(duration) == canonical
    assert Duration.parse(canonical) == duration


@pytest.mark.parametrize(
    "text",
    [
        "", "0d", "0y0m0d0h", "00h", "7", "d", "7D", "7w", "7s", "1d2y", "3d1m", "7d7d", "1y1y",
        " 7d", "7d ", "7d\n", "7 d", "-7d", "+7d", "1.5d", "1e3d", "٧d", "1000000000d", "1d-",
        "y", "1y2", "x" * 200,
    ],
)  # fmt: skip
def test_a_duration_other_than_restics_syntax_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Duration.parse(text)
    message = info.value.message
    assert "\n" not in message and len(message) < 120, message
    assert "1y2m3d4h" in info.value.hint


def test_a_duration_that_is_not_text_is_refused() -> None:
    bad: Any = 7
    with pytest.raises(InvalidInput, match="invalid duration 7"):
        Duration.parse(bad)


@pytest.mark.parametrize(
    "parts",
    [{}, {"days": 0}, {"days": -1}, {"hours": True}, {"days": 1.0}, {"years": 10**9}],
)
def test_a_duration_is_whole_positive_parts_not_all_zero(parts: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        Duration(**parts)


@given(st.tuples(*[st.integers(0, 999_999_999)] * 4).filter(any))
def test_a_durations_text_reads_back_as_itself(parts: tuple[int, int, int, int]) -> None:
    duration = Duration(*parts)
    assert Duration.parse(str(duration)) == duration


# --- KeepRules and the empty policy -----------------------------------------------------------


def test_keep_rules_say_what_they_keep() -> None:
    assert KeepRules(daily=7, weekly=4).describe() == "keep 7 daily, 4 weekly"
    assert KeepRules(last=1, within=Duration(days=7)).describe() == (
        "keep the last snapshot, all within 7d"
    )
    full = KeepRules(3, 24, 7, 4, 12, 2, Duration(years=1, hours=4))
    assert full.describe() == (
        "keep the last 3 snapshots, 24 hourly, 7 daily, 4 weekly, 12 monthly, 2 yearly, "
        "all within 1y4h"
    )
    assert KeepRules().is_empty() and KeepRules().describe() == "keep nothing"
    assert not KeepRules(yearly=1).is_empty()
    assert not KeepRules(within=Duration(hours=1)).is_empty()


@pytest.mark.parametrize("counts", [{"last": -1}, {"daily": True}, {"weekly": 1.0}])
def test_keep_rules_counts_are_whole_numbers_from_zero(counts: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        KeepRules(**counts)
    with pytest.raises(InvalidInput):
        KeepRules(within=7)  # type: ignore[arg-type]


def test_a_policy_that_keeps_nothing_is_refused_and_no_snapshot_list_is_nothing() -> None:
    for snapshots in (snaps("2024-01-01 00:00"), []):
        with pytest.raises(InvalidInput) as info:
            apply_policy(snapshots, KeepRules(), tz=UTC_ZONE)
        assert info.value.message == "a retention policy must keep something"
        assert info.value.hint == KEEP_RULES_HINT
        for flag in ("--keep-last", "--keep-daily", "--keep-yearly", "--keep-within"):
            assert flag in info.value.hint
    assert apply_policy([], KeepRules(last=1), tz=UTC_ZONE) == []
    assert apply_policy(iter([]), KeepRules(within=Duration(days=1)), tz=UTC_ZONE) == []


# --- month ends and leap days -----------------------------------------------------------------


def test_monthly_keeps_the_newest_of_each_month_at_its_end() -> None:
    history = snaps("2024-01-30 12:00", "2024-01-31 12:00", "2024-02-28 12:00", "2024-02-29 12:00",
                    "2024-03-01 12:00", "2024-03-31 23:59")  # fmt: skip
    decisions = apply_policy(reversed(history), KeepRules(monthly=3), tz=UTC_ZONE)
    assert [d.id for d in decisions] == [s.id for s in reversed(history)]  # newest first
    assert kept(decisions) == ["2024-03-31 23:59", "2024-02-29 12:00", "2024-01-31 12:00"]
    assert why(decisions)["2024-02-29 12:00"] == ("monthly snapshot",)


@pytest.mark.parametrize(
    ("newest", "limit", "before"),
    [
        ("2024-03-31 12:00", "2024-02-29 12:00", "2024-02-29 11:59"),  # leap year: Feb 29
        ("2023-03-31 12:00", "2023-02-28 12:00", "2023-02-28 11:59"),  # Feb 28
        ("2024-05-31 08:00", "2024-04-30 08:00", "2024-04-30 07:59"),  # 30-day month
        ("2024-01-31 00:00", "2023-12-31 00:00", "2023-12-30 23:59"),  # across the year
        ("2024-03-29 12:00", "2024-02-29 12:00", "2024-02-29 11:59"),  # no clamp needed
    ],
)
def test_within_a_month_counts_back_to_the_same_day_clamped_to_the_months_end(
    newest: str, limit: str, before: str
) -> None:
    history = snaps(before, limit, newest)
    decisions = apply_policy(history, KeepRules(within=Duration(months=1)), tz=UTC_ZONE)
    assert kept(decisions) == [newest, limit]  # exactly at the limit is within
    assert why(decisions)[limit] == ("within 1m",) and why(decisions)[before] == ()


def test_leap_days_for_yearly_monthly_and_within_a_year() -> None:
    history = snaps("2023-02-27 12:00", "2023-02-28 12:00", "2023-12-31 23:00",
                    "2024-02-28 12:00", "2024-02-29 12:00")  # fmt: skip
    rules = KeepRules(monthly=2, yearly=2, within=Duration(years=1))
    assert why(apply_policy(history, rules, tz=UTC_ZONE)) == {
        "2024-02-29 12:00": ("monthly snapshot", "yearly snapshot", "within 1y"),
        "2024-02-28 12:00": ("within 1y",),
        "2023-12-31 23:00": ("monthly snapshot", "yearly snapshot", "within 1y"),
        "2023-02-28 12:00": ("within 1y",),  # Feb 29 2024 - 1 year: Feb 28 2023
        "2023-02-27 12:00": (),
    }
    # four years back from a leap day lands on a leap day; one year back from Feb 28 on Feb 28
    four = snaps("2024-02-28 12:00", "2024-02-29 12:00", "2028-02-29 12:00")
    assert kept(apply_policy(four, KeepRules(within=Duration(years=4)), tz=UTC_ZONE)) == [
        "2028-02-29 12:00",
        "2024-02-29 12:00",
    ]
    one = snaps("2024-02-28 11:00", "2024-02-28 12:00", "2024-02-29 12:00", "2025-02-28 12:00")
    assert kept(apply_policy(one, KeepRules(within=Duration(years=1)), tz=UTC_ZONE)) == [
        "2025-02-28 12:00",
        "2024-02-29 12:00",
        "2024-02-28 12:00",
    ]


# --- DST changes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "short_day", "long_day"),
    [(BERLIN, "2024-03-31", "2024-10-27"), (NEW_YORK, "2024-03-10", "2024-11-03")],
)
def test_a_day_of_23_or_25_hours_is_one_daily_bucket(
    tz: ZoneInfo, short_day: str, long_day: str
) -> None:
    for day, hours in ((short_day, 23), (long_day, 25)):
        history = snaps(f"{day} 00:00", f"{day} 12:00", f"{day} 23:59", tz=tz)
        first, _, last = history
        assert last.time_ns - first.time_ns == (hours * 3600 - 60) * NS
        previous = datetime.fromisoformat(day) - timedelta(days=1)
        history += snaps(f"{previous.date()} 23:59", tz=tz)
        decisions = apply_policy(history, KeepRules(daily=2), tz=tz)
        assert kept(decisions) == [f"{day} 23:59", f"{previous.date()} 23:59"]
        # in UTC the same instants fall on other days: the zone decides the buckets
        in_utc = apply_policy(history, KeepRules(daily=2), tz=UTC_ZONE)
        assert kept(in_utc) != kept(decisions)


def test_the_repeated_hour_is_one_hourly_bucket() -> None:
    # New York, 2024-11-03: 01:00-02:00 happens twice (EDT, then EST)
    first = SnapshotTime("01:30 EDT", at("2024-11-03 01:30", NEW_YORK, fold=0))
    second = SnapshotTime("01:20 EST", at("2024-11-03 01:20", NEW_YORK, fold=1))
    earlier = SnapshotTime("00:45 EDT", at("2024-11-03 00:45", NEW_YORK))
    assert second.time_ns - first.time_ns == 50 * 60 * NS
    assert datetime.fromtimestamp(first.time_ns // NS, UTC).hour == 5
    decisions = apply_policy([earlier, first, second], KeepRules(hourly=2), tz=NEW_YORK)
    assert why(decisions) == {
        "01:20 EST": ("hourly snapshot",),
        "01:30 EDT": (),  # the same local hour as the newer 01:20 EST
        "00:45 EDT": ("hourly snapshot",),
    }
    # Berlin, 2024-10-27: 02:00-03:00 happens twice
    berlin = [
        SnapshotTime("02:10 CEST", at("2024-10-27 02:10", BERLIN, fold=0)),
        SnapshotTime("02:50 CEST", at("2024-10-27 02:50", BERLIN, fold=0)),
        SnapshotTime("02:05 CET", at("2024-10-27 02:05", BERLIN, fold=1)),
        SnapshotTime("03:00 CET", at("2024-10-27 03:00", BERLIN)),
    ]
    assert kept(apply_policy(berlin, KeepRules(hourly=5), tz=BERLIN)) == ["03:00 CET", "02:05 CET"]


def test_within_a_day_across_a_dst_change_is_a_calendar_day() -> None:
    # Berlin spring: 2024-03-31 12:00 CEST - 1 day = 2024-03-30 12:00 CET, 23 hours earlier
    newest = at("2024-03-31 12:00", BERLIN)
    history = [
        SnapshotTime("newest", newest),
        SnapshotTime("23h", newest - 23 * 3600 * NS),
        SnapshotTime("23h30", newest - (23 * 3600 + 1800) * NS),
    ]
    assert kept(apply_policy(history, KeepRules(within=Duration(days=1)), tz=BERLIN)) == [
        "newest",
        "23h",
    ]
    assert len(kept(apply_policy(history, KeepRules(within=Duration(hours=24)), tz=BERLIN))) == 3
    # Berlin autumn: 2024-10-27 12:00 CET - 1 day = 2024-10-26 12:00 CEST, 25 hours earlier
    newest = at("2024-10-27 12:00", BERLIN)
    history = [
        SnapshotTime("newest", newest),
        SnapshotTime("24h30", newest - (24 * 3600 + 1800) * NS),
        SnapshotTime("25h", newest - 25 * 3600 * NS),
        SnapshotTime("25h1s", newest - (25 * 3600 + 1) * NS),
    ]
    assert kept(apply_policy(history, KeepRules(within=Duration(days=1)), tz=BERLIN)) == [
        "newest",
        "24h30",
        "25h",
    ]
    assert kept(apply_policy(history, KeepRules(within=Duration(hours=24)), tz=BERLIN)) == [
        "newest"
    ]
    # days, then hours as elapsed time: 1d1h from 12:00 CET is 11:00 CEST, 26 hours back
    assert kept(apply_policy(history, KeepRules(within=Duration(days=1, hours=1)), tz=BERLIN)) == [
        "newest",
        "24h30",
        "25h",
        "25h1s",
    ]


def test_within_a_wall_time_the_clock_repeats_or_skips_takes_the_earlier_reading() -> None:
    # 2024-11-04 01:30 EST - 1 day: 2024-11-03 01:30, which is 05:30 UTC (EDT) and 06:30 UTC
    newest = at("2024-11-04 01:30", NEW_YORK)
    limit = at("2024-11-03 01:30", NEW_YORK, fold=0)
    history = [
        SnapshotTime("newest", newest),
        SnapshotTime("limit", limit),
        SnapshotTime("before", limit - NS),
    ]
    assert (newest - limit) // NS == 25 * 3600
    assert kept(apply_policy(history, KeepRules(within=Duration(days=1)), tz=NEW_YORK)) == [
        "newest",
        "limit",
    ]
    # 2024-03-11 02:30 EDT - 1 day: 2024-03-10 02:30 never happened; read as 01:30 EST
    newest = at("2024-03-11 02:30", NEW_YORK)
    limit = at("2024-03-10 01:30", NEW_YORK)
    history = [
        SnapshotTime("newest", newest),
        SnapshotTime("limit", limit),
        SnapshotTime("before", limit - NS),
    ]
    assert kept(apply_policy(history, KeepRules(within=Duration(days=1)), tz=NEW_YORK)) == [
        "newest",
        "limit",
    ]


def test_within_counts_to_the_nanosecond() -> None:
    newest = at("2024-06-02 10:00") + 500_000_000
    limit = newest - 86400 * NS
    history = [
        SnapshotTime("newest", newest),
        SnapshotTime("limit", limit),
        SnapshotTime("1ns before", limit - 1),
    ]
    assert kept(apply_policy(history, KeepRules(within=Duration(days=1)), tz=BERLIN)) == [
        "newest",
        "limit",
    ]


@pytest.mark.parametrize(
    "within",
    [Duration(years=999_999_999), Duration(days=999_999_999), Duration(hours=999_999_999),
     Duration(years=2023, months=11)],
)  # fmt: skip
def test_within_longer_than_the_calendar_keeps_everything(within: Duration) -> None:
    history = [
        SnapshotTime("newest", at("2024-06-02 10:00")),
        SnapshotTime("old", at("1601-01-02 00:00")),
        SnapshotTime("out of range", -(10**30)),
    ]
    decisions = apply_policy(history, KeepRules(within=within), tz=NEW_YORK)
    assert kept(decisions) == ["newest", "old", "out of range"]


def test_times_outside_the_job_time_window_are_ordered_and_bucketed_at_its_ends() -> None:
    history = [
        SnapshotTime("future", 10**30),
        SnapshotTime("9999", at("9999-12-30 00:00")),
        SnapshotTime("now", at("2024-06-02 10:00")),
        SnapshotTime("past", -(10**30)),
    ]
    decisions = apply_policy(history, KeepRules(yearly=3), tz=ZoneInfo("Pacific/Kiritimati"))
    assert why(decisions) == {
        "future": ("yearly snapshot",),  # counted as 9999-12-31 00:00 UTC
        "9999": (),
        "now": ("yearly snapshot",),
        "past": ("yearly snapshot",),
    }


# --- ISO weeks, equal times, combined rules ---------------------------------------------------


def test_iso_weeks_run_across_the_year_end() -> None:
    # 2024-12-30 (Mon) .. 2025-01-05 (Sun) is ISO week 2025-W01
    history = snaps("2024-12-29 10:00", "2024-12-30 10:00", "2024-12-31 10:00",
                    "2025-01-01 10:00", "2025-01-05 10:00", "2025-01-06 10:00")  # fmt: skip
    decisions = apply_policy(history, KeepRules(weekly=3, yearly=2), tz=UTC_ZONE)
    assert why(decisions) == {
        "2025-01-06 10:00": ("weekly snapshot", "yearly snapshot"),
        "2025-01-05 10:00": ("weekly snapshot",),
        "2025-01-01 10:00": (),
        "2024-12-31 10:00": ("yearly snapshot",),  # another year, the same week as Jan 1
        "2024-12-30 10:00": (),
        "2024-12-29 10:00": ("weekly snapshot",),
    }
    # 2020-W53 runs from 2020-12-28 to 2021-01-03
    history = snaps("2020-12-27 10:00", "2020-12-31 10:00", "2021-01-03 10:00")
    assert kept(apply_policy(history, KeepRules(weekly=2), tz=UTC_ZONE)) == [
        "2021-01-03 10:00",
        "2020-12-27 10:00",
    ]


def test_equal_times_and_one_minute_are_ordered_deterministically() -> None:
    same = at("2024-06-01 10:00:05")
    history = [
        SnapshotTime("b", same),
        SnapshotTime("c", same),
        SnapshotTime("a", same),
        SnapshotTime("d", same + 1),  # one nanosecond later
        SnapshotTime("e", same - 4 * NS),  # the same minute, earlier
        SnapshotTime("f", same + 54 * NS),  # the same minute, later
    ]
    rules = KeepRules(last=3, hourly=1, daily=2)
    expected = {
        "f": ("last snapshot", "hourly snapshot", "daily snapshot"),
        "d": ("last snapshot",),
        "c": ("last snapshot",),
        "b": (),
        "a": (),
        "e": (),
    }
    for order in itertools.permutations(history):
        decisions = apply_policy(order, rules, tz=BERLIN)
        assert [d.id for d in decisions] == list(expected)
        assert why(decisions) == expected


def test_keep_last_with_daily_and_weekly_lists_every_reason() -> None:
    # Wed 2024-05-08 back to Fri 2024-04-26: one snapshot at 09:00 and one at 21:00 each day
    days = [datetime(2024, 5, 8) - timedelta(days=n) for n in range(13)]
    history = [SnapshotTime(f"{d:%a %d} {h}", at(f"{d:%Y-%m-%d} {h}")) for d in days
               for h in ("09:00", "21:00")]  # fmt: skip
    decisions = apply_policy(history, KeepRules(last=3, daily=3, weekly=3), tz=UTC_ZONE)
    assert {k: v for k, v in why(decisions).items() if v} == {
        "Wed 08 21:00": ("last snapshot", "daily snapshot", "weekly snapshot"),
        "Wed 08 09:00": ("last snapshot",),
        "Tue 07 21:00": ("last snapshot", "daily snapshot"),
        "Mon 06 21:00": ("daily snapshot",),
        "Sun 05 21:00": ("weekly snapshot",),
        "Sun 28 21:00": ("weekly snapshot",),
    }
    assert all(d.keep == bool(d.reasons) for d in decisions)


# --- a long history against a slow reference --------------------------------------------------

BUCKETS: dict[str, Callable[[datetime], object]] = {
    "hourly": lambda t: t.strftime("%Y-%m-%d %H"),
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: t.strftime("%G-W%V"),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.strftime("%Y"),
}


def reference(
    snapshots: list[SnapshotTime], rules: KeepRules, tz: tzinfo
) -> dict[str, tuple[str, ...]]:
    """The policy computed another way: per rule, the snapshots grouped by bucket, the groups
    ranked by their newest snapshot, the newest of the first N kept; ``within`` from the
    newest local time with ``relativedelta`` and POSIX timestamps."""

    def rank(s: SnapshotTime) -> tuple[int, str]:
        return (s.time_ns, s.id)

    reasons: dict[str, list[str]] = {s.id: [] for s in snapshots}
    for s in sorted(snapshots, key=rank, reverse=True)[: rules.last]:
        reasons[s.id].append("last snapshot")
    for name, bucket_of in BUCKETS.items():
        groups: dict[object, list[SnapshotTime]] = defaultdict(list)
        for s in snapshots:
            groups[bucket_of(datetime.fromtimestamp(s.time_ns // NS, tz))].append(s)
        newest = sorted((max(group, key=rank) for group in groups.values()), key=rank)
        for s in newest[::-1][: getattr(rules, name)]:
            reasons[s.id].append(f"{name} snapshot")
    if rules.within is not None and snapshots:
        top = max(snapshots, key=rank).time_ns
        w = rules.within
        wall = datetime.fromtimestamp(top // NS, tz).replace(tzinfo=None)
        wall -= relativedelta(years=w.years, months=w.months, days=w.days)
        seconds = min(wall.replace(tzinfo=tz, fold=f).timestamp() for f in (0, 1))
        cutoff = int(seconds) * NS + top % NS - w.hours * 3600 * NS
        for s in snapshots:
            if s.time_ns >= cutoff:
                reasons[s.id].append(f"within {w}")
    return {k: tuple(v) for k, v in reasons.items()}


def test_a_long_daily_history_keeps_the_expected_set() -> None:
    newest = datetime(2024, 6, 30, 12)  # a Sunday
    history = [
        SnapshotTime(f"{newest - timedelta(days=n):%Y-%m-%d}",
                     at(f"{newest - timedelta(days=n):%Y-%m-%d %H:%M}"))
        for n in range(400)
    ]  # fmt: skip
    assert history[-1].id == "2023-05-28"
    rules = KeepRules(daily=7, weekly=4, monthly=12, yearly=2)
    decisions = apply_policy(history, rules, tz=UTC_ZONE)
    assert why(decisions) == reference(history, rules, UTC_ZONE)
    assert kept(decisions) == [
        "2024-06-30", "2024-06-29", "2024-06-28", "2024-06-27", "2024-06-26", "2024-06-25",
        "2024-06-24", "2024-06-23", "2024-06-16", "2024-06-09", "2024-05-31", "2024-04-30",
        "2024-03-31", "2024-02-29", "2024-01-31", "2023-12-31", "2023-11-30", "2023-10-31",
        "2023-09-30", "2023-08-31", "2023-07-31",
    ]  # fmt: skip
    assert why(decisions)["2024-06-30"] == (
        "daily snapshot", "weekly snapshot", "monthly snapshot", "yearly snapshot",
    )  # fmt: skip
    assert why(decisions)["2023-12-31"] == ("monthly snapshot", "yearly snapshot")
    # the same history in Berlin at 12:00 UTC is on the same local days
    assert kept(apply_policy(history, rules, tz=BERLIN)) == kept(decisions)


ZONES = [UTC_ZONE, BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")]
START = at("2023-01-01 00:00")


@st.composite
def histories(draw: st.DrawFn) -> list[SnapshotTime]:
    """Snapshots over three years, often close together (same minute, hour, DST change)."""
    anchors = draw(st.lists(st.integers(0, 3 * 366 * 86400), min_size=1, max_size=6))
    times = draw(
        st.lists(
            st.tuples(st.sampled_from(anchors), st.integers(-3 * 86400, 3 * 86400),
                      st.sampled_from([0, 0, 1, 999_999_999])),
            max_size=40,
        )
    )  # fmt: skip
    return [
        SnapshotTime(f"s{i:02d}", START + (anchor + offset) * NS + extra)
        for i, (anchor, offset, extra) in enumerate(times)
    ]


durations = (
    st.tuples(st.integers(0, 2), st.integers(0, 14), st.integers(0, 40), st.integers(0, 50))
    .filter(any)
    .map(lambda parts: Duration(*parts))
)


@settings(max_examples=300, deadline=None)
@given(
    histories(),
    st.builds(
        KeepRules,
        *[st.integers(0, 5)] * 6,
        within=st.none() | durations,
    ),
    st.sampled_from(ZONES),
)
def test_the_policy_equals_the_reference(
    history: list[SnapshotTime], rules: KeepRules, tz: tzinfo
) -> None:
    if rules.is_empty():
        return
    decisions = apply_policy(history, rules, tz=tz)
    assert why(decisions) == reference(history, rules, tz)
    assert [(d.time_ns, d.id) for d in decisions] == sorted(
        ((s.time_ns, s.id) for s in history), reverse=True
    )
    if history:
        assert decisions[0].keep  # the newest is kept by every rule


# --- the retention setting of a backup set ----------------------------------------------------

DEFAULT_JSON = {
    "mode": "SIMPLE", "days": 7, "jobs": None, "keep_last": 0, "keep_hourly": 0,
    "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, "keep_yearly": 0,
    "keep_within": None, "after_backup": True,
}  # fmt: skip


def test_a_new_set_keeps_seven_days() -> None:
    settings_ = BackupSetSettings.parse({})
    assert settings_.retention == Retention.default() == BackupSetSettings().retention
    assert settings_.as_json()["retention"] == DEFAULT_JSON
    assert settings_.retention.keep_rules() == KeepRules(last=1, within=Duration(days=7))
    old = {"sources": ["/srv"], "deduplication": False}  # stored before the key existed
    assert BackupSetSettings.parse(old).retention == Retention.default()


def test_each_mode_gives_its_keep_rules() -> None:
    simple = Retention.model_validate({"days": 30, "after_backup": False})
    assert simple.keep_rules() == KeepRules(last=1, within=Duration(days=30))
    assert not simple.after_backup
    assert Retention.model_validate({"jobs": 10}).keep_rules() == KeepRules(last=10)
    advanced = Retention.model_validate(
        {"mode": "ADVANCED", "keep_last": 2, "keep_hourly": 24, "keep_daily": 7,
         "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 3, "keep_within": "0001y02m"}
    )  # fmt: skip
    assert advanced.keep_within == "1y2m"
    assert advanced.keep_rules() == KeepRules(2, 24, 7, 4, 12, 3, Duration(years=1, months=2))
    within_only = Retention.model_validate({"mode": "ADVANCED", "keep_within": "12h"})
    assert within_only.keep_rules() == KeepRules(within=Duration(hours=12))


def test_simple_days_keep_the_newest_and_the_last_days() -> None:
    rules = Retention.model_validate({"days": 2}).keep_rules()
    old = snaps("2024-01-01 00:00", "2024-01-02 00:00")
    assert kept(apply_policy(old, rules, tz=UTC_ZONE)) == ["2024-01-02 00:00", "2024-01-01 00:00"]
    history = snaps("2024-01-01 00:00", "2024-01-04 11:59", "2024-01-04 12:00", "2024-01-06 12:00")
    assert why(apply_policy(history, rules, tz=UTC_ZONE)) == {
        "2024-01-06 12:00": ("last snapshot", "within 2d"),
        "2024-01-04 12:00": ("within 2d",),
        "2024-01-04 11:59": (),
        "2024-01-01 00:00": (),
    }


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"days": 7, "jobs": 3}, ": a SIMPLE policy keeps either days or jobs (1..365), not both"),
        ({"days": None}, ": a SIMPLE policy keeps either days or jobs (1..365)"),
        ({"days": 7, "keep_daily": 7}, ": a SIMPLE policy takes no keep_* rules (keep_daily)"),
        ({"jobs": 7, "keep_within": "7d"}, ": a SIMPLE policy takes no keep_* rules (keep_within)"),
        ({"mode": "ADVANCED", "days": 7, "keep_daily": 1}, ": an ADVANCED policy takes keep_*"),
        ({"mode": "ADVANCED", "jobs": 7, "keep_daily": 1}, ": an ADVANCED policy takes keep_*"),
        ({"mode": "ADVANCED"}, ": an ADVANCED policy must keep something"),
        ({"mode": "ADVANCED", "keep_daily": 0}, ": an ADVANCED policy must keep something"),
        ({"mode": "ADVANCED", "keep_within": "7w"}, " keep_within: invalid duration '7w'"),
        ({"mode": "ADVANCED", "keep_within": "0d"}, " keep_within: duration '0d' is zero"),
    ],
)
def test_rules_across_the_keys_are_invalid_input_naming_retention(
    retention: dict[str, Any], message: str
) -> None:
    for parse in (BackupSetSettings.parse, BackupSetSettings.model_validate):
        with pytest.raises(InvalidInput) as info:
            parse({"retention": retention})
        assert info.value.message.startswith("retention" + message), info.value.message
        assert "\n" not in info.value.message and info.value.hint


@pytest.mark.parametrize(
    "retention",
    [
        None, 7, "7d", [], {"mode": "simple", "days": 7}, {"mode": "KEEP", "days": 7},
        {"days": 0}, {"days": 366}, {"jobs": -1}, {"days": "7"}, {"days": True}, {"days": 7.5},
        {"mode": "ADVANCED", "keep_daily": -1}, {"mode": "ADVANCED", "keep_daily": 10_001},
        {"mode": "ADVANCED", "keep_daily": None}, {"mode": "ADVANCED", "keep_weekly": "4"},
        {"mode": "ADVANCED", "keep_within": 7}, {"mode": "ADVANCED", "keep_within": ""},
        {"mode": "ADVANCED", "keep_within": "1d" * 40}, {"days": 7, "after_backup": 1},
        {"days": 7, "other": 1},
    ],
)  # fmt: skip
def test_a_wrong_shape_is_one_line_naming_retention(retention: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        BackupSetSettings.parse({"retention": retention})
    assert info.value.message.startswith('retention must be {"mode": "SIMPLE"'), info.value
    assert "(retention" in info.value.message and "\n" not in info.value.message
    with pytest.raises(ValidationError):  # pydantic's own (the agent API's 422)
        BackupSetSettings.model_validate({"retention": retention})


def test_whole_numbers_in_json_form_count_as_integers() -> None:
    given = {"mode": "ADVANCED", "keep_daily": 7.0, "keep_yearly": 1e1}
    retention = BackupSetSettings.parse({"retention": given}).retention
    assert retention.keep_daily == 7 and retention.keep_yearly == 10
    assert type(retention.keep_daily) is int
    assert Retention.model_validate({"jobs": 3.0}).jobs == 3


def test_retention_round_trips_and_is_replaced_whole() -> None:
    current = BackupSetSettings.parse(
        {
            "sources": ["/a"],
            "retention": {"mode": "ADVANCED", "keep_daily": 7, "keep_within": "30d"},
        }
    )
    assert BackupSetSettings.parse(current.as_json()) == current
    assert current.as_json()["retention"] == {
        **DEFAULT_JSON, "mode": "ADVANCED", "days": None, "keep_daily": 7, "keep_within": "30d",
    }  # fmt: skip
    change = BackupSetSettings.model_validate({"retention": {"jobs": 5}})
    assert change.given() == {"retention": {**DEFAULT_JSON, "days": None, "jobs": 5}}
    merged = current.merged(change.given())
    assert merged.sources == ("/a",)
    assert merged.retention == Retention.model_validate({"jobs": 5})  # not mixed with the old
    assert merged.retention.keep_rules() == KeepRules(last=5)
    assert current.merged({"deduplication": False}).retention == current.retention
    assert "retention" not in BackupSetSettings.model_validate({"sources": ["/b"]}).given()
