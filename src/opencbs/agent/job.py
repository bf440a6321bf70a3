"""One backup job: the entry point the CLI, quickstart and a scheduler call
(:func:`run_backup`; architecture.md, agent).

A job delivers the reports spooled by earlier jobs first (``agent.delivery``: the server gets
them in job order), reads its set from the server (or, when it cannot be reached, as remembered
in the report spool: ``agent.targets.backup_set``), starts the job on the server through its
channel (``agent.channel``: the job's one line to the server, which also keeps the job's report
in the spool until the server has it), runs the backup (``agent.backup``: scan, read, classify,
report, commit the snapshot) and finishes the report with the final status and dedupe figures.
A committed snapshot is recorded in the agent's record of accepted targets (``agent.trust``:
the folder held this set's backups, so a later job refuses it missing or empty).

What it tells while it runs goes to callbacks, never to a log format (style.md §20):
``on_progress`` gets a :class:`Progress` at most every ``progress_interval`` seconds,
``on_change`` a :class:`ChangeEvent` for each change of the report (file list, path, reason and
what differs), ``on_message`` a :class:`JobMessage` for each warning and error of the job as it
is logged.

With a report spool (``JobOptions.spool_dir``) the job holds its set's lock from the start
(``agent.set_lock``): a second job of the set on this agent is refused with ``JobRunning``
(naming the process that runs the first) before anything reaches the server. Earlier jobs of
the set whose agent stopped before their end (killed) are said in this job's report, an
``info`` entry each naming how the server has them (``Delivery.abandoned``).

Errors that propagate (nothing was done): ``JobRunning``, ``SetLockError`` (the lock cannot
be created); ``AgentApiError`` from reading the set or starting the
job (a refused login, a set or destination the server does not have, a job of the same second),
``ServerUnreachable`` when there is no spool or remembered set to fall back on, and
``SpoolError`` when the spool folder cannot be created or written at the start. Everything else
— the destination failing, the server going away, the agent's disk filling — is in the
:class:`JobOutcome` (``agent.backup``, ``agent.channel``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from pathlib import Path

from opencbs.agent.after_backup import after_backup
from opencbs.agent.backup import BackupJob, JobResult
from opencbs.agent.channel import JobChannel, ReportFate
from opencbs.agent.delivery import Delivery, deliver_pending
from opencbs.agent.job_values import (
    ChangeEvent,
    JobCancelled,
    JobMessage,
    JobOptions,
    JobOutcome,
    OnChange,
    OnMessage,
    OnProgress,
    Progress,
)
from opencbs.agent.set_lock import set_lock
from opencbs.agent.spool import SpoolError
from opencbs.agent.storage import storage_key
from opencbs.agent.targets import backup_set
from opencbs.agent.trust import TrustFileError, record_stored
from opencbs.reports.wording import plural

log = logging.getLogger(__name__)

__all__ = [
    "ChangeEvent",
    "JobCancelled",
    "JobMessage",
    "JobOptions",
    "JobOutcome",
    "OnChange",
    "OnMessage",
    "OnProgress",
    "Progress",
    "run_backup",
]


def run_backup(
    options: JobOptions,
    *,
    on_change: OnChange | None = None,
    on_progress: OnProgress | None = None,
    on_message: OnMessage | None = None,
    cancel: threading.Event | None = None,
) -> JobOutcome:
    """Run one backup job (``options``: :class:`JobOptions`) and return its
    :class:`JobOutcome`; rules and errors in the module docstring.

    With ``options.spool_dir`` (the agent's report spool, ``agent.spool``) the reports spooled
    there are delivered first (oldest first; :attr:`JobOutcome.flushed`); this job's report is
    spooled there before it is sent, and when the server cannot be reached (at the start or
    later) the backup goes on and the report stays there (``report_spool``) for a later
    delivery. The set then comes from the copy remembered there, and the job ID from the start
    time in ``options.zone`` (the server's zone may differ, so the snapshot's job ID may differ
    from the job ID the server gives at delivery), moved to a later second when the agent knows
    of a job with that ID (``agent.channel``). Without a spool dir the report is spooled in a
    temporary folder and a lost server loses it; the server failing later gives
    ``report_delivered=False``. ``cancel`` set stops the job (``BS_STOP_BY_USER``)."""
    client = options.client
    cancel = cancel if cancel is not None else threading.Event()
    flushed: tuple[Delivery, ...] = ()
    bset = backup_set(client, options.set_id, options.spool_dir)
    with contextlib.ExitStack() as stack:
        root = options.spool_dir
        if root is None:  # not durable: removed with the run
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opencbs-")))
        else:  # one job of a set at a time; then earlier reports first, in order
            stack.enter_context(set_lock(root, bset.id, set_name=bset.name))
            flushed = tuple(deliver_pending(client, root, retry_delays=options.retry_delays))
        started = JobChannel.start(options, bset, root=root, cancel=cancel)
        stack.callback(started.channel.stop_heartbeat)
        started.channel.report.on_message = on_message
        _log_abandoned(started.channel, flushed)
        job = BackupJob(
            options,
            channel=started.channel,
            bset=bset,
            start_ms=started.start_ms,
            repository=started.repository,
            cancel=cancel,
            on_change=on_change,
            on_progress=on_progress,
        )
        result = job.run()
        if result.snapshot_id is not None:
            _record_stored(options, bset.id)
            if job.repository is not None:
                result = after_backup(
                    options,
                    bset,
                    job.repository,
                    channel=started.channel,
                    result=result,
                    newest_use=job.newest_use,
                )
        fate = started.channel.finish(
            result.status,
            dedupe_original_size=result.dedupe_original_size,
            dedupe_saving=result.dedupe_saving,
            uploaded_bytes=result.uploaded_bytes,
        )
        return _outcome(started.channel, result, fate, flushed)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: ExitStack may swallow)


def _log_abandoned(channel: JobChannel, flushed: tuple[Delivery, ...]) -> None:
    """Say in the job's report (an ``info`` entry each, after its start entry) how the
    earlier jobs of the same set and destination that did not finish ended
    (``Delivery.abandoned``: their agent stopped before their end), as the server has them
    now."""
    ref = channel.ref
    for d in flushed:
        if d.abandoned and (d.set_id, d.destination_id) == (ref.set_id, ref.destination_id):
            line = d.abandoned_line
            channel.notes.append(line[:1].upper() + line[1:])


def _record_stored(options: JobOptions, set_id: str) -> None:
    """Record that set ``set_id`` has a snapshot in the job's destination (``agent.trust``:
    its folder or S3 location), with a report spool; a record that cannot be written is
    logged, not fatal (the backup is stored)."""
    place = storage_key(options.storage)
    if options.spool_dir is None or place is None:
        return
    try:
        record_stored(options.spool_dir, set_id, place)
    except (TrustFileError, SpoolError) as exc:
        log.warning("cannot record the backup in %s: %s", options.spool_dir, exc)


def _outcome(
    channel: JobChannel, result: JobResult, fate: ReportFate, flushed: tuple[Delivery, ...]
) -> JobOutcome:
    """The outcome of a finished job: its body's ``result``, its report's ``fate`` and the
    earlier reports delivered first; ``message`` as ``JobOutcome`` says."""
    report = channel.report
    return JobOutcome(
        channel.ref,
        result.status,
        result.snapshot_id,
        counts=result.counts,
        warnings=report.warnings,
        errors=report.errors,
        dedupe_original_size=result.dedupe_original_size,
        dedupe_saving=result.dedupe_saving,
        uploaded_bytes=result.uploaded_bytes,
        message=result.message or _summary(report.warnings, report.errors, report.messages),
        report_delivered=fate.delivered,
        report_error=fate.error,
        report_spool=fate.spool,
        flushed=flushed,
        report_lost=fate.lost,
        ran_offline=bool(channel.offline),
        messages=tuple(report.messages),
    )


def _summary(warnings: int, errors: int, messages: list[JobMessage]) -> str:
    """How a completed job with ``warnings`` and ``errors`` (log entries) went, for a person:
    ``completed with 1 warning: <its text>``, ``completed with 3 warnings and 1 error; the
    first: <text>``; ``""`` without either."""
    counted = [plural(n, word) for n, word in ((warnings, "warning"), (errors, "error")) if n]
    if not counted:
        return ""
    said = f"completed with {' and '.join(counted)}"
    if not messages:
        return said
    if warnings + errors == 1:
        return f"{said}: {messages[0].text}"
    return f"{said}; the first: {messages[0].text}"
