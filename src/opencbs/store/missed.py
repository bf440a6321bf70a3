"""The missed-backup sweep (issue 16; cbs-api.md §13): a schedule's slot that no backup job of
its set answered is recorded as a ``BS_STOP_MISSED_BACKUP`` job, exactly once, however many
server processes share the database.

Every schedule keeps ``next_check_ms``, the next slot to judge (``store.schedules``). A slot is
judged once ``grace_ms`` has passed after it (the setting ``missed_backup_grace``). It is
**answered** when a backup job of the set (any destination, any mode, any status but
``BS_STOP_MISSED_BACKUP`` itself) started within ``[slot - EARLY_TOLERANCE_MS, slot +
grace_ms]`` (for a periodic schedule: at most half its interval early, and before its next
slot), or was running at the slot (started at most :data:`LONGEST_COVER_MS` before it,
ended at or after it, or still running): an agent runs one job of a set at a time and skips a
slot while one runs. Otherwise the slot is **missed**: claimed in ``missed_slots`` (a row per
schedule and slot; a conflict means another process claimed it) and recorded as one job per
destination of the set: status ``BS_STOP_MISSED_BACKUP``, mode ``S``, job ID the slot's time
in the server zone, start = end = the slot, zero counts, and one ``info`` log entry naming the
schedule and the slot (a destination that has a job of that ID already is left out). A job
that starts after the grace does not undo it: both are listed, as the issue asks.

``EARLY_TOLERANCE_MS`` (5 minutes): an agent's clock a little ahead, or its random start
delay, must not turn a job started just before the slot into a missed backup plus a job.

Concurrency: the due schedules are read and advanced in one write transaction per batch,
``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (two processes take different schedules;
SQLite has one writer anyway), and each advance is a compare-and-set (``WHERE id = ? AND
next_check_ms = <the slot judged>``): a schedule updated or removed meanwhile is left to its
new value. The claim's primary key is the last guard. Schedules of a removed set, or of a
suspended backup user, are advanced past every slot already judgeable without recording
anything (so a user taken back is not flooded with the slots of the suspension).

A sweep judges at most ``limit`` slots (default :data:`MAX_SLOTS_PER_SWEEP`): after a long
outage each missed slot is still recorded, over several sweeps (``SweepOutcome.more``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from opencbs.errors import Conflict, InvalidInput, OpenCBSError
from opencbs.model.schedules import Schedule, describe, next_slot
from opencbs.reports.timefmt import job_id_at, report_time
from opencbs.reports.vocabulary import AccountStatus, JobMode, JobStatus, LogType, ReportList
from opencbs.store import jobs
from opencbs.store.db import Database
from opencbs.store.schema import backup_jobs, backup_sets, backup_users, missed_slots, schedules
from opencbs.store.sets import BackupSet, get_set

log = logging.getLogger(__name__)

__all__ = [
    "EARLY_TOLERANCE_MS",
    "LONGEST_COVER_MS",
    "MAX_SLOTS_PER_SWEEP",
    "JobEnded",
    "MissedSlot",
    "SweepOutcome",
    "sweep_missed",
]

#: A job started up to this long (ms) before a slot answers it (5 minutes).
EARLY_TOLERANCE_MS = 5 * 60_000
#: A job running at a slot answers it if it started at most this long (ms) before (7 days).
LONGEST_COVER_MS = 7 * 24 * 3_600_000
#: Most slots one sweep judges; the rest wait for the next sweep.
MAX_SLOTS_PER_SWEEP = 1000
#: Due schedules read and advanced per write transaction (SQLite's one writer waits at most
#: that long: ~50 ms when every slot is answered, ~350 ms when every slot is missed).
BATCH = 50
#: Job IDs are start times in the server zone: a day either side covers any zone's offset.
_ZONE_MARGIN_MS = 2 * 24 * 3_600_000
_MISSED = JobStatus.STOP_MISSED_BACKUP.value


class JobEnded(Protocol):
    """The alerts' hook (``opencbs.notify.alerts.job_ended``): called in the write transaction
    that gave job ``job_pk`` its final status; ``at_ms`` epoch ms."""

    def __call__(self, conn: Connection, job_pk: int, *, at_ms: int) -> object: ...


@dataclass(frozen=True)
class MissedSlot:
    """A slot recorded missed: its schedule (ID, name), set, backup user, the slot (epoch ms),
    the job ID and the internal keys of the jobs recorded (one per destination; empty when
    every destination had a job of that ID already or the set has none)."""

    schedule_id: int
    schedule_name: str
    set_id: int
    user_id: int
    slot_ms: int
    job_id: str
    job_pks: tuple[int, ...]


@dataclass
class SweepOutcome:
    """What one sweep did: ``judged`` slots (answered or missed), ``recorded`` the missed ones,
    ``passed_over`` schedules of removed sets or suspended users advanced without judging,
    ``more``: slots were still due when the ``limit`` stopped it."""

    judged: int = 0
    recorded: list[MissedSlot] = field(default_factory=list)
    passed_over: int = 0
    more: bool = False


@dataclass(frozen=True)
class _Context:
    now_ms: int
    grace_ms: int
    tz: tzinfo
    on_job_ended: JobEnded | None


def sweep_missed(
    db: Database,
    *,
    now_ms: int,
    grace_ms: int,
    tz: tzinfo,
    limit: int = MAX_SLOTS_PER_SWEEP,
    on_job_ended: JobEnded | None = None,
) -> SweepOutcome:
    """Judge every schedule slot at or before ``now_ms - grace_ms`` (epoch ms), at most
    ``limit`` of them, oldest first; record each missed one (module docstring). ``tz``: the
    server zone (job IDs, and the zone of sets without their own). ``on_job_ended`` is called
    for each job recorded, in its transaction (the alerts' hook). Raises ``StoreError`` when
    the database fails (what was committed before stays)."""
    ctx = _Context(now_ms, grace_ms, tz, on_job_ended)
    horizon = now_ms - grace_ms
    outcome = SweepOutcome()
    budget = limit
    while budget > 0:
        with db.write() as conn:
            due = _due(conn, horizon, min(budget, BATCH))
            for row in due:
                _guarded(conn, row, ctx, outcome)
        budget -= len(due)
        if not due:
            return outcome
    with db.read() as conn:
        outcome.more = conn.execute(
            select(exists().where(schedules.c.next_check_ms <= horizon))
        ).scalar_one()
    return outcome


def _due(conn: Connection, horizon: int, count: int) -> list[Any]:
    """Up to ``count`` schedules whose next slot is at or before ``horizon``, oldest slot
    first, locked (PostgreSQL; others' locked rows skipped), with their set and user."""
    query = (
        select(
            schedules.c.id,
            schedules.c.set_id,
            schedules.c.settings,
            schedules.c.next_check_ms,
            backup_sets.c.user_id,
            backup_sets.c.removed,
            backup_sets.c.settings.label("set_settings"),
            backup_users.c.status.label("user_status"),
        )
        .join(backup_sets, backup_sets.c.id == schedules.c.set_id)
        .join(backup_users, backup_users.c.id == backup_sets.c.user_id)
        .where(schedules.c.next_check_ms <= horizon)
        .order_by(schedules.c.next_check_ms, schedules.c.id)
        .limit(count)
        .with_for_update(skip_locked=True, of=schedules)
    )
    return list(conn.execute(query))


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def _set_zone(set_settings: Any, server_zone: tzinfo) -> tzinfo:
    """The zone of a set's schedules from its stored settings (``store.schedules.set_zone``'s
    rule, read from the joined row: its ``time_zone`` else the server's)."""
    name = set_settings.get("time_zone") if isinstance(set_settings, dict) else None
    if not name:
        return server_zone
    try:
        return _zone(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return server_zone


def _advance(conn: Connection, schedule_id: int, old: int, new: int | None) -> bool:
    """Compare-and-set of a schedule's ``next_check_ms`` from ``old`` to ``new``: ``False``
    when it no longer holds ``old`` (updated, removed, or another process advanced it)."""
    done = conn.execute(
        update(schedules)
        .where(schedules.c.id == schedule_id, schedules.c.next_check_ms == old)
        .values(next_check_ms=new)
    )
    return bool(done.rowcount)


def _guarded(conn: Connection, row: Any, ctx: _Context, outcome: SweepOutcome) -> None:
    """:func:`_handle` in a savepoint: a slot that fails (a set whose stored settings no
    longer load, …) is logged and passed over, so it never stops the sweep for good."""
    try:
        with conn.begin_nested():
            _handle(conn, row, ctx, outcome)
    except (OpenCBSError, SQLAlchemyError):
        log.exception(
            "missed-backup check of schedule %s (set %s), slot %s failed: passed over",
            row.id,
            row.set_id,
            row.next_check_ms,
        )
        _advance(conn, row.id, row.next_check_ms, _after(row, ctx))


def _after(row: Any, ctx: _Context) -> int | None:
    """The slot after a failed one, or ``None`` (the schedule no longer parses)."""
    try:
        schedule = Schedule.parse(row.settings)
    except InvalidInput:
        return None
    return next_slot(schedule, _set_zone(row.set_settings, ctx.tz), row.next_check_ms)


def _handle(conn: Connection, row: Any, ctx: _Context, outcome: SweepOutcome) -> None:
    """Judge the due slot of one schedule ``row`` and advance it, in ``conn``'s transaction."""
    slot: int = row.next_check_ms
    try:
        schedule = Schedule.parse(row.settings)
    except InvalidInput as exc:
        log.warning("schedule %s of set %s not checked: %s", row.id, row.set_id, exc.message)
        _advance(conn, row.id, slot, None)
        return
    zone = _set_zone(row.set_settings, ctx.tz)
    if row.removed or row.user_status == AccountStatus.SUSPENDED.value:
        # nothing to report; resume at the first slot not judgeable yet
        after = max(slot, ctx.now_ms - ctx.grace_ms)
        if _advance(conn, row.id, slot, next_slot(schedule, zone, after)):
            outcome.passed_over += 1
        return
    following = next_slot(schedule, zone, slot)
    if not _advance(conn, row.id, slot, following):
        return
    outcome.judged += 1
    window = _Window.of(schedule, slot, following, ctx)
    if _answered(conn, row.set_id, window, ctx):
        return
    bset = get_set(conn, row.user_id, row.set_id)
    if not _claim(conn, row.id, bset.id, slot, at_ms=ctx.now_ms):
        return
    pks = _record(conn, bset, schedule, window, zone=zone, ctx=ctx)
    outcome.recorded.append(
        MissedSlot(
            schedule_id=row.id,
            schedule_name=schedule.name,
            set_id=bset.id,
            user_id=bset.user_id,
            slot_ms=slot,
            job_id=job_id_at(slot, ctx.tz),
            job_pks=tuple(pks),
        )
    )


@dataclass(frozen=True)
class _Window:
    """When a job must start to answer ``slot``: from ``earliest`` to ``latest`` (epoch ms)."""

    slot: int
    earliest: int
    latest: int

    @classmethod
    def of(cls, schedule: Schedule, slot: int, following: int | None, ctx: _Context) -> _Window:
        """``EARLY_TOLERANCE_MS`` before the slot to the grace after it; for a periodic
        schedule at most half its interval before, and never at or past its next slot (each
        job answers one slot of an every-minute schedule, not the five around it)."""
        early = EARLY_TOLERANCE_MS
        if schedule.interval_minutes is not None:
            early = min(early, schedule.interval_minutes * 30_000)
        latest = slot + ctx.grace_ms
        if schedule.interval_minutes is not None and following is not None:
            latest = min(latest, following - 1)
        return cls(slot, slot - early, latest)


def _answered(conn: Connection, set_id: int, window: _Window, ctx: _Context) -> bool:
    """Whether a backup job of set ``set_id`` answers the slot (module docstring): one started
    within ``window``, or one running at the slot."""
    c = backup_jobs.c
    slot, latest = window.slot, window.latest
    earliest = slot - LONGEST_COVER_MS
    query = select(c.pk).where(
        c.set_id == set_id,
        # the (set_id, job_id) index: a job's ID is its start time in the server zone
        c.job_id >= job_id_at(earliest - _ZONE_MARGIN_MS, ctx.tz),
        c.job_id <= job_id_at(latest + _ZONE_MARGIN_MS, ctx.tz),
        c.status != _MISSED,
        c.start_time <= latest,
        c.start_time >= earliest,
        or_(
            c.start_time >= window.earliest,
            c.end_time.is_(None),
            c.end_time >= slot,
        ),
    )
    return conn.execute(query.limit(1)).first() is not None


def _claim(conn: Connection, schedule_id: int, set_id: int, slot: int, *, at_ms: int) -> bool:
    """Insert the claim of a missed slot; ``False`` when it was claimed already."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(missed_slots)
        .values(schedule_id=schedule_id, slot_ms=slot, set_id=set_id, recorded_at=at_ms)
        .on_conflict_do_nothing(index_elements=["schedule_id", "slot_ms"])
    )
    return bool(conn.execute(stmt).rowcount)


def _message(schedule: Schedule, window: _Window, *, zone: tzinfo) -> str:
    """The log entry of a missed backup's report: which schedule, which slot, and the window
    in which no job started, all in the set's zone (named)."""
    where = getattr(zone, "key", None) or str(zone)
    return (
        f"Backup missed: schedule '{schedule.name}' ({describe(schedule)}) was due at "
        f"{report_time(window.slot, zone)}; no backup job of this set started between "
        f"{report_time(window.earliest, zone)} and {report_time(window.latest, zone)} "
        f"(times in {where})"
    )


def _record(
    conn: Connection,
    bset: BackupSet,
    schedule: Schedule,
    window: _Window,
    *,
    zone: tzinfo,
    ctx: _Context,
) -> list[int]:
    """One ``BS_STOP_MISSED_BACKUP`` job per destination of ``bset`` for ``slot`` (through
    ``store.jobs``: start, its log entry, finish); their internal keys."""
    slot = window.slot
    message = _message(schedule, window, zone=zone)
    entry = jobs.EntryIn(ReportList.LOG, LogType.INFO.value, message, mtime_ms=slot)
    pks: list[int] = []
    for dest in bset.destinations:
        try:
            job = jobs.start_job(
                conn, bset, dest.id, tz=ctx.tz, start_ms=slot, mode=JobMode.SCHEDULED
            )
        except Conflict:
            continue  # a job of that ID exists for this destination
        jobs.append_batch(conn, job.pk, 0, [entry])
        jobs.finish_job(conn, job.pk, JobStatus.STOP_MISSED_BACKUP, end_ms=slot)
        if ctx.on_job_ended is not None:
            ctx.on_job_ended(conn, job.pk, at_ms=ctx.now_ms)
        pks.append(job.pk)
    return pks
