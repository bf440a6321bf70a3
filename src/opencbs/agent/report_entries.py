"""The entries of a job report (cbs-api.md §5), built from what the agent saw.

A report is log entries (``start``, ``info``, ``warn``, ``error``, ``end``: :func:`log_entry`)
and file entries of the lists ``new``, ``upd``, ``pmt``, ``del``, ``mov``, ``cpy``
(:func:`file_entry`, one per classified change).

Sizes per file entry (bytes; cbs-api.md §5): ``size`` (``FileSize``) is what the entry's data
takes stored, ``unzip_size`` (``UnzipFilesSize``) its original bytes. A regular file's data is
its content: what its chunks take stored (compressed, counted whether deduplicated or not) and
the bytes read. A symbolic link's data is its target: both sizes are the target's length (what
``ls -l`` shows for the link; it is kept as is in the snapshot's tree, not as content, so
nothing is compressed apart: ratio 0%). Directories are 0/0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from opencbs.agent.client import Entry as ReportEntry
from opencbs.engine.chunk_index import ChunkIndex
from opencbs.engine.classify import Change
from opencbs.engine.entries import Entry, display_path
from opencbs.reports.timefmt import clamp_time_ms
from opencbs.reports.vocabulary import EntryType, JobStatus, LogType, ReportList

__all__ = [
    "FileSizes",
    "chunk_sizes",
    "entry_sizes",
    "file_entry",
    "link_sizes",
    "log_entry",
    "now_ms",
]


@dataclass(frozen=True, slots=True)
class FileSizes:
    """Sizes of one file's content in bytes: ``stored`` (compressed), ``original``."""

    stored: int = 0
    original: int = 0


def now_ms() -> int:
    """The current time, epoch ms."""
    return time.time_ns() // 1_000_000


def chunk_sizes(index: ChunkIndex, chunk_ids: Sequence[bytes]) -> FileSizes:
    """Stored and original bytes of a content from the repository index (chunks the index does
    not list count 0)."""
    stored = original = 0
    for chunk_id in chunk_ids:
        loc = index.get(chunk_id)
        if loc is not None:
            stored += loc.stored_size
            original += loc.original_size
    return FileSizes(stored, original)


def log_entry(log_type: LogType, message: str, at_ms: int | None = None) -> ReportEntry:
    """A log entry of ``log_type`` stamped ``at_ms`` (epoch ms, default now)."""
    return ReportEntry.log(log_type.value, message, now_ms() if at_ms is None else at_ms)


def end_line(status: JobStatus) -> str:
    """The message of a report's ``end`` log entry: ``Backup completed: <status>`` for the
    statuses after which a snapshot was committed (``JobStatus.completed``), ``Backup ended:
    <status>`` for the others (a failed job did not complete)."""
    return f"Backup {'completed' if status.completed else 'ended'}: {status.value}"


def link_sizes(target: bytes) -> FileSizes:
    """The sizes of a symbolic link's data, its ``target`` (raw bytes): its length, stored
    and original (module docstring)."""
    return FileSizes(len(target), len(target))


def entry_sizes(entry: Entry, sizes: FileSizes | None) -> FileSizes:
    """The sizes a report shows for ``entry`` (module docstring): ``sizes`` of a regular
    file's content (``None`` counts 0/0), a link's target length, 0/0 for a directory."""
    if entry.etype is EntryType.FILE:
        return sizes if sizes is not None else FileSizes()
    if entry.etype is EntryType.LINK:
        target = entry.link_target
        return link_sizes(target) if target is not None else FileSizes(entry.size, entry.size)
    return FileSizes()


def file_entry(change: Change, sizes: FileSizes | None) -> ReportEntry:
    """The report entry of one change. ``sizes`` of a regular file's content (``None`` counts
    0/0); a link's are its target's length, a directory's 0/0 (``entry_sizes``). Paths are
    shown with ``display_path``; ``last_modified`` is the entry's mtime in epoch ms (clamped to
    the one job-time window, ``reports.timefmt``)."""
    entry = change.entry
    fs = entry_sizes(entry, sizes)
    mtime_ms = clamp_time_ms(entry.mtime_ns // 1_000_000)
    from_path = None
    if change.from_path is not None and change.kind in (ReportList.MOV, ReportList.CPY):
        from_path = display_path(change.from_path)
    return ReportEntry(
        lst=change.kind,
        type=entry.etype.value,
        path=display_path(entry.path),
        from_path=from_path,
        last_modified=mtime_ms,
        size=fs.stored,
        unzip_size=fs.original,
        link_to_dir=entry.etype is EntryType.LINK and entry.link_to_dir,
    )
