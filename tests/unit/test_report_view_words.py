"""The readable report's words: every job status said without a second pair of parentheses
beside its CBS code, and a job's duration counted between the seconds its times are shown with."""

from __future__ import annotations

import pytest

from opencbs.cli.report_view import STATUS_WORDS, job_duration, status_text
from opencbs.reports.vocabulary import JobStatus


@pytest.mark.parametrize("status", list(JobStatus))
def test_each_status_reads_as_words_then_its_code(status: JobStatus) -> None:
    words, _style = STATUS_WORDS[status]
    assert "(" not in words and ")" not in words, words
    assert words[0].isupper() and not words.endswith((".", ":"))
    assert status_text(status.value).plain == f"{words} ({status.value})"
    assert status_text(status.value, with_code=False).plain == words


def test_a_failed_job_says_why_after_a_colon() -> None:
    text = status_text(JobStatus.STOP_BY_SYSTEM_ERROR.value).plain
    assert text == "Failed: a system error stopped it (BS_STOP_BY_SYSTEM_ERROR)"


@pytest.mark.parametrize(
    ("start_ms", "end_ms", "said"),
    [
        (10_024_028_900, 10_024_030_100, "2 seconds"),  # shown 10:24:28 → 10:24:30
        (10_024_028_000, 10_024_029_999, "1 second"),
        (10_024_028_999, 10_024_029_000, "1 second"),
        (10_024_028_100, 10_024_028_900, "0 seconds"),
        (0, 3_725_400, "1 hour 2 minutes 5 seconds"),
    ],
)
def test_duration_is_the_shown_end_minus_the_shown_start(
    start_ms: int, end_ms: int, said: str
) -> None:
    assert job_duration(start_ms, end_ms) == said
