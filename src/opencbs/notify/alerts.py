"""Which alerts to send: the rules evaluated when a job ends, the dead man's switch and the
daily digest (cbs-api.md §15). Each only puts alerts in the outbox (``store.alerts.enqueue``),
in the caller's transaction, under a key unique per rule, so an alert is queued once however
often and by however many server processes its cause is seen; ``opencbs.notify.delivery``
sends them.

Keys: ``job:<job pk>:<status>`` (a job closed for its agent's silence and finished later by
its agent raises both, honestly), ``nosuccess:<set ID>:<end of the last success, epoch ms, or
0>`` (one alert per silence), ``digest:<yyyy-MM-dd>`` (one per rule and day), ``test:<uuid>``.

Every payload (the webhook's JSON body; the email is written from it) has ``event`` (the
rule's ``AlertEvent``), ``rule_id``, ``summary`` (one line for a person) and the fields of its
kind; times are epoch ms, IDs strings.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import Connection

from opencbs.errors import quoted
from opencbs.model.alerts import AlertEvent, ScopeKind, events_of_status
from opencbs.reports.timefmt import day_bounds_ms
from opencbs.reports.vocabulary import SystemRole
from opencbs.reports.wording import plural
from opencbs.store import alerts
from opencbs.store.alerts import AlertRule, JobLine, SetOwner

#: Most failed jobs a digest lists (the others are counted).
DIGEST_FAILURES = 200


def _when(ms: int | None, tz: tzinfo) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def job_fields(job: JobLine) -> dict[str, Any]:
    """A job's fields in a payload: ``login_name``, ``owner``, ``backup_set_id``,
    ``backup_set_name``, ``destination_id``, ``job_id``, ``mode``, ``status``, ``start_time``,
    ``end_time``, ``warn_entries``, ``error_entries``."""
    return {
        "login_name": job.login_name,
        "owner": job.owner,
        "backup_set_id": str(job.set_id),
        "backup_set_name": job.set_name,
        "destination_id": str(job.destination_id),
        "job_id": job.job_id,
        "mode": job.mode,
        "status": job.status,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "warn_entries": job.warn_entries,
        "error_entries": job.error_entries,
    }


def job_summary(event: AlertEvent, job: JobLine) -> str:
    """``ERROR: backup job 2027-03-01-10-00-00 of set ‘docs’ (1740…) of user ‘alice’ ended
    BS_STOP_BY_SYSTEM_ERROR (2 errors, 1 warning)``."""
    counts = []
    if job.error_entries:
        counts.append(plural(job.error_entries, "error"))
    if job.warn_entries:
        counts.append(plural(job.warn_entries, "warning"))
    tail = f" ({', '.join(counts)})" if counts else ""
    return (
        f"{event.value}: backup job {job.job_id} of set {quoted(job.set_name)} ({job.set_id}) "
        f"of user {quoted(job.login_name)} ended {job.status}{tail}"
    )


def job_ended(conn: Connection, job_pk: int, *, at_ms: int) -> list[int]:
    """Queue the alerts of backup job ``job_pk``, which has just been given its final status
    (in the same write transaction: the agent's finish, the stale-job sweep, the
    missed-backup recorder): one per enabled rule that covers its set and whose event the
    status raises (``model.alerts.events_of_status``). Only inserts outbox rows, due at
    ``at_ms`` (epoch ms); the IDs of those this call inserted (none for a second call, or a
    job still running or unknown)."""
    job = alerts.job_line(conn, job_pk)
    if job is None:
        return []
    events = events_of_status(job.status, warn_entries=job.warn_entries)
    rules = alerts.rules_for_job(
        conn, login_name=job.login_name, owner=job.owner, set_id=job.set_id, events=events
    )
    queued = []
    for rule in rules:
        payload = {
            "event": rule.event.value,
            "rule_id": str(rule.id),
            "summary": job_summary(rule.event, job),
            **job_fields(job),
        }
        found = alerts.enqueue(conn, rule.id, f"job:{job.pk}:{job.status}", payload, at_ms=at_ms)
        if found is not None:
            queued.append(found)
    return queued


def _covers(conn: Connection, rule: AlertRule, owner: SetOwner) -> bool:
    """Whether ``rule``'s scope covers ``owner``'s set now."""
    if rule.scope is ScopeKind.BACKUP_USER:
        return owner.login_name == rule.scope_name
    role = alerts.system_role(conn, rule.scope_name)
    if role is None:
        return False
    return role is not SystemRole.RESELLER or owner.owner == rule.scope_name


def check_no_success(conn: Connection, *, now_ms: int, tz: tzinfo = UTC) -> list[int]:
    """The dead man's switch: for every enabled ``NO_SUCCESS`` rule whose set has had no
    successful job (``BS_STOP_SUCCESS`` or with warnings) for the rule's ``hours`` — since
    the end of its last success, or since the set was created when it never had one — queue
    one alert per silence (key ``nosuccess:<set>:<last success ms or 0>``). Removed sets are
    skipped. Times in the summary in ``tz``; the IDs of the alerts this call inserted."""
    rules = [r for r in alerts.enabled_rules(conn, AlertEvent.NO_SUCCESS) if r.set_id is not None]
    last = alerts.last_success(conn, {r.set_id for r in rules if r.set_id is not None})
    queued = []
    for rule in rules:
        assert rule.set_id is not None and rule.hours is not None
        owner = alerts.set_owner(conn, rule.set_id)
        if owner is None or owner.removed or not _covers(conn, rule, owner):
            continue
        success = last.get(rule.set_id)
        since = success if success is not None else owner.created_at
        if now_ms - since < rule.hours * 3_600_000:
            continue
        payload = _no_success_payload(rule, owner, success, since=since, tz=tz)
        key = f"nosuccess:{rule.set_id}:{success or 0}"
        found = alerts.enqueue(conn, rule.id, key, payload, at_ms=now_ms)
        if found is not None:
            queued.append(found)
    return queued


def _no_success_payload(
    rule: AlertRule, owner: SetOwner, success: int | None, *, since: int, tz: tzinfo
) -> dict[str, Any]:
    summary = (
        f"NO_SUCCESS: no successful backup of set {quoted(owner.set_name)} ({owner.set_id}) "
        f"of user {quoted(owner.login_name)} for {plural(rule.hours or 0, 'hour')} "
        f"(last success: {_when(success, tz)})"
    )
    return {
        "event": AlertEvent.NO_SUCCESS.value,
        "rule_id": str(rule.id),
        "summary": summary,
        "login_name": owner.login_name,
        "owner": owner.owner,
        "backup_set_id": str(owner.set_id),
        "backup_set_name": owner.set_name,
        "hours": rule.hours,
        "last_success_time": success,
        "silent_since": since,
    }


@dataclass(frozen=True)
class Day:
    """A calendar day in the server's zone: ``date`` ``yyyy-MM-dd`` and its bounds, epoch ms
    [``start_ms``, ``end_ms``)."""

    date: str
    start_ms: int
    end_ms: int


def previous_day(now_ms: int, tz: tzinfo) -> Day:
    """The last day that has ended at ``now_ms`` in zone ``tz`` (yesterday there)."""
    today = datetime.fromtimestamp(now_ms / 1000, tz).date()
    day = today - timedelta(days=1)
    start, end = day_bounds_ms(day, tz)
    return Day(day.isoformat(), start, end)


def queue_digests(conn: Connection, *, now_ms: int, tz: tzinfo) -> list[int]:
    """The daily digest: for every enabled ``DIGEST`` rule, once the day before ``now_ms``
    has ended in the server's zone ``tz``, queue one alert with that day's jobs in the rule's
    scope (counts by status, the failed ones listed; key ``digest:<yyyy-MM-dd>``). A rule
    created after that day ended waits for the next. The IDs of the alerts this call
    inserted."""
    day = previous_day(now_ms, tz)
    queued = []
    for rule in alerts.enabled_rules(conn, AlertEvent.DIGEST):
        if rule.created_at >= day.end_ms:
            continue
        jobs = _digest_jobs(conn, rule, day)
        if jobs is None:
            continue
        payload = digest_payload(rule, day, jobs)
        found = alerts.enqueue(conn, rule.id, f"digest:{day.date}", payload, at_ms=now_ms)
        if found is not None:
            queued.append(found)
    return queued


def _digest_jobs(conn: Connection, rule: AlertRule, day: Day) -> list[JobLine] | None:
    """The day's jobs in ``rule``'s scope (of its set when it names one); ``None`` when the
    rule's system user no longer exists."""
    if rule.scope is ScopeKind.BACKUP_USER:
        found = alerts.jobs_started_between(
            conn, day.start_ms, day.end_ms, login_name=rule.scope_name
        )
    else:
        role = alerts.system_role(conn, rule.scope_name)
        if role is None:
            return None
        reseller = rule.scope_name if role is SystemRole.RESELLER else None
        found = alerts.jobs_started_between(conn, day.start_ms, day.end_ms, reseller=reseller)
    return [j for j in found if rule.set_id is None or j.set_id == rule.set_id]


def _failed(job: JobLine) -> bool:
    events = events_of_status(job.status, warn_entries=job.warn_entries)
    return AlertEvent.ERROR in events or AlertEvent.MISSED in events


def digest_payload(rule: AlertRule, day: Day, jobs: list[JobLine]) -> dict[str, Any]:
    """A digest's payload: ``date``, its bounds (``start_time``, ``end_time``), ``job_count``,
    ``by_status`` (status -> count), ``failures`` (the failed and missed jobs, at most
    ``DIGEST_FAILURES``: their job fields), ``failures_omitted``; the summary counts them."""
    by_status = Counter(j.status for j in jobs)
    failed = [j for j in jobs if _failed(j)]
    ended = [j for j in jobs if j.end_time is not None]
    ok = sum(1 for j in ended if not _failed(j))
    summary = (
        f"DIGEST {day.date}: {plural(len(jobs), 'backup job')}, {ok} without failure, "
        f"{len(failed)} failed or missed"
    )
    scope = "every backup user" if rule.scope is ScopeKind.SYSTEM_USER else "backup user"
    return {
        "event": AlertEvent.DIGEST.value,
        "rule_id": str(rule.id),
        "summary": summary,
        "scope": f"{scope} of {rule.scope_name}",
        "date": day.date,
        "start_time": day.start_ms,
        "end_time": day.end_ms,
        "job_count": len(jobs),
        "by_status": dict(sorted(by_status.items())),
        "failures": [_failure(j) for j in failed[:DIGEST_FAILURES]],
        "failures_omitted": max(len(failed) - DIGEST_FAILURES, 0),
    }


def _failure(job: JobLine) -> dict[str, Any]:
    fields = job_fields(job)
    keep = ("login_name", "backup_set_id", "backup_set_name", "job_id", "status", "start_time")
    return {k: fields[k] for k in keep}


def test_alert_payload(rule: AlertRule, *, at_ms: int) -> dict[str, Any]:
    """A test alert's payload (``event`` ``TEST``): the rule and the time; nothing else."""
    return {
        "event": AlertEvent.TEST.value,
        "rule_id": str(rule.id),
        "summary": f"TEST: a test alert of opencbs rule {rule.id} ({rule.event.value})",
        "rule_event": rule.event.value,
        "sent_at": at_ms,
    }


def queue_test(conn: Connection, rule: AlertRule, *, at_ms: int) -> int:
    """Queue a test alert of ``rule`` (key ``test:<uuid>``); its ID."""
    payload = test_alert_payload(rule, at_ms=at_ms)
    found = alerts.enqueue(conn, rule.id, f"test:{uuid.uuid4()}", payload, at_ms=at_ms)
    assert found is not None  # a new key
    return found
