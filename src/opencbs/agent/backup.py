"""The body of one backup job (``agent.job.run_backup`` starts the job and finishes it):

1. opens the repository on the destination (creates it on first use), finds the previous
   snapshot of the same set and destination (the newest whose metadata names both: only
   completed jobs commit one);
2. scans the set's sources (``settings.sources`` and ``settings.filters`` from the server; links
   never followed) merged by path with the previous snapshot, reading what needs reading
   (``agent.reading``);
3. classifies (cbs-api.md §5) — when there are copies of previous content, streaming the
   previous snapshot a second time to name their sources (``classify.resolve_sources``) —
   sends the entries with their stored and original sizes (through the job's channel,
   ``agent.channel``), and commits the snapshot (last: nothing refers to it until then).

Outcomes (:meth:`BackupJob.run`): soft errors (``warn`` entries, ``agent.reading``) end the job
``BS_STOP_SUCCESS_WITH_WARNING``. When the scan could read none of the set's sources (each
missing or unreadable: a ``warn`` entry each, ``agent.reading``), there is nothing to back up:
the job ends ``BS_STOP_BY_SYSTEM_ERROR`` with an ``error`` log entry naming them and commits no
snapshot (restic's rule: a backup of nothing is a failure, not an empty snapshot). Destination
failures (``DestinationError``, ``RepositoryError``, a wrong password included) end it
``BS_STOP_BY_SYSTEM_ERROR`` with an ``error`` log entry and no snapshot, as does the scan's
helper process dying; a set ``cancel`` event ends it ``BS_STOP_BY_USER`` with no snapshot
(``BS_STOP_BY_SCHEDULER`` when a ``job_values.StopEvent`` says the schedule stopped it). A
damaged snapshot in the repository is skipped (a ``warn`` entry names it;
``Repository.verify`` reports it) and never blocks the job. Neither does a snapshot list
(``engine.manifest``) that shows a removed snapshot or a rollback (an older list than the agent
remembers in ``JobOptions.state_dir``): each problem is a ``warn`` entry (which the CLI says on
stderr, from ``JobOutcome.messages``), the backup goes on, and the list it commits (a generation
above the one remembered) names what is stored now; the agent then remembers that list.

Dedupe figures (cbs-api.md §5): ``DedupeOriginalSize`` = original bytes of every file read
this job whose content is new at its path (new and updated content examined: a file read again
only because its attributes changed, with the same content, is not counted); ``DedupeSaving`` =
of those, bytes whose chunks were stored already.

Uploaded bytes (``UploadSize``, cbs-api.md §7): what the job added to the destination, counted
by the repository as it writes (``Repository.stored_bytes``): the packs and index objects of
its content and its snapshot's tree, and the snapshot object; not the snapshot list, locks or
recovered index objects. A job that stops (by the user, the quota, a destination error) counts
the packs it had stored: its open pack is dropped and the finished ones are waited for first.

Copies (cbs-api.md §5: content "already in the backup, or stored earlier in this job") are
recognised against the previous snapshot's contents and this job's, with the copy's source named
(``FromFile``): the classifier keeps only a 64-bit hash per previous file, so a copy of previous
content comes out tentative, and only then is the previous snapshot read again, once, to find
each source path (and confirm the full content id) before the entries are sent.
``known_content`` is not passed to ``classify_pairs``: the repository has no content index (a
multi-chunk file's content ID lives only in snapshot trees, so knowing every stored content
means reading every tree, O(all snapshots)), and passing it makes the classifier name no source
for a copy of an unchanged file, so it would lose its ``FromFile``. A copy of content found only
in an older snapshot is therefore reported ``new`` (it still deduplicates: ``DedupeSaving``
counts it).

Memory: one report batch, the classification's changed entries (see ``engine.classify``), and
the chunk lists of previous entries missing from the scan; the new snapshot's entries wait on
disk (``agent.entry_spool``). Measured with tracemalloc on a 100,000-file previous snapshot,
unchanged rescan (``bench/agent_memory.py``): peak about 67 bytes per previous file (was 206
with a ``content id -> path`` copy-source index), of which 8 are the classifier's content hash
per previous file (see ``engine.classify``) and the rest the streams themselves (about 2 MB
whatever the file count: the scan process's read buffer and its messages of 1,024 entries,
``engine.scan_process``); nothing per file stays after the pass. The copy-source pass holds
O(copies). With ``on_change``, the previous entries of paths whose attributes changed are held
too, to say what differs.
"""

from __future__ import annotations

import heapq
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from opencbs.agent.channel import JobChannel
from opencbs.agent.client import RemoteSet
from opencbs.agent.entry_spool import EntrySpool
from opencbs.agent.job_values import (
    ChangeEvent,
    JobCancelled,
    JobOptions,
    OnChange,
    OnProgress,
    stop_status,
)
from opencbs.agent.reading import Pair, QuotaExceeded, SourceReader
from opencbs.agent.report_entries import file_entry
from opencbs.agent.targets import open_repository
from opencbs.destinations.base import DestinationError
from opencbs.engine.classify import (
    DETAIL_FIELDS,
    Change,
    Classification,
    change_detail,
    classify_pairs,
    path_sort_key,
    resolve_sources,
)
from opencbs.engine.entries import Entry, display_path
from opencbs.engine.locks import RepositoryLock
from opencbs.engine.manifest import load_anchor, remember
from opencbs.engine.repo_errors import ChunkNotFound, CorruptData, RepositoryError
from opencbs.engine.repo_verify import VerifyProblem
from opencbs.engine.repository import Repository, SnapshotInfo, SnapshotMeta
from opencbs.engine.scan import ScanFilter
from opencbs.engine.scan_count import TotalCount
from opencbs.engine.scan_process import ScanAborted, ScanProcess
from opencbs.engine.snapshot_format import TreeItem
from opencbs.engine.usage import NewestUse
from opencbs.reports.vocabulary import FILE_LISTS, JobStatus, LogType, ReportList
from opencbs.reports.wording import plural

__all__ = ["NOTHING_BACKED_UP", "BackupJob", "JobResult", "NoSourceRead", "find_previous_snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobResult:
    """How the job's body ended: the final ``status``, the snapshot committed (``None`` unless
    a success), why it did not complete (``message``), the number of entries of each file
    list (``counts``), the dedupe figures and ``uploaded_bytes`` (bytes; module docstring)."""

    status: JobStatus
    snapshot_id: str | None
    message: str
    counts: dict[ReportList, int]
    dedupe_original_size: int
    dedupe_saving: int
    uploaded_bytes: int = 0


class BackupJob:
    """The body of one job of set ``bset`` (module docstring), on a started ``channel``:
    ``options`` give the storage, password and progress interval; ``start_ms`` is the job's
    start (epoch ms; the snapshot's time); ``repository`` the repository when opened already.
    ``on_change`` is called with each change sent, ``on_progress`` with each progress report;
    ``cancel`` stops the job."""

    def __init__(
        self,
        options: JobOptions,
        *,
        channel: JobChannel,
        bset: RemoteSet,
        start_ms: int,
        repository: Repository | None,
        cancel: threading.Event,
        on_change: OnChange | None = None,
        on_progress: OnProgress | None = None,
    ) -> None:
        self.options = options
        self.channel = channel
        self.bset = bset
        self.start_ms = start_ms
        self.repository = repository
        self.cancel = cancel
        self.on_change = on_change
        self.on_progress = on_progress
        self.reader: SourceReader | None = None
        self.entries = EntrySpool()
        self.lock: RepositoryLock | None = None  # the job's shared lock on the repository
        self.counts: dict[ReportList, int] = dict.fromkeys(FILE_LISTS, 0)
        # with on_change: previous entries of paths whose attributes changed (what differs)
        self.previous: dict[bytes, Entry] = {}
        # the committed snapshot's chunks and contents, for the storage figures after the job
        self.newest_use: NewestUse | None = None

    def run(self) -> JobResult:
        """Run the body: the start entry first, then the backup; never raises for the
        destination (module docstring). The report is not finished here."""
        self.channel.begin()  # the start entry first, before any progress report
        try:
            snapshot_id = self._backup()
        except JobCancelled:
            status = stop_status(self.cancel)
            if status is JobStatus.STOP_BY_SCHEDULER:
                said = "stopped at the end of its schedule's window"
            else:
                said = "stopped by user"
            self.channel.log(LogType.INFO, f"Backup {said}")
            return self._result(status, None, said)
        except (DestinationError, RepositoryError) as exc:
            return self._failed(f"Destination error: {exc}")
        except ScanAborted as exc:  # the scan's helper process died (engine.scan_process)
            return self._failed(f"Scan error: {exc}")
        except NoSourceRead as exc:
            return self._failed(str(exc))
        except QuotaExceeded as exc:
            self.channel.log(LogType.ERROR, str(exc))
            return self._result(JobStatus.STOP_BY_QUOTA_EXCEEDED, None, str(exc))
        finally:
            self.entries.close()
            if self.lock is not None:
                self.lock.release()
                self.lock = None
        report = self.channel.report
        if report.errors:
            status = JobStatus.STOP_SUCCESS_WITH_ERROR
        elif report.warnings:
            status = JobStatus.STOP_SUCCESS_WITH_WARNING
        else:
            status = JobStatus.STOP_SUCCESS
        return self._result(status, snapshot_id, "")

    def _failed(self, message: str) -> JobResult:
        log.debug("%s", message)  # the outcome says it (its message and the error entry)
        self.channel.log(LogType.ERROR, message)
        return self._result(JobStatus.STOP_BY_SYSTEM_ERROR, None, message)

    def _result(self, status: JobStatus, snapshot_id: str | None, message: str) -> JobResult:
        reader = self.reader
        return JobResult(
            status,
            snapshot_id,
            message,
            dict(self.counts),
            reader.dedupe_original if reader is not None else 0,
            reader.dedupe_saving if reader is not None else 0,
            self.uploaded_bytes(),
        )

    def uploaded_bytes(self) -> int:
        """Bytes this job has added to the destination (module docstring)."""
        reader = self.reader
        return reader.repo.stored_bytes - reader.stored_base if reader is not None else 0

    def _backup(self) -> str:
        """Read, classify, report and commit; the new snapshot's ID."""
        settings = self.bset.settings
        repo, chunks_lost = self._open()
        previous, prev_items = self._previous(repo)
        reader = self.reader = SourceReader(
            repo=repo,
            channel=self.channel,
            entries=self.entries,
            cancel=self.cancel,
            chunks_lost=chunks_lost,
            progress_interval=self.options.progress_interval,
            on_progress=self.on_progress,
        )
        reader.quota = self.channel.quota
        sources = list(settings.sources)
        if not sources:
            self.channel.log(LogType.ERROR, "The backup set has no sources")
        filters = ScanFilter.of(settings.filters.include, settings.filters.exclude)
        scan = ScanProcess(sources, filters)
        # the totals counted ahead, for a progress display's total and ETA
        totals = reader.totals = TotalCount(sources, filters) if self.options.count_totals else None
        writer = repo.writer(compression_level=settings.compression.level)
        try:
            pairs = reader.pairs(writer, scan, prev_items)
            if self.on_change is not None:
                pairs = _keeping_previous(pairs, self.previous)
            result = classify_pairs(pairs, lambda: scan.incomplete_dirs)
        except BaseException:
            writer.close()  # its finished packs stored and counted (``uploaded_bytes``)
            raise
        finally:
            if totals is not None:
                totals.close()
        writer.flush()
        self._check_cancel()
        if scan.sources and reader.unread_sources.issuperset(scan.sources):
            raise NoSourceRead(scan.sources)
        if result.sources_wanted and previous is not None:  # name the copies' sources
            result = resolve_sources(result, (e for e, _ in repo.load_snapshot(previous.id)[1]))
        self._send_changes(reader, result)
        meta = SnapshotMeta(
            time_ns=self.start_ms * 1_000_000,
            set_id=self.channel.ref.set_id,
            destination_id=self.channel.ref.destination_id,
            job_id=self.channel.ref.job_id,
            hostname=socket.gethostname(),
            sources=scan.sources,
            parent_id=previous.id if previous is not None else None,
            set_name=self.bset.name,
        )
        self._check_cancel()
        self.newest_use = NewestUse(2 * (self.entries.count + len(result.carried)))
        items = self.newest_use.observe(self._snapshot_items(reader, result))
        snapshot_id = repo.commit_snapshot(meta, items)
        self.newest_use.snapshot_id = snapshot_id
        self.channel.log(LogType.INFO, f"Snapshot {snapshot_id} committed")
        self._remember_list(repo)
        return snapshot_id

    def _open(self) -> tuple[Repository, bool]:
        """The repository (opened, or created on first use), after what earlier jobs left
        behind is cleaned and its packs are reconciled; and whether stored chunks were lost
        with missing packs (their data is then stored again)."""
        repo = self.repository or open_repository(
            self.options.storage,
            self.options.password,
            compression_level=self.bset.settings.compression.level,
        )
        self.repository = repo
        # a shared lock for the whole job: a prune deletes only when no backup runs
        self.lock = repo.lock("shared", "backup", timing=self.options.lock_timing)
        self.lock.acquire()
        repo.refresh_index()  # a prune may have swept between the opening and the lock
        clean = getattr(self.options.storage, "remove_stale_temporaries", None)
        if clean is not None:
            clean()  # what writes killed earlier left behind
        missing, _recovered = repo.reconcile_packs()
        repo.exclude_condemned()  # never deduplicate against what a prune will delete
        if missing:
            self.channel.log(
                LogType.WARN,
                f"{plural(len(missing), 'pack')} missing from the "
                "destination; the data is stored again; run a verify",
            )
        self._check_list(repo)
        return repo, bool(missing)

    def _check_list(self, repo: Repository) -> None:
        """Report what the snapshot list shows (removed snapshots, a rollback) as ``warn``
        entries and stderr warnings; the job goes on (module docstring)."""
        state_dir = self.options.state_dir
        anchor = load_anchor(state_dir, repo.config.repo_id) if state_dir is not None else None
        for subject, message in repo.check_snapshot_list(anchor).problems:
            log.debug("destination's %s: %s", subject, message)  # the warn entry says it
            self.channel.log(
                LogType.WARN,
                f"The destination's {subject}: {message}. It was changed outside opencbs or "
                "put back from an older copy; this backup lists what is stored now",
            )

    def _remember_list(self, repo: Repository) -> None:
        """Remember the snapshot list just committed (``JobOptions.state_dir``); a data dir
        that cannot be written is a ``warn`` entry."""
        state_dir, recorded = self.options.state_dir, repo.recorded
        if state_dir is None or recorded is None:
            return
        try:
            remember(state_dir, repo.config.repo_id, recorded)
        except OSError as exc:
            log.debug("cannot remember the snapshot list in %s: %s", state_dir, exc)
            self.channel.log(
                LogType.WARN,
                f"Cannot remember the destination's snapshot list in {state_dir} "
                f"({exc.strerror or exc}): a rollback of it would go unnoticed",
            )

    def _previous(self, repo: Repository) -> tuple[SnapshotInfo | None, Iterator[TreeItem]]:
        """The previous snapshot to compare with (damaged ones skipped, each a warning) and
        its entries with their chunk IDs, streamed in walk order (none without one)."""
        damaged: list[VerifyProblem] = []
        ref = self.channel.ref
        previous = find_previous_snapshot(
            repo, ref.set_id, ref.destination_id, damaged=damaged, check_tree=True
        )
        for problem in damaged:
            self.channel.log(
                LogType.WARN,
                f"Skipped the damaged {problem.subject} ({problem.message}); run a verify",
            )
        if previous is None:
            self.channel.log(LogType.INFO, "No previous backup: every entry is new")
            return None, iter(())
        self.channel.log(LogType.INFO, f"Compared with the backup job {previous.meta.job_id}")
        return previous, repo.load_snapshot(previous.id)[1]

    def _send_changes(self, reader: SourceReader, result: Classification) -> None:
        """Send every change as a report entry with its sizes (and tell ``on_change``)."""
        reader.settle_sizes()
        sizes, counts, add = reader.sizes, self.counts, self.channel.add
        on_change = self.on_change
        for change in result.changes:
            counts[change.kind] += 1
            add(file_entry(change, sizes.get(change.entry.path)))
            if on_change is not None:
                on_change(change_event(change, self.previous))
        self.channel.flush()
        reader.progress(force=True)

    def _snapshot_items(self, reader: SourceReader, result: Classification) -> Iterator[TreeItem]:
        """The spooled current entries merged, in walk order, with the carried ones."""
        carried = [(e, reader.missing_chunks.get(e.path, ())) for e in result.carried]
        spooled = self.entries.items()
        yield from heapq.merge(spooled, carried, key=lambda item: path_sort_key(item[0].path))

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled()


class NoSourceRead(Exception):
    """None of the set's ``sources`` (absolute, bytes) could be read: each is missing or
    unreadable (the scan warned about each). The message says so, naming them."""

    def __init__(self, sources: tuple[bytes, ...]) -> None:
        if len(sources) == 1:
            text = f"the source {display_path(sources[0])} is missing or unreadable"
        else:
            shown = ", ".join(display_path(s) for s in sources[:_NAMED_SOURCES])
            if len(sources) > _NAMED_SOURCES:
                shown += f" and {len(sources) - _NAMED_SOURCES} more"
            text = f"none of the {len(sources)} sources can be read ({shown})"
        super().__init__(f"{NOTHING_BACKED_UP}: {text}; no snapshot was committed")


#: How the message of a job that could read none of its sources begins (``NoSourceRead``).
NOTHING_BACKED_UP = "Nothing backed up"
#: Sources a ``NoSourceRead`` message names at most.
_NAMED_SOURCES = 5


def _keeping_previous(pairs: Iterator[Pair], kept: dict[bytes, Entry]) -> Iterator[Pair]:
    """``pairs`` as they are, the previous entry of each path whose attributes changed kept in
    ``kept`` (by path), for :func:`change_event`."""
    for prev, cur in pairs:
        if prev is not None and cur is not None and prev is not cur:
            if any(getattr(prev, name) != getattr(cur, name) for name in DETAIL_FIELDS):
                kept[cur.path] = prev
        yield prev, cur


def change_event(change: Change, previous: Mapping[bytes, Entry]) -> ChangeEvent:
    """The event of one change: its detail is the source of a move or copy (``from <path>``)
    or, for an update or a permission change, what differs from the previous entry of its path
    in ``previous`` (``size 4→12, mtime_ns …``, as the classifier's debug log says it)."""
    detail = change_detail(previous.get(change.entry.path), change)
    return ChangeEvent(change.kind, change.entry.path, change.reason, detail)


def find_previous_snapshot(
    repo: Repository,
    set_id: str,
    destination_id: str,
    *,
    damaged: list[VerifyProblem] | None = None,
    check_tree: bool = False,
) -> SnapshotInfo | None:
    """The newest readable snapshot (by ``meta.time_ns``) of ``set_id`` and
    ``destination_id``, or ``None``. Damaged snapshots are skipped and appended to ``damaged``
    (see ``Repository.list_snapshots``); with ``check_tree`` so is one whose tree chunks do not
    all read back, and an older one is taken: one damaged snapshot never blocks later backups.
    Raises ``DestinationError``."""
    matching = [
        i
        for i in repo.list_snapshots(damaged=damaged)
        if i.meta.set_id == set_id and i.meta.destination_id == destination_id
    ]
    for info in reversed(matching):
        if not check_tree:
            return info
        problem = _tree_problem(repo, info)
        if problem is None:
            return info
        # the caller that collects ``damaged`` reports it (a warn entry): said once
        log.log(
            logging.DEBUG if damaged is not None else logging.WARNING,
            "snapshot %s cannot be read (%s): comparing with an older one",
            info.id,
            problem,
        )
        if damaged is not None:
            damaged.append(VerifyProblem(f"snapshot {info.id}", problem))
    return None


def _tree_problem(repo: Repository, info: SnapshotInfo) -> str | None:
    """Why the tree of ``info`` cannot be read back, or ``None`` when every chunk of it reads
    (decrypts and checks against its hash)."""
    for chunk_id in info.tree:
        try:
            repo.read_chunk(chunk_id)
        except (CorruptData, ChunkNotFound) as exc:
            repo.forget_damaged_chunks([chunk_id])  # stored again, not deduplicated against
            return str(exc)
    return None
