"""The job runner: one backup job of a backup set to one destination (architecture.md, agent).

:func:`run_backup` does, in one pass over the scan and the previous snapshot:

1. starts the job on the server (``RunVersion`` = opencbs' version; the server records
   ``FromIp``) and sends the start log entry ``Start [opencbs <version>]`` at once;
2. opens the repository on the destination (creates it on first use), finds the previous
   snapshot of the same set and destination (the newest whose metadata names both: only
   completed jobs commit one);
3. scans the set's sources (``settings.sources`` and ``settings.filters`` from the server; links
   never followed) merged by path with the previous snapshot; per regular file,
   ``classify.needs_content`` decides whether it is read; read content goes to the repository;
4. classifies (cbs-api.md §5) — when there are copies of previous content, streaming the
   previous snapshot a second time to name their sources (``classify.resolve_sources``) —
   sends the entries in batches of ~5000 (fewer round trips and spool fsyncs; spooled and sent
   by a background thread) with their stored and original sizes, commits the snapshot (last:
   nothing refers to it until then), sends the end log entry and finishes the job with its
   status and dedupe figures.

Soft errors — a scan warning, a file that vanishes, cannot be read or changes while it is read —
are ``warn`` log entries naming the path; the job goes on and ends
``BS_STOP_SUCCESS_WITH_WARNING``. A file that could not be read keeps its previous version in the
new snapshot (and is reported unchanged) or, without one, is left out. Destination failures
(``DestinationError``, ``RepositoryError``, a wrong password included) end the job
``BS_STOP_BY_SYSTEM_ERROR`` with an ``error`` log entry and no snapshot; ``cancel_event`` set
ends it ``BS_STOP_BY_USER`` with no snapshot. A damaged snapshot in the repository is skipped
(a ``warn`` entry names it; ``Repository.verify`` reports it) and never blocks the job.

Server failures (issue 4, "Lost server"): the server never stops the backup. Every report
batch is first written to the job's spool folder (``opencbs.agent.spool``; with ``spool_dir``,
on the agent's disk) and then sent; batches and the finish are retried (``retry_delays``, see
``agent.report``); a progress report is tried once and a failure is only logged. When the server
cannot be reached at the start, or a batch or the finish still fails, the job goes on offline,
commits its snapshot as usual and keeps its whole report (batches, then the finish record) in the
spool; the :class:`JobOutcome` then has ``report_delivered`` ``False``, ``report_error`` says why
and ``report_spool`` where it waits. The next ``run_backup`` with the same ``spool_dir`` (or
``opencbs agent flush``) delivers it first, complete and exactly once (``spool.deliver_pending``).
With the server unreachable the set's settings come from the copy remembered in ``spool_dir``.
When the agent's disk refuses the spool too (full, read-only) the report cannot be kept whole:
``report_lost`` is ``True``, the batches spooled before stay (closed with an ``error`` entry
saying the rest is lost when the disk takes one more batch) and ``report_error`` says what is
kept.

A job started while the server is unreachable gets its job ID from its start time (to the
second, in ``zone``): when that ID is taken by another spooled job of the set or by a snapshot
of the set and destination in the repository, the job starts at the first whole second after
it whose ID is free (waiting for it when it is in the future, as a start refused with 409 does),
so that the server's job ID and the snapshot's are the same after delivery. A job the agent
cannot know of (run elsewhere, or with no snapshot) may still take the ID: delivery then moves
the start later (``spool.deliver_job``) and the snapshot keeps the agent's ID.
Errors that propagate (nothing was done): ``AgentApiError`` from ``get_set``/``start_job`` (a
refused login, a set or destination the server does not have, a job of the same second), and
``ServerUnreachable`` when there is no spool or remembered set to fall back on.

Dedupe figures (cbs-api.md §5): ``DedupeOriginalSize`` = original bytes of every file read
this job (new and updated content examined); ``DedupeSaving`` = of those, bytes whose chunks
were stored already.

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
the chunk lists of previous entries missing from the scan. The new snapshot's entries are
spooled to a temporary file (``marshal`` blocks of 1,024 entries' fields and chunk IDs, about
100 bytes plus 33 per chunk each; faster to write and read than tree records), not held in
memory: ``commit_snapshot`` flushes the open writer and so cannot take entries while files are
still being read. The spool is written once and read once, sequentially; its size is about that
of the snapshot tree before compression, so disk, not memory, bounds it.

The previous snapshot is streamed in walk order alongside the scan (``load_snapshot`` decodes
its tree chunk by chunk; ``pair_by_path`` merges the two streams; a previous entry's chunk list
is held only until its pair is handled). Measured with tracemalloc on a 100,000-file previous
snapshot, unchanged rescan (``bench/agent_memory.py``): peak about 67 bytes per previous file
(was 206 with a ``content id -> path`` copy-source index), of which 8 are the classifier's
content hash per previous file (see ``engine.classify``) and the rest the streams themselves
(about 2 MB whatever the file count: the scan process's read buffer and its messages of 1,024
entries, ``engine.scan_process``); nothing per file stays after the pass. The copy-source pass
holds O(copies).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import marshal
import os
import socket
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from pathlib import Path
from typing import IO

from opencbs import __version__
from opencbs.agent.client import AgentApiError, AgentClient, RemoteSet, ServerUnreachable
from opencbs.agent.delivery import Delivery, deliver_pending
from opencbs.agent.readahead import ReadAhead
from opencbs.agent.report import ReportStream
from opencbs.agent.report_entries import FileSizes, chunk_sizes, file_entry, log_entry
from opencbs.agent.retry import DEFAULT_RETRY_DELAYS, call_with_retries
from opencbs.agent.spool import FinishRecord, JobSpool, JobStart, SpoolError, pending_spools
from opencbs.agent.targets import backup_set, open_repository
from opencbs.destinations.base import DestinationError, Storage
from opencbs.engine.classify import (
    Classification,
    classify_pairs,
    needs_content,
    pair_by_path,
    path_sort_key,
    resolve_sources,
)
from opencbs.engine.entries import Entry, display_path
from opencbs.engine.repo_errors import (
    ChunkNotFound,
    CorruptData,
    RepositoryError,
)
from opencbs.engine.repo_verify import VerifyProblem
from opencbs.engine.repo_writer import FileResult, Writer
from opencbs.engine.repository import Repository, SnapshotInfo, SnapshotMeta
from opencbs.engine.scan import ScanFilter, ScanWarning
from opencbs.engine.scan_process import ScanAborted, ScanProcess
from opencbs.engine.snapshot_format import TreeItem
from opencbs.model.jobs import JobRef
from opencbs.model.sets import BackupSetSettings
from opencbs.reports.timefmt import job_id_at, local_zone
from opencbs.reports.vocabulary import (
    FILE_LISTS,
    EntryType,
    JobMode,
    JobStatus,
    LogType,
    ReportList,
)

__all__ = ["JobCancelled", "JobOutcome", "Progress", "find_previous_snapshot", "run_backup"]

log = logging.getLogger(__name__)

#: Seconds between two progress reports (to the server and to the ``progress`` callback).
PROGRESS_INTERVAL = 0.5
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
#: Entries per block of the new snapshot's spool (one ``marshal`` dump each).
_SPOOL_RECORDS = 1024
#: One spooled entry: the fields of ``Entry`` in order, then its chunk IDs.
_SpoolRecord = tuple[
    bytes,
    str,
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    bytes | None,
    bool,
    bytes | None,
    tuple[bytes, ...],
]
#: Stored files whose ``FileResult`` is held before its (maybe pending) stored size is read.
_RESULTS_HELD = 64


class JobCancelled(Exception):
    """Raised inside the runner when ``cancel_event`` is set (never escapes ``run_backup``)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job stands: ``current_file`` (display path), regular files read so far and seen
    so far by the scan, bytes read so far and bytes of the files seen so far."""

    current_file: str
    files_done: int
    files_seen: int
    bytes_done: int
    bytes_seen: int


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """The result of one job: the server's job (``ref``), its final ``status``, the snapshot
    committed (``None`` unless the status is a success), the number of entries of each file list
    (``counts``), the ``warn``/``error`` log entries, dedupe figures (bytes) and, for a job that
    did not complete, why (``message``).

    ``report_delivered`` is ``False`` when the server could not be told (a batch or the finish
    failed after its retries); ``report_error`` then says why, and ``report_spool`` names the
    spool folder holding the whole report for a later delivery (``""`` when none does).
    ``flushed``: the spooled reports of earlier jobs delivered (or not) before this one. The
    backup itself is what ``status`` and ``snapshot_id`` say: a committed snapshot is a good
    backup either way. ``report_lost``: the report could be neither delivered nor spooled whole
    (the agent's disk refused it while the server was away): ``report_error`` says so and what
    part is kept (in ``report_spool``)."""

    ref: JobRef
    status: JobStatus
    snapshot_id: str | None
    counts: dict[ReportList, int] = field(default_factory=dict)
    warnings: int = 0
    errors: int = 0
    dedupe_original_size: int = 0
    dedupe_saving: int = 0
    message: str = ""
    report_delivered: bool = True
    report_error: str = ""
    report_spool: str = ""
    flushed: tuple[Delivery, ...] = ()
    report_lost: bool = False


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
        log.warning(
            "snapshot %s cannot be read (%s): comparing with an older one", info.id, problem
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


def run_backup(
    client: AgentClient,
    set_id: str,
    destination_id: str,
    storage: Storage,
    password: str | bytes,
    *,
    mode: JobMode = JobMode.MANUAL,
    cancel_event: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
    start_time_ms: int | None = None,
    batch_size: int = 5000,
    progress_interval: float = PROGRESS_INTERVAL,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    spool_dir: Path | None = None,
    zone: tzinfo | None = None,
    repository: Repository | None = None,
) -> JobOutcome:
    """Run one backup job of set ``set_id`` to destination ``destination_id`` (both as the
    server names them), storing content in ``storage`` under the repository ``password``.

    ``start_time_ms`` (epoch ms, default now) gives the job ID (cbs-api.md §4; one job per set,
    destination and second). ``progress`` is called at most every ``progress_interval``
    seconds. ``retry_delays``: seconds before each retry of a batch or the finish. Returns the
    :class:`JobOutcome`; rules and errors in the module docstring. Raises
    ``ServerUnreachable``/``AgentApiError`` only when the job cannot be started (the set cannot
    be read or ``start_job`` fails); later server failures give ``report_delivered=False``.

    ``spool_dir`` (the agent's report spool, ``opencbs.agent.spool``): first the reports
    spooled there are delivered (oldest first; :attr:`JobOutcome.flushed`); this job's report
    is spooled there before it is sent, and when the server cannot be reached (at the start
    or later) the backup goes on and the report stays there (``report_spool``) for a later
    delivery. The set then comes from the copy remembered there, and the job ID from the start
    time in ``zone`` (default the machine's; the server's zone may differ, so the snapshot's
    job ID may differ from the job ID the server gives at delivery), moved to a later second
    when the agent knows of a job with that ID (module docstring). Without ``spool_dir`` the
    report is spooled in a temporary folder and a lost server loses it. Raises ``SpoolError``
    when the spool folder cannot be created or written at the start.

    ``repository``: the repository of ``storage`` already opened with ``password`` (saves
    deriving its key a second time; ``None``: opened, or created, here).
    """
    flushed: tuple[Delivery, ...] = ()
    if spool_dir is not None:  # earlier reports first: the server gets them in job order
        flushed = tuple(deliver_pending(client, spool_dir, retry_delays=retry_delays))
    bset = backup_set(client, set_id, spool_dir)
    start_ms = start_time_ms if start_time_ms is not None else time.time_ns() // 1_000_000
    tz = zone or local_zone()
    with contextlib.ExitStack() as stack:
        root = spool_dir
        if root is None:  # not durable: removed with the run (the old behaviour)
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opencbs-")))
        for attempt in (1, 2):
            record = JobStart(
                set_id, destination_id, start_ms, mode=mode.value, run_version=__version__
            )
            spool = JobSpool.create(root, record)
            try:
                ref, offline = _start(client, spool, durable=spool_dir is not None, zone=tz)
                if offline:  # the agent names the job: an ID no job it knows of has
                    if repository is None:
                        repository = _try_open_repository(storage, password, bset.settings)
                    start_ms = _free_offline_start(spool, root, repository, tz)
                    ref = replace(ref, job_id=job_id_at(start_ms, tz))
                break
            except AgentApiError as exc:
                spool.remove()
                if exc.status != 409 or start_time_ms is not None or attempt == 2:
                    raise
                # a job of this set started in this very second (job IDs are start times to
                # the second, cbs-api.md §4): start in the next second instead
                start_ms = (start_ms // 1000 + 1) * 1000
                time.sleep(max(0.0, start_ms / 1000 - time.time()))
            except BaseException:
                spool.remove()
                raise
        runner = _Job(
            client,
            ref,
            bset,
            storage,
            password,
            start_ms,
            cancel_event or threading.Event(),
            progress,
            batch_size,
            progress_interval,
            retry_delays,
            spool,
            offline,
            spool_dir is not None,
            repository,
        )
        return replace(runner.run(), flushed=flushed)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: ExitStack may swallow)


def _try_open_repository(
    storage: Storage, password: str | bytes, settings: BackupSetSettings
) -> Repository | None:
    """The repository (created on first use), or ``None`` when it cannot be opened (the job
    then meets the error itself and reports it)."""
    try:
        return open_repository(storage, password, compression_level=settings.compression.level)
    except (DestinationError, RepositoryError) as exc:
        log.debug("repository not opened before the job: %s", exc)
        return None


def _taken_job_ids(spool: JobSpool, root: Path, repo: Repository | None, zone: tzinfo) -> set[str]:
    """The job IDs the agent knows are taken for the spool's set: by the other spooled jobs
    of the set under ``root`` (their server ID, and the ID their start time gives in
    ``zone``) and by the snapshots of the set and destination in ``repo``."""
    r = spool.record
    taken: set[str] = set()
    for path in pending_spools(root):
        if path == spool.path:
            continue
        try:
            other = JobSpool.open(path).record
        except SpoolError:
            continue
        if other.set_id == r.set_id:
            taken.add(job_id_at(other.start_ms, zone))
            if other.job_id is not None:
                taken.add(other.job_id)
    if repo is not None:
        try:
            taken.update(
                i.meta.job_id
                for i in repo.list_snapshots()
                if i.meta.set_id == r.set_id and i.meta.destination_id == r.destination_id
            )
        except (DestinationError, RepositoryError) as exc:
            log.debug("snapshots not listed before the job: %s", exc)
    return taken


def _free_offline_start(spool: JobSpool, root: Path, repo: Repository | None, zone: tzinfo) -> int:
    """The start time (epoch ms) of a job started while the server is away: the recorded one,
    or, when its job ID (:func:`job_id_at` in ``zone``) is taken (:func:`_taken_job_ids`), the
    first whole second after it whose ID is free, recorded in the spool and waited for when it
    is in the future (as the online start does on a 409). Job IDs are start times to the
    second (cbs-api.md §4): two jobs of a set in one second would share one. Raises
    ``SpoolError``."""
    first = start_ms = spool.record.start_ms
    taken = _taken_job_ids(spool, root, repo, zone)
    while job_id_at(start_ms, zone) in taken:
        start_ms = (start_ms // 1000 + 1) * 1000
    if start_ms != first:
        log.info(
            "job ID %s is taken: the job starts at %s",
            job_id_at(first, zone),
            job_id_at(start_ms, zone),
        )
        spool.set_start_ms(start_ms)
        time.sleep(max(0.0, start_ms / 1000 - time.time()))
    return start_ms


def _start(
    client: AgentClient, spool: JobSpool, *, durable: bool, zone: tzinfo
) -> tuple[JobRef, str]:
    """Start the spooled job on the server: its reference and ``""``; or, when the server
    cannot be reached and the spool is ``durable``, a reference with the job ID the start time
    gives in ``zone`` and why the job runs offline (its start is delivered later with the spool).
    Raises ``ServerUnreachable`` (not durable), ``AgentApiError``."""
    r = spool.record
    try:
        job = client.start_job(
            r.set_id,
            r.destination_id,
            mode=JobMode(r.mode),
            run_version=r.run_version,
            start_time=r.start_ms,
        )
    except ServerUnreachable as exc:
        if not durable:
            raise
        log.warning("server unreachable at the job start; the report is spooled: %s", exc.message)
        ref = JobRef(r.set_id, r.destination_id, job_id_at(r.start_ms, zone))
        return ref, f"the server could not be reached at the start ({exc.message})"
    spool.set_job_id(job.ref.job_id)
    return job.ref, ""


class _Job:
    """The state of one running job (private; see ``run_backup``)."""

    def __init__(
        self,
        client: AgentClient,
        ref: JobRef,
        bset: RemoteSet,
        storage: Storage,
        password: str | bytes,
        start_ms: int,
        cancel: threading.Event,
        progress: Callable[[Progress], None] | None,
        batch_size: int,
        progress_interval: float,
        retry_delays: Sequence[float],
        spool: JobSpool,
        offline: str = "",
        durable: bool = False,
        repository: Repository | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.bset = bset
        self.storage = storage
        self.password = password
        self.repository = repository
        self.start_ms = start_ms
        self.cancel = cancel
        self.progress_cb = progress
        self.retry_delays = tuple(retry_delays)
        self.job_spool = spool
        self.durable = durable
        self.report = ReportStream(
            client,
            ref,
            batch_size,
            retry_delays=self.retry_delays,
            wait=cancel.wait,
            spool=spool,
            online=not offline,
            offline_reason=offline,
            background=True,
        )
        self.interval = progress_interval
        self.last_progress = 0.0
        self.current = ""
        self.files_done = self.files_seen = self.bytes_done = self.bytes_seen = 0
        self.dedupe_original = self.dedupe_saving = 0
        self.sizes: dict[bytes, FileSizes] = {}  # sizes of files that may be reported
        # the last files stored, whose compressed size may still be computed by the writer
        self.results: deque[tuple[bytes, FileResult]] = deque()
        self.progress_due = 0.0  # monotonic time of the next progress report
        self.missing_chunks: dict[bytes, tuple[bytes, ...]] = {}  # previous-only files
        self.spool: IO[bytes] = tempfile.TemporaryFile(prefix="opencbs-tree-")
        self.spooled: list[_SpoolRecord] = []  # records not yet written to the spool
        self.counts: dict[ReportList, int] = dict.fromkeys(FILE_LISTS, 0)
        self.chunks_lost = False  # packs of stored chunks are gone: unchanged files are re-read

    # -- the job ------------------------------------------------------------------------------

    def run(self) -> JobOutcome:
        self.report.log(LogType.START, f"Start [opencbs {__version__}]")
        self.report.flush()
        self.report.join()  # the start entry first, before any progress report
        try:
            snapshot_id = self._backup()
        except JobCancelled:
            self.report.log(LogType.INFO, "Backup stopped by user")
            return self._finish(JobStatus.STOP_BY_USER, None, "stopped by user")
        except (DestinationError, RepositoryError) as exc:
            message = f"Destination error: {exc}"
            log.error("%s", message)
            self.report.log(LogType.ERROR, message)
            return self._finish(JobStatus.STOP_BY_SYSTEM_ERROR, None, message)
        except ScanAborted as exc:  # the scan's helper process died (engine.scan_process)
            message = f"Scan error: {exc}"
            log.error("%s", message)
            self.report.log(LogType.ERROR, message)
            return self._finish(JobStatus.STOP_BY_SYSTEM_ERROR, None, message)
        finally:
            self.spool.close()
        if self.report.errors:
            status = JobStatus.STOP_SUCCESS_WITH_ERROR
        elif self.report.warnings:
            status = JobStatus.STOP_SUCCESS_WITH_WARNING
        else:
            status = JobStatus.STOP_SUCCESS
        return self._finish(status, snapshot_id, "")

    def _finish(self, status: JobStatus, snapshot_id: str | None, message: str) -> JobOutcome:
        self.report.log(LogType.END, f"Backup completed: {status.value}")
        self.report.flush()
        self.report.drain()  # every batch spooled and sent (or failed) before the finish
        finish = FinishRecord(status, self.dedupe_original, self.dedupe_saving)
        spool_failure = self.report.spool_failure
        if spool_failure is None:
            try:
                self.job_spool.write_finish(finish)
            except SpoolError as exc:
                log.error("the job's finish cannot be spooled: %s", exc)
                spool_failure = str(exc)
        if self.report.delivered:  # finishing a job whose report misses a batch would lie
            try:
                call_with_retries(
                    lambda: self.client.finish_job(
                        self.ref,
                        status,
                        dedupe_original_size=self.dedupe_original,
                        dedupe_saving=self.dedupe_saving,
                    ),
                    "finish",
                    self.retry_delays,
                    self.cancel.wait,
                )
            except (ServerUnreachable, AgentApiError) as exc:
                self.report.fail(f"finish: {exc.message}")
        error = self.report.failure or ""
        where = ""
        lost = False
        if self.report.delivered or not self.durable:
            self.job_spool.remove()  # delivered; or not durable (lost with the temporary dir)
        elif spool_failure is None:
            self.job_spool.close()  # delivered later: module docstring
            where = str(self.job_spool.path)
            error += (
                f"; the report is spooled in {where} and is delivered by the next "
                "backup or `opencbs agent flush`"
            )
        else:  # neither delivered nor spooled whole: what was spooled is kept
            kept, lost = self._close_lost_report(finish, spool_failure)
            self.job_spool.close()
            where = str(self.job_spool.path)
            if lost:
                error = (
                    f"the job report could not be spooled on the agent ({spool_failure}) "
                    f"while it could not be delivered ({error}); {kept}"
                )
            else:
                error += f"; {kept}"
        return JobOutcome(
            self.ref,
            status,
            snapshot_id,
            dict(self.counts),
            self.report.warnings,
            self.report.errors,
            self.dedupe_original,
            self.dedupe_saving,
            message,
            self.report.delivered,
            error,
            report_spool=where,
            report_lost=lost,
        )

    def _close_lost_report(self, finish: FinishRecord, why: str) -> tuple[str, bool]:
        """The report could not be spooled whole (``why``): spool, after the batches it holds,
        an ``error`` and an ``end`` entry saying so and the finish, when the disk takes them now
        (delivery then closes the job with its real status); else delivery closes it as
        ``BS_BACKUP_NOT_FINISHED`` (``spool.deliver_job``). Returns what is kept, for a
        person, and whether part of the report is lost (``False`` only when just the finish
        had failed and is spooled now)."""
        spooled = self.report.batches_spooled
        batches_whole = self.report.spool_failure is None  # only the finish failed
        try:
            if not batches_whole:
                self.job_spool.write_batch(
                    self.job_spool.batch_count(),
                    [
                        log_entry(
                            LogType.ERROR,
                            f"Report incomplete: the agent could not spool "
                            f"batch {spooled} and later of it ({why})",
                        ),
                        log_entry(LogType.END, f"Backup completed: {finish.status.value}"),
                    ],
                )
            self.job_spool.write_finish(finish)
            if batches_whole:
                return (
                    f"the report is spooled in {self.job_spool.path} and is delivered by "
                    "the next backup or `opencbs agent flush`"
                ), False
            closed = "with a note that the rest is lost"
        except SpoolError as exc:
            log.error("the job report cannot be closed in the spool: %s", exc)
            closed = "the server will close the job as BS_BACKUP_NOT_FINISHED"
        lost = (
            "its finish is lost" if batches_whole else f"the report from batch {spooled} on is lost"
        )
        return (
            f"{lost}; the {spooled} batches before are kept in {self.job_spool.path} "
            f"({closed}) and are delivered by the next backup or `opencbs agent flush`"
        ), True

    def _backup(self) -> str:
        settings = self.bset.settings
        repo = self.repository or open_repository(
            self.storage, self.password, compression_level=settings.compression.level
        )
        clean = getattr(self.storage, "remove_stale_temporaries", None)
        if clean is not None:
            clean()  # what writes killed earlier left behind
        missing, _recovered = repo.reconcile_packs()
        self.chunks_lost = bool(missing)
        if missing:
            self.report.log(
                LogType.WARN,
                f"{len(missing)} packs are missing from the "
                "destination; their data is stored again; run a verify",
            )
        damaged: list[VerifyProblem] = []
        previous = find_previous_snapshot(
            repo, self.ref.set_id, self.ref.destination_id, damaged=damaged, check_tree=True
        )
        for problem in damaged:
            self.report.log(
                LogType.WARN,
                f"Skipped the damaged {problem.subject} ({problem.message}); run a verify",
            )
        if previous is None:
            self.report.log(LogType.INFO, "No previous backup: every entry is new")
            prev_items: Iterator[TreeItem] = iter(())
        else:
            self.report.log(LogType.INFO, f"Compared with the backup job {previous.meta.job_id}")
            prev_items = repo.load_snapshot(previous.id)[1]
        sources = list(settings.sources)
        if not sources:
            self.report.log(LogType.ERROR, "The backup set has no sources")
        scan = ScanProcess(
            sources, ScanFilter.of(settings.filters.include, settings.filters.exclude)
        )
        writer = repo.writer(compression_level=settings.compression.level)
        prev_chunks: dict[bytes, tuple[bytes, ...]] = {}
        result = classify_pairs(
            self._read_pairs(repo, writer, scan, prev_items, prev_chunks),
            lambda: scan.incomplete_dirs,
        )
        writer.flush()
        self._check_cancel()
        if result.sources_wanted and previous is not None:  # name the copies' sources
            result = resolve_sources(result, (e for e, _ in repo.load_snapshot(previous.id)[1]))
        self._send_changes(repo, result)
        meta = SnapshotMeta(
            time_ns=self.start_ms * 1_000_000,
            set_id=self.ref.set_id,
            destination_id=self.ref.destination_id,
            job_id=self.ref.job_id,
            hostname=socket.gethostname(),
            sources=scan.sources,
            parent_id=previous.id if previous is not None else None,
        )
        self._check_cancel()
        snapshot_id = repo.commit_snapshot(meta, self._snapshot_items(result))
        self.report.log(LogType.INFO, f"Snapshot {snapshot_id} committed")
        return snapshot_id

    # -- pass 1: pair scan and previous snapshot, read what needs reading ---------------------

    def _read_pairs(
        self,
        repo: Repository,
        writer: Writer,
        scan: ScanProcess,
        prev_items: Iterator[TreeItem],
        prev_chunks: dict[bytes, tuple[bytes, ...]],
    ) -> Iterator[tuple[Entry | None, Entry | None]]:
        """Yield ``(previous, current)`` pairs with every current regular file's content id
        known; spool the current entries with their chunk IDs for the snapshot.

        Small files to read (at most ``PREFETCH_MAX_FILE`` bytes) are announced to the kernel
        by the read-ahead helper process (``agent.readahead``) up to ``PREFETCH_FILES`` pairs
        and ``PREFETCH_BYTES`` bytes ahead of the pair being handled, so a cold page cache reads
        many at once, on the other core. Pairs are still handled, read, stored and yielded in
        walk order, one at a time, in this thread."""

        def previous_entries() -> Iterator[Entry]:
            for entry, chunk_ids in prev_items:
                prev_chunks[entry.path] = chunk_ids  # popped as soon as its pair is handled
                yield entry

        def current_entries() -> Iterator[Entry]:
            for item in scan:
                if isinstance(item, ScanWarning):
                    self.report.log(LogType.WARN, f"{display_path(item.path)}: {item.message}")
                    continue
                yield item

        pending: deque[_Pending] = deque()
        ahead = 0  # bytes announced for pending pairs
        file_type = EntryType.FILE
        readahead = ReadAhead()
        try:
            for prev, cur in pair_by_path(previous_entries(), current_entries()):
                chunks = prev_chunks.pop(prev.path, ()) if prev is not None else ()
                read = (
                    cur is not None
                    and cur.etype is file_type
                    and (
                        needs_content(prev, cur)
                        # content whose chunks were lost with a pack is read and stored again
                        or (self.chunks_lost and not all(map(repo.has_chunk, chunks)))
                    )
                )
                if read and cur is not None and cur.size <= PREFETCH_MAX_FILE:
                    while pending and ahead + cur.size > PREFETCH_BYTES:
                        item = pending.popleft()
                        ahead -= item.ahead
                        if item.ahead and not readahead.is_sent(item.ahead_no):
                            readahead.send()
                        yield from self._handle(repo, writer, item)
                    no = readahead.add(cur.path)
                    pending.append(_Pending(prev, cur, chunks, True, cur.size, no))
                    ahead += cur.size
                elif pending:
                    pending.append(_Pending(prev, cur, chunks, read))
                else:  # nothing ahead of it: handled at once
                    yield from self._handle(repo, writer, _Pending(prev, cur, chunks, read))
                    continue
                while len(pending) > PREFETCH_FILES:
                    item = pending.popleft()
                    ahead -= item.ahead
                    if item.ahead and not readahead.is_sent(item.ahead_no):
                        readahead.send()
                    yield from self._handle(repo, writer, item)
            readahead.send()
            while pending:
                yield from self._handle(repo, writer, pending.popleft())
        finally:
            readahead.close()

    def _handle(
        self, repo: Repository, writer: Writer, item: _Pending
    ) -> Iterator[tuple[Entry | None, Entry | None]]:
        """Store one pair's content (opened ahead or now), spool it and yield it."""
        if self.cancel.is_set():
            raise JobCancelled()
        prev, cur, chunks = item.prev, item.cur, item.chunks
        cur_chunks: tuple[bytes, ...] = ()
        if cur is not None:
            # None when unreadable without a previous version of the path: left out
            cur, cur_chunks = self._content(repo, writer, prev, chunks, cur, item)
        if cur is None:
            if prev is None:
                return
            self.missing_chunks[prev.path] = chunks
            if prev.etype is EntryType.FILE:
                self.sizes[prev.path] = chunk_sizes(repo.index, chunks)
            yield prev, None
            return
        self._spool(cur, cur_chunks)
        if self.progress_due <= time.monotonic():
            self._maybe_progress()
        yield prev, cur

    def _content(
        self,
        repo: Repository,
        writer: Writer,
        prev: Entry | None,
        prev_chunk_ids: tuple[bytes, ...],
        cur: Entry,
        item: _Pending,
    ) -> tuple[Entry | None, tuple[bytes, ...]]:
        """``cur`` with its content id and chunk IDs: reused (``item.read`` false: what
        ``needs_content`` said), or read now. A file that
        cannot be read gives the previous entry of its path (if a regular file) or ``None``."""
        if cur.etype is not EntryType.FILE:
            return cur, ()
        self.files_seen += 1
        self.bytes_seen += cur.size
        if not item.read:
            assert prev is not None  # needs_content is true without a previous file
            if _attributes_differ(prev, cur):
                self.sizes[cur.path] = chunk_sizes(repo.index, prev_chunk_ids)
            elif prev.device == cur.device:  # equal in every field, with the content id
                return prev, prev_chunk_ids
            return _with_content_id(cur, prev.content_id), prev_chunk_ids
        self.current = display_path(cur.path)
        try:
            result = _read_file(writer, cur, self.cancel)
        except _SoftError as exc:
            self.report.log(LogType.WARN, f"{display_path(cur.path)}: {exc}")
            if isinstance(exc, _Vanished):
                return None, ()  # gone: a deletion when it was backed up before
            if prev is not None and prev.etype is EntryType.FILE:
                return prev, prev_chunk_ids
            return None, ()
        self.files_done += 1
        self.bytes_done += result.original_size
        self.dedupe_original += result.original_size
        self.dedupe_saving += result.dedup_saved_bytes
        # stored_size may wait for this file's compression: read it once later files are in
        self.results.append((cur.path, result))
        if len(self.results) > _RESULTS_HELD:
            path, held = self.results.popleft()
            self.sizes[path] = FileSizes(held.stored_size, held.original_size)
        return _with_content_id(cur, result.content_id), result.chunk_ids

    def _spool(self, entry: Entry, chunk_ids: Sequence[bytes]) -> None:
        records = self.spooled
        records.append(
            (
                entry.path,
                entry.etype.value,
                entry.size,
                entry.mtime_ns,
                entry.ctime_ns,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.inode,
                entry.device,
                entry.link_target,
                entry.link_to_dir,
                entry.content_id,
                tuple(chunk_ids),
            )
        )
        if len(records) >= _SPOOL_RECORDS:
            _dump_block(self.spool, records)
            records.clear()

    # -- pass 2: report and snapshot ----------------------------------------------------------

    def _send_changes(self, repo: Repository, result: Classification) -> None:
        while self.results:
            path, held = self.results.popleft()
            self.sizes[path] = FileSizes(held.stored_size, held.original_size)
        for change in result.changes:
            self.counts[change.kind] += 1
            sizes = self.sizes.get(change.entry.path)
            self.report.add(file_entry(change, sizes))
        self.report.flush()
        self._maybe_progress(force=True)

    def _snapshot_items(self, result: Classification) -> Iterator[TreeItem]:
        """The spooled current entries merged, in walk order, with the carried ones."""
        carried = [(e, self.missing_chunks.get(e.path, ())) for e in result.carried]
        if self.spooled:
            _dump_block(self.spool, self.spooled)
            self.spooled.clear()
        spooled = _read_spool(self.spool)
        yield from heapq.merge(spooled, carried, key=lambda item: path_sort_key(item[0].path))

    # -- progress and cancel ------------------------------------------------------------------

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled()

    def _maybe_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < self.interval:
            return
        self.last_progress = now
        self.progress_due = now + self.interval
        snap = Progress(
            self.current, self.files_done, self.files_seen, self.bytes_done, self.bytes_seen
        )
        if self.report.delivered:  # one attempt: the next progress supersedes a lost one
            try:
                self.client.send_progress(
                    self.ref,
                    current_file_name=snap.current_file[:32_767],
                    current_file_count=snap.files_done,
                    total_file_count=snap.files_seen,
                    uploaded_file_size=snap.bytes_done,
                    total_file_size=snap.bytes_seen,
                )
            except (ServerUnreachable, AgentApiError) as exc:
                log.warning("progress not delivered: %s", exc.message)
        if self.progress_cb is not None:
            self.progress_cb(snap)


def _with_content_id(e: Entry, content_id: bytes | None) -> Entry:
    """``replace(e, content_id=content_id)`` without ``replace``'s per-field work."""
    return Entry(
        e.path,
        e.etype,
        e.size,
        e.mtime_ns,
        e.ctime_ns,
        e.mode,
        e.uid,
        e.gid,
        e.inode,
        e.device,
        e.link_target,
        e.link_to_dir,
        content_id,
    )


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
    the event is set and counts the bytes read."""

    def __init__(self, fd: int, cancel: threading.Event) -> None:
        self.fd = fd
        self.cancel = cancel
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self.cancel.is_set():
            raise JobCancelled()
        data = os.read(self.fd, size if size > 0 else _READ_SIZE)
        self.count += len(data)
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


def _read_file(writer: Writer, entry: Entry, cancel: threading.Event) -> FileResult:
    """Store the content of ``entry``; raises ``_SoftError`` when the file vanished, cannot be
    read, is no longer the regular file scanned, or changed while it was read."""
    fd = _open(entry)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or (before.st_size, before.st_mtime_ns) != (
            entry.size,
            entry.mtime_ns,
        ):
            raise _SoftError("changed between the scan and the read; not backed up")
        reader = _CancellableReader(fd, cancel)
        try:
            result = writer.add_file(reader)
        except OSError as exc:
            raise _SoftError(_why("cannot read", exc)) from exc
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or (
            reader.count != before.st_size
        ):
            raise _SoftError("changed while it was read; not backed up")
        return result
    finally:
        os.close(fd)


def _why(action: str, exc: OSError) -> str:
    return f"{action}: {exc.strerror or type(exc).__name__}"


def _dump_block(spool: IO[bytes], records: list[_SpoolRecord]) -> None:
    """One spool block: its length (8 bytes, little-endian), then ``marshal`` of the records
    (``marshal.load`` from a file reads in small pieces; ``loads`` of a whole block does not)."""
    data = marshal.dumps(records)
    spool.write(len(data).to_bytes(8, "little"))
    spool.write(data)


def _read_spool(spool: IO[bytes]) -> Iterator[TreeItem]:
    """The spooled entries with their chunk IDs, in the order spooled."""
    spool.flush()
    spool.seek(0)
    types = {t.value: t for t in EntryType}
    while True:
        head = spool.read(8)
        if not head:
            return
        records: list[_SpoolRecord] = marshal.loads(spool.read(int.from_bytes(head, "little")))
        for (
            path,
            etype,
            size,
            mtime,
            ctime,
            mode,
            uid,
            gid,
            inode,
            device,
            target,
            to_dir,
            content,
            chunk_ids,
        ) in records:
            yield (
                Entry(
                    path,
                    types[etype],
                    size,
                    mtime,
                    ctime,
                    mode,
                    uid,
                    gid,
                    inode,
                    device,
                    target,
                    to_dir,
                    content,
                ),
                chunk_ids,
            )
