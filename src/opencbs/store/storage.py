"""Storage measurements of backup set destinations (the ``storage_stats`` table), what they say
about a backup user now (quota, ListUsers ``DataSize``) and over a month (GetUserStorageStat)
(cbs-api.md §11).

A measurement (``model.storage.StorageMeasurement``) is what the agent found in a
destination's repository after a backup job or a retention run: ``stored_size`` the bytes the
whole repository takes there (after deduplication, compression, encryption), ``data_size`` /
``data_count`` the newest snapshot's bytes and files, ``retain_size`` / ``retain_count`` what
only older snapshots hold (the retention area), ``snapshot_count``. Times are epoch ms, sizes
bytes. One measurement per destination and instant: the same one sent again (a retry) is
stored once, a different one at the same instant is a ``Conflict``.

Rules, each once:

- A destination's **latest** measurement is its newest ``measured_at``.
- What a user **holds now** (quota, ``DataSize``) is the sum of the latest ``stored_size`` of
  the destinations of its backup sets that are not removed (a removed set gets no more jobs, so
  no newer measurement; the administrator removed it), each place counted once: destinations
  of several sets in one place (the same type and settings: one folder, one bucket and
  prefix) are one repository, whose newest measurement counts.
- A **month** (``month_average``, a pure function): the days of the month (server zone) that
  have measurements; for each, the sum over destinations of each one's last measurement that
  day; each figure averaged over those days. Uploads: the month's jobs (job IDs ``yyyy-MM-…``,
  the server zone, as ListBackupJobStatus lists them), their ``UploadSize`` (bytes each wrote
  to its destination, ``jobs.UPLOAD_SIZE``) and new and updated files, summed and averaged
  over the days that have jobs. Averages are rounded to the nearest whole number (halves
  up); a month without measurements or jobs averages 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from opencbs.errors import Conflict, InvalidInput
from opencbs.model.storage import StorageMeasurement, StorageQuota
from opencbs.store.jobs import END_TIME_SKEW_MS, UPLOAD_SIZE
from opencbs.store.schema import backup_jobs, backup_sets, destinations, storage_stats
from opencbs.store.sets import BackupSet, Destination
from opencbs.store.users import BackupUser
from opencbs.store.util import now_ms

#: The figures of a measurement, in column order.
FIGURES = (
    "stored_size",
    "data_size",
    "data_count",
    "retain_size",
    "retain_count",
    "snapshot_count",
)


@dataclass(frozen=True)
class StorageRecord:
    """A stored measurement of destination ``destination_id`` of set ``set_id``; ``received_at``
    when the server stored it (epoch ms)."""

    set_id: int
    destination_id: int
    measured_at: int
    stored_size: int
    data_size: int
    data_count: int
    retain_size: int
    retain_count: int
    snapshot_count: int
    received_at: int


def _record(row: Row) -> StorageRecord:  # type: ignore[type-arg]
    return StorageRecord(
        set_id=row.set_id,
        destination_id=row.destination_id,
        measured_at=row.measured_at,
        received_at=row.received_at,
        **{name: int(getattr(row, name)) for name in FIGURES},
    )


def record_measurement(
    conn: Connection,
    bset: BackupSet,
    dest: Destination,
    measurement: StorageMeasurement,
    *,
    at_ms: int | None = None,
) -> tuple[StorageRecord, bool]:
    """Store ``measurement`` of ``dest`` (a destination of ``bset``); ``at_ms`` the server's
    clock (default now), also the time of a measurement without ``measured_at``. Answers the
    record and whether it is new: the same measurement sent again is not stored twice.

    Raises ``InvalidInput`` for a ``measured_at`` more than ``jobs.END_TIME_SKEW_MS`` past
    the server's clock, ``Conflict`` when the destination has another measurement at that
    instant."""
    now = at_ms if at_ms is not None else now_ms()
    at = measurement.measured_at if measurement.measured_at is not None else now
    if at > now + END_TIME_SKEW_MS:
        raise InvalidInput(
            f"measured_at {at} is in the future (the server's clock reads {now})",
            "check the agent's clock; send the time of the measurement (epoch ms), or none for now",
        )
    figures = {name: getattr(measurement, name) for name in FIGURES}
    found = conn.execute(
        select(storage_stats).where(
            storage_stats.c.destination_id == dest.id, storage_stats.c.measured_at == at
        )
    ).first()
    if found is not None:
        held = _record(found)
        if any(getattr(held, name) != value for name, value in figures.items()):
            raise Conflict(
                f"destination {dest.id} has another measurement at {at}",
                "send each measurement with its own measured_at",
            )
        return held, False
    values = dict(
        set_id=bset.id, destination_id=dest.id, measured_at=at, received_at=now, **figures
    )
    conn.execute(storage_stats.insert().values(**values))
    return StorageRecord(**values), True


def _latest(*where: ColumnElement[bool]) -> Select[Any]:
    """The latest measurement of each destination of the sets that match ``where`` (conditions
    on ``backup_sets``), one row each, with its set's user (``held_by``) and ``removed``."""
    newest = (
        select(
            storage_stats.c.destination_id.label("dest"),
            func.max(storage_stats.c.measured_at).label("at"),
        )
        .join(backup_sets, backup_sets.c.id == storage_stats.c.set_id)
        .where(*where)
        .group_by(storage_stats.c.destination_id)
        .subquery()
    )
    return (
        select(
            storage_stats,
            backup_sets.c.user_id.label("held_by"),
            backup_sets.c.removed.label("set_removed"),
            destinations.c.type.label("dest_type"),
            destinations.c.settings.label("dest_settings"),
        )
        .join(
            newest,
            and_(
                storage_stats.c.destination_id == newest.c.dest,
                storage_stats.c.measured_at == newest.c.at,
            ),
        )
        .join(backup_sets, backup_sets.c.id == storage_stats.c.set_id)
        .join(destinations, destinations.c.id == storage_stats.c.destination_id)
    )


def _place(row: Row) -> tuple[Any, ...]:  # type: ignore[type-arg]
    """Where a measured destination's repository is (its type and settings: a folder, a
    bucket and prefix): destinations of several sets of one user in one place are one
    repository, counted once (the newest measurement of it)."""
    return _place_of(row.held_by, row.destination_id, row.dest_type, row.dest_settings)


def _place_of(user_id: int, dest_id: int, dest_type: str, settings: Any) -> tuple[Any, ...]:
    """``_place``: a destination without settings (no known place) is a place of its own."""
    if not isinstance(settings, dict) or not settings:
        return (user_id, "destination", dest_id)
    return (user_id, dest_type, json.dumps(settings, sort_keys=True))


def _by_place(rows: Iterable[Row]) -> list[Row]:  # type: ignore[type-arg]
    """Of ``rows`` (``_latest``), the newest of each place (``_place``)."""
    newest: dict[tuple[Any, ...], Row] = {}  # type: ignore[type-arg]
    for row in rows:
        key = _place(row)
        if key not in newest or row.measured_at > newest[key].measured_at:
            newest[key] = row
    return list(newest.values())


def held_bytes(conn: Connection, user_ids: Sequence[int]) -> dict[int, int]:
    """What each user holds now (module docstring), for the users that have at least one
    measured destination in a set that is not removed; a user without any is left out
    (ListUsers then says what its jobs stored, cbs-api.md §11). One query."""
    if not user_ids:
        return {}
    rows = conn.execute(
        _latest(backup_sets.c.user_id.in_(list(user_ids)), backup_sets.c.removed.is_(False))
    )
    out: dict[int, int] = {}
    for row in _by_place(rows):
        out[row.held_by] = out.get(row.held_by, 0) + int(row.stored_size)
    return out


def quota_of(conn: Connection, user: BackupUser, destination_id: int) -> StorageQuota:
    """The quota a job of ``user`` to its destination ``destination_id`` starts with
    (``StorageQuota``): the user's quota, the latest ``stored_size`` of its other destinations
    (in sets not removed) summed, and that destination's own (0 when never measured)."""
    rows = list(conn.execute(_latest(backup_sets.c.user_id == user.id)))
    dest = conn.execute(
        select(destinations.c.type, destinations.c.settings).where(
            destinations.c.id == destination_id
        )
    ).first()
    here = _place_of(user.id, destination_id, dest.type, dest.settings) if dest else None
    used = own = 0
    for row in _by_place(
        r for r in rows if not r.set_removed or r.destination_id == destination_id
    ):
        if _place(row) == here:
            own = int(row.stored_size)
        else:
            used += int(row.stored_size)
    return StorageQuota(limit=user.quota, used=used, destination_used=own)


# --- a month ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobUpload:
    """What one job uploaded: its job ID (``yyyy-MM-dd-…``, its day first), ``size`` its
    ``UploadSize`` (bytes), ``files`` its new and updated files."""

    job_id: str
    size: int
    files: int


@dataclass(frozen=True)
class MonthAverage:
    """The averages of a month (module docstring): bytes and counts per day."""

    data_size: int = 0
    data_count: int = 0
    retain_size: int = 0
    retain_count: int = 0
    stored_size: int = 0
    upload_size: int = 0
    upload_count: int = 0


def month_bounds(year: int, month: int, tz: tzinfo) -> tuple[int, int]:
    """``[start, end)`` of a month in zone ``tz``, epoch ms. Raises ``ValueError`` for a
    month outside the years 1..9999."""
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def month_measurements(
    conn: Connection, set_ids: Sequence[int], start_ms: int, end_ms: int
) -> list[StorageRecord]:
    """The measurements of the sets ``set_ids`` (removed ones too: what they held then)
    taken in ``[start_ms, end_ms)``, oldest first."""
    if not set_ids:
        return []
    q = (
        select(storage_stats)
        .where(
            storage_stats.c.set_id.in_(list(set_ids)),
            storage_stats.c.measured_at >= start_ms,
            storage_stats.c.measured_at < end_ms,
        )
        .order_by(storage_stats.c.measured_at, storage_stats.c.id)
    )
    return [_record(r) for r in conn.execute(q)]


def month_uploads(conn: Connection, set_ids: Sequence[int], year_month: str) -> list[JobUpload]:
    """What each job of the sets ``set_ids`` listed under month ``year_month`` (``yyyy-MM``:
    its job ID starts with it, cbs-api.md §4) uploaded: its ``UploadSize``
    (``jobs.UPLOAD_SIZE``)."""
    if not set_ids:
        return []
    q = select(
        backup_jobs.c.job_id,
        UPLOAD_SIZE,
        backup_jobs.c.new_files + backup_jobs.c.upd_files,
    ).where(
        backup_jobs.c.set_id.in_(list(set_ids)),
        backup_jobs.c.job_id.startswith(f"{year_month}-", autoescape=True),
    )
    return [JobUpload(r[0], int(r[1] or 0), int(r[2] or 0)) for r in conn.execute(q)]


def _average(total: int, days: int) -> int:
    """``total / days`` rounded to the nearest whole number, halves up; 0 for no day."""
    return (2 * total + days) // (2 * days) if days else 0


def month_average(
    measurements: Iterable[StorageRecord], uploads: Iterable[JobUpload], tz: tzinfo
) -> MonthAverage:
    """The month's averages (module docstring) of ``measurements`` (one month's, any order)
    and ``uploads`` (its jobs'), days in zone ``tz``. Pure."""
    last: dict[tuple[date, int], StorageRecord] = {}
    for m in sorted(measurements, key=lambda r: r.measured_at):
        day = datetime.fromtimestamp(m.measured_at / 1000, tz).date()
        last[(day, m.destination_id)] = m
    days = {day for day, _ in last}
    sums = {name: sum(getattr(m, name) for m in last.values()) for name in FIGURES}
    jobs = list(uploads)
    job_days = {u.job_id[:10] for u in jobs}
    return MonthAverage(
        data_size=_average(sums["data_size"], len(days)),
        data_count=_average(sums["data_count"], len(days)),
        retain_size=_average(sums["retain_size"], len(days)),
        retain_count=_average(sums["retain_count"], len(days)),
        stored_size=_average(sums["stored_size"], len(days)),
        upload_size=_average(sum(u.size for u in jobs), len(job_days)),
        upload_count=_average(sum(u.files for u in jobs), len(job_days)),
    )
