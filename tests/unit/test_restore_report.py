"""The restore job's status and log as the agent words them (``agent.restore_report``): the
status of each outcome, the log entries of a result, their bounds (1000 entries, 512 KiB of
messages), and a report without a server saying why it was not delivered."""

from __future__ import annotations

from typing import Any

from opencbs.agent.restore import (
    DamagedFile,
    FailedPath,
    RestoreConflict,
    RestoreIncomplete,
    RestoreResult,
)
from opencbs.agent.restore_report import RestoreAbout, RestoreReport, restore_status
from opencbs.model.restores import MAX_RESTORE_LOGS, RestoreStatus
from opencbs.reports.vocabulary import LogType


def _result(**more: Any) -> RestoreResult:
    fields: dict[str, Any] = dict(
        snapshot_id="ab" * 32, files=3, dirs=2, links=1, bytes=1234, skipped=()
    )
    fields.update(more)
    return RestoreResult(**fields)


def test_each_outcome_has_its_status() -> None:
    assert restore_status(_result()) is RestoreStatus.STOP_SUCCESS
    assert restore_status(_result(kept=5)) is RestoreStatus.STOP_SUCCESS
    refused = _result(failed=(FailedPath("/a", "permission denied"),), failed_count=1)
    assert restore_status(refused) is RestoreStatus.STOP_SUCCESS_WITH_WARNING
    assert restore_status(_result(skipped=("../x",))) is RestoreStatus.STOP_SUCCESS_WITH_WARNING
    damaged = _result(damaged=(DamagedFile("/b", "chunk missing"),))
    assert restore_status(damaged) is RestoreStatus.STOP_SUCCESS_WITH_ERROR
    assert restore_status(None, RestoreIncomplete(damaged)) is RestoreStatus.STOP_SUCCESS_WITH_ERROR
    assert restore_status(None, KeyboardInterrupt()) is RestoreStatus.STOP_BY_USER
    assert restore_status(None, RestoreConflict("/t/a")) is RestoreStatus.STOP_BY_ERROR
    assert restore_status(None, OSError(28, "No space left")) is RestoreStatus.STOP_BY_ERROR


def _about() -> RestoreAbout:
    return RestoreAbout("1", "2", "2026-01-02-03-04-05", "ab" * 32, "/t", "refuse")


def test_without_a_server_it_says_why_and_keeps_its_log() -> None:
    report = RestoreReport(None, unavailable="no backup user given")
    report.start(_about())
    refused = _result(
        failed=(FailedPath("/a", "permission denied"),),
        failed_count=3,
        damaged=(DamagedFile("/b", "chunk missing"),),
        kept=2,
    )
    report.result_logs(refused)
    report.finish(refused)
    assert not report.delivered and report.job_id is None
    assert report.problem == "no backup user given"
    logs = report._logs
    assert [e["type"] for e in logs] == ["start", "warn", "warn", "error", "info", "end"]
    assert logs[1]["message"] == "cannot restore /a: permission denied"
    assert logs[2]["message"] == "2 more paths not restored"
    assert logs[4]["message"] == (
        "Restored 3 files (1234 bytes), 2 directories, 1 link, 2 existing paths kept"
    )
    assert logs[-1]["message"] == "Restore ended: RESTORE_STOP_SUCCESS_WITH_ERROR"


def test_the_log_is_bounded_and_says_how_much_is_left_out() -> None:
    report = RestoreReport(None, unavailable="offline")
    for i in range(MAX_RESTORE_LOGS + 10):
        report.add_log(LogType.WARN, f"cannot restore /p{i}: denied")
    report.finish(_result())
    logs = report._logs
    assert len(logs) <= MAX_RESTORE_LOGS
    assert logs[-2]["message"] == "13 more log entries not listed"

    big = RestoreReport(None, unavailable="offline")
    for _ in range(200):
        big.add_log(LogType.WARN, "x" * 4096)  # 800 KiB in all
    big.finish(_result())
    assert sum(len(e["message"]) for e in big._logs) <= 512 * 1024 + 200
    assert big._logs[-2]["message"].endswith("more log entries not listed")
