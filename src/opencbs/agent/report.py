"""Turning a job's classification into report entries, delivered to the server in batches.

A report (cbs-api.md §5) is log entries (``start``, ``info``, ``warn``, ``error``, ``end``) and
file entries of the lists ``new``, ``upd``, ``pmt``, ``del``, ``mov``, ``cpy``. This module
builds them (:func:`file_entry`, :func:`log_entry`) and streams them (:class:`ReportStream`):
entries are buffered and sent as numbered batches of at most ``batch_size`` entries, so memory
is bounded by one batch whatever the size of the job.

Sizes per file entry (bytes): ``size`` (``FileSize``) is what the file's chunks take stored
(compressed, counted whether deduplicated or not); ``unzip_size`` (``UnzipFilesSize``) the
original bytes. Directories and symbolic links are 0/0 (a link's target is kept in the snapshot
tree, not as content).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from opencbs.agent.client import AgentClient, JobRef
from opencbs.agent.client import Entry as ReportEntry
from opencbs.engine.chunk_index import ChunkIndex
from opencbs.engine.classify import Change
from opencbs.engine.entries import display_path
from opencbs.reports.vocabulary import EntryType, LogType, ReportList

__all__ = ["FileSizes", "ReportStream", "chunk_sizes", "file_entry", "log_entry", "now_ms"]

#: Times an entry may carry (epoch ms), as the agent API accepts them (1601-01-01..9999-12-30).
MIN_TIME_MS = -11_644_473_600_000
MAX_TIME_MS = 253_402_128_000_000
#: Entries per batch by default (the API takes at most 10,000).
DEFAULT_BATCH_SIZE = 1000


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
    """A log entry of ``log_type`` stamped ``at_ms`` (default now)."""
    return ReportEntry.log(log_type.value, message, now_ms() if at_ms is None else at_ms)


def file_entry(change: Change, sizes: FileSizes | None) -> ReportEntry:
    """The report entry of one change. ``sizes`` of a regular file's content (``None`` counts
    0/0; directories and links are always 0/0). Paths are shown with ``display_path``;
    ``last_modified`` is the entry's mtime in epoch ms (clamped to the API's range)."""
    entry = change.entry
    is_file = entry.etype is EntryType.FILE
    fs = sizes if (is_file and sizes is not None) else FileSizes()
    mtime_ms = min(max(entry.mtime_ns // 1_000_000, MIN_TIME_MS), MAX_TIME_MS)
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


class ReportStream:
    """Buffers a job's report entries and sends them to the server as numbered batches (from
    0) of at most ``batch_size`` entries. Counts the ``warn`` and ``error`` log entries.

    Raises what ``AgentClient.send_batch`` raises (``ServerUnreachable``, ``AgentApiError``).
    """

    def __init__(self, client: AgentClient, ref: JobRef,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be 1..10000")
        self.client = client
        self.ref = ref
        self.batch_size = batch_size
        self.batches_sent = 0
        self.entries_sent = 0
        self.warnings = 0
        self.errors = 0
        self._buffer: list[ReportEntry] = []

    def add(self, entry: ReportEntry) -> None:
        """Queue one entry; sends a batch when ``batch_size`` are queued."""
        self._buffer.append(entry)
        if entry.lst is ReportList.LOG:
            if entry.type == LogType.WARN.value:
                self.warnings += 1
            elif entry.type == LogType.ERROR.value:
                self.errors += 1
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def log(self, log_type: LogType, message: str) -> None:
        """Queue a log entry stamped now."""
        self.add(log_entry(log_type, message))

    def flush(self) -> None:
        """Send the queued entries as the next batch (no-op when none are queued)."""
        if not self._buffer:
            return
        self.client.send_batch(self.ref, self.batches_sent, self._buffer)
        self.batches_sent += 1
        self.entries_sent += len(self._buffer)
        self._buffer = []
