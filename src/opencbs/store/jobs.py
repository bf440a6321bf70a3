"""A backup job's life and its record (cbs-api.md §4–7; the agent API's job calls).

A job is started (``BS_STILL_RUNNING``), receives numbered batches of entries (a retried batch
is never stored twice), progress and a finish; a job that sends nothing for the idle time is
closed as ``BS_BACKUP_NOT_FINISHED``. Every counter of §5 is derived here from the delivered
entries, in the same transaction that stores them, so counters always equal the lists. Writers of
one job lock its row (``lock_job``), so they never interleave.

``Job`` is the store's row of a job; ``job_record`` turns it into the one job record
(``opencbs.model.jobs.JobRecord``) that the agent API serves. Reading jobs for the CBS calls
and listings: ``opencbs.store.job_queries``; storing a finished report given whole (a vendor
export): ``opencbs.store.report_import``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy import Connection, Row, case, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from opencbs.errors import BackupJobNotFound, Conflict, DestinationNotFound, InvalidInput
from opencbs.model.jobs import JobProgress, JobRecord
from opencbs.reports.counters import COUNTER_NAMES, Counters
from opencbs.reports.fields import ReportHeader, counter_fields
from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS, job_id_at, report_time
from opencbs.reports.vocabulary import EntryType, JobMode, JobStatus, LogType, ReportList
from opencbs.store.schema import backup_jobs, job_batches, job_entries
from opencbs.store.sets import BackupSet
from opencbs.store.util import now_ms

_RUNNING = JobStatus.STILL_RUNNING.value
_TIME_WINDOW = "times must lie between the years 1601 and 9999"


@dataclass(frozen=True)
class EntryIn:
    """One entry delivered for a report.

    File entries: ``lst`` one of NEW…CPY, ``etype`` ``F``/``D``/``L``, ``path`` the full source
    path, ``from_path`` the old path of a move (required for MOV) or the copied file of a copy,
    ``mtime_ms`` last modified (epoch ms), ``size`` stored bytes, ``unzip_size`` original bytes,
    ``link_dir`` whether a link points at a directory. Log entries: ``lst`` LOG, ``etype`` the
    log type (start, info, warn, error, end), ``path`` the message, ``mtime_ms`` the timestamp.
    """

    lst: ReportList
    etype: str
    path: str
    _: KW_ONLY
    from_path: str | None = None
    mtime_ms: int | None = None
    size: int = 0
    unzip_size: int = 0
    link_dir: bool = False

    def check(self) -> None:
        """Raise ``InvalidInput`` when the entry cannot be part of a report."""
        if self.lst is ReportList.LOG:
            if self.etype not in {t.value for t in LogType}:
                raise InvalidInput(f"unknown log type {self.etype!r}")
        else:
            if self.etype not in {t.value for t in EntryType}:
                raise InvalidInput(f"unknown entry type {self.etype!r}", "use F, D or L")
            if not self.path:
                raise InvalidInput("a file entry needs a path")
            if self.lst is ReportList.MOV and not self.from_path:
                raise InvalidInput("a move entry needs the path it was moved from")
        if self.size < 0 or self.unzip_size < 0:
            raise InvalidInput("sizes must not be negative")
        if self.mtime_ms is not None and not MIN_TIME_MS <= self.mtime_ms <= MAX_TIME_MS:
            raise InvalidInput(_TIME_WINDOW)
        if "\x00" in self.path or (self.from_path is not None and "\x00" in self.from_path):
            raise InvalidInput("paths and messages must not contain NUL characters")


@dataclass(frozen=True)
class Job:
    """The store's row of a backup job (table ``backup_jobs``): ``pk`` its internal key,
    ``counters`` the §5 counts and sizes (bytes) derived from its entries, the progress columns
    of GetBackupJobProgress, ``last_activity`` its last sign of life. Times are epoch ms
    (``end_time`` ``None`` while running). ``uploaded_bytes``: what the agent said the job
    wrote to the destination (``None``: it never said; ``upload_size``).

    The CBS calls read it directly (``header()``); everything else is given the job record
    built from it, ``job_record`` (the only place a ``JobRecord`` is made).
    """

    pk: int
    set_id: int
    destination_id: int
    job_id: str
    cdp: bool
    mode: str
    status: str
    start_time: int
    end_time: int | None
    from_ip: str
    run_version: str
    counters: Counters
    dedupe_enabled: bool
    dedupe_original_size: int
    dedupe_saving: int
    success_database: str
    missed_database: str
    success_public_folder: str
    missed_public_folder: str
    current_file_name: str
    file_upload_time: int | None
    current_file_count: int
    total_file_count: int
    uploaded_file_size: int
    total_file_size: int
    last_activity: int
    uploaded_bytes: int | None = None

    @property
    def upload_size(self) -> int:
        """The job's ``UploadSize`` in bytes (cbs-api.md §7): ``uploaded_bytes``, or for a job
        without it (stored before migration 0005, or by an agent that does not send it) the
        stored size of its new and updated content, as before. ``UPLOAD_SIZE`` says it in SQL."""
        if self.uploaded_bytes is not None:
            return self.uploaded_bytes
        return self.counters.new_size + self.counters.upd_size

    def header(self, tz: tzinfo) -> ReportHeader:
        """The report's non-list part, times rendered in ``tz`` (cbs-api.md §4)."""
        return ReportHeader(
            job_id=self.job_id,
            from_ip=self.from_ip,
            start_time=report_time(self.start_time, tz),
            end_time=report_time(self.end_time, tz),
            status=self.status,
            counters=self.counters,
            dedupe_enabled=self.dedupe_enabled,
            dedupe_original_size=self.dedupe_original_size,
            dedupe_saving=self.dedupe_saving,
            success_database=self.success_database,
            missed_database=self.missed_database,
            success_public_folder=self.success_public_folder,
            missed_public_folder=self.missed_public_folder,
        )


def job_from_row(row: Row) -> Job:  # type: ignore[type-arg]
    """The ``Job`` of a ``backup_jobs`` row (extra columns of a join are ignored)."""
    m = row._mapping
    return Job(
        pk=m["pk"],
        set_id=m["set_id"],
        destination_id=m["destination_id"],
        job_id=m["job_id"],
        cdp=m["cdp"],
        mode=m["mode"],
        status=m["status"],
        start_time=m["start_time"],
        end_time=m["end_time"],
        from_ip=m["from_ip"],
        run_version=m["run_version"],
        counters=Counters(**{n: m[n] for n in COUNTER_NAMES}),
        dedupe_enabled=m["dedupe_enabled"],
        dedupe_original_size=m["dedupe_original_size"],
        dedupe_saving=m["dedupe_saving"],
        success_database=m["success_database"],
        missed_database=m["missed_database"],
        success_public_folder=m["success_public_folder"],
        missed_public_folder=m["missed_public_folder"],
        current_file_name=m["current_file_name"],
        file_upload_time=m["file_upload_time"],
        current_file_count=m["current_file_count"],
        total_file_count=m["total_file_count"],
        uploaded_file_size=m["uploaded_file_size"],
        total_file_size=m["total_file_size"],
        last_activity=m["last_activity"],
        uploaded_bytes=m["uploaded_bytes"],
    )


def _require_job_time(ms: int) -> None:
    """Raise ``InvalidInput`` unless ``ms`` (epoch ms) lies in the one window of job and entry
    times, ``opencbs.reports.timefmt.MIN_TIME_MS``..``MAX_TIME_MS`` (cbs-api.md §4)."""
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise InvalidInput(_TIME_WINDOW)


#: How far past the server's clock an agent's end time may lie (ms): the agent's and the
#: server's clocks may differ a little (``require_reported_end``).
END_TIME_SKEW_MS = 5 * 60 * 1000


def require_reported_end(job: Job, end_ms: int, now: int) -> None:
    """The rule for an end time an agent reports (epoch ms; the agent API's finish): not
    before the job's start, not later than ``now`` (the server's clock, epoch ms) plus
    :data:`END_TIME_SKEW_MS`, and in the one window of job times. Raises ``InvalidInput``."""
    _require_job_time(end_ms)
    if end_ms < job.start_time:
        raise InvalidInput(
            f"end_time {end_ms} is before the job's start ({job.start_time})",
            "send the time the job ended (epoch ms), or none for now",
        )
    if end_ms > now + END_TIME_SKEW_MS:
        raise InvalidInput(
            f"end_time {end_ms} is in the future (the server's clock reads {now})",
            "check the agent's clock; send the time the job ended (epoch ms), or none for now",
        )


def zero_seq() -> dict[str, int]:
    """A new job's next sequence number of each list: 0 (the ``next_seq`` column)."""
    return {str(int(lst)): 0 for lst in ReportList}


# --- a job's life -------------------------------------------------------------------------


def start_job(
    conn: Connection,
    bset: BackupSet,
    destination_id: int,
    *,
    tz: tzinfo,
    start_ms: int | None = None,
    mode: JobMode = JobMode.MANUAL,
    cdp: bool = False,
    from_ip: str = "",
    run_version: str = "",
    dedupe_enabled: bool = True,
) -> Job:
    """Start a job of ``bset`` to one of its destinations at ``start_ms`` (epoch ms, default
    now); the job ID is the start time in the server zone (cbs-api.md §4). Raises
    ``DestinationNotFound``, ``InvalidInput`` for a start outside the job-time window
    (``MIN_TIME_MS``..``MAX_TIME_MS``), or ``Conflict`` when a job with that ID exists already
    for that set and destination."""
    if not any(d.id == destination_id for d in bset.destinations):
        raise DestinationNotFound(str(destination_id))
    at = start_ms if start_ms is not None else now_ms()
    _require_job_time(at)
    job_id = job_id_at(at, tz)
    refuse_duplicate(conn, set_id=bset.id, destination_id=destination_id, job_id=job_id, cdp=cdp)
    values: dict[str, Any] = dict(
        set_id=bset.id,
        destination_id=destination_id,
        job_id=job_id,
        cdp=cdp,
        mode=mode.value,
        status=_RUNNING,
        start_time=at,
        end_time=None,
        from_ip=from_ip,
        run_version=run_version,
        dedupe_enabled=dedupe_enabled,
        next_seq=zero_seq(),
        last_activity=now_ms(),
    )
    values.update({n: 0 for n in COUNTER_NAMES})
    pk = conn.execute(backup_jobs.insert().values(**values)).inserted_primary_key
    assert pk is not None
    return get_job_by_pk(conn, pk[0])


def refuse_duplicate(
    conn: Connection, *, set_id: int, destination_id: int, job_id: str, cdp: bool
) -> None:
    """Raise ``Conflict`` ("backup job <ID> exists already", the message the agent's client
    reads) when set ``set_id`` has job ``job_id`` to that destination (and ``cdp``) already."""
    exists = conn.execute(
        select(backup_jobs.c.pk).where(
            backup_jobs.c.set_id == set_id,
            backup_jobs.c.destination_id == destination_id,
            backup_jobs.c.job_id == job_id,
            backup_jobs.c.cdp == cdp,
        )
    ).first()
    if exists:
        raise Conflict(f"backup job {job_id} exists already", "start it again a second later")


def get_job_by_pk(conn: Connection, pk: int) -> Job:
    """The job with internal key ``pk``; raises ``BackupJobNotFound``."""
    row = conn.execute(select(backup_jobs).where(backup_jobs.c.pk == pk)).first()
    if row is None:
        raise BackupJobNotFound(str(pk))
    return job_from_row(row)


def reopen_if_silent(conn: Connection, pk: int) -> bool:
    """Run job ``pk`` again if the server closed it for its agent's silence
    (``close_stale_jobs``): its agent speaks again (a machine that slept, a network that came
    back), so the job goes on and its report is delivered whole; ``True`` when it was reopened.
    A job its agent finished is never reopened (cbs-api.md §9)."""
    done = conn.execute(
        update(backup_jobs)
        .where(
            backup_jobs.c.pk == pk,
            backup_jobs.c.status == JobStatus.BACKUP_NOT_FINISHED.value,
            backup_jobs.c.closed_for_silence.is_(True),
        )
        .values(status=_RUNNING, end_time=None, closed_for_silence=False, last_activity=now_ms())
    )
    return bool(done.rowcount)


def _running(conn: Connection, pk: int) -> Job:
    lock_job(conn, pk)  # writers of one job never interleave (PostgreSQL row lock)
    job = get_job_by_pk(conn, pk)
    if job.status != _RUNNING:
        raise Conflict(f"backup job {job.job_id} is finished ({job.status})", "start a new job")
    return job


def append_batch(conn: Connection, pk: int, batch_no: int, entries: Sequence[EntryIn]) -> bool:
    """Store batch ``batch_no`` of a running job's entries, in order, and add them to its
    counters. Returns ``False`` (storing nothing) when that batch number was stored already.

    Raises ``Conflict`` for a finished job, ``InvalidInput`` for a bad entry.
    """
    if batch_no < 0:
        raise InvalidInput("batch numbers start at 0")
    for e in entries:
        e.check()
    job = _running(conn, pk)
    seen = conn.execute(
        select(job_batches.c.batch_no).where(
            job_batches.c.job_pk == pk, job_batches.c.batch_no == batch_no
        )
    ).first()
    if seen:
        return False
    row = conn.execute(select(backup_jobs.c.next_seq).where(backup_jobs.c.pk == pk)).one()
    next_seq = {**zero_seq(), **dict(row.next_seq)}
    delta = Counters()
    rows: list[dict[str, Any]] = []
    for e in entries:
        key = str(int(e.lst))
        seq = next_seq[key]
        next_seq[key] = seq + 1
        if e.lst is ReportList.LOG:
            delta.add_log(e.etype)
        else:
            delta.add_file(e.lst, e.etype, e.size, e.unzip_size, link_dir=e.link_dir)
        rows.append(
            {
                "job_pk": pk,
                "list": int(e.lst),
                "seq": seq,
                "etype": e.etype,
                "link_dir": e.link_dir,
                "path": e.path,
                "from_path": e.from_path,
                "mtime_ms": e.mtime_ms,
                "size": e.size,
                "unzip_size": e.unzip_size,
            }
        )
    if rows:
        conn.execute(job_entries.insert(), rows)
    conn.execute(
        job_batches.insert().values(
            job_pk=pk, batch_no=batch_no, entry_count=len(rows), received_at=now_ms()
        )
    )
    changes: dict[str, Any] = {
        n: getattr(backup_jobs.c, n) + v for n, v in delta.as_columns().items() if v
    }
    conn.execute(
        update(backup_jobs)
        .where(backup_jobs.c.pk == job.pk)
        .values(next_seq=next_seq, last_activity=now_ms(), **changes)
    )
    return True


def update_progress(
    conn: Connection,
    pk: int,
    *,
    current_file_name: str = "",
    current_file_count: int = 0,
    total_file_count: int = 0,
    uploaded_file_size: int = 0,
    total_file_size: int = 0,
    uploaded_bytes: int | None = None,
) -> None:
    """Record a running job's progress (GetBackupJobProgress, §7); sizes in bytes.
    ``uploaded_bytes``, when given, is what the job wrote to the destination so far
    (``UploadSize``: a job that never finishes keeps the last one)."""
    _running(conn, pk)
    if min(current_file_count, total_file_count, uploaded_file_size, total_file_size) < 0:
        raise InvalidInput("progress counts and sizes must not be negative")
    at = now_ms()
    uploaded = _uploaded_bytes(uploaded_bytes)
    conn.execute(
        update(backup_jobs)
        .where(backup_jobs.c.pk == pk)
        .values(
            current_file_name=current_file_name,
            file_upload_time=at,
            current_file_count=current_file_count,
            total_file_count=total_file_count,
            uploaded_file_size=uploaded_file_size,
            total_file_size=total_file_size,
            last_activity=at,
            **uploaded,
        )
    )


def finish_job(
    conn: Connection,
    pk: int,
    status: JobStatus,
    *,
    end_ms: int | None = None,
    dedupe_original_size: int = 0,
    dedupe_saving: int = 0,
    uploaded_bytes: int | None = None,
) -> Job:
    """Close a running job with its final status and dedupe figures (bytes), and
    ``uploaded_bytes`` when given (what it wrote to the destination, ``UploadSize``; else the
    last progress's figure stays). The status and the end time change in this one
    transaction, so the finished report appears whole.

    Raises ``Conflict`` when the job is finished already, ``InvalidInput`` for a status an agent
    may not set (``BS_STILL_RUNNING``), negative sizes or an ``end_ms`` outside the job-time
    window.
    """
    if status is JobStatus.STILL_RUNNING:
        raise InvalidInput("a job cannot be finished as BS_STILL_RUNNING")
    if end_ms is not None:
        _require_job_time(end_ms)
    if dedupe_original_size < 0 or dedupe_saving < 0 or dedupe_saving > dedupe_original_size:
        raise InvalidInput("dedupe sizes: 0 <= DedupeSaving <= DedupeOriginalSize")
    uploaded = _uploaded_bytes(uploaded_bytes)
    _running(conn, pk)
    at = end_ms if end_ms is not None else now_ms()
    conn.execute(
        update(backup_jobs)
        .where(backup_jobs.c.pk == pk, backup_jobs.c.status == _RUNNING)
        .values(
            status=status.value,
            end_time=at,
            dedupe_original_size=dedupe_original_size,
            dedupe_saving=dedupe_saving,
            current_file_name="",
            last_activity=at,
            **_complete_progress(status),
            **uploaded,
        )
    )
    return get_job_by_pk(conn, pk)


def _complete_progress(status: JobStatus) -> dict[str, Any]:
    """A job that finished with a snapshot has processed every file it counted: its progress
    reads complete (GetBackupJobProgress, §7), also when unchanged files were not uploaded."""
    if not status.completed:
        return {}
    c = backup_jobs.c
    return {  # the larger of the two, in SQL both databases speak
        "current_file_count": case(
            (c.current_file_count > c.total_file_count, c.current_file_count),
            else_=c.total_file_count,
        ),
        "uploaded_file_size": case(
            (c.uploaded_file_size > c.total_file_size, c.uploaded_file_size),
            else_=c.total_file_size,
        ),
    }


def close_stale_jobs(
    conn: Connection,
    idle_ms: int,
    *,
    at_ms: int | None = None,
    on_closed: Callable[[Connection, int], object] | None = None,
) -> list[str]:
    """Close every running job that sent nothing for ``idle_ms`` as ``BS_BACKUP_NOT_FINISHED``
    (cbs-api.md §4), marked closed for silence (``reopen_if_silent``); returns their job IDs.
    ``on_closed(conn, pk)`` is called for each job closed, in this transaction (the server
    queues its alerts: ``notify.alerts.job_ended``)."""
    at = at_ms if at_ms is not None else now_ms()
    stale = conn.execute(
        select(backup_jobs.c.pk, backup_jobs.c.job_id, backup_jobs.c.last_activity).where(
            backup_jobs.c.status == _RUNNING, backup_jobs.c.last_activity < at - idle_ms
        )
    ).all()
    closed: list[str] = []
    for row in stale:
        # the idle test is repeated in the UPDATE: a batch committed since the SELECT wins
        done = conn.execute(
            update(backup_jobs)
            .where(
                backup_jobs.c.pk == row.pk,
                backup_jobs.c.status == _RUNNING,
                backup_jobs.c.last_activity < at - idle_ms,
            )
            .values(
                status=JobStatus.BACKUP_NOT_FINISHED.value,
                end_time=row.last_activity,
                closed_for_silence=True,
            )
        )
        if done.rowcount:
            closed.append(row.job_id)
            if on_closed is not None:
                on_closed(conn, row.pk)
    return closed


# --- the agent API's job helpers: the record, locks, batches ---------------------------------


def job_record(conn: Connection, job: Job) -> JobRecord:
    """The job record of ``job`` (``opencbs.model.jobs.JobRecord``; the agent API's answer):
    ``counters`` every count and size of cbs-api.md §5 by its CBS name (ratios left out) plus
    ``NumOfWarnEntries`` and ``NumOfErrorEntries``; ``batches_received`` and ``last_batch_no``
    from the batches stored (``batch_stats``)."""
    count, last = batch_stats(conn, job.pk)
    counters = {k: v for k, v in counter_fields(job.counters).items() if isinstance(v, int)}
    counters["NumOfWarnEntries"] = job.counters.warn_entries
    counters["NumOfErrorEntries"] = job.counters.error_entries
    return JobRecord(
        job_id=job.job_id,
        backup_set_id=str(job.set_id),
        destination_id=str(job.destination_id),
        cdp=job.cdp,
        mode=job.mode,
        status=job.status,
        start_time=job.start_time,
        end_time=job.end_time,
        from_ip=job.from_ip,
        run_version=job.run_version,
        dedupe_enabled=job.dedupe_enabled,
        dedupe_original_size=job.dedupe_original_size,
        dedupe_saving=job.dedupe_saving,
        uploaded_bytes=job.uploaded_bytes,
        counters=counters,
        batches_received=count,
        last_batch_no=last,
        progress=JobProgress(
            current_file_name=job.current_file_name,
            file_upload_time=job.file_upload_time,
            current_file_count=job.current_file_count,
            total_file_count=job.total_file_count,
            uploaded_file_size=job.uploaded_file_size,
            total_file_size=job.total_file_size,
        ),
    )


def lock_job(conn: Connection, pk: int) -> None:
    """Lock job ``pk``'s row until the transaction ends (PostgreSQL ``SELECT … FOR UPDATE``;
    SQLite serialises writers already), so batches, progress, finish and the idle sweep of one
    job never interleave. Raises ``BackupJobNotFound``."""
    row = conn.execute(
        select(backup_jobs.c.pk).where(backup_jobs.c.pk == pk).with_for_update()
    ).first()
    if row is None:
        raise BackupJobNotFound(str(pk))


def touch_job(conn: Connection, pk: int, *, at_ms: int | None = None) -> bool:
    """Record a sign of life of running job ``pk`` (its idle time starts again); ``False`` when
    the job is not running."""
    result = conn.execute(
        update(backup_jobs)
        .where(backup_jobs.c.pk == pk, backup_jobs.c.status == _RUNNING)
        .values(last_activity=at_ms if at_ms is not None else now_ms())
    )
    return bool(result.rowcount)


def batch_entry_count(conn: Connection, pk: int, batch_no: int) -> int | None:
    """How many entries batch ``batch_no`` of job ``pk`` held when stored; ``None`` if it was
    never stored."""
    row = conn.execute(
        select(job_batches.c.entry_count).where(
            job_batches.c.job_pk == pk, job_batches.c.batch_no == batch_no
        )
    ).first()
    return None if row is None else int(row.entry_count)


def batch_stats(conn: Connection, pk: int) -> tuple[int, int | None]:
    """(number of batches stored, highest batch number or ``None``) of job ``pk``: where an agent
    that resumes continues."""
    row = conn.execute(
        select(func.count(), func.max(job_batches.c.batch_no)).where(job_batches.c.job_pk == pk)
    ).one()
    return int(row[0]), (None if row[1] is None else int(row[1]))


# --- UploadSize: what a job wrote to its destination (cbs-api.md §7) -------------------------

#: ``Job.upload_size`` in SQL, for sums over jobs (GetUserStorageStat, ListUsers ``DataSize``).
UPLOAD_SIZE: ColumnElement[int] = func.coalesce(
    backup_jobs.c.uploaded_bytes, backup_jobs.c.new_size + backup_jobs.c.upd_size
)


def _uploaded_bytes(value: int | None) -> dict[str, int]:
    """The ``uploaded_bytes`` column's new value (none when ``value`` is ``None``). Raises
    ``InvalidInput`` for a negative size."""
    if value is None:
        return {}
    if value < 0:
        raise InvalidInput("uploaded_bytes must not be negative")
    return {"uploaded_bytes": value}
