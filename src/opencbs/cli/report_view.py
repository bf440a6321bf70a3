"""The readable form of ``opencbs report``: a job's summary for a person (status in words,
names, times, what changed per kind in human units, deduplication, the warnings and errors),
the legend of the change kinds, then the report's lists; and the table of ``--list``.

Only what is printed lives here; the numbers are the report's own (cbs-api.md §5): sizes in
bytes shown in decimal units (``rich.filesize``), ratios by the one rule (``zip_ratio``).
``--json`` never comes here: it is the CBS answer, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from opencbs.cli.common import show_name
from opencbs.reports.counters import Counters
from opencbs.reports.fields import ReportHeader
from opencbs.reports.ratio import zip_ratio
from opencbs.reports.timefmt import LogTimeFormatter
from opencbs.reports.vocabulary import EntryType, JobStatus, LogType, ReportList
from opencbs.reports.wording import plural as counted
from opencbs.store.jobs import Job


@dataclass(frozen=True)
class ReportLists:
    """How the readable form reads a job's lists: ``count[lst]`` entries in all, ``first(lst,
    n)`` the first ``n`` rows of a list and ``log()`` every log row, rows in the order and
    with the leading columns of ``opencbs.reports.render.EntryRow`` (etype, path, from_path,
    mtime_ms, size, unzip_size). Only what is shown is read, whatever the report's size."""

    count: Mapping[ReportList, int]
    first: Callable[[ReportList, int], Iterable[Sequence[Any]]]
    log: Callable[[], Iterable[Sequence[Any]]]


#: Each ``BackupJobStatus`` (cbs-api.md §4) in words, with the style it is shown in.
STATUS_WORDS: dict[JobStatus, tuple[str, str]] = {
    JobStatus.STOP_SUCCESS: ("Completed", "green"),
    JobStatus.STOP_SUCCESS_WITH_WARNING: ("Completed with warnings", "yellow"),
    JobStatus.STOP_SUCCESS_WITH_ERROR: ("Completed with errors", "yellow"),
    JobStatus.STOP_BY_USER: ("Stopped by the user", "yellow"),
    JobStatus.STOP_BY_SYSTEM_ERROR: ("Failed: a system error stopped it", "red"),
    JobStatus.STOP_BY_SCHEDULER: ("Stopped at the end of its schedule window", "yellow"),
    JobStatus.STOP_BY_QUOTA_EXCEEDED: ("Stopped: the quota was exceeded", "red"),
    JobStatus.STOP_MISSED_BACKUP: ("Missed: the scheduled backup never started", "red"),
    JobStatus.BACKUP_NOT_FINISHED: ("Not finished: the agent stopped reporting", "red"),
    JobStatus.STILL_RUNNING: ("Running", "cyan"),
    JobStatus.STOP_INCOMPLETE: ("Incomplete", "red"),
    JobStatus.MISSED_DATABASAE: ("Some databases were missed", "yellow"),
    JobStatus.MISSED_PUBLIC_FOLDER: ("Some public folders were missed", "yellow"),
    JobStatus.MISSED_VIRTUAL_MACHINE: ("Some virtual machines were missed", "yellow"),
}

#: The change kinds: each file list, its word, and what it means in one line (the legend of
#: ``opencbs.reports.vocabulary``, shortened to fit 80 columns beside the word and the key).
KINDS: tuple[tuple[ReportList, str, str], ...] = (
    (ReportList.NEW, "new", "did not exist before; its content was not stored yet"),
    (ReportList.UPD, "updated", "existed before; its content changed"),
    (ReportList.PMT, "permission", "content unchanged; permissions, owner or times changed"),
    (ReportList.DEL, "deleted", "no longer exists"),
    (ReportList.MOV, "moved", "vanished, and the same file appeared at another path"),
    (ReportList.CPY, "copied", "a new path whose content equals a file already stored"),
)

_TYPE_WORDS = {EntryType.FILE.value: "file", EntryType.DIRECTORY.value: "dir", "L": "link"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,234 files``: ``wording.plural`` with thousands grouped."""
    return counted(n, word, many, grouped=True)


def size(n: int) -> str:
    """Bytes in decimal units, one decimal: ``300 bytes``, ``1 byte``, ``6.8 MB``."""
    return decimal(n, precision=1, separator=" ")


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a whole percentage, rounded down (``0%`` when ``whole`` is 0),
    as the report's ratios are (cbs-api.md §4)."""
    return f"{part * 100 // whole}%" if whole > 0 else "0%"


def duration(ms: int) -> str:
    """A span of milliseconds in words, to the second: ``9 seconds``, ``1 hour 5 minutes``."""
    hours, rest = divmod(max(0, ms) // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [plural(hours, "hour")] if hours else []
    if minutes:
        parts.append(plural(minutes, "minute"))
    if seconds or not parts:
        parts.append(plural(seconds, "second"))
    return " ".join(parts)


def job_duration(start_ms: int, end_ms: int) -> str:
    """The ``duration`` of a job from ``start_ms`` to ``end_ms`` (epoch ms), counted between
    the whole seconds its start and end are shown with (``report_time`` drops the
    milliseconds): 10:24:28.9 to 10:24:30.1 is ``2 seconds``, as a reader subtracting the
    shown times finds."""
    return duration((end_ms // 1000 - start_ms // 1000) * 1000)


def status_text(status: str, *, with_code: bool = True) -> Text:
    """A ``BackupJobStatus`` in words followed by its CBS code: ``Completed
    (BS_STOP_SUCCESS)``, ``Failed: a system error stopped it (BS_STOP_BY_SYSTEM_ERROR)``
    (words with no parentheses of their own; ``with_code`` false: the words only); an unknown
    code alone."""
    try:
        words, style = STATUS_WORDS[JobStatus(status)]
    except (KeyError, ValueError):
        return Text(show_name(status))
    return Text.assemble((words, style), f" ({status})" if with_code else "")


@dataclass(frozen=True)
class JobView:
    """One job as the summary shows it: the store's row, its report header (times rendered
    in the server zone), and the names of its backup set and destination."""

    job: Job
    header: ReportHeader
    set_name: str
    destination_name: str


def print_report(
    con: Console, view: JobView, lists: ReportLists, *, fmt: LogTimeFormatter, limit: int
) -> None:
    """The whole readable report: summary, changes per kind, legend, warnings and errors, then
    the rest of the log (each entry said once: the warnings and errors not again) and each
    non-empty file list, ``limit`` rows at most each (saying how many more)."""
    _print_summary(con, view)
    _print_changes(con, view.header.counters)
    _print_legend(con)
    problems = _LogPart(limit)  # the warnings and errors
    others = _LogPart(limit)  # the rest of the log
    for row in lists.log():
        (problems if row[0] in (LogType.WARN, LogType.ERROR) else others).add(row)
    title = "Log (warnings and errors above)" if problems.count else "Log"
    for part, name in ((problems, "Warnings and errors"), (others, title)):
        rows = _log_rows(part.first, fmt)
        _print_rows(con, name, _log_table(), rows, count=part.count, limit=limit)
    for lst, word, _meaning in KINDS:
        count = lists.count[lst]
        first = lists.first(lst, limit) if count else ()
        moved = lst is ReportList.MOV
        table = _file_table("Moved from → to" if moved else "Path")
        rows = _file_rows(first, fmt, moved=moved)
        _print_rows(con, f"{word.capitalize()} ({lst.key})", table, rows, count=count, limit=limit)


class _LogPart:
    """Part of a job's log as the report shows it: how many entries, and the first ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.first: list[Sequence[Any]] = []

    def add(self, row: Sequence[Any]) -> None:
        self.count += 1
        if len(self.first) < self.limit:
            self.first.append(row)


def _print_summary(con: Console, view: JobView) -> None:
    job, h = view.job, view.header
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Status", status_text(h.status))
    grid.add_row("Backup set", Text(f"{show_name(view.set_name)} (ID {job.set_id})"))
    grid.add_row(
        "Destination", Text(f"{show_name(view.destination_name)} (ID {job.destination_id})")
    )
    grid.add_row("Started", h.start_time)
    if job.end_time is None:
        grid.add_row("Ended", "not yet (the job is running)")
    else:
        grid.add_row("Ended", h.end_time)
        grid.add_row("Duration", job_duration(job.start_time, job.end_time))
    if h.from_ip:
        grid.add_row("From", Text(show_name(h.from_ip)))
    c = h.counters
    grid.add_row(
        "Problems",
        f"{plural(c.warn_entries, 'warning')}, {plural(c.error_entries, 'error')}",
        style="red" if c.error_entries else ("yellow" if c.warn_entries else ""),
    )
    grid.add_row("Deduplication", _dedupe(h))
    for label, value in (
        ("Databases backed up", h.success_database),
        ("Databases missed", h.missed_database),
        ("Public folders backed up", h.success_public_folder),
        ("Public folders missed", h.missed_public_folder),
    ):
        if value:
            grid.add_row(label, Text(show_name(value)))
    con.print(Text(f"Backup job {h.job_id}", style="bold"))
    con.print(grid)
    con.print()


def _dedupe(h: ReportHeader) -> str:
    """``DedupeSaving`` of ``DedupeOriginalSize`` in words (cbs-api.md §5)."""
    if not h.dedupe_enabled:
        return "off"
    if not h.dedupe_original_size:
        return "on; no new or changed content to examine"
    pct = percent(h.dedupe_saving, h.dedupe_original_size)
    return (
        f"on; {size(h.dedupe_saving)} of {size(h.dedupe_original_size)} examined was "
        f"already stored ({pct} saved)"
    )


def _change_rows(c: Counters) -> Iterator[tuple[str, int, int | None, str, int, int]]:
    """(kind, files, dirs, links, original bytes, stored bytes) per kind; ``None`` or ``""``
    where the report has no such count."""
    links = c.new_link_dirs + c.new_link_files
    new_links = f"{links:,}" + (f" ({c.new_link_dirs:,} to dirs)" if c.new_link_dirs else "")
    yield "new", c.new_files, c.new_dirs, new_links, c.new_unzip, c.new_size
    yield "updated", c.upd_files, None, "", c.upd_unzip, c.upd_size
    yield "permission", c.pmt_files, None, "", c.pmt_unzip, c.pmt_size
    yield "deleted", c.del_files, c.del_dirs, f"{c.del_links:,}", c.del_unzip, c.del_size
    yield "moved", c.mov_files, None, "", c.mov_unzip, c.mov_size
    yield "copied", c.cpy_files, None, "", c.cpy_unzip, c.cpy_size


def _print_changes(con: Console, c: Counters) -> None:
    table = Table(
        title="Changes",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Kind")
    for name in ("Files", "Dirs", "Links", "Size", "Stored", "Saved"):
        table.add_column(name, justify="right")
    for kind, files, dirs, links, unzip, stored in _change_rows(c):
        empty = not files and not dirs and links in ("", "0") and not unzip
        table.add_row(
            kind,
            f"{files:,}",
            "" if dirs is None else f"{dirs:,}",
            links,
            "" if empty else size(unzip),
            "" if empty else size(stored),
            "" if empty else zip_ratio(stored, unzip),
            style="dim" if empty else None,
        )
    con.print(table)
    con.print(Text("Size: original; Stored: after compression; Saved: 1 − Stored / Size"))
    con.print()


def _print_legend(con: Console) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for lst, word, meaning in KINDS:
        grid.add_row(word, lst.key, meaning)
    con.print(Text("Change kinds (word, key in --json, meaning)", style="bold"))
    con.print(grid)
    con.print()


def _list_table() -> Table:
    """An empty table of a report's list, in the one style every list is shown in."""
    return Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
        title_style="bold",
    )


def _log_table() -> Table:
    table = _list_table()
    table.add_column("Type", no_wrap=True)
    table.add_column("Time", no_wrap=True)
    table.add_column("Message", overflow="fold")
    return table


def _log_rows(rows: Iterable[Any], fmt: LogTimeFormatter) -> Iterator[tuple[Any, ...]]:
    styles = {LogType.WARN.value: "yellow", LogType.ERROR.value: "red"}
    for row in rows:
        kind = str(row[0])
        yield (
            Text(show_name(kind), style=styles.get(kind, "")),
            fmt(row[3]),
            Text(show_name(row[1])),
        )


def _file_table(path_column: str) -> Table:
    table = _list_table()
    table.add_column("Type", no_wrap=True)
    table.add_column("Modified", no_wrap=True)
    table.add_column(path_column, overflow="fold", ratio=1)
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("Stored", justify="right", no_wrap=True)
    return table


def _file_rows(
    rows: Iterable[Any], fmt: LogTimeFormatter, *, moved: bool
) -> Iterator[tuple[Any, ...]]:
    for etype, path, from_path, mtime, stored, unzip, *_ in rows:
        if moved:
            where = Text(f"{show_name(from_path or '')} →\n{show_name(path)}")
        elif from_path:
            where = Text.assemble(show_name(path), (f"\n(copy of {show_name(from_path)})", "dim"))
        else:
            where = Text(show_name(path))
        kind = Text(_TYPE_WORDS.get(etype) or show_name(etype))
        yield kind, fmt(mtime), where, size(unzip), size(stored)


def _print_rows(
    con: Console,
    title: str,
    table: Table,
    rows: Iterable[Sequence[Any]],
    *,
    count: int,
    limit: int,
) -> None:
    """Print ``table`` filled with ``rows`` (the first ``limit`` of ``count``), titled
    ``title`` and ``count``, then how many are not shown; nothing when ``count`` is 0."""
    if count == 0:
        return
    for row in rows:
        table.add_row(*row)
    table.title = f"{title}: {plural(count, 'entry', 'entries')}"
    con.print(table)
    if count > limit:
        hidden = plural(count - limit, "more entry", "more entries")
        con.print(Text(f"{hidden} not shown (--limit N shows more, --json all)"))
        con.print()


@dataclass(frozen=True)
class JobLine:
    """One row of ``opencbs report --list``: a job and the names of its set and destination."""

    job: Job
    set_name: str
    destination_name: str


def print_job_list(con: Console, title: str, lines: Sequence[JobLine], *, hidden: int) -> None:
    """The table of ``--list`` titled ``title``: one row per job and destination, in the
    order given; ``hidden`` older ones not shown (said after it). No jobs: the title alone."""
    if not lines and not hidden:
        con.print(Text(show_name(title)))
        return
    table = Table(
        title=Text(show_name(title)),
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Job ID", no_wrap=True)
    table.add_column("Backup set", overflow="fold")
    table.add_column("Destination", overflow="fold")
    table.add_column("Status", overflow="fold")
    table.add_column("Duration", overflow="fold")
    for line in lines:
        job = line.job
        took = "running" if job.end_time is None else job_duration(job.start_time, job.end_time)
        table.add_row(
            job.job_id,
            Text(show_name(line.set_name)),
            Text(show_name(line.destination_name)),
            status_text(job.status, with_code=False),
            took,
        )
    con.print(table)
    if hidden:
        older = plural(hidden, "older job")
        con.print(Text(f"{older} not shown (--limit N shows more, --json all)"))
