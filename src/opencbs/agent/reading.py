"""Reading a job's sources (the hot loop of a backup; ``agent.backup`` runs it).

:meth:`SourceReader.pairs` walks the scan merged by path with the previous snapshot
(``classify.pair_by_path``) and yields ``(previous, current)`` pairs for the classifier with
every current regular file's content id known: reused when ``classify.needs_content`` says no
read is needed, else read now and stored through the repository's writer. Each current entry is
spooled with its chunk IDs for the new snapshot (``agent.entry_spool``).

Soft errors at the source (style.md §4): a file that vanished, cannot be opened or read, or is
no longer a regular file is a ``warn`` log entry naming the path (``_SoftError``); the job goes
on. Such a file keeps its previous version in the new snapshot (and is reported unchanged) or,
without one, is left out; one that vanished is a deletion when it was backed up before. Reads
never follow links (``O_NOFOLLOW``) and leave the access time alone where the agent may
(``O_NOATIME``).

Files that change (``_read_file``): a file is read up to the size it has when opened, never
further, so the read of a file that keeps growing ends, and an append-only file (a log, a
journal, a mailbox) gives a consistent prefix. A file that changed since the scan is recorded
as it was when opened (its ``fstat``). One that changed while it was read (its size or
modification time after the read differ from those at the open, or fewer bytes came) is backed
up as read all the same: listed in the snapshot and the report as what it is (new, updated),
counted, and a ``warn`` log entry names it ("changed while it was read (…); backed up as read …"),
so its data is never stored without being referenced. Its recorded entry has the size of the
bytes stored (what a restore gives back) and the times seen at the open, which the change has
moved on: the next job reads it again (updated if it still changes), and once it is still, that
read is its last.

Hard links (issue 15): a regular file with more than one name (``Entry.hard_link``) is read at
its first name in walk order; each later name of the same link identity ``(device, inode)``
that must be read, and whose size and times (``mtime_ns``, ``ctime_ns``) are those of the name
read, gets that name's content id and chunk IDs without a read (nor a read-ahead): its content
is stored, and read, once. Its report sizes are 0 stored bytes and its size as original bytes
(it cost nothing), and it counts in the progress as a file handled without a read. The first
names read are held (:attr:`SourceReader.link_contents`: one entry and chunk list per
hard-linked file read in the job; none in a job that reads nothing).

Read-ahead: small files to read (at most ``PREFETCH_MAX_FILE`` bytes) are announced to the
kernel by the read-ahead helper process (``agent.readahead``) up to ``PREFETCH_FILES`` pairs and
``PREFETCH_BYTES`` bytes ahead of the pair being handled, so a cold page cache reads many at
once, on the other core. Pairs are still handled, read, stored and yielded in walk order, one at
a time, in the caller's thread.

Memory: the previous snapshot is streamed in walk order alongside the scan (a previous entry's
chunk list is held only until its pair is handled); the chunk lists of previous entries missing
from the scan are kept (:attr:`SourceReader.missing_chunks`, for the snapshot's carried
entries); the sizes of files that may be reported (:attr:`SourceReader.sizes`).

This loop runs once per entry of the backup: keep it free of per-entry work that is not needed
(no extra calls, attribute lookups or objects per file; ``bench/agent.py`` measures it).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from opencbs.agent.channel import JobChannel
from opencbs.agent.entry_spool import EntrySpool
from opencbs.agent.job_values import PROGRESS_INTERVAL, JobCancelled, OnProgress, Progress
from opencbs.agent.readahead import ReadAhead
from opencbs.agent.report_entries import FileSizes, chunk_sizes
from opencbs.engine.classify import needs_content, pair_by_path
from opencbs.engine.entries import Entry, display_path, with_content_id
from opencbs.engine.repo_writer import FileResult, Writer
from opencbs.engine.repository import Repository
from opencbs.engine.scan import ScanWarning
from opencbs.engine.scan_count import TotalCount
from opencbs.engine.scan_process import ScanProcess
from opencbs.engine.snapshot_format import TreeItem
from opencbs.model.storage import StorageQuota
from opencbs.reports.vocabulary import EntryType, LogType
from opencbs.reports.wording import plural

__all__ = ["PREFETCH_BYTES", "PREFETCH_FILES", "PREFETCH_MAX_FILE", "SourceReader"]

log = logging.getLogger(__name__)

_READ_SIZE = 1024 * 1024
#: Files of at most this many bytes are read ahead: announced to the kernel
#: (``posix_fadvise(WILLNEED)``) by the read-ahead helper process (``agent.readahead``), so the
#: kernel reads them while earlier files are stored. Larger files are read as they come.
PREFETCH_MAX_FILE = 64 * 1024 * 1024
#: How far ahead: pairs, and bytes announced (page cache, not the agent's memory). Measured on
#: 100,000 small files, cold: 256 pairs ahead gave the helper a lead 64 did not (15.3 → 15.0 s,
#: within noise; 1,024 was slower); on 1 GiB of mixed files, announcing files up to 64 MiB and
#: 32 MiB ahead instead of 1 MiB and 16 MiB saved ~0.2 s of 6.2.
PREFETCH_FILES = 256
PREFETCH_BYTES = 32 * 1024 * 1024
#: Stored files whose ``FileResult`` is held before its (maybe pending) stored size is read.
_RESULTS_HELD = 64

Pair = tuple[Entry | None, Entry | None]


class QuotaExceeded(Exception):
    """What the job stores would pass the backup user's quota (cbs-api.md: the quota counts
    stored bytes after dedupe): the job ends ``BS_STOP_BY_QUOTA_EXCEEDED``."""

    def __init__(self, quota: StorageQuota, adding: int) -> None:
        super().__init__(
            f"The backup user's quota of {quota.limit} bytes is reached: its destinations "
            f"store {quota.used + quota.destination_used} bytes, and this job would add "
            f"{adding} more"
        )


class SourceReader:
    """The read pass of one job over the repository ``repo`` (module docstring): its counters
    (files and bytes seen and read, dedupe figures in bytes), the sizes of the files that may be
    reported, and its progress reports (to ``channel`` and ``on_progress``, at most every
    ``progress_interval`` seconds). ``chunks_lost``: packs of stored chunks are gone
    (``Repository.reconcile_packs``): a file whose chunks are not all stored is read again."""

    def __init__(
        self,
        *,
        repo: Repository,
        channel: JobChannel,
        entries: EntrySpool,
        cancel: threading.Event,
        chunks_lost: bool = False,
        progress_interval: float,
        on_progress: OnProgress | None = None,
    ) -> None:
        self.repo = repo
        self.stored_base = repo.stored_bytes  # the job's uploads are what it adds to this
        self.channel = channel
        self.cancel = cancel
        self.chunks_lost = chunks_lost
        self._spool = entries.add  # bound once: called for every entry
        self.on_progress = on_progress
        self.interval = progress_interval
        self.last_progress = 0.0
        self.last_sent = -PROGRESS_INTERVAL  # the server's last progress (monotonic)
        self.progress_due = 0.0  # monotonic time of the next progress report
        self.current = ""
        self.files_done = self.files_seen = self.bytes_done = self.bytes_seen = 0
        self.bytes_reading = 0  # bytes read so far of the file being read (not yet done)
        self.files_unchanged = self.bytes_unchanged = 0
        self.scan_finished = False  # the *_seen counts are the totals
        self.totals: TotalCount | None = None  # counted ahead by another walk (or not)
        self.dedupe_original = self.dedupe_saving = 0
        self.sizes: dict[bytes, FileSizes] = {}  # sizes of files that may be reported
        # the last files stored, whose compressed size may still be computed by the writer
        self.results: deque[tuple[bytes, FileResult]] = deque()
        self.missing_chunks: dict[bytes, tuple[bytes, ...]] = {}  # previous-only files
        #: Link identity ``(device, inode)`` -> the entry (with its content id) and chunk IDs
        #: of the first name of a hard-linked file read in this job (module docstring).
        self.link_contents: dict[tuple[int, int], tuple[Entry, tuple[bytes, ...]]] = {}
        #: The scan's sources it warned about (missing, unreadable: nothing read under them).
        self.unread_sources: set[bytes] = set()
        #: The user's quota (``None``: none known): the job stops before it would exceed it.
        self.quota: StorageQuota | None = None

    def pairs(
        self, writer: Writer, scan: ScanProcess, previous: Iterator[TreeItem]
    ) -> Iterator[Pair]:
        """Yield ``(previous, current)`` pairs of ``previous`` (the previous snapshot's
        entries with their chunk IDs, in walk order) and ``scan``, every current regular
        file's content id known (read through ``writer`` when needed); spool the current
        entries with their chunk IDs for the snapshot. Scan warnings become ``warn`` entries; a
        source the scan warns about is added to :attr:`unread_sources`. Raises
        ``JobCancelled``, and the destination's errors."""
        prev_chunks: dict[bytes, tuple[bytes, ...]] = {}
        roots = frozenset(scan.sources)

        def previous_entries() -> Iterator[Entry]:
            for entry, chunk_ids in previous:
                prev_chunks[entry.path] = chunk_ids  # popped as soon as its pair is handled
                yield entry

        def current_entries() -> Iterator[Entry]:
            for item in scan:
                if isinstance(item, ScanWarning):
                    self.channel.log(LogType.WARN, f"{display_path(item.path)}: {item.message}")
                    if item.path in roots:
                        self.unread_sources.add(item.path)
                    continue
                yield item

        pending: deque[_Pending] = deque()
        ahead = 0  # bytes announced for pending pairs
        file_type = EntryType.FILE
        has_chunk = self.repo.has_chunk
        readahead = ReadAhead()
        seen: set[tuple[int, int]] = set()  # link identities of hard-linked files read ahead
        try:
            for prev, cur in pair_by_path(previous_entries(), current_entries()):
                chunks = prev_chunks.pop(prev.path, ()) if prev is not None else ()
                read = (
                    cur is not None
                    and cur.etype is file_type
                    and (
                        needs_content(prev, cur)
                        # content whose chunks were lost with a pack is read and stored again
                        or (self.chunks_lost and not all(map(has_chunk, chunks)))
                    )
                )
                if cur is not None and cur.etype is file_type:  # counted as the scan gives it
                    self.files_seen += 1
                    self.bytes_seen += cur.size
                    if not read:
                        self.files_unchanged += 1
                        self.bytes_unchanged += cur.size
                if read and cur is not None and cur.size <= PREFETCH_MAX_FILE and _ahead(seen, cur):
                    while pending and ahead + cur.size > PREFETCH_BYTES:
                        item = pending.popleft()
                        ahead -= item.ahead
                        if item.ahead and not readahead.is_sent(item.ahead_no):
                            readahead.send()
                        yield from self._handle(writer, item)
                    no = readahead.add(cur.path)
                    pending.append(_Pending(prev, cur, chunks, True, cur.size, no))
                    ahead += cur.size
                elif pending:
                    pending.append(_Pending(prev, cur, chunks, read))
                else:  # nothing ahead of it: handled at once
                    yield from self._handle(writer, _Pending(prev, cur, chunks, read))
                    continue
                while len(pending) > PREFETCH_FILES:
                    item = pending.popleft()
                    ahead -= item.ahead
                    if item.ahead and not readahead.is_sent(item.ahead_no):
                        readahead.send()
                    yield from self._handle(writer, item)
            self.scan_finished = True
            readahead.send()
            while pending:
                yield from self._handle(writer, pending.popleft())
        finally:
            readahead.close()

    def _handle(self, writer: Writer, item: _Pending) -> Iterator[Pair]:
        """Store one pair's content (opened ahead or now), spool it and yield it. Raises
        ``QuotaExceeded`` once what the job stores would pass the user's quota."""
        if self.cancel.is_set():
            raise JobCancelled()
        prev, cur, chunks = item.prev, item.cur, item.chunks
        cur_chunks: tuple[bytes, ...] = ()
        if cur is not None:
            # None when unreadable without a previous version of the path: left out
            cur, cur_chunks = self._content(writer, cur, item)
            quota = self.quota
            if quota is not None and quota.exceeded_by(
                quota.destination_used + writer.upload_bytes
            ):
                raise QuotaExceeded(quota, writer.upload_bytes)
        if cur is None:
            if prev is None:
                return
            self.missing_chunks[prev.path] = chunks
            if prev.etype is EntryType.FILE:
                self.sizes[prev.path] = chunk_sizes(self.repo.index, chunks)
            yield prev, None
            return
        self._spool(cur, cur_chunks)
        if self.progress_due <= time.monotonic():
            self.progress()
        yield prev, cur

    @staticmethod
    def _check_quota(quota: StorageQuota, adding: int) -> None:
        """Raise ``QuotaExceeded`` when the ``adding`` bytes this job stores would pass the
        quota (a job that adds nothing is never stopped: a retention run after it may free
        space)."""
        if adding and quota.exceeded_by(quota.destination_used + adding):
            raise QuotaExceeded(quota, adding)

    def _content(
        self, writer: Writer, cur: Entry, item: _Pending
    ) -> tuple[Entry | None, tuple[bytes, ...]]:
        """``cur`` (the current entry of ``item``) with its content id and chunk IDs: reused
        (``item.read`` false: what ``needs_content`` said), or read now. A file that cannot be
        read gives the previous entry of its path (if a regular file) or ``None``."""
        if cur.etype is not EntryType.FILE:
            return cur, ()
        prev = item.prev
        if not item.read:
            assert prev is not None  # needs_content is true without a previous file
            if _attributes_differ(prev, cur):
                self.sizes[cur.path] = chunk_sizes(self.repo.index, item.chunks)
            elif prev.device == cur.device and prev.hard_link == cur.hard_link:
                return prev, item.chunks  # equal in every field, with the content id
            return with_content_id(cur, prev.content_id), item.chunks
        if cur.hard_link and (cur.device, cur.inode) in self.link_contents:
            linked = self._linked(cur)
            if linked is not None:
                return linked
        self.current = display_path(cur.path)
        try:
            read, result, changed = _read_file(writer, cur, self.cancel, on_read=self._reading)
        except _SoftError as exc:
            self.channel.log(LogType.WARN, f"{display_path(cur.path)}: {exc}")
            if isinstance(exc, _Vanished):
                return None, ()  # gone: a deletion when it was backed up before
            if prev is not None and prev.etype is EntryType.FILE:
                # its content as last stored, with the attributes it has now: a chmod 000 is
                # both a warning (unreadable) and a permission change (issue 15)
                kept = replace(prev, mode=cur.mode, uid=cur.uid, gid=cur.gid, ctime_ns=cur.ctime_ns)
                if _attributes_differ(prev, kept):
                    self.sizes[cur.path] = chunk_sizes(self.repo.index, item.chunks)
                return kept, item.chunks
            return None, ()
        finally:
            self.bytes_reading = 0
        if read is not cur:  # changed since the scan: recorded as read (module docstring)
            self.bytes_seen += read.size - cur.size
            cur = read
        if changed:
            self.channel.log(LogType.WARN, f"{self.current}: {changed}")
        self.files_done += 1
        self.bytes_done += result.original_size
        if prev is None or prev.content_id != result.content_id:
            # new or updated content (cbs-api.md §5); a file read again whose content is the
            # same (its attributes changed: a permission change) is no upload to dedupe
            self.dedupe_original += result.original_size
            self.dedupe_saving += result.dedup_saved_bytes
        # stored_size may wait for this file's compression: read it once later files are in
        self.results.append((cur.path, result))
        if len(self.results) > _RESULTS_HELD:
            path, held = self.results.popleft()
            self.sizes[path] = FileSizes(held.stored_size, held.original_size)
        cur = with_content_id(cur, result.content_id)
        if cur.hard_link:  # its later names are not read again (module docstring)
            self.link_contents.setdefault((cur.device, cur.inode), (cur, result.chunk_ids))
        return cur, result.chunk_ids

    def _linked(self, cur: Entry) -> tuple[Entry, tuple[bytes, ...]] | None:
        """``cur``, a later name of a hard-linked file read in this job, with that file's
        content id and chunk IDs, when its size and times are those of the name read (module
        docstring, "Hard links"); else ``None`` (then it is read itself)."""
        known, chunks = self.link_contents[(cur.device, cur.inode)]
        if (known.size, known.mtime_ns, known.ctime_ns) != (cur.size, cur.mtime_ns, cur.ctime_ns):
            return None
        self.files_unchanged += 1  # handled without a read
        self.bytes_unchanged += cur.size
        self.sizes[cur.path] = FileSizes(0, cur.size)  # its content cost nothing more
        return with_content_id(cur, known.content_id), chunks

    def settle_sizes(self) -> None:
        """Read the stored sizes of the files still held (after ``writer.flush()``)."""
        while self.results:
            path, held = self.results.popleft()
            self.sizes[path] = FileSizes(held.stored_size, held.original_size)

    def _reading(self, count: int) -> None:
        """After each read of a file: ``count`` bytes of it read so far; progress is reported
        when due, so a large file moves the figures while it is read."""
        self.bytes_reading = count
        if self.progress_due <= time.monotonic():
            self.progress()

    def progress(self, *, force: bool = False) -> None:
        """Report progress to ``on_progress`` when ``progress_interval`` has passed since the
        last (or ``force``), and to the server (one attempt: the next supersedes a lost one) at
        most every ``PROGRESS_INTERVAL`` seconds (and when ``force``)."""
        now = time.monotonic()
        if not force and now - self.last_progress < self.interval:
            return
        self.last_progress = now
        self.progress_due = now + self.interval
        files_seen, bytes_seen, final = self.files_seen, self.bytes_seen, self.scan_finished
        counted = self.totals
        if not final and counted is not None and counted.done:  # the totals, known early
            files_seen, bytes_seen = max(files_seen, counted.files), max(bytes_seen, counted.bytes)
            final = True
        snap = Progress(
            self.current,
            self.files_done,
            files_seen,
            self.bytes_done + self.bytes_reading,
            bytes_seen,
            files_unchanged=self.files_unchanged,
            bytes_unchanged=self.bytes_unchanged,
            scan_finished=final,
            bytes_stored=self.repo.stored_bytes - self.stored_base,
        )
        if force or now - self.last_sent >= PROGRESS_INTERVAL:
            self.last_sent = now
            self.channel.send_progress(snap)
        if self.on_progress is not None:
            self.on_progress(snap)


def _ahead(linked: set[tuple[int, int]], entry: Entry) -> bool:
    """Whether a small file to read is read ahead: not when it is a later name of a hard-linked
    file (its link identity in ``linked``, which gets it), whose content is not read again."""
    if not entry.hard_link:
        return True
    key = (entry.device, entry.inode)
    if key in linked:
        return False
    linked.add(key)
    return True


def _attributes_differ(prev: Entry, cur: Entry) -> bool:
    return (prev.mode, prev.uid, prev.gid, prev.mtime_ns) != (
        cur.mode,
        cur.uid,
        cur.gid,
        cur.mtime_ns,
    )


class _SoftError(Exception):
    """A file could not be read as scanned (vanished, unreadable, changed while read)."""


class _Vanished(_SoftError):
    """The file was gone when it was to be read."""


class _CancellableReader:
    """A binary reader over a file descriptor that raises ``JobCancelled`` between reads once
    the event is set, gives at most ``limit`` bytes (then end of file), counts the bytes read
    and tells ``on_read`` the count after each read."""

    def __init__(
        self,
        fd: int,
        cancel: threading.Event,
        on_read: Callable[[int], None] | None = None,
        limit: int = -1,
    ) -> None:
        self.fd = fd
        self.cancel = cancel
        self.count = 0
        self.on_read = on_read
        self.left = limit if limit >= 0 else 1 << 62

    def read(self, size: int = -1) -> bytes:
        if self.cancel.is_set():
            raise JobCancelled()
        left = self.left
        if left <= 0:
            return b""
        data = os.read(self.fd, min(size if size > 0 else _READ_SIZE, left))
        self.left = left - len(data)
        self.count += len(data)
        if self.on_read is not None:
            self.on_read(self.count)
        return data


@dataclass(slots=True)
class _Pending:
    """A pair waiting to be handled; a small file to read is announced for read-ahead
    (``ahead`` bytes, its number ``ahead_no`` in the ``ReadAhead``)."""

    prev: Entry | None
    cur: Entry | None
    chunks: tuple[bytes, ...]
    read: bool  # its content must be read (classify.needs_content)
    ahead: int = 0  # bytes announced for it
    ahead_no: int = -1  # ReadAhead.add's number for it


# O_NONBLOCK: a path replaced by a FIFO since the scan must not block the open (the fstat check
# then refuses it); it changes nothing for a regular file's reads
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
_NOATIME = getattr(os, "O_NOATIME", 0)


def _open(entry: Entry) -> int:
    """A descriptor of ``entry``'s path; raises ``_SoftError`` (``_Vanished`` when gone)."""
    try:
        return os.open(entry.path, _OPEN_FLAGS | _NOATIME)
    except PermissionError:
        try:  # O_NOATIME needs ownership of the file
            return os.open(entry.path, _OPEN_FLAGS)
        except OSError as exc:
            raise _SoftError(_why("cannot open", exc)) from exc
    except FileNotFoundError as exc:
        raise _Vanished("vanished before it could be read") from exc
    except OSError as exc:
        raise _SoftError(_why("cannot open", exc)) from exc


def _read_file(
    writer: Writer,
    entry: Entry,
    cancel: threading.Event,
    *,
    on_read: Callable[[int], None] | None = None,
) -> tuple[Entry, FileResult, str]:
    """Store the content of the file at ``entry``'s path, read up to the size it has when
    opened (module docstring, "Files that change"). Returns ``(recorded, result, changed)``:
    the entry to record (``entry`` itself when the file is as scanned and did not change; else
    the file as opened, from its ``fstat``, with ``size`` the bytes stored), the stored content,
    and ``""`` or, when the file changed while it was read, the warning's text. Raises
    ``_SoftError`` when the file vanished, cannot be opened or read, or is no longer a regular
    file (nothing of it is then referenced; see ``Writer.add_file`` for what is taken back).
    ``on_read`` gets the bytes read so far after each read."""
    fd = _open(entry)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise _SoftError(
                "changed between the scan and the read (no longer a regular file); not backed up"
            )
        size, mtime_ns = before.st_size, before.st_mtime_ns
        if (size, mtime_ns, before.st_ctime_ns, before.st_ino) != (
            entry.size,
            entry.mtime_ns,
            entry.ctime_ns,
            entry.inode,
        ):
            entry = _opened(entry.path, before)  # changed since the scan: read as it is now
        reader = _CancellableReader(fd, cancel, on_read, size)
        try:
            result = writer.add_file(reader)
        except OSError as exc:
            raise _SoftError(_why("cannot read", exc)) from exc
        after = os.fstat(fd)
        if reader.count == size and (after.st_size, after.st_mtime_ns) == (size, mtime_ns):
            return entry, result, ""
        stored = result.original_size  # the recorded size: what a restore gives back
        if stored != entry.size:
            entry = _opened(entry.path, before, stored)
        return entry, result, _changed_while_read(size, after.st_size, stored)
    finally:
        os.close(fd)


def _opened(path: bytes, st: os.stat_result, size: int | None = None) -> Entry:
    """The entry of the regular file ``path`` from its ``fstat`` ``st``, with ``size`` (bytes;
    default ``st.st_size``)."""
    return Entry(
        path,
        EntryType.FILE,
        st.st_size if size is None else size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_ino,
        st.st_dev,
        None,
        False,
        None,
        st.st_nlink > 1,
    )


def _changed_while_read(opened: int, now: int, stored: int) -> str:
    """The warning of a file that changed while it was read, from its sizes in bytes: when
    opened, after the read, and stored (what was read)."""
    if stored < opened:
        return (
            f"changed while it was read (it was cut short: {stored} of its {opened} bytes "
            f"could be read); backed up as read: {plural(stored, 'byte')}"
        )
    if now > opened:
        return (
            f"changed while it was read (it grew from {opened} to {now} bytes); backed up as "
            f"read: its first {plural(stored, 'byte')}"
        )
    return (
        f"changed while it was read; backed up as read ({plural(stored, 'byte')}): its content "
        "may mix old and new data"
    )


def _why(action: str, exc: OSError) -> str:
    return f"{action}: {exc.strerror or type(exc).__name__}"
