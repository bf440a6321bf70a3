"""Backups started from the server (``RunBackup.do``, cbs-api.md §14): the ``run_requests``
table's rows and their life.

A request is ``PENDING`` until the set's agent takes it (``TAKEN``, from its poll: it then starts
the job with mode ``R``) or an administrator withdraws it (``CANCELLED``, ``CancelBackup``). A
set has at most one ``PENDING`` request: asking again while one waits keeps that one (the set's
row is locked first on PostgreSQL, so two concurrent asks make one request; SQLite's writes are
serialised). A taken request cannot be cancelled: the vendor's ``CancelBackup`` withdraws a
request, it never stops a running job. Taking is a compare-and-set ``UPDATE`` (``PENDING`` →
``TAKEN``): of two agents taking one request at once exactly one wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Row, and_, select, update

from opencbs.errors import Conflict, NotFound
from opencbs.store.schema import backup_sets, run_requests
from opencbs.store.sets import BackupSet

__all__ = [
    "RequestStatus",
    "RunRequest",
    "RunRequestNotFound",
    "cancel",
    "get",
    "pending_for_user",
    "pending_user_ids",
    "request",
    "take",
]


class RequestStatus(StrEnum):
    """The life of a run request: ``PENDING`` (waiting for the agent), ``TAKEN`` (the agent
    took it and starts the job), ``CANCELLED`` (withdrawn with ``CancelBackup``)."""

    PENDING = "PENDING"
    TAKEN = "TAKEN"
    CANCELLED = "CANCELLED"


class RunRequestNotFound(NotFound):
    """Unknown run request, or one of another backup user (the agent API's 404)."""

    code = "run_request_not_found"

    def __init__(self, request_id: object) -> None:
        super().__init__(f"Run request '{request_id}' not found.")


@dataclass(frozen=True)
class RunRequest:
    """A stored run request: ``id``, the ``set_id`` and its ``user_id``, ``status``,
    ``requested_by`` (the system user's name), ``requested_at`` / ``taken_at`` (epoch ms)."""

    id: int
    set_id: int
    user_id: int
    status: RequestStatus
    requested_by: str
    requested_at: int
    taken_at: int | None


def _request(row: Row) -> RunRequest:  # type: ignore[type-arg]
    return RunRequest(
        id=row.id,
        set_id=row.set_id,
        user_id=row.user_id,
        status=RequestStatus(row.status),
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        taken_at=row.taken_at,
    )


def _pending_of_set(conn: Connection, set_id: int) -> RunRequest | None:
    row = conn.execute(
        select(run_requests)
        .where(
            run_requests.c.set_id == set_id,
            run_requests.c.status == RequestStatus.PENDING.value,
        )
        .order_by(run_requests.c.id)
    ).first()
    return _request(row) if row is not None else None


def request(conn: Connection, bset: BackupSet, *, by: str, at_ms: int) -> tuple[RunRequest, bool]:
    """Ask ``bset``'s agent to run a backup now (RunBackup.do): ``(the request, True)`` when
    a new one was made, ``(the pending one, False)`` when the set had one waiting already (one
    PENDING request per set). ``by``: the system user's name; ``at_ms`` epoch ms. Call it in
    a write transaction; the set's row is locked first (PostgreSQL) so concurrent calls make
    one request."""
    conn.execute(select(backup_sets.c.id).where(backup_sets.c.id == bset.id).with_for_update())
    pending = _pending_of_set(conn, bset.id)
    if pending is not None:
        return pending, False
    made = conn.execute(
        run_requests.insert().values(
            set_id=bset.id,
            user_id=bset.user_id,
            status=RequestStatus.PENDING.value,
            requested_by=by,
            requested_at=at_ms,
        )
    )
    key = made.inserted_primary_key
    assert key is not None
    return get(conn, bset.user_id, key[0]), True


def cancel(conn: Connection, bset: BackupSet) -> RunRequest | None:
    """Withdraw ``bset``'s pending request (RunBackup.do with ``CancelBackup``): the request
    cancelled, or ``None`` when none was pending (nothing to do: a taken request's job runs
    on; the vendor's CancelBackup cannot stop a running job)."""
    pending = _pending_of_set(conn, bset.id)
    if pending is None:
        return None
    done = conn.execute(
        update(run_requests)
        .where(
            run_requests.c.id == pending.id,
            run_requests.c.status == RequestStatus.PENDING.value,
        )
        .values(status=RequestStatus.CANCELLED.value)
    )
    return get(conn, bset.user_id, pending.id) if done.rowcount == 1 else None


def get(conn: Connection, user_id: int, request_id: int | str) -> RunRequest:
    """Run request ``request_id`` of backup user ``user_id``; ``RunRequestNotFound`` for an
    unknown ID or another user's request."""
    text = str(request_id).strip()
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**31:
        raise RunRequestNotFound(request_id)  # not an ID the table can hold: no request has it
    rid = int(text)
    row = conn.execute(
        select(run_requests).where(run_requests.c.id == rid, run_requests.c.user_id == user_id)
    ).first()
    if row is None:
        raise RunRequestNotFound(request_id)
    return _request(row)


def take(conn: Connection, user_id: int, request_id: int | str, *, at_ms: int) -> RunRequest:
    """The agent of user ``user_id`` takes request ``request_id`` (``PENDING`` → ``TAKEN`` at
    ``at_ms``, epoch ms) by a compare-and-set update: of concurrent takes exactly one wins.
    Raises ``RunRequestNotFound`` (unknown, another user's) and ``Conflict`` naming the status
    when it is no longer pending (taken already, or cancelled)."""
    current = get(conn, user_id, request_id)
    done = conn.execute(
        update(run_requests)
        .where(
            run_requests.c.id == current.id,
            run_requests.c.user_id == user_id,
            run_requests.c.status == RequestStatus.PENDING.value,
        )
        .values(status=RequestStatus.TAKEN.value, taken_at=at_ms)
    )
    if done.rowcount != 1:
        now = get(conn, user_id, current.id)
        raise Conflict(
            f"run request {current.id} is {now.status.value}, not PENDING",
            "another poll took it, or it was cancelled: do not start a job for it",
        )
    return get(conn, user_id, current.id)


def pending_for_user(conn: Connection, user_id: int) -> list[RunRequest]:
    """The pending requests of user ``user_id``'s sets that are not removed, oldest first."""
    rows = conn.execute(
        select(run_requests)
        .join(backup_sets, backup_sets.c.id == run_requests.c.set_id)
        .where(
            run_requests.c.user_id == user_id,
            run_requests.c.status == RequestStatus.PENDING.value,
            backup_sets.c.removed.is_(False),
        )
        .order_by(run_requests.c.id)
    )
    return [_request(r) for r in rows]


def pending_user_ids(conn: Connection, user_ids: Iterable[int]) -> set[int]:
    """Which of ``user_ids`` have a pending request of a set not removed (one query; the
    poll's watcher asks this for every waiting agent at once)."""
    ids = list(user_ids)
    if not ids:
        return set()
    rows = conn.execute(
        select(run_requests.c.user_id)
        .join(backup_sets, backup_sets.c.id == run_requests.c.set_id)
        .where(
            and_(
                run_requests.c.user_id.in_(ids),
                run_requests.c.status == RequestStatus.PENDING.value,
                backup_sets.c.removed.is_(False),
            )
        )
        .distinct()
    )
    return {r[0] for r in rows}
