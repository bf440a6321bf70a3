"""Backup jobs and their report entries (cbs-api.md §4–7; the agent API's job calls).

A job is started (``BS_STILL_RUNNING``), receives numbered batches of entries (a retried batch
is never stored twice), progress and a finish. Every counter of §5 is derived here from the
delivered entries, in the same transaction that stores them, so counters always equal the
lists. Readers read a job in one snapshot (``Database.read``), so a finished report is seen
whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, case, select, update

from opencbs.errors import BackupJobNotFound, Conflict, DestinationNotFound, InvalidInput
from opencbs.reports.counters import COUNTER_NAMES, Counters
from opencbs.reports.fields import ReportHeader, counters_from_report
from opencbs.reports.timefmt import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    job_id_at,
    parse_log_time,
    parse_report_time,
    report_time,
)
from opencbs.reports.vocabulary import (
    FILE_LISTS,
    EntryType,
    JobMode,
    JobStatus,
    LogType,
    ReportList,
)
from opencbs.store.schema import (
    backup_jobs,
    backup_sets,
    backup_users,
    destinations,
    job_batches,
    job_entries,
)
from opencbs.store.sets import BackupSet, parse_id
from opencbs.store.util import now_ms

_RUNNING = JobStatus.STILL_RUNNING.value


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
            raise InvalidInput("times must lie between the years 1601 and 9999")
        if "\x00" in self.path or (self.from_path is not None and "\x00" in self.from_path):
            raise InvalidInput("paths and messages must not contain NUL characters")


@dataclass(frozen=True)
class Job:
    """A backup job as stored. Times are epoch ms (``end_time`` ``None`` while running)."""

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


def _job(row: Row) -> Job:  # type: ignore[type-arg]
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
    )


def _zero_seq() -> dict[str, int]:
    return {str(int(lst)): 0 for lst in ReportList}


# --- writing ------------------------------------------------------------------------------


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
    """Start a job of ``bset`` to one of its destinations; the job ID is the start time in the
    server zone (cbs-api.md §4). Raises ``DestinationNotFound``, or ``Conflict`` when a job with
    that ID exists already for that set and destination."""
    if not any(d.id == destination_id for d in bset.destinations):
        raise DestinationNotFound(str(destination_id))
    at = start_ms if start_ms is not None else now_ms()
    job_id = job_id_at(at, tz)
    _refuse_duplicate(conn, bset.id, destination_id, job_id, cdp)
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
        next_seq=_zero_seq(),
        last_activity=now_ms(),
    )
    values.update({n: 0 for n in COUNTER_NAMES})
    pk = conn.execute(backup_jobs.insert().values(**values)).inserted_primary_key
    assert pk is not None
    return get_job_by_pk(conn, pk[0])


def _refuse_duplicate(
    conn: Connection, set_id: int, destination_id: int, job_id: str, cdp: bool
) -> None:
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
    return _job(row)


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
    next_seq = {**_zero_seq(), **dict(row.next_seq)}
    delta = Counters()
    rows: list[dict[str, Any]] = []
    for e in entries:
        key = str(int(e.lst))
        seq = next_seq[key]
        next_seq[key] = seq + 1
        if e.lst is ReportList.LOG:
            delta.add_log(e.etype)
        else:
            delta.add_file(e.lst, e.etype, e.link_dir, e.size, e.unzip_size)
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
) -> None:
    """Record a running job's progress (GetBackupJobProgress, §7); sizes in bytes."""
    _running(conn, pk)
    if min(current_file_count, total_file_count, uploaded_file_size, total_file_size) < 0:
        raise InvalidInput("progress counts and sizes must not be negative")
    at = now_ms()
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
) -> Job:
    """Close a running job with its final status and dedupe figures (bytes). The status and
    the end time change in this one transaction, so the finished report appears whole.

    Raises ``Conflict`` when the job is finished already, ``InvalidInput`` for a status an agent
    may not set (``BS_STILL_RUNNING``) or negative sizes.
    """
    if status is JobStatus.STILL_RUNNING:
        raise InvalidInput("a job cannot be finished as BS_STILL_RUNNING")
    if dedupe_original_size < 0 or dedupe_saving < 0 or dedupe_saving > dedupe_original_size:
        raise InvalidInput("dedupe sizes: 0 <= DedupeSaving <= DedupeOriginalSize")
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


def close_stale_jobs(conn: Connection, idle_ms: int, *, at_ms: int | None = None) -> list[str]:
    """Close every running job that sent nothing for ``idle_ms`` as ``BS_BACKUP_NOT_FINISHED``
    (cbs-api.md §4); returns their job IDs."""
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
            .values(status=JobStatus.BACKUP_NOT_FINISHED.value, end_time=row.last_activity)
        )
        if done.rowcount:
            closed.append(row.job_id)
    return closed


def import_report(
    conn: Connection,
    bset: BackupSet,
    destination_id: int,
    data: dict[str, Any],
    *,
    tz: tzinfo,
    cdp: bool = False,
    mode: JobMode = JobMode.MANUAL,
) -> Job:
    """Store a finished report given as a CBS ``Data`` object (a vendor export or the seed's
    example) as it is: its counters are taken from the object, its lists from its arrays.

    Raises ``InvalidInput`` for a malformed object, ``Conflict`` for a job ID that exists.
    """
    try:
        job_id = str(data["ID"])
        start = parse_report_time(str(data["StartTime"]), tz)
        end = parse_report_time(str(data["EndTime"]), tz) if data.get("EndTime") else None
        counters = counters_from_report(data)
        status = JobStatus(str(data.get("BackupJobStatus", JobStatus.STOP_SUCCESS.value)))
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"not a backup job report: {exc}") from exc
    _refuse_duplicate(conn, bset.id, destination_id, job_id, cdp)
    values: dict[str, Any] = dict(
        set_id=bset.id,
        destination_id=destination_id,
        job_id=job_id,
        cdp=cdp,
        mode=mode.value,
        status=status.value,
        start_time=start,
        end_time=end,
        from_ip=str(data.get("FromIp", "")),
        run_version=str(data.get("RunVersion", "")),
        dedupe_enabled=bool(data.get("DedupeEnabled", True)),
        dedupe_original_size=int(data.get("DedupeOriginalSize", 0)),
        dedupe_saving=int(data.get("DedupeSaving", 0)),
        success_database=str(data.get("SuccessDatabase", "")),
        missed_database=str(data.get("MissedDatabase", "")),
        success_public_folder=str(data.get("SuccessPublicFolder", "")),
        missed_public_folder=str(data.get("MissedPublicFolder", "")),
        next_seq=_zero_seq(),
        last_activity=end or start,
        **counters.as_columns(),
    )
    pk = conn.execute(backup_jobs.insert().values(**values)).inserted_primary_key
    assert pk is not None
    rows: list[dict[str, Any]] = []
    logs = data.get("Logs") or data.get("info") or []
    for seq, log_entry in enumerate(logs):
        rows.append(
            dict(
                job_pk=pk[0],
                list=0,
                seq=seq,
                etype=str(log_entry["Type"]),
                link_dir=False,
                path=str(log_entry["Message"]),
                from_path=None,
                mtime_ms=parse_log_time(str(log_entry["Timestamp"]), tz),
                size=0,
                unzip_size=0,
            )
        )
    for lst in FILE_LISTS:
        for seq, fe in enumerate(data.get(lst.key) or []):
            rows.append(
                dict(
                    job_pk=pk[0],
                    list=int(lst),
                    seq=seq,
                    etype=str(fe["Type"]),
                    link_dir=False,
                    path=str(fe.get("ToFile") or fe.get("Name")),
                    from_path=fe.get("FromFile"),
                    mtime_ms=parse_log_time(str(fe["LastModified"]), tz),
                    size=int(fe.get("FileSize", 0)),
                    unzip_size=int(fe.get("UnzipFilesSize", 0)),
                )
            )
    if rows:
        conn.execute(job_entries.insert(), rows)
    return get_job_by_pk(conn, pk[0])


# --- reading ------------------------------------------------------------------------------

# One prebuilt statement for the report calls' common case: the backup user, the set and every
# destination's job of that ID, in one round trip.
_REPORT_JOB = (
    select(
        backup_jobs,
        backup_users.c.owner.label("user_owner"),
        destinations.c.position.label("dest_position"),
    )
    .join(backup_sets, backup_sets.c.id == backup_jobs.c.set_id)
    .join(backup_users, backup_users.c.id == backup_sets.c.user_id)
    .join(destinations, destinations.c.id == backup_jobs.c.destination_id)
    .where(
        backup_users.c.login_name == bindparam("login"),
        backup_sets.c.id == bindparam("set_id"),
        backup_jobs.c.job_id == bindparam("job_id"),
        backup_jobs.c.cdp == bindparam("cdp"),
    )
    .order_by(destinations.c.position, destinations.c.id)
)


def find_report_job_fast(
    conn: Connection,
    login_name: str,
    owner: str,
    scope: str | None,
    set_id: str,
    destination_id: str | None,
    job_id: str,
    *,
    cdp: bool,
) -> Job | None:
    """The job a report call names, in one query, when everything is found; ``None`` otherwise
    (then ``find_job`` and the user and set look-ups say precisely what is missing). Applies the
    ``Owner`` and scope rules of cbs-api.md §2 and the ``DestinationID`` resolution of §5."""
    sid = parse_id(set_id)
    if sid is None:
        return None
    rows = conn.execute(
        _REPORT_JOB, {"login": login_name, "set_id": sid, "job_id": job_id, "cdp": cdp}
    ).all()
    if not rows:
        return None
    user_owner = rows[0].user_owner
    if (owner and owner != user_owner) or (scope is not None and user_owner != scope):
        return None
    if destination_id is None or destination_id.strip() in ("", "0"):
        return _job(rows[0])
    did = parse_id(destination_id)
    for row in rows:
        if row.destination_id == did:
            return _job(row)
    return None


def find_job(
    conn: Connection, bset: BackupSet, destination_id: str | None, job_id: str, *, cdp: bool
) -> Job:
    """The job ``job_id`` of ``bset``, resolving ``DestinationID`` as cbs-api.md §5 says: a real
    ID of the set → that destination; missing, ``""`` or ``"0"`` → the set's first destination
    (in order) that has the job; an ID the set does not have → ``DestinationNotFound``.
    Raises ``BackupJobNotFound`` when no such job is there."""
    dest_ids: list[int]
    if destination_id is None or destination_id.strip() in ("", "0"):
        dest_ids = [d.id for d in bset.destinations]
    else:
        did = parse_id(destination_id)
        if did is None or not any(d.id == did for d in bset.destinations):
            raise DestinationNotFound(destination_id)
        dest_ids = [did]
    if dest_ids:
        rows = conn.execute(
            select(backup_jobs).where(
                backup_jobs.c.set_id == bset.id,
                backup_jobs.c.job_id == job_id,
                backup_jobs.c.cdp == cdp,
                backup_jobs.c.destination_id.in_(dest_ids),
            )
        ).all()
        by_dest = {r.destination_id: r for r in rows}
        for did in dest_ids:
            if did in by_dest:
                return _job(by_dest[did])
    raise BackupJobNotFound(job_id)


def iter_entries(conn: Connection, pk: int, lst: ReportList) -> Iterator[Row]:  # type: ignore[type-arg]
    """The entries of one list of one job, in delivery order, streamed from the database (the
    primary key's order): rows with ``etype, link_dir, path, from_path, mtime_ms, size,
    unzip_size``."""
    q = (
        select(
            job_entries.c.etype,
            job_entries.c.path,
            job_entries.c.from_path,
            job_entries.c.mtime_ms,
            job_entries.c.size,
            job_entries.c.unzip_size,
        )
        .where(job_entries.c.job_pk == pk, job_entries.c.list == int(lst))
        .order_by(job_entries.c.seq)
    )
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(q)
    yield from result


def job_ids_by_set(conn: Connection, set_ids: Iterable[int]) -> dict[int, list[str]]:
    """Job IDs of each set, ascending and without repeats (jobs to several destinations share
    an ID) (ListBackupJobs, §7)."""
    ids = list(set_ids)
    out: dict[int, list[str]] = {sid: [] for sid in ids}
    if not ids:
        return out
    q = (
        select(backup_jobs.c.set_id, backup_jobs.c.job_id)
        .where(backup_jobs.c.set_id.in_(ids))
        .group_by(backup_jobs.c.set_id, backup_jobs.c.job_id)
        .order_by(backup_jobs.c.set_id, backup_jobs.c.job_id)
    )
    for r in conn.execute(q):
        out[r.set_id].append(r.job_id)
    return out


def jobs_between(
    conn: Connection,
    user_ids: Sequence[int],
    start_ms: int,
    end_ms: int,
    *,
    set_id: int | None = None,
) -> list[tuple[Job, int, str]]:
    """Jobs of the users' sets that started in ``[start_ms, end_ms)``, with each job's set's
    user ID and set name, by start time (ListBackupJobStatus, ListBackupJobMode, §7)."""
    if not user_ids:
        return []
    q = (
        select(
            backup_jobs,
            backup_sets.c.user_id.label("set_user_id"),
            backup_sets.c.name.label("set_name"),
        )
        .join(backup_sets, backup_sets.c.id == backup_jobs.c.set_id)
        .where(
            backup_sets.c.user_id.in_(list(user_ids)),
            and_(backup_jobs.c.start_time >= start_ms, backup_jobs.c.start_time < end_ms),
        )
        .order_by(backup_jobs.c.start_time, backup_jobs.c.pk)
    )
    if set_id is not None:
        q = q.where(backup_jobs.c.set_id == set_id)
    return [(_job(r), r.set_user_id, r.set_name) for r in conn.execute(q)]


def last_backup_ms(conn: Connection, user_ids: Sequence[int]) -> dict[int, int]:
    """Start time (epoch ms) of each user's newest job (ListUsers ``LastBackupDate``)."""
    from sqlalchemy import func

    if not user_ids:
        return {}
    q = (
        select(backup_sets.c.user_id, func.max(backup_jobs.c.start_time))
        .join(backup_sets, backup_sets.c.id == backup_jobs.c.set_id)
        .where(backup_sets.c.user_id.in_(list(user_ids)))
        .group_by(backup_sets.c.user_id)
    )
    return {r[0]: r[1] for r in conn.execute(q)}


def stored_bytes(conn: Connection, user_ids: Sequence[int]) -> dict[int, int]:
    """Bytes each user's jobs stored: the compressed size of their new and updated content,
    summed over every job (ListUsers ``DataSize``; nothing is removed while there is no
    retention)."""
    from sqlalchemy import func

    if not user_ids:
        return {}
    q = (
        select(backup_sets.c.user_id, func.sum(backup_jobs.c.new_size + backup_jobs.c.upd_size))
        .join(backup_sets, backup_sets.c.id == backup_jobs.c.set_id)
        .where(backup_sets.c.user_id.in_(list(user_ids)))
        .group_by(backup_sets.c.user_id)
    )
    return {r[0]: int(r[1] or 0) for r in conn.execute(q)}


def running_user_ids(conn: Connection, user_ids: Sequence[int]) -> set[int]:
    """Users with a running job (ListUsers ``Online``)."""
    if not user_ids:
        return set()
    q = (
        select(backup_sets.c.user_id)
        .join(backup_jobs, backup_sets.c.id == backup_jobs.c.set_id)
        .where(backup_sets.c.user_id.in_(list(user_ids)), backup_jobs.c.status == _RUNNING)
        .distinct()
    )
    return {r[0] for r in conn.execute(q)}


def destination_of(conn: Connection, destination_id: int) -> tuple[int, str] | None:
    """(set ID, name) of a destination, or ``None``."""
    row = conn.execute(
        select(destinations.c.set_id, destinations.c.name).where(
            destinations.c.id == destination_id
        )
    ).first()
    return (row.set_id, row.name) if row else None


@dataclass(frozen=True)
class JobListing:
    """A job with what a listing shows beside it: its backup user (ID, login name, owner) and
    its set's name (ListBackupJobStatus, ListBackupJobMode, §7)."""

    job: Job
    user_id: int
    login_name: str
    owner: str
    set_name: str


def jobs_of_day(
    conn: Connection,
    day: str,
    *,
    user_id: int | None = None,
    owner: str | None = None,
    set_id: int | None = None,
) -> list[JobListing]:
    """Jobs listed under ``day`` (``yyyy-MM-dd``): those whose job ID starts with it, as
    cbs-api.md §4 says (the ID is the start time in the server zone), by start time.

    Narrowed to one backup user (``user_id``), to the users of one ``owner`` (``""`` = the
    administrators'), and/or to one set (``set_id``); ``None`` leaves a filter off.
    """
    from opencbs.store.schema import backup_users

    q = (
        select(
            backup_jobs,
            backup_users.c.id.label("listing_user_id"),
            backup_users.c.login_name.label("listing_login_name"),
            backup_users.c.owner.label("listing_owner"),
            backup_sets.c.name.label("listing_set_name"),
        )
        .join(backup_sets, backup_sets.c.id == backup_jobs.c.set_id)
        .join(backup_users, backup_users.c.id == backup_sets.c.user_id)
        .where(backup_jobs.c.job_id.startswith(day, autoescape=True))
        .order_by(backup_jobs.c.start_time, backup_jobs.c.pk)
    )
    if user_id is not None:
        q = q.where(backup_sets.c.user_id == user_id)
    if owner is not None:
        q = q.where(backup_users.c.owner == owner)
    if set_id is not None:
        q = q.where(backup_jobs.c.set_id == set_id)
    return [
        JobListing(
            job=_job(r),
            user_id=r.listing_user_id,
            login_name=r.listing_login_name,
            owner=r.listing_owner,
            set_name=r.listing_set_name,
        )
        for r in conn.execute(q)
    ]


# --- the agent API's job helpers ------------------------------------------------------------


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
    from sqlalchemy import func

    row = conn.execute(
        select(func.count(), func.max(job_batches.c.batch_no)).where(job_batches.c.job_pk == pk)
    ).one()
    return int(row[0]), (None if row[1] is None else int(row[1]))
