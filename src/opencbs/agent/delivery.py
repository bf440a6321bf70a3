"""Delivering the job reports spooled on the agent's disk (``agent.spool``) to the server:
complete and exactly once (issue 4, "Lost server").

Delivery (:func:`deliver_job`, :func:`deliver_pending`) relies on the agent API's idempotence
(``opencbs.api.agent``): a batch number the server has is answered ``stored: false``; a repeated
finish with the same status and figures answers the job. It asks the server where the job stands
(``GET …/jobs/{id}``: ``last_batch_no``) and sends only the batches after it, then the finish.
A server restart mid-delivery is a ``ServerUnreachable``: the spool stays, and the next delivery
resumes where the server's record says — nothing is lost, nothing is stored twice. Calls are
retried by ``agent.retry``.

Starting a job is not idempotent: its ID is its start time to the second (cbs-api.md §4). The
spool records the start time, and delivery starts a never-started job with it (so mode, start
time and job ID are those of the real run). When the answer to a start is lost, the repeated
start answers 409 "backup job <ID> exists"; the job of that ID is ours when its ``start_time``
equals the recorded one to the millisecond. Else the server has another job of that second (a
job run while the server was away avoids the job IDs it knows of, those of the set's spooled
jobs and snapshots (``agent.channel``), but not one it cannot know: a job run elsewhere, or one
that committed no snapshot): the start moves one second later, at most ``_MAX_SHIFT_S`` times,
each new start time recorded in the spool before it is sent (so a lost answer is still
recognised), with a warning naming both IDs. The report is then dated up to that many seconds
late, and the snapshot keeps the job ID the agent gave it offline.

When the server closed the job (its sweeper closes a job without a sign of life for
``job_idle_timeout`` as ``BS_BACKUP_NOT_FINISHED``, after which it refuses entries: 409), the
spool is dropped with a warning naming the job and how many batches the server never got: the
server refuses more entries, and keeping the spool would only repeat the warning on every run.
The same for a set or destination the server no longer has (404). A spool without a finish
record whose lock is free belongs to a job whose agent died (SIGKILL, power loss) or could not
spool the rest of the report (disk full): delivery adds an ``end`` log entry and finishes it as
``BS_BACKUP_NOT_FINISHED`` (cbs-api.md §4).

Concurrency: a delivery takes a job folder's lock without waiting and skips a folder another
process holds, so two agents (a backup run and ``opencbs agent flush``) never deliver the same
job at once: ``running`` when it has no finish record (its job holds the folder while it runs:
another backup running now, not an earlier report), else ``busy`` (another process is
delivering it).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from opencbs.agent.client import AgentApiError, AgentClient, ServerUnreachable, existing_job_id
from opencbs.agent.report_entries import log_entry
from opencbs.agent.retry import DEFAULT_RETRY_DELAYS, call_with_retries
from opencbs.agent.spool import (
    FinishRecord,
    JobSpool,
    SpoolError,
    adopt_legacy,
    legacy_spools,
    pending_spools,
)
from opencbs.agent.targets import list_sets
from opencbs.model.jobs import JobRecord, JobRef
from opencbs.reports.vocabulary import JobMode, JobStatus, LogType
from opencbs.reports.wording import plural

__all__ = [
    "Delivery",
    "DeliveryState",
    "Flush",
    "deliver_job",
    "deliver_pending",
    "flush_reports",
    "has_pending",
]

log = logging.getLogger(__name__)

_MAX_SHIFT_S = 60  #: how many seconds delivery may move a start whose job ID is taken


class DeliveryState(Enum):
    """What became of a spooled report."""

    DELIVERED = "delivered"  #: the server has it all; the folder is removed
    PENDING = "pending"  #: the server is unreachable (or failing): the folder stays
    DROPPED = "dropped"  #: the server refuses it (job closed, set gone): folder removed
    RUNNING = "running"  #: its job is still running (it holds the folder): not touched
    BUSY = "busy"  #: another process is delivering it (``agent flush``): not touched


@dataclass(frozen=True, slots=True)
class Delivery:
    """The result of delivering one spooled job: ``state``, the job (``job_id`` ``None`` when it
    never reached the server), batches sent now, and a sentence for a person (``message``)."""

    folder: str
    set_id: str
    destination_id: str
    job_id: str | None
    state: DeliveryState
    batches_sent: int = 0
    message: str = ""
    start_ms: int = 0  #: the job's recorded start time, epoch ms
    #: The job did not finish: its agent stopped before its end (killed, the machine down)
    #: or could not spool the rest of its report; ``status`` is how the server has it now
    #: (``""`` when not known: the server unreachable).
    abandoned: bool = False
    status: str = ""

    @property
    def abandoned_line(self) -> str:
        """For a person, of an abandoned job: ``the previous job <ID> of this backup set did
        not finish: …`` (how the server has it, and what of its report it lacks); a job
        never started on the server is named by its start instead of an ID."""
        if self.job_id is not None:
            name = f"the previous job {self.job_id} of this backup set"
        else:
            name = f"the previous job of this backup set ({self.job_name})"
        said = (
            f"{name} did not finish: its agent stopped before the job "
            "ended (killed, or its machine stopped)"
        )
        if self.state is DeliveryState.DROPPED:
            return f"{said}; {self.message}"
        if self.status:
            return f"{said}; the server has it as {self.status}"
        return f"{said}; {self.message}"

    @property
    def job_name(self) -> str:
        """``job <ID>``, or, for a job never started on the server, ``the offline job of
        <local start time>`` (``the job started at <local start time>`` while it runs: it may
        be starting on the server now) (for messages)."""
        if self.job_id is not None:
            return f"job {self.job_id}"
        when = datetime.fromtimestamp(self.start_ms / 1000).astimezone()
        shown = when.strftime("%Y-%m-%d %H:%M:%S")
        if self.state is DeliveryState.RUNNING:
            return f"the job started at {shown}"
        return f"the offline job of {shown}"


Retry = Callable[[Callable[[], Any], str], Any]


class _Dropped(Exception):
    """The server will never take this report (private)."""


def _retrying(
    delays: Sequence[float], wait: Callable[[float], object], *, connect_once: bool = False
) -> Retry:
    def call(fn: Callable[[], Any], what: str) -> Any:
        return call_with_retries(fn, what, delays, wait, connect_once=connect_once)

    return call


def deliver_job(
    client: AgentClient,
    spool: JobSpool,
    *,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    wait: Callable[[float], object] = time.sleep,
    connect_once: bool = False,
) -> Delivery:
    """Deliver what the server does not have of one spooled job (rules in the module
    docstring); removes the folder when delivered or dropped. Never raises for the server:
    ``ServerUnreachable`` and retryable errors (after ``retry_delays``) give ``PENDING``;
    with ``connect_once`` a first call that cannot connect at all gives ``PENDING`` at once
    (``agent.retry.cannot_connect``). Raises ``SpoolError`` for a damaged folder."""
    if not spool.try_lock():
        if spool.finish() is None:  # a job holds its folder while it runs, until its finish
            return _result(spool, DeliveryState.RUNNING, 0, "its job is still running")
        return _result(spool, DeliveryState.BUSY, 0, "being delivered by another process")
    retry = _retrying(retry_delays, wait)
    sent = 0
    try:
        job = _ensure_started(
            client, spool, _retrying(retry_delays, wait, connect_once=connect_once)
        )
        finish = spool.finish()
        abandoned = finish is None  # its agent died before the finish (module docstring)
        if not job.running:
            return _finished_already(spool, job, finish)
        if finish is None:  # close it
            finish = _close_abandoned(spool)
        total = spool.batch_count()
        for n in range(_first_missing(job), total):
            entries = spool.read_batch(n)
            try:
                retry(functools.partial(client.send_batch, job.ref, n, entries), f"batch {n}")
            except AgentApiError as exc:
                if exc.status in (404, 409):
                    raise _Dropped(
                        f"the server refused batch {n} of {total} ({exc.message})"
                    ) from exc
                raise
            sent += 1
        try:
            retry(
                lambda: client.finish_job(
                    job.ref,
                    finish.status,
                    dedupe_original_size=finish.dedupe_original_size,
                    dedupe_saving=finish.dedupe_saving,
                    end_time=_end_time(spool, finish),
                    uploaded_bytes=finish.uploaded_bytes,
                ),
                "finish",
            )
        except AgentApiError as exc:
            if exc.status in (404, 409):
                raise _Dropped(f"the server refused its finish ({exc.message})") from exc
            raise
    except _Dropped as exc:
        return _drop(spool, sent, str(exc))
    except (ServerUnreachable, AgentApiError) as exc:
        spool.close()
        return _result(
            spool,
            DeliveryState.PENDING,
            sent,
            f"not delivered yet: {exc.message}",
            abandoned=spool_unfinished(spool),
        )
    spool.remove()
    done = finish.status.value
    return _result(
        spool, DeliveryState.DELIVERED, sent, "delivered", abandoned=abandoned, status=done
    )


def deliver_pending(
    client: AgentClient,
    root: Path,
    *,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    wait: Callable[[float], object] = time.sleep,
) -> list[Delivery]:
    """Deliver every spooled job under ``root``, oldest first (:func:`deliver_job`). Stops at
    the first ``PENDING`` one (the server is away: the rest would wait for it too, and they
    must arrive in order). When the first call of the first delivery cannot connect at all
    (connection refused, name not resolved, connect timeout: ``agent.retry.cannot_connect``)
    it is not retried: the reports stay spooled and the caller (a backup) goes on at once.
    Failures later on (mid-delivery) are retried. A damaged folder is logged and skipped."""
    out: list[Delivery] = []
    for path in pending_spools(root):
        spool: JobSpool | None = None
        try:
            spool = JobSpool.open(path)
            result = deliver_job(
                client, spool, retry_delays=retry_delays, wait=wait, connect_once=not out
            )
        except SpoolError as exc:  # damaged, or the agent's disk cannot take a record
            log.error("skipping a report spool: %s", exc)
            if spool is not None:
                spool.close()
            continue
        out.append(result)  # the caller says what became of it (once)
        log.debug("spooled report of %s: %s", result.job_name, result.state.value)
        if result.state is DeliveryState.PENDING:
            break
    return out


@dataclass(frozen=True, slots=True)
class Flush:
    """What :func:`flush_reports` did: the ``deliveries`` (oldest job first), the reports of
    the earlier layout left for other backup users (``others``) and the reports still spooled
    in this user's spool (``left``)."""

    deliveries: tuple[Delivery, ...]
    others: int
    left: int


def has_pending(base: Path, root: Path | None) -> bool:
    """Whether there is a report to deliver: in the user's spool ``root`` (``None``: no user
    named yet) or in the earlier layout directly under ``base`` (``<data_dir>/agent-spool``)."""
    return bool(pending_spools(root) if root is not None else []) or bool(legacy_spools(base))


def flush_reports(client: AgentClient, url: str, login: str, *, base: Path, root: Path) -> Flush:
    """Deliver the reports spooled for backup user ``login`` on the server at ``url`` (``opencbs
    agent flush``): the user's sets are listed first (a clear error for an unreachable server
    or a refused login: ``targets.list_sets``), the earlier layout's reports of those sets move
    from ``base`` into the user's spool ``root`` (``spool.adopt_legacy``), then every report
    there is delivered (:func:`deliver_pending`). When the server cannot be reached, each
    report under ``root`` is ``PENDING`` with the reason (nothing is sent). Raises what
    ``list_sets`` raises but ``ServerUnreachable``."""
    try:
        found = list_sets(client, url, login)
    except ServerUnreachable as exc:
        pending = _unreached(root, exc.message)
        return Flush(pending, len(legacy_spools(base)), len(pending))
    adopt_legacy(base, root, found)
    results = deliver_pending(client, root)
    return Flush(tuple(results), len(legacy_spools(base)), len(pending_spools(root)))


def _unreached(root: Path, why: str) -> tuple[Delivery, ...]:
    """Every report spooled under ``root`` (oldest first), ``PENDING`` for ``why``."""
    out: list[Delivery] = []
    for path in pending_spools(root):
        try:
            spool = JobSpool.open(path)
        except SpoolError as exc:
            log.error("skipping a report spool: %s", exc)
            continue
        out.append(_result(spool, DeliveryState.PENDING, 0, why))
        spool.close()
    return tuple(out)


def _ensure_started(client: AgentClient, spool: JobSpool, retry: Retry) -> JobRecord:
    """The server's job of the spool, started now (with the recorded start time) if the
    spool has no job ID yet. Raises ``_Dropped``, ``ServerUnreachable``, ``AgentApiError``."""
    r = spool.record
    if r.job_id is not None:
        try:
            job: JobRecord = retry(lambda: client.get_job(r.ref()), "job status")
        except AgentApiError as exc:
            if exc.status == 404:
                raise _Dropped(f"the server has no job {r.job_id} ({exc.message})") from exc
            raise
        return job

    first_ms = r.start_ms

    def start() -> JobRecord:
        while True:
            start_ms = spool.record.start_ms
            try:
                return client.start_job(
                    r.set_id,
                    r.destination_id,
                    mode=JobMode(r.mode),
                    cdp=r.cdp,
                    run_version=r.run_version,
                    start_time=start_ms,
                    dedupe_enabled=r.dedupe_enabled,
                )
            except AgentApiError as exc:
                job_id = existing_job_id(exc)
                if job_id is None:
                    raise
                found = client.get_job(JobRef(r.set_id, r.destination_id, job_id, r.cdp))
                if found.start_time == start_ms:
                    return found  # ours: a start whose answer was lost
                if start_ms - first_ms >= _MAX_SHIFT_S * 1000:
                    raise _Dropped(
                        f"the server has other jobs in every second from "
                        f"{first_ms} ms to {start_ms} ms"
                    ) from exc
                log.warning(
                    "job ID %s is another job's (started at %d ms, this one at %d ms): "
                    "delivering this job one second later",
                    job_id,
                    found.start_time,
                    start_ms,
                )
                spool.set_start_ms(start_ms + 1000)

    try:
        job = retry(start, "job start")
    except AgentApiError as exc:
        if exc.status == 404:
            raise _Dropped(
                f"the server no longer has this backup set or destination ({exc.message})"
            ) from exc
        raise
    spool.set_job_id(job.ref.job_id)
    return job


def _end_time(spool: JobSpool, finish: FinishRecord) -> int | None:
    """The end time to send (epoch ms): the job's own, as spooled, but not before its start as
    delivered (a start moved to a later second, module docstring); ``None`` when not spooled."""
    if finish.end_ms is None:
        return None
    return max(finish.end_ms, spool.record.start_ms)


def _close_abandoned(spool: JobSpool) -> FinishRecord:
    """Spool an ``end`` entry and a ``BS_BACKUP_NOT_FINISHED`` finish for a job whose agent
    stopped before finishing it (or could not spool its finish: disk full)."""
    message = (
        "Backup not finished: the agent stopped before the job ended, or could not "
        "spool the rest of its report"
    )
    spool.write_batch(spool.batch_count(), [log_entry(LogType.END, message)])
    finish = FinishRecord(JobStatus.BACKUP_NOT_FINISHED)
    spool.write_finish(finish)
    return finish


def _first_missing(job: JobRecord) -> int:
    """The first batch number the server lacks: after its last, when it holds every batch up
    to it (batches are sent in order); else 0 (resending is harmless: idempotent)."""
    if job.last_batch_no is None:
        return 0
    if job.batches_received == job.last_batch_no + 1:
        return job.last_batch_no + 1
    return 0


def spool_unfinished(spool: JobSpool) -> bool:
    """Whether the spooled job has no finish record (its agent stopped before its end); a
    damaged record counts as finished (it is reported as damaged where it is read)."""
    try:
        return spool.finish() is None
    except SpoolError:
        return False


def _finished_already(spool: JobSpool, job: JobRecord, finish: FinishRecord | None) -> Delivery:
    if (
        finish is not None
        and job.status == finish.status.value
        and job.batches_received >= spool.batch_count()
    ):
        # our finish, whose answer was lost (it is sent only after every batch)
        spool.remove()
        return _result(spool, DeliveryState.DELIVERED, 0, "delivered")
    missing = spool.batch_count() - job.batches_received
    why = (
        f"the server closed job {job.ref.job_id} as {job.status} and takes no "
        f"more entries ({plural(max(missing, 0), 'batch', 'batches')} of its report not "
        "delivered)"
    )
    if finish is None:  # its agent stopped before the end: the server closed it meanwhile
        why = f"the server closed it as {job.status}"
        if missing > 0:
            why += f" ({plural(missing, 'batch', 'batches')} of its report not delivered)"
    return _drop(spool, 0, why, abandoned=finish is None, status=job.status)


def _drop(
    spool: JobSpool, sent: int, why: str, *, abandoned: bool = False, status: str = ""
) -> Delivery:
    log.debug("dropping the spooled report %s: %s", spool.path, why)
    spool.remove()
    return _result(spool, DeliveryState.DROPPED, sent, why, abandoned=abandoned, status=status)


def _result(
    spool: JobSpool,
    state: DeliveryState,
    sent: int,
    message: str,
    *,
    abandoned: bool = False,
    status: str = "",
) -> Delivery:
    r = spool.record
    return Delivery(
        spool.path.name,
        r.set_id,
        r.destination_id,
        r.job_id,
        state,
        sent,
        message,
        r.start_ms,
        abandoned=abandoned,
        status=status,
    )
