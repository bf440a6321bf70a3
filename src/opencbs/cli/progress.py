"""Progress of a backup or restore for a person, on stderr (stdout stays for data).

Backup (:class:`BackupProgress`). On a terminal: a rich progress bar (bytes read of the bytes
seen so far by the scan, files, speed, the current file). Not on a terminal: plain lines, at
most one every ``interval`` seconds (default 2), none before the scan has seen a file. Either
way, when the job ends, a final line with the true totals (the runner's last snapshot):
``done: …``, or for a job that did not complete (:meth:`BackupProgress.ended`) ``stopped`` /
``failed``, with how far it got when it had seen files. ``quiet`` shows nothing (``--json``).

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
from typing import Literal, TextIO

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

from opencbs.agent.job import Progress as JobProgressInfo
from opencbs.agent.restore import RestoreProgress
from opencbs.cli.common import show_name

PLAIN_INTERVAL = 2.0

#: How a backup job ended, as its final progress line says.
Ending = Literal["done", "stopped", "failed"]


def _stderr_console(stream: TextIO | None) -> Console:
    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=False)


class _ProgressView:
    """What both views share: a live rich bar on a terminal (bytes, files, speed, elapsed, the
    current path), throttled plain lines otherwise, nothing when ``quiet``."""

    def __init__(
        self,
        title: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL,
    ) -> None:
        self.title = title
        self.quiet = quiet
        self.console = _stderr_console(stream)
        self.interval = interval
        self._last_line: float | None = None  # monotonic time of the last plain line
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    @property
    def fancy(self) -> bool:
        """Whether a live bar is shown (stderr is a terminal and not quiet)."""
        return not self.quiet and self.console.is_terminal

    def _start(self, files: str) -> None:
        if self.fancy:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[files]} files"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[current]}", style="dim"),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=None, files=files, current="")
        elif not self.quiet:
            self._print(f"{self.title}: started")

    def _show(self, completed: int, total: int | None, files: str, path: str) -> bool:
        """Update the bar; ``False`` when there is none (plain output)."""
        if self._bar is None or self._task is None:
            return False
        name = show_name(path)
        current = name if len(name) <= 40 else "…" + name[-39:]
        self._bar.update(self._task, completed=completed, total=total, files=files, current=current)
        return True

    def _line_due(self) -> bool:
        """Whether a plain line may be printed now (at most one per ``interval``)."""
        now = time.monotonic()
        if self._last_line is not None and now - self._last_line < self.interval:
            return False
        self._last_line = now
        return True

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class BackupProgress(_ProgressView):
    """A context manager whose :meth:`update` takes the runner's ``Progress`` snapshots
    (``opencbs.agent.backup.Progress``: files and bytes done and seen)."""

    def __init__(
        self,
        title: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL,
    ) -> None:
        super().__init__(title, quiet=quiet, stream=stream, interval=interval)
        self._latest: JobProgressInfo | None = None
        self._printed: JobProgressInfo | None = None
        self._ending: Ending = "done"

    def __enter__(self) -> BackupProgress:
        self._start("0/0")
        return self

    def ended(self, how: Ending) -> None:
        """How the job ended, for the final line: ``done`` (the default), ``stopped`` (by the
        user) or ``failed``."""
        self._ending = how

    def update(self, p: JobProgressInfo) -> None:
        """Show one progress snapshot (bytes read of bytes seen; files read of files seen)."""
        if self.quiet:
            return
        self._latest = p
        if self._show(
            p.bytes_done, max(p.bytes_seen, 1), f"{p.files_done}/{p.files_seen}", p.current_file
        ):
            return
        if p.files_seen == 0:
            return  # nothing to say before the first file ("0/0 files read")
        if self._line_due():
            self._line(p, "")

    def _line(self, p: JobProgressInfo, label: str) -> None:
        self._printed = p
        self._print(
            f"{self.title}: {label}{p.files_done}/{p.files_seen} files read, "
            f"{p.bytes_done}/{p.bytes_seen} bytes"
        )

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        latest = self._latest
        if self.quiet or et is not None:
            return
        if self._ending != "done":  # never "done: 0/0 files read" after a failure or a stop
            got = (
                f" after {latest.files_done}/{latest.files_seen} files read, "
                f"{latest.bytes_done}/{latest.bytes_seen} bytes"
                if latest is not None and latest.files_seen
                else ""
            )
            self._print(f"{self.title}: {self._ending}{got}")
        elif latest is not None and latest != self._printed:
            self._line(latest, "done: ")


class RestoreProgressView(_ProgressView):
    """A context manager whose :meth:`update` takes a restore's ``RestoreProgress`` calls
    (``opencbs.agent.restore``); see the module docstring for what is shown where."""

    def __init__(
        self,
        title: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL,
    ) -> None:
        super().__init__(title, quiet=quiet, stream=stream, interval=interval)
        self._final: RestoreProgress | None = None

    def __enter__(self) -> RestoreProgressView:
        self._start("0")
        return self

    def update(self, p: RestoreProgress) -> None:
        """Show one progress call (the one with ``finished`` is kept for the final line)."""
        if self.quiet:
            return
        if p.finished:
            self._final = p
        files = f"{p.files}" if p.files_total is None else f"{p.files}/{p.files_total}"
        total = None if p.bytes_total is None else max(p.bytes_total, 1)
        done = total if p.finished and total is not None else p.bytes
        if self._show(done, total, files, p.current):
            return
        if p.finished:
            return  # the "done:" line is printed on leaving
        if self._line_due():
            size = f"{p.bytes}" if p.bytes_total is None else f"{p.bytes}/{p.bytes_total}"
            self._print(f"{self.title}: {files} files, {size} bytes restored")

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        p = self._final
        if not self.quiet and p is not None:
            self._print(
                f"{self.title}: done: {p.files} files, {p.dirs} directories, "
                f"{p.links} links, {p.bytes} bytes restored"
            )


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
