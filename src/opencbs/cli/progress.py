"""Progress of a backup or restore for a person, on stderr (stdout stays for data).

What is shown, for both (:class:`BackupProgress`, :class:`RestoreProgressView`): bytes and
files done of the totals, the rate (bytes read or written per second since the start) and,
once the totals are final, the time left. Sizes are decimal (rich's ``filesize.decimal``:
``1 byte``, ``170.0 MB``); counts take their plural (``1 file``, ``2 files``).

A backup's totals grow while the scan, which runs alongside the reading, finds files: until
they are final (``Progress.scan_finished``: the scan has ended, or the totals counted ahead by
``engine.scan_count`` are in) they carry a ``+`` and "counting…" stands where the time left
will be. Done counts the files read and those whose content is unchanged (not read); the
rate counts bytes read. A restore's totals are known from the start (``RestoreProgress``).

On a terminal: one live line that never wraps — columns are dropped as the width shrinks (the
current path first, then the elapsed time, the bar, the time left, the rate, the file counts);
log lines and other output on stderr or stdout are printed above it (rich's live display stands
in for both streams). Not on a terminal: ``<title>: started``, then a line every ``interval``
seconds (the setting ``progress_interval``) with the figures and the elapsed time.

Either way, when the work ends, one summary line (the bar is removed first): ``<title>: done in
<time>: …`` with files, sizes and rate; a backup that did not complete (:meth:`BackupProgress.
ended`) says ``stopped`` / ``failed after <time>`` and how far it got. ``quiet`` shows nothing
(``--json``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.filesize import decimal
from rich.live import Live
from rich.text import Text

from opencbs.agent.job import Progress as JobProgressInfo
from opencbs.agent.restore import RestoreProgress
from opencbs.cli.common import show_name
from opencbs.reports.wording import plural as counted
from opencbs.settings import DEFAULT_PROGRESS_INTERVAL

__all__ = ["BackupProgress", "Ending", "RestoreProgressView", "plural"]

#: How a backup job ended, as its summary line says.
Ending = Literal["done", "stopped", "failed"]

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_BAR_MIN = 10
_BAR_MAX = 40
_PATH_MIN = 12
_TITLE_MIN = 12


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,234 files``: ``wording.plural`` with thousands grouped."""
    return counted(n, word, many, grouped=True)


def clock(seconds: float) -> str:
    """A duration as ``m:ss`` (``0:07``, ``12:30``) or ``h:mm:ss`` from an hour on."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02}:{s:02}" if h else f"{m}:{s:02}"


def rate(size: int, seconds: float) -> str | None:
    """``size`` bytes over ``seconds`` as ``12.3 MB/s``; ``None`` when not yet measurable."""
    if size <= 0 or seconds <= 0.0:
        return None
    return f"{decimal(int(size / seconds))}/s"


@dataclass(frozen=True, slots=True)
class _Figures:
    """One moment of the work: ``done``/``total`` bytes and files (``None``: no total known),
    ``final``: the totals will not grow; ``moved``: the bytes the rate counts; ``current``."""

    done: int
    total: int | None
    files: int
    files_total: int | None
    final: bool
    moved: int
    current: str = ""


_START = _Figures(0, None, 0, None, final=False, moved=0)


def _of(done: str, total: str | None, *, final: bool, sep: str) -> str:
    if total is None:
        return done
    return f"{done}{sep}{total}{'' if final else '+'}"


def _parts(f: _Figures, elapsed: float, *, sep: str) -> dict[str, str]:
    """The texts of the figures (keys ``sizes files rate eta elapsed``; ``rate``/``eta`` only
    when known)."""
    total = None if f.total is None else decimal(f.total)
    files_total = f"{f.files_total:,}" if f.files_total is not None else None
    files_sep = "/" if sep == " / " else sep  # "82/150 files" on the live line
    word = "file" if (f.files_total if f.files_total is not None else f.files) == 1 else "files"
    out = {
        "sizes": _of(decimal(f.done), total, final=f.final, sep=sep),
        "files": f"{_of(f'{f.files:,}', files_total, final=f.final, sep=files_sep)} {word}",
        "elapsed": clock(elapsed),
    }
    speed = rate(f.moved, elapsed)
    if speed is not None:
        out["rate"] = speed
    if not f.final and f.total is not None:
        out["eta"] = "counting…"
    elif f.total is not None and f.moved > 0 and elapsed > 0:
        left = max(0, f.total - f.done) / (f.moved / elapsed)
        out["eta"] = f"ETA {clock(left)}"
    return out


def live_line(title: str, f: _Figures, elapsed: float, width: int) -> Text:
    """The live line of ``f`` in at most ``width - 1`` cells (the last column is left free:
    some terminals wrap there): spinner, title, bar, sizes, files, rate, time left, elapsed,
    current path. What does not fit is left out, in the order path, elapsed, bar, time left,
    rate, files, sizes (the title is cut last)."""
    room = max(1, width - 1)
    parts = _parts(f, elapsed, sep=" / ") if f is not _START else {"eta": "counting…"}
    spin = _SPINNER[int(elapsed * 10) % len(_SPINNER)]
    # the title leaves room for the sizes and file counts: cut (…) when longer
    # (the sizes counted at their widest, "999.9 MB / 999.9 MB+", so the title does not jitter)
    wanted = sum(cell_len(parts[k]) + 1 for k in ("files", "eta") if k in parts) + 21
    budget = max(_TITLE_MIN, room - 2 - wanted)
    if cell_len(title) > budget:
        title = title[: budget - 1] + "…"
    head = f"{spin} {title}"
    used = cell_len(head)
    chosen: dict[str, str] = {}
    bar = 0
    for key in ("sizes", "files", "rate", "eta", "bar", "elapsed", "path"):
        if key == "bar":
            if f.total is not None and used + 1 + _BAR_MIN <= room:
                bar, used = _BAR_MIN, used + 1 + _BAR_MIN
            continue
        if key == "path":
            if f.current and used + 1 + _PATH_MIN <= room:
                chosen["path"] = ""
                used += 1 + _PATH_MIN
            continue
        text = parts.get(key)
        if text is not None and used + 1 + cell_len(text) <= room:
            chosen[key] = text
            used += 1 + cell_len(text)
    if bar:
        grow = min(_BAR_MAX - bar, room - used)
        bar, used = bar + grow, used + grow
    line = Text(no_wrap=True, overflow="crop", end="")
    line.append(head[:room], style="bold")
    if bar:
        line.append(" ")
        line.append_text(_bar(f, bar, elapsed))
    for key in ("sizes", "files", "rate", "eta", "elapsed"):
        if key in chosen:
            line.append(" " + chosen[key], style="dim" if key == "elapsed" else "")
    if "path" in chosen:
        room_path = _PATH_MIN + room - used
        name = show_name(f.current)
        shown = name if cell_len(name) <= room_path else "…" + name[-(room_path - 1) :]
        line.append(" " + shown, style="dim")
    line.truncate(room)
    return line


def _bar(f: _Figures, width: int, elapsed: float) -> Text:
    """A bar of ``width`` cells: filled to done/total when final, a moving pulse while the
    totals still grow (a fraction of a growing total would mislead)."""
    if f.final and f.total:
        filled = min(width, int(width * f.done / f.total))
        return Text.assemble(("━" * filled, "magenta"), ("━" * (width - filled), "grey23"))
    if f.final:  # nothing to do: full
        return Text("━" * width, style="magenta")
    at = int(elapsed * 8) % width
    lit = range(max(0, at - 2), min(width, at + 3))
    return Text.assemble(
        ("━" * lit.start, "grey23"),
        ("━" * len(lit), "magenta"),
        ("━" * (width - lit.stop), "grey23"),
    )


class _ProgressView:
    """What both views share: a live line on a terminal, a line every ``interval`` seconds
    otherwise, the summary on leaving; nothing when ``quiet``."""

    def __init__(
        self,
        title: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self.title = title
        self.quiet = quiet
        self.console = Console(file=stream, stderr=stream is None, highlight=False)
        self.interval = interval
        self.figures = _START
        self.started = time.monotonic()
        self._live: Live | None = None
        self._stop_ticks = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def fancy(self) -> bool:
        """Whether a live line is shown (stderr is a terminal and not quiet)."""
        return not self.quiet and self.console.is_terminal

    def elapsed(self) -> float:
        """Seconds since the view was entered."""
        return time.monotonic() - self.started

    def _start(self) -> None:
        self.started = time.monotonic()
        if self.quiet:
            return
        if self.fancy:
            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=8,
                transient=True,
            )
            self._live.start(refresh=True)
            return
        self._print(f"{self.title}: started")
        self._ticker = threading.Thread(target=self._tick, name="progress-lines", daemon=True)
        self._ticker.start()

    def _render(self) -> Text:
        return live_line(self.title, self.figures, self.elapsed(), self._width())

    def _width(self) -> int:
        """The terminal's width now (rich's ``console.width`` prefers ``$COLUMNS``, which an
        exported, stale value makes wrong after a resize)."""
        try:
            return os.get_terminal_size(self.console.file.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return self.console.width

    def _tick(self) -> None:
        while not self._stop_ticks.wait(self.interval):
            self._print(self.plain_line())

    def plain_line(self) -> str:
        """The periodic line off a terminal: ``<title>: <done> of <total> …, <files>, <rate>,
        <elapsed> elapsed[, ETA <time>]``."""
        f = self.figures
        if f is _START:
            return f"{self.title}: counting, {clock(self.elapsed())} elapsed"
        p = _parts(f, self.elapsed(), sep=" of ")
        counting = "" if f.final or f.total is None else " (still counting)"
        out = f"{self.title}: {p['sizes']}{counting}, {p['files']}"
        if "rate" in p:
            out += f", {p['rate']}"
        out += f", {p['elapsed']} elapsed"
        if p.get("eta", "").startswith("ETA"):
            out += f", {p['eta']}"
        return out

    def _print(self, text: str) -> None:
        """One line: wrapped between words on a terminal, whole otherwise (for grep)."""
        if not self.console.is_terminal:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)
            return
        self.console.print(text, markup=False, highlight=False, emoji=False, width=self._width())

    def _stop(self) -> None:
        self._stop_ticks.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._live is not None:
            self._live.stop()
            self._live = None


class BackupProgress(_ProgressView):
    """A context manager whose :meth:`update` takes the runner's ``Progress`` snapshots
    (``opencbs.agent.job_values.Progress``); see the module docstring for what is shown."""

    def __init__(
        self,
        title: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        super().__init__(title, quiet=quiet, stream=stream, interval=interval)
        self._latest: JobProgressInfo | None = None
        self._ending: Ending = "done"

    def __enter__(self) -> BackupProgress:
        self._start()
        return self

    def ended(self, how: Ending) -> None:
        """How the job ended, for the summary: ``done`` (the default), ``stopped`` (by the
        user) or ``failed``."""
        self._ending = how

    def update(self, p: JobProgressInfo) -> None:
        """Take one snapshot (shown at the next refresh or periodic line)."""
        self._latest = p
        if not p.files_seen and not p.scan_finished:
            return  # nothing found yet: still "counting…", never "0 bytes / 0 bytes"
        self.figures = _Figures(
            done=p.bytes_done + p.bytes_unchanged,
            total=p.bytes_seen,
            files=p.files_done + p.files_unchanged,
            files_total=p.files_seen,
            final=p.scan_finished,
            moved=p.bytes_done,
            current=p.current_file,
        )

    def summary(self) -> str:
        """The last line: how the job ended, after how long, what was read (and unchanged)."""
        took = clock(self.elapsed())
        p = self._latest
        if self._ending != "done":
            if p is None or not p.files_seen:
                return f"{self.title}: {self._ending} after {took}"
            f, more = self.figures, "" if p.scan_finished else "+"  # "+": found so far
            return (
                f"{self.title}: {self._ending} after {took}: {f.files:,} of "
                f"{p.files_seen:,}{more} {'file' if p.files_seen == 1 else 'files'} "
                f"({decimal(f.done)} of {decimal(p.bytes_seen)}{more}) backed up"
            )
        if p is None:
            return f"{self.title}: done in {took}"
        read = f"{plural(p.files_done, 'file')} ({decimal(p.bytes_done)}) read"
        speed = rate(p.bytes_done, self.elapsed())
        if speed is not None:
            read += f", {speed}"
        if p.files_unchanged:
            read += (
                f"; {plural(p.files_unchanged, 'file')} ({decimal(p.bytes_unchanged)}) unchanged"
            )
        return f"{self.title}: done in {took}: {read}"

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        if not self.quiet and et is None:
            self._print(self.summary())


class RestoreProgressView(_ProgressView):
    """A context manager whose :meth:`update` takes a restore's ``RestoreProgress`` calls
    (``opencbs.agent.restore``); see the module docstring for what is shown."""

    def __init__(
        self,
        title: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        super().__init__(title, quiet=quiet, stream=stream, interval=interval)
        self._final: RestoreProgress | None = None

    def __enter__(self) -> RestoreProgressView:
        self._start()
        return self

    def update(self, p: RestoreProgress) -> None:
        """Take one progress call (the one with ``finished`` is kept for the summary)."""
        if p.finished:
            self._final = p
        self.figures = _Figures(
            done=p.bytes,
            total=p.bytes_total,
            files=p.files,
            files_total=p.files_total,
            final=p.bytes_total is not None,
            moved=p.bytes,
            current=p.current,
        )

    def summary(self) -> str | None:
        """``<title>: done in <time>: <files>, <dirs>, <links>, <size> restored, <rate>``, or
        ``None`` before the restore's final call (it failed: its error says why)."""
        p = self._final
        if p is None:
            return None
        took = self.elapsed()
        counts = ", ".join(
            (
                plural(p.files, "file"),
                plural(p.dirs, "directory", "directories"),
                plural(p.links, "link"),
            )
        )
        speed = rate(p.bytes, took)
        tail = f", {speed}" if speed is not None else ""
        return f"{self.title}: done in {clock(took)}: {counts}, {decimal(p.bytes)} restored{tail}"

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        line = self.summary()
        if not self.quiet and line is not None:
            self._print(line)
