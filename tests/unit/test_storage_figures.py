"""Storage figures (cbs-api.md §11) as pure functions: a month's averages from measurements and
jobs (``store.storage.month_average``), sizes in the vendor's k/M/G form, the quota rule, and
what a measurement may hold."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from opencbs.api.cbs_storage import human_size, stat_record
from opencbs.model.storage import MAX_STORAGE_NUMBER, StorageMeasurement, StorageQuota
from opencbs.store.storage import (
    JobUpload,
    MonthAverage,
    StorageRecord,
    month_average,
    month_bounds,
)

BERLIN = ZoneInfo("Europe/Berlin")


def ms(text: str, tz: ZoneInfo = BERLIN) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp() * 1000)


def m(dest: int, at: str, stored: int, **figures: int) -> StorageRecord:
    values = {
        "data_size": 0,
        "data_count": 0,
        "retain_size": 0,
        "retain_count": 0,
        "snapshot_count": 1,
        **figures,
    }
    return StorageRecord(
        set_id=1,
        destination_id=dest,
        measured_at=ms(at),
        stored_size=stored,
        received_at=0,
        **values,
    )


def test_each_day_sums_each_destinations_last_measurement_then_days_are_averaged() -> None:
    measured = [
        # day 1: destination 1 measured twice (the later counts), destination 2 once
        m(1, "2024-06-01 09:00", 100, data_size=10, data_count=1),
        m(1, "2024-06-01 18:00", 300, data_size=30, data_count=3, retain_size=5, retain_count=2),
        m(2, "2024-06-01 12:00", 1000, data_size=100, data_count=10),
        # day 3: destination 1 only; 23:30 Berlin is still June 3rd (21:30 UTC)
        m(1, "2024-06-03 23:30", 500, data_size=50, data_count=4, retain_size=7, retain_count=1),
    ]
    uploads = [
        JobUpload("2024-06-01-09-00-00", 40, 3),
        JobUpload("2024-06-01-18-00-00", 60, 1),
        JobUpload("2024-06-02-08-00-00", 11, 2),
    ]
    avg = month_average(reversed(measured), uploads, BERLIN)  # order does not matter
    assert avg == MonthAverage(
        stored_size=900,  # days 1 and 3: 300 + 1000 and 500
        data_size=90,  # 30 + 100 and 50
        data_count=9,  # 3 + 10 and 4: 17 / 2 = 8.5, rounded half up
        retain_size=6,  # 5 and 7
        retain_count=2,  # 2 and 1: 1.5
        upload_size=56,  # 40 + 60 + 11 over 2 days with jobs: 55.5
        upload_count=3,  # 3 + 1 + 2 over 2 days
    )
    # the same instants seen in UTC: 23:30 Berlin is June 3rd in both zones, 09:00 too
    assert month_average(measured, [], ZoneInfo("UTC")).stored_size == 900


def test_the_day_is_the_servers() -> None:
    late = [m(1, "2024-06-01 23:30", 100), m(1, "2024-06-02 00:30", 300)]
    assert month_average(late, [], BERLIN).stored_size == 200  # two days: 100 and 300
    # in New York both are June 1st: one day, its last measurement
    assert month_average(late, [], ZoneInfo("America/New_York")).stored_size == 300


def test_a_month_without_anything_is_zeros() -> None:
    assert month_average([], [], BERLIN) == MonthAverage()
    record = stat_record("2024-02", MonthAverage())
    assert record == {
        "YearMonth": "2024-02",
        "AvgDataSize": "0",
        "AvgDataRawSize": "0",
        "AvgDataNo": "0",
        "AvgRetainSize": "0",
        "AvgRetainRawSize": "0",
        "AvgRetainNo": "0",
        "AvgUploadSize": "0",
        "AvgUploadRawSize": "0",
        "AvgUploadNo": "0",
        "AvgTotalStorageSize": "0",
        "AvgTotalStorageRawSize": "0",
    }


def test_month_bounds_in_the_servers_zone() -> None:
    start, end = month_bounds(2024, 12, BERLIN)
    assert start == ms("2024-12-01 00:00") and end == ms("2025-01-01 00:00")
    start, end = month_bounds(2024, 3, BERLIN)  # the clocks change in March: 31 days less 1 h
    assert end - start == (31 * 24 - 1) * 3600 * 1000
    with pytest.raises(ValueError):
        month_bounds(9999, 12, BERLIN)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1023, "1023"),
        (1024, "1.0k"),
        (1536, "1.5k"),
        (1587, "1.5k"),  # 1.5498k
        (1588, "1.6k"),  # 1.5508k: rounded half up
        (1048575, "1.0M"),  # 1023.999k would read 1024.0k: the next unit
        (1048576, "1.0M"),
        (1073741824, "1.0G"),
        (1288490189, "1.2G"),
        (5 * 1024**4, "5.0T"),
        (MAX_STORAGE_NUMBER, "8.0P"),
        (3 * 1024**6, "3.0E"),
        (5000 * 1024**6, "5000.0E"),  # past the last unit: still E
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_the_quota_rule() -> None:
    none = StorageQuota(limit=0, used=10**12, destination_used=0)
    assert not none.exceeded_by(10**15)
    quota = StorageQuota(limit=1000, used=600, destination_used=300)
    assert not quota.exceeded_by(400) and quota.exceeded_by(401)


GOOD: dict[str, Any] = {
    "stored_size": 10,
    "data_size": 8,
    "data_count": 2,
    "retain_size": 2,
    "retain_count": 1,
    "snapshot_count": 3,
}


def test_a_measurement_is_whole_numbers_from_zero() -> None:
    assert StorageMeasurement.model_validate(GOOD).measured_at is None
    taken = StorageMeasurement.model_validate({**GOOD, "stored_size": 18.0, "measured_at": 5})
    assert taken.stored_size == 18 and isinstance(taken.stored_size, int)
    for bad in (-1, "10", True, 1.5, MAX_STORAGE_NUMBER + 1, None):
        with pytest.raises(ValidationError):
            StorageMeasurement.model_validate({**GOOD, "data_size": bad})
    with pytest.raises(ValidationError):
        StorageMeasurement.model_validate({k: v for k, v in GOOD.items() if k != "data_count"})
    with pytest.raises(ValidationError):
        StorageMeasurement.model_validate({**GOOD, "files": 3})
    with pytest.raises(ValidationError):
        StorageMeasurement.model_validate({**GOOD, "measured_at": 10**17})
