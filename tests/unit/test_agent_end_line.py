"""The message of a report's ``end`` entry says "completed" only for a job that completed."""

from __future__ import annotations

import pytest

from opencbs.agent.report_entries import end_line
from opencbs.reports.vocabulary import FINAL_STATUSES, JobStatus


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_end_line_by_status(status: JobStatus) -> None:
    verb = "completed" if status.completed else "ended"
    assert end_line(status) == f"Backup {verb}: {status.value}"


def test_a_failed_job_ended() -> None:
    assert end_line(JobStatus.STOP_BY_SYSTEM_ERROR) == "Backup ended: BS_STOP_BY_SYSTEM_ERROR"
    assert end_line(JobStatus.STOP_SUCCESS_WITH_ERROR) == (
        "Backup completed: BS_STOP_SUCCESS_WITH_ERROR"
    )
