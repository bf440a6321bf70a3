"""Plain progress lines (``cli.progress.BackupProgress`` off a terminal): none before the
first file, and a final line with the true totals even when the last update was throttled."""

from __future__ import annotations

import io

from opencbs.agent.job import Progress
from opencbs.cli.progress import BackupProgress, Ending


def _lines(updates: list[Progress], *, fail: bool = False) -> list[str]:
    out = io.StringIO()
    # an interval no test reaches: only the first line after "started" is due, the rest throttled
    shown = BackupProgress("backup docs", stream=out, interval=1e9)
    try:
        with shown:
            for p in updates:
                shown.update(p)
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    return out.getvalue().splitlines()


def test_no_line_before_the_first_file_and_a_final_line_with_the_totals() -> None:
    lines = _lines(
        [
            Progress("", 0, 0, 0, 0),
            Progress("/a", 1, 1, 10, 10),
            Progress("/b", 5954, 5954, 100, 100),
            Progress("/z", 8500, 8500, 900, 900),
        ]
    )
    assert lines == [
        "backup docs: started",
        "backup docs: 1/1 files read, 10/10 bytes",
        "backup docs: done: 8500/8500 files read, 900/900 bytes",
    ]


def test_no_repeated_final_line_and_none_after_a_failure() -> None:
    assert _lines([Progress("/a", 3, 3, 9, 9)]) == [
        "backup docs: started",
        "backup docs: 3/3 files read, 9/9 bytes",
    ]
    assert _lines([Progress("/a", 1, 1, 1, 1), Progress("/b", 2, 2, 2, 2)], fail=True) == [
        "backup docs: started",
        "backup docs: 1/1 files read, 1/1 bytes",
    ]


def test_quiet_shows_nothing() -> None:
    out = io.StringIO()
    with BackupProgress("t", quiet=True, stream=out) as shown:
        shown.update(Progress("/a", 1, 1, 1, 1))
    assert out.getvalue() == ""


def _ended(how: Ending, updates: list[Progress]) -> list[str]:
    out = io.StringIO()
    with BackupProgress("backup docs", stream=out, interval=1e9) as shown:
        for p in updates:
            shown.update(p)
        shown.ended(how)
    return out.getvalue().splitlines()


def test_a_failed_or_stopped_job_never_says_done() -> None:
    assert _ended("failed", [Progress("", 0, 0, 0, 0)]) == [
        "backup docs: started",
        "backup docs: failed",
    ]
    assert _ended("stopped", []) == ["backup docs: started", "backup docs: stopped"]
    assert _ended("stopped", [Progress("/a", 1, 1, 10, 10), Progress("/b", 2, 4, 20, 40)]) == [
        "backup docs: started",
        "backup docs: 1/1 files read, 10/10 bytes",
        "backup docs: stopped after 2/4 files read, 20/40 bytes",
    ]
    assert _ended("done", [Progress("/a", 1, 1, 10, 10), Progress("/b", 2, 2, 20, 20)])[-1] == (
        "backup docs: done: 2/2 files read, 20/20 bytes"
    )
