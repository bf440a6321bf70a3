"""Restore jobs (issue 15, point 10; cbs-api.md §12): a restore an agent ran, as it reported
it through the agent API (``api/agent_restore.py``), and what the CBS calls read of them
(``api/cbs_restore.py``).

A restore job is started (``RESTORE_STILL_RUNNING``), gets progress, and is finished with its
final status, counts and log entries in one transaction (the report appears whole). A job
without a sign of life for the idle time is closed as ``RESTORE_NOT_FINISHED``
(``close_stale_restore_jobs``, run by the server's sweeper beside the backup jobs'). Writers
of one job lock its row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serialises writers).
Times epoch ms, sizes bytes; ``RestoreJob`` is the row, ``restore_record`` the agent API's
answer (``model.restores.RestoreRecord``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy import Connection, Row, select, update

from opencbs.errors import Conflict, DestinationNotFound, InvalidInput, NotFound, quoted
from opencbs.model.restores import (
    MAX_RESTORE_LOGS,
    RestoreProgressRecord,
    RestoreRecord,
    RestoreStatus,
)
from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS, job_id_at
from opencbs.reports.vocabulary import JobMode, LogType
from opencbs.store.schema import backup_sets, backup_users, restore_jobs
from opencbs.store.sets import BackupSet
from opencbs.store.util import now_ms

_RUNNING = RestoreStatus.STILL_RUNNING.value
#: The counts a finish sets (``RestoreCounts``'s fields, the table's columns).
COUNT_NAMES = (
    "file_count",
    "file_size",
    "dir_count",
    "link_count",
    "kept_count",
    "failed_count",
    "damaged_count",
)


class RestoreJobNotFound(NotFound):
    """Unknown restore job of that backup set (cbs-api.md §3, §12)."""

    code = "restore_job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Restore job {quoted(job_id)} not found.")


@dataclass(frozen=True)
class RestoreLog:
    """One log entry of a restore job: ``type`` a ``LogType`` value (``start``, ``info``,
    ``warn``, ``error``, ``end``), ``message``, ``time`` epoch ms."""

    type: str
    message: str
    time: int

    def as_json(self) -> dict[str, Any]:
        """The entry as the ``logs`` column keeps it."""
        return {"type": self.type, "message": self.message, "time": self.time}


@dataclass(frozen=True)
class RestoreCounts:
    """What a finished restore did: regular files restored (``file_count``) and their bytes
    (``file_size``), directories and links restored, existing paths kept, paths the target
    refused (``failed_count``) and entries damaged in the repository (``damaged_count``)."""

    file_count: int = 0
    file_size: int = 0
    dir_count: int = 0
    link_count: int = 0
    kept_count: int = 0
    failed_count: int = 0
    damaged_count: int = 0


@dataclass(frozen=True)
class RestoreStart:
    """What a restore job starts with: what it restores (``backup_job_id``, ``snapshot_id``),
    where to (``target``, the agent's folder), ``overwrite`` (``refuse``, ``always``,
    ``if-changed``, ``never``), ``mode``, the agent's ``run_version`` and address
    (``from_ip``), and ``start_ms`` (epoch ms; ``None``: now)."""

    backup_job_id: str = ""
    snapshot_id: str = ""
    target: str = ""
    overwrite: str = ""
    mode: JobMode = JobMode.MANUAL
    run_version: str = ""
    from_ip: str = ""
    start_ms: int | None = None


@dataclass(frozen=True)
class RestoreJob:
    """The store's row of a restore job (table ``restore_jobs``; module docstring)."""

    pk: int
    set_id: int
    destination_id: int
    job_id: str
    mode: str
    status: str
    start_time: int
    end_time: int | None
    from_ip: str
    run_version: str
    backup_job_id: str
    snapshot_id: str
    target: str
    overwrite: str
    counts: RestoreCounts
    warn_count: int
    error_count: int
    logs: tuple[RestoreLog, ...]
    progress: RestoreProgressRecord
    last_activity: int


def _from_row(row: Row) -> RestoreJob:  # type: ignore[type-arg]
    m = row._mapping
    return RestoreJob(
        pk=m["pk"],
        set_id=m["set_id"],
        destination_id=m["destination_id"],
        job_id=m["job_id"],
        mode=m["mode"],
        status=m["status"],
        start_time=m["start_time"],
        end_time=m["end_time"],
        from_ip=m["from_ip"],
        run_version=m["run_version"],
        backup_job_id=m["backup_job_id"],
        snapshot_id=m["snapshot_id"],
        target=m["target"],
        overwrite=m["overwrite"],
        counts=RestoreCounts(**{n: m[n] for n in COUNT_NAMES}),
        warn_count=m["warn_count"],
        error_count=m["error_count"],
        logs=tuple(RestoreLog(e["type"], e["message"], e["time"]) for e in m["logs"]),
        progress=RestoreProgressRecord(
            current_file_name=m["current_file_name"],
            progress_time=m["progress_time"],
            restored_file_count=m["restored_file_count"],
            total_file_count=m["total_file_count"],
            restored_size=m["restored_size"],
            total_file_size=m["total_file_size"],
        ),
        last_activity=m["last_activity"],
    )


def restore_record(job: RestoreJob) -> RestoreRecord:
    """The agent API's answer for ``job`` (``model.restores.RestoreRecord``)."""
    return RestoreRecord(
        job_id=job.job_id,
        backup_set_id=str(job.set_id),
        destination_id=str(job.destination_id),
        mode=job.mode,
        status=job.status,
        start_time=job.start_time,
        end_time=job.end_time,
        from_ip=job.from_ip,
        run_version=job.run_version,
        backup_job_id=job.backup_job_id,
        snapshot_id=job.snapshot_id,
        target=job.target,
        overwrite=job.overwrite,
        **{n: getattr(job.counts, n) for n in COUNT_NAMES},
        warn_count=job.warn_count,
        error_count=job.error_count,
        progress=job.progress,
    )


def _require_time(ms: int) -> None:
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise InvalidInput("times must lie between the years 1601 and 9999")


def start_restore_job(
    conn: Connection, bset: BackupSet, destination_id: int, start: RestoreStart, *, tz: tzinfo
) -> RestoreJob:
    """Start a restore job of ``bset`` reading destination ``destination_id``; its ID is the
    start time in the server's zone ``tz``. Raises ``DestinationNotFound``, ``InvalidInput``
    (a start outside the job-time window) and ``Conflict`` ("restore job <ID> exists already":
    one of that ID in the set; start again a second later)."""
    if not any(d.id == destination_id for d in bset.destinations):
        raise DestinationNotFound(str(destination_id))
    at = start.start_ms if start.start_ms is not None else now_ms()
    _require_time(at)
    job_id = job_id_at(at, tz)
    taken = conn.execute(
        select(restore_jobs.c.pk).where(
            restore_jobs.c.set_id == bset.id, restore_jobs.c.job_id == job_id
        )
    ).first()
    if taken:
        raise Conflict(f"restore job {job_id} exists already", "start it again a second later")
    values: dict[str, Any] = dict(
        set_id=bset.id,
        destination_id=destination_id,
        job_id=job_id,
        mode=start.mode.value,
        status=_RUNNING,
        start_time=at,
        end_time=None,
        from_ip=start.from_ip,
        run_version=start.run_version,
        backup_job_id=start.backup_job_id,
        snapshot_id=start.snapshot_id,
        target=start.target,
        overwrite=start.overwrite,
        warn_count=0,
        error_count=0,
        logs=[],
        current_file_name="",
        progress_time=None,
        restored_file_count=0,
        total_file_count=0,
        restored_size=0,
        total_file_size=0,
        last_activity=now_ms(),
        **{n: 0 for n in COUNT_NAMES},
    )
    pk = conn.execute(restore_jobs.insert().values(**values)).inserted_primary_key
    assert pk is not None
    return _get_by_pk(conn, pk[0])


def _get_by_pk(conn: Connection, pk: int) -> RestoreJob:
    row = conn.execute(select(restore_jobs).where(restore_jobs.c.pk == pk)).first()
    if row is None:
        raise RestoreJobNotFound(str(pk))
    return _from_row(row)


def get_restore_job(
    conn: Connection, bset: BackupSet, job_id: str, *, lock: bool = False
) -> RestoreJob:
    """Restore job ``job_id`` of ``bset``; ``lock``: its row locked until the transaction ends
    (writers of one job never interleave). Raises ``RestoreJobNotFound``."""
    q = select(restore_jobs).where(
        restore_jobs.c.set_id == bset.id, restore_jobs.c.job_id == job_id
    )
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise RestoreJobNotFound(job_id)
    return _from_row(row)


def _require_running(job: RestoreJob) -> None:
    if job.status != _RUNNING:
        raise Conflict(
            f"restore job {job.job_id} is finished ({job.status})", "start a new restore job"
        )


def update_restore_progress(
    conn: Connection, job: RestoreJob, progress: RestoreProgressRecord
) -> RestoreJob:
    """Record a running restore job's progress (``progress_time`` set to now; a sign of
    life). Raises ``Conflict`` when it is finished."""
    _require_running(job)
    at = now_ms()
    conn.execute(
        update(restore_jobs)
        .where(restore_jobs.c.pk == job.pk)
        .values(**{**progress.model_dump(), "progress_time": at}, last_activity=at)
    )
    return _get_by_pk(conn, job.pk)


def touch_restore_job(conn: Connection, job: RestoreJob) -> None:
    """A sign of life of a running restore job (its idle time starts again)."""
    conn.execute(
        update(restore_jobs)
        .where(restore_jobs.c.pk == job.pk, restore_jobs.c.status == _RUNNING)
        .values(last_activity=now_ms())
    )


def finish_restore_job(
    conn: Connection,
    job: RestoreJob,
    status: RestoreStatus,
    *,
    counts: RestoreCounts,
    logs: Sequence[RestoreLog],
    end_ms: int | None = None,
) -> RestoreJob:
    """Close a running restore job with its final ``status``, ``counts`` and ``logs`` (at most
    ``MAX_RESTORE_LOGS``), at ``end_ms`` (epoch ms; ``None``: now; not before its start).
    Raises ``InvalidInput`` (``RESTORE_STILL_RUNNING``, ``RESTORE_NOT_FINISHED``, too many
    logs, a bad log type, negative counts, an end before the start) and ``Conflict`` (finished
    already)."""
    if status in (RestoreStatus.STILL_RUNNING, RestoreStatus.NOT_FINISHED):
        raise InvalidInput(f"a restore job cannot be finished as {status.value}")
    if len(logs) > MAX_RESTORE_LOGS:
        raise InvalidInput(f"at most {MAX_RESTORE_LOGS} log entries")
    known = {t.value for t in LogType}
    if any(e.type not in known for e in logs):
        raise InvalidInput(f"a log entry's type is one of {sorted(known)}")
    if min((getattr(counts, n) for n in COUNT_NAMES), default=0) < 0:
        raise InvalidInput("restore counts must not be negative")
    _require_running(job)
    at = end_ms if end_ms is not None else now_ms()
    _require_time(at)
    if at < job.start_time:
        raise InvalidInput(f"end_time {at} is before the restore job's start ({job.start_time})")
    conn.execute(
        update(restore_jobs)
        .where(restore_jobs.c.pk == job.pk, restore_jobs.c.status == _RUNNING)
        .values(
            status=status.value,
            end_time=at,
            logs=[e.as_json() for e in logs],
            warn_count=sum(e.type == LogType.WARN.value for e in logs),
            error_count=sum(e.type == LogType.ERROR.value for e in logs),
            current_file_name="",
            last_activity=at,
            **{n: getattr(counts, n) for n in COUNT_NAMES},
        )
    )
    return _get_by_pk(conn, job.pk)


def close_stale_restore_jobs(
    conn: Connection, idle_ms: int, *, at_ms: int | None = None
) -> list[str]:
    """Close every running restore job silent for ``idle_ms`` as ``RESTORE_NOT_FINISHED`` (its
    end: its last sign of life); returns their job IDs."""
    at = at_ms if at_ms is not None else now_ms()
    stale = conn.execute(
        select(restore_jobs.c.pk, restore_jobs.c.job_id, restore_jobs.c.last_activity).where(
            restore_jobs.c.status == _RUNNING, restore_jobs.c.last_activity < at - idle_ms
        )
    ).all()
    closed: list[str] = []
    for row in stale:
        done = conn.execute(
            update(restore_jobs)
            .where(
                restore_jobs.c.pk == row.pk,
                restore_jobs.c.status == _RUNNING,
                restore_jobs.c.last_activity < at - idle_ms,
            )
            .values(status=RestoreStatus.NOT_FINISHED.value, end_time=row.last_activity)
        )
        if done.rowcount:
            closed.append(row.job_id)
    return closed


# --- what the CBS calls read -----------------------------------------------------------------


@dataclass(frozen=True)
class RestoreListing:
    """A restore job with its backup user (ID, login name, owner) and its set's name
    (ListRestoreJobStatus)."""

    job: RestoreJob
    user_id: int
    login_name: str
    owner: str
    set_name: str


def restore_jobs_of_day(
    conn: Connection, day: str, *, user_id: int | None = None, owner: str | None = None
) -> list[RestoreListing]:
    """Restore jobs listed under ``day`` (``yyyy-MM-dd``: their ID starts with it, §4), by start
    time; of one backup user (``user_id``) and/or of the users of one ``owner`` (``""``: the
    administrators'); ``None`` leaves a filter off."""
    q = (
        select(
            restore_jobs,
            backup_users.c.id.label("listing_user_id"),
            backup_users.c.login_name.label("listing_login_name"),
            backup_users.c.owner.label("listing_owner"),
            backup_sets.c.name.label("listing_set_name"),
        )
        .join(backup_sets, backup_sets.c.id == restore_jobs.c.set_id)
        .join(backup_users, backup_users.c.id == backup_sets.c.user_id)
        .where(restore_jobs.c.job_id.startswith(day, autoescape=True))
        .order_by(restore_jobs.c.start_time, restore_jobs.c.pk)
    )
    if user_id is not None:
        q = q.where(backup_sets.c.user_id == user_id)
    if owner is not None:
        q = q.where(backup_users.c.owner == owner)
    return [
        RestoreListing(
            job=_from_row(r),
            user_id=r.listing_user_id,
            login_name=r.listing_login_name,
            owner=r.listing_owner,
            set_name=r.listing_set_name,
        )
        for r in conn.execute(q)
    ]


def restore_job_ids_by_set(conn: Connection, set_ids: Iterable[int]) -> Mapping[int, list[str]]:
    """The restore job IDs of each set, ascending (ListRestoreJobs)."""
    ids = list(set_ids)
    out: dict[int, list[str]] = {sid: [] for sid in ids}
    if not ids:
        return out
    q = (
        select(restore_jobs.c.set_id, restore_jobs.c.job_id)
        .where(restore_jobs.c.set_id.in_(ids))
        .order_by(restore_jobs.c.set_id, restore_jobs.c.job_id)
    )
    for r in conn.execute(q):
        out[r.set_id].append(r.job_id)
    return out
