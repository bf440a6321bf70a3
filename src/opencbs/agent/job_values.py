"""The values of one backup job (``agent.job.run_backup``): what it is given
(:class:`JobOptions`), what it tells while it runs (:class:`Progress` to ``on_progress``,
:class:`ChangeEvent` to ``on_change``) and what it gives back (:class:`JobOutcome`).

Frozen values, shared by the job's modules (``agent.channel``, ``agent.backup``,
``agent.reading``) and its callers (the CLI, quickstart, a scheduler); ``agent.job`` exports
them with ``run_backup``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import tzinfo
from pathlib import Path

from opencbs.agent.client import AgentClient
from opencbs.agent.delivery import Delivery
from opencbs.agent.report import JobMessage
from opencbs.agent.retry import DEFAULT_RETRY_DELAYS
from opencbs.destinations.base import Storage
from opencbs.engine.classify import Reason
from opencbs.engine.locks import LockTiming
from opencbs.engine.repository import Repository
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import JobMode, JobStatus, ReportList

__all__ = [
    "JOB_BATCH_SIZE",
    "PROGRESS_INTERVAL",
    "ChangeEvent",
    "JobCancelled",
    "JobMessage",
    "OnMessage",
    "JobOptions",
    "JobOutcome",
    "OnChange",
    "OnProgress",
    "Progress",
    "StopEvent",
    "stop_status",
]

#: Seconds between two progress reports (to the server and to ``on_progress``).
PROGRESS_INTERVAL = 0.5
#: Report entries per batch of a job (~5000: fewer round trips and spool fsyncs; the agent API
#: takes at most 10,000).
JOB_BATCH_SIZE = 5000


class JobCancelled(Exception):
    """Raised inside the job when its ``cancel`` event is set (never escapes ``run_backup``:
    the job ends with :func:`stop_status` of the event, ``BS_STOP_BY_USER`` unless a
    :class:`StopEvent` says otherwise)."""


class StopEvent(threading.Event):
    """A job's ``cancel`` event that also says why it stopped: :meth:`stop` with
    ``BS_STOP_BY_SCHEDULER`` at a schedule's stop time (``opencbs backup --stop-at``); a plain
    ``set()`` (Ctrl-C, SIGTERM) is ``BS_STOP_BY_USER``. The first reason wins."""

    def __init__(self) -> None:
        super().__init__()
        self.status = JobStatus.STOP_BY_USER
        self._guard = threading.Lock()

    def stop(self, status: JobStatus) -> None:
        """Stop the job with ``status``, unless it is stopping already."""
        with self._guard:
            if not self.is_set():
                self.status = status
                self.set()


def stop_status(cancel: threading.Event) -> JobStatus:
    """The final status of a job its ``cancel`` event stopped (:class:`StopEvent`)."""
    return cancel.status if isinstance(cancel, StopEvent) else JobStatus.STOP_BY_USER


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job stands: ``current_file`` (display path), regular files read so far and seen
    so far by the scan, bytes read so far and bytes of the files seen so far; of those seen,
    the files (and their bytes) whose content is unchanged, not read; ``scan_finished``: the
    scan has ended, so the ``*_seen`` counts are the job's totals. ``bytes_stored``: bytes the
    job has written to the destination so far (packs and their index objects, compressed and
    after deduplication: ``Repository.stored_bytes``), what its ``UploadSize`` says so far."""

    current_file: str
    files_done: int
    files_seen: int
    bytes_done: int
    bytes_seen: int
    files_unchanged: int = 0
    bytes_unchanged: int = 0
    scan_finished: bool = False
    bytes_stored: int = 0


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of the job's report (cbs-api.md §5), as it is sent: the file list (``kind``),
    the entry's raw ``path``, why it was classified so (``reason``, ``engine.classify``) and what
    differs, for a person (``detail``: ``from <path>`` of a move or copy, or the attributes
    that changed, e.g. ``size 4→12, mtime_ns …``; ``""`` when there is nothing more)."""

    kind: ReportList
    path: bytes
    reason: Reason
    detail: str = ""

    @property
    def why(self) -> str:
        """The reason's text, with the detail in parentheses when there is one."""
        return f"{self.reason.text} ({self.detail})" if self.detail else self.reason.text


#: Called with each :class:`ChangeEvent` (``run_backup(on_change=…)``).
OnChange = Callable[[ChangeEvent], None]
#: Called with a :class:`Progress` at most every ``progress_interval`` seconds.
OnProgress = Callable[[Progress], None]
#: Called with each ``warn`` and ``error`` log entry of the job as it happens.
OnMessage = Callable[[JobMessage], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """What one backup job needs: set ``set_id`` to destination ``destination_id`` (both as
    the server names them) through ``client``, content stored in ``storage`` under the
    repository ``password``.

    ``mode``: manual, scheduled or from the server. ``start_time_ms`` (epoch ms, default now)
    gives the job ID (cbs-api.md §4; one job per set, destination and second).
    ``batch_size``: report entries per batch. ``progress_interval``: seconds between progress
    reports to ``on_progress``; the server gets one at most every ``PROGRESS_INTERVAL``.
    ``retry_delays``: seconds before each retry of a batch or the finish (``agent.retry``).
    ``spool_dir``: the agent's report spool of this server and user (``agent.spool``; ``None``:
    a temporary one, lost with a lost server). ``zone``: the zone of a job ID given while the
    server is away (default the machine's). ``repository``: the repository of ``storage``
    already opened with ``password`` (saves deriving its key a second time; ``None``: opened, or
    created, by the job). ``state_dir``: the agent's ``data_dir``, where it remembers each
    repository's snapshot list to notice a rollback
    (``engine.manifest``; ``None``: not remembered, the list is still checked by itself).
    ``count_totals``: count the job's files and bytes ahead in another walk
    (``engine.scan_count``), so progress has its totals (and an ETA) early. ``lock_timing``:
    how long the job waits for a prune's lock on the repository (``engine.locks``).
    ``prune_grace``: seconds a pack the retention run after the job condemns waits before it is
    deleted (``engine.prune``; the setting ``prune_grace``). ``retention_after``: whether the
    set's retention policy runs after the backup (a schedule's ``retention_after``); ``None``:
    as the set says (``Retention.after_backup``)."""

    client: AgentClient
    set_id: str
    destination_id: str
    storage: Storage
    password: str | bytes
    mode: JobMode = JobMode.MANUAL
    start_time_ms: int | None = None
    batch_size: int = JOB_BATCH_SIZE
    progress_interval: float = PROGRESS_INTERVAL
    count_totals: bool = False
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS
    spool_dir: Path | None = None
    zone: tzinfo | None = None
    repository: Repository | None = None
    state_dir: Path | None = None
    lock_timing: LockTiming | None = None
    prune_grace: float = 86400.0
    retention_after: bool | None = None


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """The result of one job: the server's job (``ref``), its final ``status``, the snapshot
    committed (``None`` unless the status is a success), the number of entries of each file list
    (``counts``), the ``warn``/``error`` log entries, dedupe figures (bytes), ``uploaded_bytes``
    (what the job wrote to the destination: its ``UploadSize``, cbs-api.md §7; ``JobResult``)
    and, for a job that did not complete, why (``message``).

    ``report_delivered`` is ``False`` when the server could not be told (a batch or the finish
    failed after its retries); ``report_error`` then says why, and ``report_spool`` names the
    spool folder holding the whole report for a later delivery (``""`` when none does).
    ``flushed``: the spooled reports of earlier jobs delivered (or not) before this one. The
    backup itself is what ``status`` and ``snapshot_id`` say: a committed snapshot is a good
    backup either way. ``report_lost``: the report could be neither delivered nor spooled whole
    (the agent's disk refused it while the server was away): ``report_error`` says so and what
    part is kept (in ``report_spool``). ``ran_offline``: the job could not be started on the
    server (it ran with its report spooled from the start; ``report_error`` says why).

    ``messages``: the job's ``warn`` and ``error`` log entries for a person, in order, the
    first ``agent.report.MAX_MESSAGES`` of them (``warnings`` and ``errors`` count them all).
    ``message`` says how the job ended for a person: why it did not complete, or, for a job
    with warnings or errors, how many and the first one's text; ``""`` for a clean success."""

    ref: JobRef
    status: JobStatus
    snapshot_id: str | None
    _: KW_ONLY
    counts: dict[ReportList, int] = field(default_factory=dict)
    warnings: int = 0
    errors: int = 0
    dedupe_original_size: int = 0
    dedupe_saving: int = 0
    uploaded_bytes: int = 0
    message: str = ""
    report_delivered: bool = True
    report_error: str = ""
    report_spool: str = ""
    flushed: tuple[Delivery, ...] = ()
    report_lost: bool = False
    ran_offline: bool = False
    messages: tuple[JobMessage, ...] = ()
