"""The progress views (``cli.progress``) off a terminal and their live line: plurals, human
sizes, the summary of a job that ended, stopped or failed, and a live line that fits any width
(the terminal itself is driven in ``tests/e2e/test_progress_display.py``)."""

from __future__ import annotations

import io
import re

import pytest
from rich.cells import cell_len

from opencbs.agent.job import Progress
from opencbs.agent.restore import RestoreProgress
from opencbs.cli.progress import (
    BackupProgress,
    Ending,
    RestoreProgressView,
    _Figures,
    clock,
    live_line,
    plural,
    rate,
)


def _lines(updates: list[Progress], *, how: Ending | None = None, fail: bool = False) -> list[str]:
    out = io.StringIO()
    # an interval no test reaches: no periodic line, only "started" and the summary
    shown = BackupProgress("backup docs", stream=out, interval=1e9)
    try:
        with shown:
            for p in updates:
                shown.update(p)
            if how is not None:
                shown.ended(how)
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    return out.getvalue().splitlines()


def test_plurals_clock_and_rate() -> None:
    assert plural(1, "file") == "1 file"
    assert plural(0, "file") == "0 files"
    assert plural(1234, "file") == "1,234 files"
    assert plural(2, "directory", "directories") == "2 directories"
    assert (clock(7.9), clock(750), clock(3725)) == ("0:07", "12:30", "1:02:05")
    assert rate(0, 1.0) is None and rate(10, 0.0) is None
    assert rate(3_000_000, 2.0) == "1.5 MB/s"


def test_summary_of_a_full_and_of_an_incremental_job() -> None:
    full = _lines([Progress("/a", 1, 1, 10, 10), Progress("/b", 2, 2, 1_500_000, 1_500_000)])
    assert full[0] == "backup docs: started"
    assert re.fullmatch(r"backup docs: done in 0:00: 2 files \(1\.5 MB\) read, .*B/s", full[1])
    assert len(full) == 2
    one = _lines([Progress("/a", 1, 1, 1, 1)])[-1]
    assert re.fullmatch(r"backup docs: done in 0:00: 1 file \(1 byte\) read, .*/s", one), one
    unchanged = _lines([Progress("", 0, 3, 0, 9000, files_unchanged=3, bytes_unchanged=9000)])
    assert unchanged[-1] == (
        "backup docs: done in 0:00: 0 files (0 bytes) read; 3 files (9.0 kB) unchanged"
    )


def test_a_failed_or_stopped_job_never_says_done_and_a_crash_says_nothing() -> None:
    assert _lines([Progress("", 0, 0, 0, 0)], how="failed") == [
        "backup docs: started",
        "backup docs: failed after 0:00",
    ]
    assert _lines([], how="stopped") == ["backup docs: started", "backup docs: stopped after 0:00"]
    stopped = _lines([Progress("/b", 2, 4, 20_000, 40_000)], how="stopped")
    assert stopped[-1] == (
        "backup docs: stopped after 0:00: 2 of 4+ files (20.0 kB of 40.0 kB+) backed up"
    )
    scanned = Progress("/b", 1, 1, 20_000, 40_000, scan_finished=True)
    assert _lines([scanned], how="failed")[-1] == (
        "backup docs: failed after 0:00: 1 of 1 file (20.0 kB of 40.0 kB) backed up"
    )
    assert _lines([Progress("/a", 1, 1, 1, 1)], fail=True) == ["backup docs: started"]


def test_quiet_shows_nothing() -> None:
    out = io.StringIO()
    with BackupProgress("t", quiet=True, stream=out) as shown:
        shown.update(Progress("/a", 1, 1, 1, 1))
    with RestoreProgressView("r", quiet=True, stream=out) as restored:
        restored.update(RestoreProgress("s", 1, 0, 0, 1, 1, 1, 1, 1, finished=True))
    assert out.getvalue() == ""


def test_periodic_line_says_the_totals_are_still_counted_until_the_scan_ends() -> None:
    shown = BackupProgress("backup docs", stream=io.StringIO())
    assert shown.plain_line() == "backup docs: counting, 0:00 elapsed"
    shown.update(Progress("/a", 82, 90, 170_000_000, 180_200_000))
    line = shown.plain_line()
    assert line.startswith(
        "backup docs: 170.0 MB of 180.2 MB+ (still counting), 82 of 90+ files, "
    ), line
    assert "ETA" not in line
    shown.update(Progress("/b", 83, 150, 171_000_000, 300_000_000, scan_finished=True))
    assert "171.0 MB of 300.0 MB, 83 of 150 files, " in shown.plain_line()


def test_restore_summary_counts_with_plurals() -> None:
    out = io.StringIO()
    with RestoreProgressView("restore j into t", stream=out, interval=1e9) as shown:
        shown.update(RestoreProgress("s", 1, 1, 2, 5_000, 4, 4, 1, 5_000, finished=True))
    assert re.fullmatch(
        r"restore j into t: done in 0:00: 1 file, 1 directory, 2 links, 5\.0 kB restored, .*/s",
        out.getvalue().splitlines()[-1],
    )


_COUNTING = _Figures(224_000_000, 256_000_000, 112, 128, final=False, moved=224_000_000)
_FINAL = _Figures(224_000_000, 600_000_000, 112, 300, final=True, moved=200_000_000)


@pytest.mark.parametrize("figures", [_COUNTING, _FINAL])
def test_live_line_never_reaches_the_last_column(figures: _Figures) -> None:
    long_path = _Figures(**{**_asdict(figures), "current": "/very/long/" * 20 + "name.bin"})
    for width in range(1, 240):
        for title in ("backup S", "restore 2026-12-05-09-52-50 into /tmp/" + "x" * 80):
            line = live_line(title, long_path, 3.2, width)
            assert cell_len(line.plain) <= max(1, width - 1), (width, line.plain)


def test_live_line_keeps_sizes_and_files_and_says_counting_or_eta() -> None:
    at80 = live_line("backup S", _COUNTING, 3.2, 80).plain
    assert "224.0 MB / 256.0 MB+" in at80 and "112/128+ files" in at80 and "━" in at80
    assert "counting…" in at80 and "ETA" not in at80
    final = live_line("backup S", _FINAL, 3.2, 80).plain
    assert "224.0 MB / 600.0 MB " in final and "112/300 files" in final and "ETA 0:" in final
    at60 = live_line("backup S", _FINAL, 3.2, 60).plain
    assert "224.0 MB / 600.0 MB" in at60 and "112/300 files" in at60
    restore = live_line("restore 2026-12-05 into /tmp/" + "x" * 80, _FINAL, 3.2, 60).plain
    assert "224.0 MB / 600.0 MB" in restore and "…" in restore


def _asdict(f: _Figures) -> dict[str, object]:
    return {name: getattr(f, name) for name in f.__slots__}
