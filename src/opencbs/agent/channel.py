"""A backup job's line to the server: one :class:`JobChannel` per job owns the client, the job's
reference, its report spool, the retry policy and the report stream; the rest of the job talks
to the server only through it (architecture.md, agent).

Starting (:meth:`JobChannel.start`): the job is spooled first (``agent.spool.JobStart``), then
started on the server (``RunVersion`` = opencbs' version; the server records ``FromIp``). A
start refused with 409 (a job of this set started in the same second: job IDs are start times
to the second, cbs-api.md §4) is tried again in the next second, up to ``START_ATTEMPTS`` times
in all, unless the start time was given. Errors that propagate (nothing was done):
``AgentApiError`` (a refused login, a set or destination the server does not have, a job of the
same second) and ``ServerUnreachable``
without a durable spool; ``SpoolError`` when the spool folder cannot be created or written.

Server failures (issue 4, "Lost server"): the server never stops the backup. Every report batch
is first written to the job's spool folder and then sent; batches and the finish are retried
(``agent.retry``); a progress report is tried once and a failure is only logged. When the server
cannot be reached at the start, or a batch or the finish still fails, the job goes on offline and
keeps its whole report (batches, then the finish record) in the spool; :meth:`JobChannel.finish`
then says it is not delivered, why and where it waits; the next job with the same spool (or
``opencbs agent flush``) delivers it first, complete and exactly once (``agent.delivery``). When
the agent's disk refuses the spool too (full, read-only) the report cannot be kept whole: the
batches spooled before stay (closed with an ``error`` entry saying the rest is lost when the
disk takes one more batch) and the fate says what is kept.

While the job runs on the server, its :class:`~opencbs.agent.heartbeat.Heartbeat` tells the
server from a thread of its own that the agent is alive, every ``heartbeat_interval`` seconds of
the start's answer, whatever the job is doing; it stops at the finish (a killed agent sends none,
and the server closes its job as ``BS_BACKUP_NOT_FINISHED`` after a few missed ones).

A job started while the server is unreachable gets its job ID from its start time (to the
second, in the job's zone): when that ID is taken by another spooled job of the set or by a
snapshot of the set and destination in the repository, the job starts at the first whole second
after it whose ID is free (waiting for it when it is in the future, as a start refused with 409
does), so that the server's job ID and the snapshot's are the same after delivery. A job the
agent cannot know of (run elsewhere, or with no snapshot) may still take the ID: delivery then
moves the start later (``agent.delivery``) and the snapshot keeps the agent's ID.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import tzinfo
from pathlib import Path

from opencbs import __version__
from opencbs.agent.client import (
    AgentApiError,
    AgentClient,
    RemoteSet,
    ServerUnreachable,
    StartedJob,
)
from opencbs.agent.heartbeat import Heartbeat
from opencbs.agent.job_values import JobOptions, Progress
from opencbs.agent.report import ReportStream
from opencbs.agent.report_entries import end_line, log_entry
from opencbs.agent.retry import call_with_retries
from opencbs.agent.spool import FinishRecord, JobSpool, JobStart, SpoolError, pending_spools
from opencbs.agent.targets import open_repository
from opencbs.destinations.base import DestinationError
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.repository import Repository
from opencbs.model.jobs import JobRef
from opencbs.model.storage import StorageQuota
from opencbs.reports.timefmt import job_id_at, local_zone
from opencbs.reports.vocabulary import JobMode, JobStatus, LogType
from opencbs.reports.wording import plural

__all__ = ["JobChannel", "ReportFate", "Started"]

log = logging.getLogger(__name__)

#: Starts of one job on the server, each in the next second after a 409 (a job of the set
#: started in that second already: several jobs of a set started at once).
START_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class ReportFate:
    """What became of a finished job's report: ``delivered`` to the server; else ``error``
    says why and ``spool`` names the folder that keeps it for a later delivery (``""`` when
    none does); ``lost``: it could be neither delivered nor spooled whole (``error`` says what
    part is kept)."""

    delivered: bool
    error: str = ""
    spool: str = ""
    lost: bool = False


@dataclass(frozen=True, slots=True)
class Started:
    """A job started (:meth:`JobChannel.start`): its channel, its start time (epoch ms; the
    snapshot's time) and the repository when it was opened already (``None``: not yet)."""

    channel: JobChannel
    start_ms: int
    repository: Repository | None


class JobChannel:
    """The server side of one running job (module docstring): ``client``, the job ``ref``, its
    ``spool`` (``agent.spool.JobSpool``) and the ``report`` stream. ``offline``: why the job
    could not be started on the server (``""``: it was). ``durable``: the spool outlives the
    job (the agent's report spool, not a temporary folder). Retries wait on ``cancel``.

    ``log``, ``add`` and ``flush`` are the report stream's (queue a log entry stamped now, queue
    an entry, send the queued ones as a batch)."""

    def __init__(
        self,
        client: AgentClient,
        ref: JobRef,
        spool: JobSpool,
        *,
        batch_size: int,
        retry_delays: tuple[float, ...],
        cancel: threading.Event,
        offline: str = "",
        durable: bool = False,
    ) -> None:
        self.client = client
        self.ref = ref
        self.spool = spool
        self.retry_delays = retry_delays
        self.cancel = cancel
        self.durable = durable
        self.offline = offline
        #: The user's quota the server gave at the start (``None``: offline, or no answer).
        self.quota: StorageQuota | None = None
        #: The job's heartbeat while it runs on the server (``None``: offline).
        self.heartbeat: Heartbeat | None = None
        #: ``info`` entries said right after the start entry (:meth:`begin`).
        self.notes: list[str] = []
        self.report = ReportStream(
            client,
            ref,
            batch_size,
            retry_delays=retry_delays,
            wait=cancel.wait,
            spool=spool,
            online=not offline,
            offline_reason=offline,
            background=True,
        )
        self.log = self.report.log
        self.add = self.report.add
        self.flush = self.report.flush

    @classmethod
    def start(
        cls, options: JobOptions, bset: RemoteSet, *, root: Path, cancel: threading.Event
    ) -> Started:
        """Spool the job under ``root`` and start it on the server, or offline when the server
        cannot be reached and the spool is durable (``options.spool_dir``); module docstring.
        Raises ``AgentApiError``, ``ServerUnreachable``, ``SpoolError``."""
        o = options
        start_ms = o.start_time_ms if o.start_time_ms is not None else time.time_ns() // 1_000_000
        zone = o.zone or local_zone()
        durable = o.spool_dir is not None
        repository = o.repository
        for attempt in range(1, START_ATTEMPTS + 1):
            record = JobStart(
                o.set_id, o.destination_id, start_ms, mode=o.mode.value, run_version=__version__
            )
            spool = JobSpool.create(root, record)
            try:
                ref, offline, job = _start_on_server(o.client, spool, durable=durable, zone=zone)
                if offline:  # the agent names the job: an ID no job it knows of has
                    if repository is None:
                        repository = _try_open_repository(o, bset)
                    start_ms = _free_offline_start(spool, root, repository, zone)
                    ref = replace(ref, job_id=job_id_at(start_ms, zone))
                break
            except AgentApiError as exc:
                spool.remove()
                if exc.status != 409 or o.start_time_ms is not None or attempt == START_ATTEMPTS:
                    raise
                # a job of this set started in this very second (job IDs are start times to
                # the second, cbs-api.md §4): start in the next second instead
                start_ms = (start_ms // 1000 + 1) * 1000
                time.sleep(max(0.0, start_ms / 1000 - time.time()))
            except BaseException:
                spool.remove()
                raise
        channel = cls(
            o.client,
            ref,
            spool,
            batch_size=o.batch_size,
            retry_delays=tuple(o.retry_delays),
            cancel=cancel,
            offline=offline,
            durable=durable,
        )
        if job is not None:  # started on the server: it hears from the agent until the end
            channel.quota = job.quota
            channel.heartbeat = Heartbeat(o.client, ref, job.heartbeat_interval).start()
        return Started(channel, start_ms, repository)

    def stop_heartbeat(self) -> None:
        """Stop the job's heartbeat (at its finish, or when the job ends otherwise)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def begin(self) -> None:
        """Send the start log entry ``Start [opencbs <version>]`` and the :attr:`notes` at once
        (before any progress report)."""
        self.log(LogType.START, f"Start [opencbs {__version__}]")
        for note in self.notes:
            self.log(LogType.INFO, note)
        self.flush()
        self.report.join()

    def send_progress(self, snap: Progress) -> None:
        """Record progress on the server (GetBackupJobProgress, cbs-api.md §7): one attempt,
        only while the report is delivered (the next progress supersedes a lost one)."""
        if not self.report.delivered:
            return
        try:
            self.client.send_progress(
                self.ref,
                current_file_name=snap.current_file[:32_767],
                current_file_count=snap.files_done,
                total_file_count=snap.files_seen,
                uploaded_file_size=snap.bytes_done,
                total_file_size=snap.bytes_seen,
                uploaded_bytes=snap.bytes_stored,
            )
        except (ServerUnreachable, AgentApiError) as exc:
            log.debug("progress not delivered: %s", exc.message)

    def finish(
        self,
        status: JobStatus,
        *,
        dedupe_original_size: int,
        dedupe_saving: int,
        uploaded_bytes: int | None = None,
    ) -> ReportFate:
        """End the report (the ``end`` log entry), spool the finish and, when every batch
        reached the server, finish the job there (retried); returns what became of the report
        (module docstring). Sizes in bytes; ``uploaded_bytes`` what the job wrote to the
        destination (``UploadSize``). Never raises for the server."""
        end_ms = time.time_ns() // 1_000_000  # the job's end, also when delivered later
        self.log(LogType.END, end_line(status))
        self.flush()
        self.report.drain()  # every batch spooled and sent (or failed) before the finish
        finish = FinishRecord(
            status, dedupe_original_size, dedupe_saving, end_ms, uploaded_bytes=uploaded_bytes
        )
        spool_failure = self.report.spool_failure
        if spool_failure is None:
            try:
                self.spool.write_finish(finish)
            except SpoolError as exc:
                log.debug("the job's finish cannot be spooled: %s", exc)  # in the fate
                spool_failure = str(exc)
        if self.report.delivered:  # finishing a job whose report misses a batch would lie
            self.stop_heartbeat()  # the finish is the last sign of life
            try:
                call_with_retries(
                    lambda: self.client.finish_job(
                        self.ref,
                        status,
                        dedupe_original_size=dedupe_original_size,
                        dedupe_saving=dedupe_saving,
                        end_time=end_ms,
                        uploaded_bytes=uploaded_bytes,
                    ),
                    "finish",
                    self.retry_delays,
                    self.cancel.wait,
                )
            except (ServerUnreachable, AgentApiError) as exc:
                self.report.fail(f"finish: {exc.message}")
        self.stop_heartbeat()
        return self._fate(finish, spool_failure)

    def _fate(self, finish: FinishRecord, spool_failure: str | None) -> ReportFate:
        """Release the spool (removed when delivered or not durable; else kept, and closed as
        well as the disk allows) and say what became of the report."""
        error = self.report.failure or ""
        if self.report.delivered or not self.durable:
            self.spool.remove()  # delivered; or not durable (lost with the temporary dir)
            return ReportFate(self.report.delivered, error)
        where = str(self.spool.path)
        if spool_failure is None:
            self.spool.close()  # delivered later: module docstring
            return ReportFate(
                False,
                f"{error}; the report is spooled in {where} and is delivered by the next "
                "backup or `opencbs agent flush`",
                where,
            )
        # neither delivered nor spooled whole: what was spooled is kept
        kept, lost = self._close_lost_report(finish, spool_failure)
        self.spool.close()
        if lost:
            error = (
                f"the job report could not be spooled on the agent ({spool_failure}) "
                f"while it could not be delivered ({error}); {kept}"
            )
        else:
            error += f"; {kept}"
        return ReportFate(False, error, where, lost)

    def _close_lost_report(self, finish: FinishRecord, why: str) -> tuple[str, bool]:
        """The report could not be spooled whole (``why``): spool, after the batches it holds,
        an ``error`` and an ``end`` entry saying so and the finish, when the disk takes them now
        (delivery then closes the job with its real status); else delivery closes it as
        ``BS_BACKUP_NOT_FINISHED`` (``agent.delivery``). Returns what is kept, for a person,
        and whether part of the report is lost (``False`` only when just the finish had failed
        and is spooled now)."""
        spooled = self.report.batches_spooled
        batches_whole = self.report.spool_failure is None  # only the finish failed
        try:
            if not batches_whole:
                self.spool.write_batch(
                    self.spool.batch_count(),
                    [
                        log_entry(
                            LogType.ERROR,
                            f"Report incomplete: the agent could not spool "
                            f"batch {spooled} and later of it ({why})",
                        ),
                        log_entry(LogType.END, end_line(finish.status)),
                    ],
                )
            self.spool.write_finish(finish)
            if batches_whole:
                return (
                    f"the report is spooled in {self.spool.path} and is delivered by "
                    "the next backup or `opencbs agent flush`"
                ), False
            closed = "with a note that the rest is lost"
        except SpoolError as exc:
            log.debug("the job report cannot be closed in the spool: %s", exc)  # in the fate
            closed = "the server will close the job as BS_BACKUP_NOT_FINISHED"
        lost = (
            "its finish is lost" if batches_whole else f"the report from batch {spooled} on is lost"
        )
        be = "is" if spooled == 1 else "are"
        return (
            f"{lost}; the {plural(spooled, 'batch', 'batches')} before {be} kept in "
            f"{self.spool.path} ({closed}) and {be} delivered by the next backup or "
            "`opencbs agent flush`"
        ), True


def _start_on_server(
    client: AgentClient, spool: JobSpool, *, durable: bool, zone: tzinfo
) -> tuple[JobRef, str, StartedJob | None]:
    """Start the spooled job on the server: its reference, ``""`` and the server's answer (the
    user's quota, the heartbeat interval); or, when the server cannot be reached and the spool
    is ``durable``, a reference with the job ID the start time gives in ``zone``, why the job
    runs offline (its start is delivered later with the spool) and ``None``.
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
        # said once, by the caller (the sets as last seen, or the report's fate at the end)
        log.debug("server unreachable at the job start; the report is spooled: %s", exc.message)
        ref = JobRef(r.set_id, r.destination_id, job_id_at(r.start_ms, zone))
        return ref, f"the server could not be reached at the start ({exc.message})", None
    spool.set_job_id(job.ref.job_id)
    return job.ref, "", job


def _try_open_repository(options: JobOptions, bset: RemoteSet) -> Repository | None:
    """The repository (created on first use), or ``None`` when it cannot be opened (the job
    then meets the error itself and reports it)."""
    try:
        return open_repository(
            options.storage,
            options.password,
            compression_level=bset.settings.compression.level,
        )
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
        log.debug(
            "job ID %s is taken: the job starts at %s",
            job_id_at(first, zone),
            job_id_at(start_ms, zone),
        )
        spool.set_start_ms(start_ms)
        time.sleep(max(0.0, start_ms / 1000 - time.time()))
    return start_ms
