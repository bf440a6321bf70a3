"""The words and units of the readable ``opencbs report`` (``opencbs.cli.report_view``)."""

from __future__ import annotations

from opencbs.cli.report_view import KINDS, STATUS_WORDS, duration, percent, plural, size
from opencbs.reports.vocabulary import FILE_LISTS, JobStatus


def test_every_status_has_words() -> None:
    assert set(STATUS_WORDS) == set(JobStatus)


def test_every_file_list_is_a_kind_in_answer_order() -> None:
    assert tuple(lst for lst, _, _ in KINDS) == FILE_LISTS
    assert all(len(f"{word}  {lst.key}  {meaning}") <= 78 for lst, word, meaning in KINDS)


def test_plural() -> None:
    assert plural(1, "file") == "1 file"
    assert plural(0, "file") == "0 files"
    assert plural(1169, "file") == "1,169 files"
    assert plural(2, "entry", "entries") == "2 entries"


def test_duration_to_the_second() -> None:
    assert duration(0) == "0 seconds"
    assert duration(999) == "0 seconds"
    assert duration(9_000) == "9 seconds"
    assert duration(61_000) == "1 minute 1 second"
    assert duration(3_600_000) == "1 hour"
    assert duration(26 * 3_600_000 + 120_000) == "26 hours 2 minutes"


def test_sizes_and_percent() -> None:
    assert size(1) == "1 byte"
    assert size(512) == "512 bytes"
    assert size(20_480) == "20.5 kB"
    assert size(6_827_033) == "6.8 MB"
    assert percent(20_480, 92_160) == "22%"
    assert percent(5, 0) == "0%"
