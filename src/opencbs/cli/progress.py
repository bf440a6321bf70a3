"""Progress of a backup or restore for a person, on stderr (stdout stays for data).

Backup (:class:`BackupProgress`). On a terminal: a rich progress bar (bytes read of the bytes
seen so far by the scan, files, speed, the current file). Not on a terminal: plain lines, at
most one every ``interval`` seconds (default 2), none before the scan has seen a file. Either
way, when the job ends, a final line with the true totals (the runner's last snapshot).
``quiet`` shows nothing (``--json``).

Restore (:class:`RestoreProgressView`). On a terminal: a rich bar of bytes written of the
selection's bytes, files restored of its files, speed, the current entry. Not on a terminal:
plain lines, at most one every ``interval`` seconds, and a final ``<title>: done: …`` line with
the true totals (the restore's final call) — also when the restore then reports damage.
``quiet`` shows nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from opencbs.agent.backup import Progress as JobProgressInfo
from opencbs.agent.restore import RestoreProgress
from opencbs.cli.common import show_name

PLAIN_INTERVAL = 2.0


def _stderr_console(stream: TextIO | None) -> Console:
    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=False)


class BackupProgress:
    """A context manager whose :meth:`update` takes the runner's ``Progress`` snapshots
    (``opencbs.agent.backup.Progress``: files and bytes done and seen)."""

    def __init__(self, title: str, *, quiet: bool = False, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL) -> None:
        self.title = title
        self.quiet = quiet
        self.console = _stderr_console(stream)
        self.interval = interval
        self._last_line: float | None = None  # monotonic time of the last plain line
        self._latest: JobProgressInfo | None = None
        self._printed: JobProgressInfo | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    @property
    def fancy(self) -> bool:
        """Whether a live bar is shown (stderr is a terminal and not quiet)."""
        return not self.quiet and self.console.is_terminal

    def __enter__(self) -> BackupProgress:
        if self.fancy:
            self._bar = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                DownloadColumn(), TransferSpeedColumn(),
                TextColumn("{task.fields[files]} files"), TimeElapsedColumn(),
                TextColumn("{task.fields[current]}", style="dim"),
                console=self.console, transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=None, files="0/0", current="")
        elif not self.quiet:
            self.console.print(f"{self.title}: started", markup=False, highlight=False)
        return self

    def update(self, p: JobProgressInfo) -> None:
        """Show one progress snapshot (bytes read of bytes seen; files read of files seen)."""
        if self.quiet:
            return
        self._latest = p
        if self._bar is not None and self._task is not None:
            name = show_name(p.current_file)
            current = name if len(name) <= 40 else "…" + name[-39:]
            self._bar.update(self._task, completed=p.bytes_done, total=max(p.bytes_seen, 1),
                             files=f"{p.files_done}/{p.files_seen}", current=current)
            return
        if p.files_seen == 0:
            return  # nothing to say before the first file ("0/0 files read")
        now = time.monotonic()
        if self._last_line is not None and now - self._last_line < self.interval:
            return
        self._last_line = now
        self._line(p, "")

    def _line(self, p: JobProgressInfo, label: str) -> None:
        self._printed = p
        self.console.print(
            f"{self.title}: {label}{p.files_done}/{p.files_seen} files read, "
            f"{p.bytes_done}/{p.bytes_seen} bytes", markup=False, highlight=False,
            soft_wrap=True)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        latest = self._latest
        if not self.quiet and et is None and latest is not None and latest != self._printed:
            self._line(latest, "done: ")


class RestoreProgressView:
    """A context manager whose :meth:`update` takes a restore's ``RestoreProgress`` calls
    (``opencbs.agent.restore``); see the module docstring for what is shown where."""

    def __init__(self, title: str, *, quiet: bool = False, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL) -> None:
        self.title = title
        self.quiet = quiet
        self.console = _stderr_console(stream)
        self.interval = interval
        self._last_line: float | None = None  # monotonic time of the last plain line
        self._final: RestoreProgress | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    @property
    def fancy(self) -> bool:
        """Whether a live bar is shown (stderr is a terminal and not quiet)."""
        return not self.quiet and self.console.is_terminal

    def __enter__(self) -> RestoreProgressView:
        if self.fancy:
            self._bar = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                DownloadColumn(), TransferSpeedColumn(),
                TextColumn("{task.fields[files]} files"), TimeElapsedColumn(),
                TextColumn("{task.fields[current]}", style="dim"),
                console=self.console, transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=None, files="0", current="")
        elif not self.quiet:
            self.console.print(f"{self.title}: started", markup=False, highlight=False,
                               soft_wrap=True)
        return self

    def update(self, p: RestoreProgress) -> None:
        """Show one progress call (the one with ``finished`` is kept for the final line)."""
        if self.quiet:
            return
        if p.finished:
            self._final = p
        if self._bar is not None and self._task is not None:
            name = show_name(p.current)
            current = name if len(name) <= 40 else "…" + name[-39:]
            files = f"{p.files}" if p.files_total is None else f"{p.files}/{p.files_total}"
            total = None if p.bytes_total is None else max(p.bytes_total, 1)
            done = total if p.finished and total is not None else p.bytes
            self._bar.update(self._task, completed=done, total=total, files=files,
                             current=current)
            return
        if p.finished:
            return  # the "done:" line is printed on leaving
        now = time.monotonic()
        if self._last_line is not None and now - self._last_line < self.interval:
            return
        self._last_line = now
        files = f"{p.files}" if p.files_total is None else f"{p.files}/{p.files_total}"
        size = f"{p.bytes}" if p.bytes_total is None else f"{p.bytes}/{p.bytes_total}"
        self.console.print(f"{self.title}: {files} files, {size} bytes restored",
                           markup=False, highlight=False, soft_wrap=True)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        p = self._final
        if not self.quiet and p is not None:
            self.console.print(
                f"{self.title}: done: {p.files} files, {p.dirs} directories, {p.links} links, "
                f"{p.bytes} bytes restored", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def activity(title: str, *, quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner with ``title`` on a terminal, one line when not, nothing when ``quiet``: for
    work that reports no progress of its own (verify)."""
    if quiet:
        yield
        return
    console = _stderr_console(stream)
    if console.is_terminal:
        with console.status(title):
            yield
        return
    console.print(f"{title}…", markup=False, highlight=False, soft_wrap=True)
    yield
