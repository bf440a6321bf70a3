"""Reading backup jobs and their report entries (cbs-api.md §5–7): the job a report call
names, a report's entries streamed in delivery order, the listings of ListBackupJobs,
ListBackupJobStatus and ListBackupJobMode, a set's newest jobs (``opencbs report latest``,
``--list``), and the per-user figures of ListUsers.

Callers read in one snapshot (``Database.read``), so a finished report is seen whole or not at
all. A report served over the network is read in pages instead (``report_bounds``,
``iter_entries_paged``): each page in its own short transaction, bounded by what the header's
transaction saw, so no connection waits on a slow client. Jobs are ``opencbs.store.jobs.Job``
rows; times epoch ms, sizes bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, select, union
from sqlalchemy.sql.elements import ColumnElement

from opencbs.errors import BackupJobNotFound, DestinationNotFound, StoreError
from opencbs.reports.vocabulary import JobStatus, ReportList
from opencbs.store.db import Database
from opencbs.store.jobs import UPLOAD_SIZE, Job, job_from_row
from opencbs.store.schema import (
    backup_jobs,
    backup_sets,
    backup_users,
    destinations,
    job_entries,
)
from opencbs.store.sets import BackupSet, parse_id

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
    *,
    login_name: str,
    owner: str,
    scope: str | None,
    set_id: str,
    destination_id: str | None,
    job_id: str,
    cdp: bool,
) -> Job | None:
    """The job a report call names, in one query, when everything is found; ``None`` otherwise
    (then ``find_job`` and the user and set look-ups say precisely what is missing).

    ``login_name`` the backup user's, ``owner`` the call's ``Owner`` (``""``: any),
    ``scope`` the reseller whose backup users the caller may see (``None``: every user),
    ``set_id`` / ``destination_id`` as the call gave them, ``job_id`` ``yyyy-MM-dd-HH-mm-ss``,
    ``cdp`` a continuous-backup job. Applies the ``Owner`` and scope rules of cbs-api.md §2 and
    the ``DestinationID`` resolution of §5."""
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
        return job_from_row(rows[0])
    did = parse_id(destination_id)
    for row in rows:
        if row.destination_id == did:
            return job_from_row(row)
    return None


def destination_ids(bset: BackupSet, destination_id: str | None) -> list[int]:
    """The destinations of ``bset`` a ``DestinationID`` names, in the set's order (cbs-api.md
    §5): missing, ``""`` or ``"0"`` → all of them; a real ID of the set → that one. Raises
    ``DestinationNotFound`` for an ID the set does not have."""
    if destination_id is None or destination_id.strip() in ("", "0"):
        return [d.id for d in bset.destinations]
    did = parse_id(destination_id)
    if did is None or not any(d.id == did for d in bset.destinations):
        raise DestinationNotFound(destination_id)
    return [did]


def find_job(
    conn: Connection, bset: BackupSet, destination_id: str | None, job_id: str, *, cdp: bool
) -> Job:
    """The job ``job_id`` of ``bset``, resolving ``DestinationID`` as cbs-api.md §5 says: a real
    ID of the set → that destination; missing, ``""`` or ``"0"`` → the set's first destination
    (in order) that has the job; an ID the set does not have → ``DestinationNotFound``.
    Raises ``BackupJobNotFound`` when no such job is there."""
    dest_ids = destination_ids(bset, destination_id)
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
                return job_from_row(by_dest[did])
    raise BackupJobNotFound(job_id)


def _jobs_of(
    set_ids: Sequence[int], destination_ids: Sequence[int] | None, *, cdp: bool
) -> ColumnElement[bool]:
    where = and_(backup_jobs.c.set_id.in_(list(set_ids)), backup_jobs.c.cdp == cdp)
    if destination_ids is not None:
        where = and_(where, backup_jobs.c.destination_id.in_(list(destination_ids)))
    return where


def newest_jobs(
    conn: Connection,
    set_ids: Sequence[int],
    *,
    cdp: bool,
    destination_ids: Sequence[int] | None = None,
    limit: int | None = None,
) -> list[Job]:
    """The jobs of the sets ``set_ids`` (continuous-backup ones when ``cdp``), newest first: by
    start time, then job ID (the start time in the server zone, §4), then storage order; at
    most ``limit`` of them (``None``: all). ``destination_ids`` keeps those of these
    destinations only (``None``: any). A job sent to several destinations is one row each."""
    q = (
        select(backup_jobs)
        .where(_jobs_of(set_ids, destination_ids, cdp=cdp))
        .order_by(
            backup_jobs.c.start_time.desc(), backup_jobs.c.job_id.desc(), backup_jobs.c.pk.desc()
        )
    )
    if limit is not None:
        q = q.limit(limit)
    return [job_from_row(r) for r in conn.execute(q)]


def count_jobs(
    conn: Connection,
    set_ids: Sequence[int],
    *,
    cdp: bool,
    destination_ids: Sequence[int] | None = None,
) -> int:
    """How many rows ``newest_jobs`` gives without a limit."""
    q = select(func.count()).select_from(backup_jobs)
    return int(conn.execute(q.where(_jobs_of(set_ids, destination_ids, cdp=cdp))).scalar_one())


#: The columns of a report entry row, in ``opencbs.reports.render.EntryRow`` order.
_ENTRY_COLUMNS = (
    job_entries.c.etype,
    job_entries.c.path,
    job_entries.c.from_path,
    job_entries.c.mtime_ms,
    job_entries.c.size,
    job_entries.c.unzip_size,
)


def _list_of(pk: int, lst: ReportList) -> ColumnElement[bool]:
    return and_(job_entries.c.job_pk == pk, job_entries.c.list == int(lst))


def iter_entries(conn: Connection, pk: int, lst: ReportList) -> Iterator[Row]:  # type: ignore[type-arg]
    """The entries of one list of one job, in delivery order, streamed from the database (the
    primary key's order) in the caller's transaction: rows of ``EntryRow``'s columns (``etype,
    path, from_path, mtime_ms, size, unzip_size``; ``opencbs.reports.render``)."""
    q = select(*_ENTRY_COLUMNS).where(_list_of(pk, lst)).order_by(job_entries.c.seq)
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(q)
    yield from result


def report_bounds(conn: Connection, pk: int) -> dict[ReportList, int]:
    """The highest entry sequence number of each list of job ``pk`` (``-1``: the list is empty),
    in one query of one index look-up per list (the primary key ``job_pk, list, seq``).

    Read in the transaction that reads the job's header: a job's entries and its counters are
    stored in one transaction (``jobs.append_batch``) and never changed afterwards, so the
    entries up to these bounds are exactly those the header counts, whenever they are read."""
    cols = [
        select(func.max(job_entries.c.seq)).where(_list_of(pk, lst)).scalar_subquery()
        for lst in ReportList
    ]
    row = conn.execute(select(*cols)).one()
    return {lst: -1 if v is None else int(v) for lst, v in zip(ReportList, row, strict=True)}


def entry_page(
    conn: Connection, pk: int, lst: ReportList, *, after: int, upto: int, limit: int
) -> list[tuple[Any, ...]]:
    """At most ``limit`` entries of one list of job ``pk`` with ``after < seq <= upto``, in
    delivery order (keyset pagination on the primary key): plain tuples of ``EntryRow``'s
    columns followed by ``seq``.

    Plain tuples of strings and numbers, not SQLAlchemy rows: the garbage collector stops
    tracking them at once, while thousands of live rows would make it walk the whole heap
    again and again (half again the server's CPU time for a large report)."""
    q = (
        select(*_ENTRY_COLUMNS, job_entries.c.seq)
        .where(_list_of(pk, lst), job_entries.c.seq > after, job_entries.c.seq <= upto)
        .order_by(job_entries.c.seq)
        .limit(limit)
    )
    return [tuple(row) for row in conn.execute(q)]


def iter_entries_paged(
    db: Database, pk: int, lst: ReportList, upto: int, *, page_size: int
) -> Iterator[tuple[Any, ...]]:
    """The entries of one list of job ``pk`` up to sequence number ``upto`` (from
    ``report_bounds``), in delivery order, read ``page_size`` at a time, each page in its own
    short read transaction: between pages (while the caller sends them) no connection is held.

    Raises ``StoreError`` when entries the bounds promised are gone (the job was removed while
    its report was read): the answer must then fail rather than end short."""
    after = -1
    while after < upto:
        with db.read() as conn:
            rows = entry_page(conn, pk, lst, after=after, upto=upto, limit=page_size)
        if not rows:
            raise StoreError(
                "the job's entries changed while its report was read", "request the report again"
            )
        yield from rows
        after = int(rows[-1][6])


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
    return [(job_from_row(r), r.set_user_id, r.set_name) for r in conn.execute(q)]


def last_backup_ms(conn: Connection, user_ids: Sequence[int]) -> dict[int, int]:
    """Start time (epoch ms) of each user's newest job (ListUsers ``LastBackupDate``)."""
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
    """Bytes each user's jobs stored: their ``UploadSize`` (``jobs.UPLOAD_SIZE``: what each
    wrote to its destination) summed over every job (ListUsers ``DataSize`` of a user whose
    destinations were never measured)."""
    if not user_ids:
        return {}
    q = (
        select(backup_sets.c.user_id, func.sum(UPLOAD_SIZE))
        .join(backup_sets, backup_sets.c.id == backup_jobs.c.set_id)
        .where(backup_sets.c.user_id.in_(list(user_ids)))
        .group_by(backup_sets.c.user_id)
    )
    return {r[0]: int(r[1] or 0) for r in conn.execute(q)}


def running_user_ids(conn: Connection, user_ids: Sequence[int]) -> set[int]:
    """Users with a running job."""
    return online_user_ids(conn, user_ids)


def online_user_ids(
    conn: Connection, user_ids: Sequence[int], *, seen_since_ms: int | None = None
) -> set[int]:
    """Users online (ListUsers ``Online``, cbs-api.md §14): with a running job, or whose agent
    polled at or after ``seen_since_ms`` (epoch ms; ``None``: running jobs only). One query
    whatever the number of users."""
    if not user_ids:
        return set()
    running = (
        select(backup_sets.c.user_id)
        .join(backup_jobs, backup_sets.c.id == backup_jobs.c.set_id)
        .where(
            backup_sets.c.user_id.in_(list(user_ids)),
            backup_jobs.c.status == JobStatus.STILL_RUNNING.value,
        )
    )
    if seen_since_ms is None:
        return {r[0] for r in conn.execute(running.distinct())}
    seen = select(backup_users.c.id).where(
        backup_users.c.id.in_(list(user_ids)), backup_users.c.last_seen_ms >= seen_since_ms
    )
    return {r[0] for r in conn.execute(union(running, seen))}


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
            job=job_from_row(r),
            user_id=r.listing_user_id,
            login_name=r.listing_login_name,
            owner=r.listing_owner,
            set_name=r.listing_set_name,
        )
        for r in conn.execute(q)
    ]
