"""The report's pure rules: the ratio of cbs-api.md §4, time formats, display of names."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbs.reports.ratio import zip_ratio
from opencbs.reports.timefmt import (
    LOG_TIME_FORMAT,
    MAX_TIME_MS,
    MIN_TIME_MS,
    LogTimeFormatter,
    parse_backup_date,
)


def test_vendor_ratio() -> None:
    assert zip_ratio(6827033, 10268480) == "33%"


@pytest.mark.parametrize(
    ("stored", "unzipped", "ratio"),
    [(0, 0, "0%"), (5, 0, "0%"), (0, 10, "100%"), (10, 10, "0%"), (20, 10, "0%"), (1, 3, "66%")],
)
def test_ratio_edges(stored: int, unzipped: int, ratio: str) -> None:
    assert zip_ratio(stored, unzipped) == ratio


ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Europe/Amsterdam",
    "Africa/Monrovia",
]


@settings(max_examples=300, deadline=None)
@given(ms=st.integers(MIN_TIME_MS, MAX_TIME_MS), zone=st.sampled_from(ZONES))
def test_log_time_equals_datetime(ms: int, zone: str) -> None:
    tz = ZoneInfo(zone)
    expected = datetime.fromtimestamp(ms // 1000, tz).strftime(LOG_TIME_FORMAT)
    assert LogTimeFormatter(tz)(ms) == expected


def test_log_time_around_a_dst_change() -> None:
    tz = ZoneInfo("Europe/Berlin")
    fmt = LogTimeFormatter(tz)
    start = int(datetime(2024, 3, 31, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp())
    for s in range(start, start + 3 * 3600, 7):
        assert fmt(s * 1000) == datetime.fromtimestamp(s, tz).strftime(LOG_TIME_FORMAT)


def test_backup_date_forms() -> None:
    assert str(parse_backup_date("2024-08-23")) == "2024-08-23"
    assert str(parse_backup_date("2024-08-23-10-00-36")) == "2024-08-23"
    for bad in ("2024-13-01", "yesterday", "2024-8-1", ""):
        with pytest.raises(ValueError):
            parse_backup_date(bad)
