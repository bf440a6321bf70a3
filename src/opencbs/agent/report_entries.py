"""The entries of a job report (cbs-api.md §5), built from what the agent saw.

A report is log entries (``start``, ``info``, ``warn``, ``error``, ``end``: :func:`log_entry`)
and file entries of the lists ``new``, ``upd``, ``pmt``, ``del``, ``mov``, ``cpy``
(:func:`file_entry`, one per classified change).

Sizes per file entry (bytes): ``size`` (``FileSize``) is what the file's chunks take stored
(compressed, counted whether deduplicated or not); ``unzip_size`` (``UnzipFilesSize``) the
original bytes. Directories and symbolic links are 0/0 (a link's target is kept in the snapshot
tree, not as content).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from opencbs.agent.client import Entry as ReportEntry
from opencbs.engine.chunk_index import ChunkIndex
from opencbs.engine.classify import Change
from opencbs.engine.entries import display_path
from opencbs.reports.timefmt import clamp_time_ms
from opencbs.reports.vocabulary import EntryType, JobStatus, LogType, ReportList

__all__ = ["FileSizes", "chunk_sizes", "file_entry", "log_entry", "now_ms"]


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


def file_entry(change: Change, sizes: FileSizes | None) -> ReportEntry:
    """The report entry of one change. ``sizes`` of a regular file's content (``None`` counts
    0/0; directories and links are always 0/0). Paths are shown with ``display_path``;
    ``last_modified`` is the entry's mtime in epoch ms (clamped to the one job-time window,
    ``reports.timefmt``)."""
    entry = change.entry
    is_file = entry.etype is EntryType.FILE
    fs = sizes if (is_file and sizes is not None) else FileSizes()
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
