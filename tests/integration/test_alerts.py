"""Alert rules fire once (cbs-api.md §15), on SQLite and PostgreSQL: each event kind queues
one alert per rule, a second evaluation and a second server process add nothing, scopes hold,
the dead man's switch fires once per silence, the digest once per day; the outbox's claims
and its backoff with an injected clock."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, select

from opencbs.errors import AlertRuleNotFound, BackupSetNotFound, BackupUserNotFound, NotFound
from opencbs.model.alerts import AlertEvent, Channel, DeliveryState, RuleSpec, ScopeKind
from opencbs.notify import alerts as notify_alerts
from opencbs.notify import rules
from opencbs.notify.channels import Attempt
from opencbs.notify.delivery import DeliveryPolicy, deliver_due
from opencbs.reports.vocabulary import JobStatus, SystemRole
from opencbs.store import alerts, users
from opencbs.store.alerts import Outgoing
from opencbs.store.db import Database
from opencbs.store.schema import alert_events
from opencbs.store.util import now_ms
from tests.alert_support import UTC, UserSet, finished_job, user_with_set

HOUR = 3_600_000


def _rule(db: Database, scope_name: str, event: AlertEvent, **kw: object) -> int:
    scope = kw.pop("scope", ScopeKind.BACKUP_USER)
    spec = RuleSpec(
        scope=scope,  # type: ignore[arg-type]
        scope_name=scope_name,
        event=event,
        channel=Channel.WEBHOOK,
        target="http://127.0.0.1:9/hook",
        **kw,  # type: ignore[arg-type]
    )
    with db.write() as conn:
        return rules.add_rule(conn, spec, reseller=None, at_ms=now_ms()).rule.id


def _outbox(db: Database) -> list[tuple[int, str, str]]:
    with db.read() as conn:
        rows = conn.execute(
            select(alert_events.c.rule_id, alert_events.c.event_key, alert_events.c.kind).order_by(
                alert_events.c.id
            )
        ).all()
    return [(r.rule_id, r.event_key, r.kind) for r in rows]


@pytest.fixture
def alice(db: Database) -> UserSet:
    with db.write() as conn:
        return user_with_set(conn, "alice")


def _end(db: Database, us: UserSet, status: JobStatus, *, start: int, warnings: int = 0) -> int:
    with db.write() as conn:
        pk = finished_job(conn, us, status, start_ms=start, warnings=warnings)
        notify_alerts.job_ended(conn, pk, at_ms=start + 60_000)
    return pk


def test_each_event_kind_fires_once(db: Database, alice: UserSet) -> None:
    kinds = (AlertEvent.ERROR, AlertEvent.WARNING, AlertEvent.MISSED, AlertEvent.EVERY_JOB)
    ids = {e: _rule(db, "alice", e) for e in kinds}
    t = now_ms() - 10 * HOUR
    ok = _end(db, alice, JobStatus.STOP_SUCCESS, start=t)
    warned = _end(db, alice, JobStatus.STOP_SUCCESS, start=t + HOUR, warnings=2)
    failed = _end(db, alice, JobStatus.STOP_BY_SYSTEM_ERROR, start=t + 2 * HOUR)
    missed = _end(db, alice, JobStatus.STOP_MISSED_BACKUP, start=t + 3 * HOUR)
    found = set(_outbox(db))
    every = ids[AlertEvent.EVERY_JOB]
    assert found == {
        (every, f"job:{ok}:BS_STOP_SUCCESS", "EVERY_JOB"),
        (every, f"job:{warned}:BS_STOP_SUCCESS", "EVERY_JOB"),
        (ids[AlertEvent.WARNING], f"job:{warned}:BS_STOP_SUCCESS", "WARNING"),
        (every, f"job:{failed}:BS_STOP_BY_SYSTEM_ERROR", "EVERY_JOB"),
        (ids[AlertEvent.ERROR], f"job:{failed}:BS_STOP_BY_SYSTEM_ERROR", "ERROR"),
        (every, f"job:{missed}:BS_STOP_MISSED_BACKUP", "EVERY_JOB"),
        (ids[AlertEvent.MISSED], f"job:{missed}:BS_STOP_MISSED_BACKUP", "MISSED"),
    }
    assert len(_outbox(db)) == 7
    with db.write() as conn:  # the same job's end seen again: nothing new
        assert notify_alerts.job_ended(conn, failed, at_ms=now_ms()) == []
    assert len(_outbox(db)) == 7


def test_a_second_process_adds_nothing(db: Database, alice: UserSet) -> None:
    rule = _rule(db, "alice", AlertEvent.ERROR)
    with db.write() as conn:
        pk = finished_job(conn, alice, JobStatus.STOP_BY_SYSTEM_ERROR, start_ms=now_ms() - HOUR)
    other = Database(db.url)  # another server process's connections to the same database
    try:
        with other.write() as conn:
            first = notify_alerts.job_ended(conn, pk, at_ms=now_ms())
        with db.write() as conn:
            second = notify_alerts.job_ended(conn, pk, at_ms=now_ms())
    finally:
        other.dispose()
    assert len(first) == 1 and second == []
    assert _outbox(db) == [(rule, f"job:{pk}:BS_STOP_BY_SYSTEM_ERROR", "ERROR")]


def test_payload_of_a_job(db: Database, alice: UserSet) -> None:
    _rule(db, "alice", AlertEvent.ERROR)
    start = now_ms() - HOUR
    pk = _end(db, alice, JobStatus.STOP_BY_QUOTA_EXCEEDED, start=start)
    with db.read() as conn:
        payload = conn.execute(select(alert_events.c.payload)).scalar_one()
        job = alerts.job_line(conn, pk)
    assert job is not None
    assert payload["event"] == "ERROR" and payload["status"] == "BS_STOP_BY_QUOTA_EXCEEDED"
    assert payload["login_name"] == "alice" and payload["backup_set_id"] == str(alice.set_id)
    assert payload["backup_set_name"] == "docs" and payload["job_id"] == job.job_id
    assert payload["start_time"] == start and payload["end_time"] == start + 60_000
    assert payload["summary"] == (
        f"ERROR: backup job {job.job_id} of set \u2018docs\u2019 ({alice.set_id}) of user "
        "\u2018alice\u2019 ended BS_STOP_BY_QUOTA_EXCEEDED"
    )


def test_scopes(db: Database) -> None:
    with db.write() as conn:
        users.add_system_user(conn, "admin", "admin-password", SystemRole.ADMIN)
        a = user_with_set(conn, "a1", owner="res1")
        b = user_with_set(conn, "b1", owner="res2")
        a_other = user_with_set(conn, "a1", owner="res1", name="photos")
    admin_rule = _rule(db, "admin", AlertEvent.ERROR, scope=ScopeKind.SYSTEM_USER)
    res1_rule = _rule(db, "res1", AlertEvent.ERROR, scope=ScopeKind.SYSTEM_USER)
    set_rule = _rule(db, "a1", AlertEvent.ERROR, set_id=a.set_id)
    t = now_ms() - HOUR
    ja = _end(db, a, JobStatus.STOP_BY_SYSTEM_ERROR, start=t)
    jb = _end(db, b, JobStatus.STOP_BY_SYSTEM_ERROR, start=t)
    jo = _end(db, a_other, JobStatus.STOP_BY_SYSTEM_ERROR, start=t)
    by_job: dict[int, set[int]] = {}
    for rule_id, key, _kind in _outbox(db):
        by_job.setdefault(int(key.split(":")[1]), set()).add(rule_id)
    assert by_job == {
        ja: {admin_rule, res1_rule, set_rule},
        jb: {admin_rule},
        jo: {admin_rule, res1_rule},
    }


def test_who_may_add_and_see_which_rule(db: Database) -> None:
    with db.write() as conn:
        a = user_with_set(conn, "a1", owner="res1")
        b = user_with_set(conn, "b1", owner="res2")

    def add(spec_name: str, scope: ScopeKind, reseller: str | None, **kw: object) -> int:
        spec = RuleSpec(scope, spec_name, AlertEvent.ERROR, Channel.EMAIL, "x@example.com", **kw)  # type: ignore[arg-type]
        with db.write() as conn:
            return rules.add_rule(conn, spec, reseller=reseller, at_ms=1).rule.id

    own = add("a1", ScopeKind.BACKUP_USER, "res1")
    mine = add("res1", ScopeKind.SYSTEM_USER, "res1", set_id=a.set_id)
    theirs = add("b1", ScopeKind.BACKUP_USER, None)
    with pytest.raises(BackupUserNotFound):
        add("b1", ScopeKind.BACKUP_USER, "res1")
    with pytest.raises(NotFound):
        add("res2", ScopeKind.SYSTEM_USER, "res1")
    with pytest.raises(BackupSetNotFound):
        add("res1", ScopeKind.SYSTEM_USER, "res1", set_id=b.set_id)
    with pytest.raises(BackupSetNotFound):
        add("a1", ScopeKind.BACKUP_USER, None, set_id=b.set_id)
    with db.read() as conn:
        assert [r.id for r in rules.list_rules(conn, reseller="res1")] == [own, mine]
        assert [r.id for r in rules.list_rules(conn, reseller=None)] == [own, mine, theirs]
    with db.write() as conn, pytest.raises(AlertRuleNotFound):
        rules.remove_rule(conn, theirs, reseller="res1")
    with db.write() as conn:
        rules.remove_rule(conn, own, reseller="res1")
        assert [r.id for r in rules.list_rules(conn, reseller=None)] == [mine, theirs]


def test_no_success_fires_once_per_silence(db: Database, alice: UserSet) -> None:
    rule = _rule(db, "alice", AlertEvent.NO_SUCCESS, set_id=alice.set_id, hours=24)
    with db.read() as conn:
        created = alerts.set_owner(conn, alice.set_id).created_at  # type: ignore[union-attr]

    def sweep(at: int) -> list[int]:
        with db.write() as conn:
            return notify_alerts.check_no_success(conn, now_ms=at)

    assert sweep(created + 23 * HOUR) == []  # never a success, but not 24 hours yet
    assert len(sweep(created + 24 * HOUR)) == 1
    assert sweep(created + 30 * HOUR) == [] and sweep(created + 90 * HOUR) == []
    # a failure does not end the silence; a success with warnings does
    _end(db, alice, JobStatus.STOP_BY_SYSTEM_ERROR, start=created + 91 * HOUR)
    assert sweep(created + 92 * HOUR) == []
    _end(db, alice, JobStatus.STOP_SUCCESS_WITH_WARNING, start=created + 93 * HOUR)
    success_end = created + 93 * HOUR + 60_000
    assert sweep(success_end + 23 * HOUR) == []
    assert len(sweep(success_end + 24 * HOUR)) == 1
    assert sweep(success_end + 48 * HOUR) == []
    assert [k for r, k, _ in _outbox(db) if r == rule] == [
        f"nosuccess:{alice.set_id}:0",
        f"nosuccess:{alice.set_id}:{success_end}",
    ]


def test_digest_once_per_day(db: Database) -> None:
    with db.write() as conn:
        users.add_system_user(conn, "res1", "res1-password", SystemRole.RESELLER)
        a = user_with_set(conn, "a1", owner="res1")
        b = user_with_set(conn, "b1")
    rule = _rule(db, "res1", AlertEvent.DIGEST, scope=ScopeKind.SYSTEM_USER)
    day_start = int(datetime(2031, 5, 4, tzinfo=UTC).timestamp() * 1000)
    with db.write() as conn:  # the rule exists since before that day
        conn.execute(alerts.alert_rules.update().values(created_at=day_start - HOUR))
        finished_job(conn, a, JobStatus.STOP_SUCCESS, start_ms=day_start + HOUR)
        finished_job(conn, a, JobStatus.STOP_BY_SYSTEM_ERROR, start_ms=day_start + 2 * HOUR)
        finished_job(conn, a, JobStatus.STOP_MISSED_BACKUP, start_ms=day_start + 3 * HOUR)
        finished_job(conn, b, JobStatus.STOP_BY_SYSTEM_ERROR, start_ms=day_start + HOUR)
        finished_job(conn, a, JobStatus.STOP_BY_SYSTEM_ERROR, start_ms=day_start + 25 * HOUR)

    def digest(at: int) -> list[int]:
        with db.write() as conn:
            return notify_alerts.queue_digests(conn, now_ms=at, tz=UTC)

    assert len(digest(day_start + 24 * HOUR + 1)) == 1  # just after the day ended
    assert digest(day_start + 30 * HOUR) == []  # once
    with db.read() as conn:
        payload = conn.execute(select(alert_events.c.payload)).scalar_one()
    assert payload["date"] == "2031-05-04" and payload["job_count"] == 3  # b1 is not res1's
    assert payload["by_status"] == {
        "BS_STOP_BY_SYSTEM_ERROR": 1, "BS_STOP_MISSED_BACKUP": 1, "BS_STOP_SUCCESS": 1,
    }  # fmt: skip
    assert [f["status"] for f in payload["failures"]] == [
        "BS_STOP_BY_SYSTEM_ERROR",
        "BS_STOP_MISSED_BACKUP",
    ]
    assert _outbox(db) == [(rule, "digest:2031-05-04", "DIGEST")]


def _pending(db: Database, us: UserSet) -> int:
    _rule(db, us.login, AlertEvent.ERROR)
    _end(db, us, JobStatus.STOP_BY_SYSTEM_ERROR, start=now_ms() - HOUR)
    with db.read() as conn:
        return int(conn.execute(select(func.max(alert_events.c.id))).scalar_one())


def test_one_claim_wins(db: Database, alice: UserSet) -> None:
    event_id = _pending(db, alice)
    t = now_ms()
    other = Database(db.url)
    try:
        with db.write() as conn:
            first = alerts.claim_due(conn, worker="p1", now_ms=t, lease_ms=60_000)
        with other.write() as conn:
            second = alerts.claim_due(conn, worker="p2", now_ms=t + 1000, lease_ms=60_000)
        with other.write() as conn:  # the claim ran out (p1 died while sending): p2 takes it
            third = alerts.claim_due(conn, worker="p2", now_ms=t + 61_000, lease_ms=60_000)
    finally:
        other.dispose()
    assert [i.event_id for i in first] == [event_id] and second == []
    assert [i.event_id for i in third] == [event_id]
    with db.write() as conn:  # p1's late result is not recorded: p2 holds the claim
        state = alerts.record_attempt(
            conn, first[0], worker="p1", ok=True, detail="HTTP 200", at_ms=t, retry_at_ms=None
        )
    assert state is None


class Failing:
    """A sender that fails ``failures`` times, then delivers; counts its calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[int] = []

    def __call__(self, item: Outgoing) -> Attempt:
        self.calls.append(item.event_id)
        if len(self.calls) <= self.failures:
            return Attempt(False, "HTTP 503")
        return Attempt(True, "HTTP 200")


def test_backoff_with_an_injected_clock(db: Database, alice: UserSet) -> None:
    event_id = _pending(db, alice)
    policy = DeliveryPolicy(max_attempts=6, first_delay_s=30, max_delay_s=3600)
    sender = Failing(failures=100)
    t = now_ms()
    at = [t, t + 29_999, t + 30_000, t + 89_999, t + 90_000, t + 210_000, t + 450_000,
          t + 930_000, t + 10 * HOUR]  # fmt: skip
    states = []
    for when in at:
        done = deliver_due(db, sender, now_ms=when, policy=policy)
        states.append([d.state for d in done])
    P, F = DeliveryState.PENDING, DeliveryState.FAILED  # noqa: N806
    assert states == [[P], [], [P], [], [P], [P], [P], [F], []]
    assert sender.calls == [event_id] * 6
    with db.read() as conn:
        assert alerts.event_state(conn, event_id) == ("FAILED", 6)
        log = alerts.list_deliveries(conn, limit=10)
    assert [d.attempt for d in log] == [6, 5, 4, 3, 2, 1] and not any(d.ok for d in log)


def test_delivered_once_then_left_alone(db: Database, alice: UserSet) -> None:
    event_id = _pending(db, alice)
    sender = Failing(failures=0)
    t = now_ms()
    assert [d.ok for d in deliver_due(db, sender, now_ms=t)] == [True]
    assert deliver_due(db, sender, now_ms=t + HOUR) == []
    assert sender.calls == [event_id]
    with db.read() as conn:
        assert alerts.event_state(conn, event_id) == ("SENT", 1)
