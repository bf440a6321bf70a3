"""Alert rules, the outbox of alerts and the delivery log (tables ``alert_rules``,
``alert_events``, ``alert_deliveries``; cbs-api.md §15). Queries only: which rule fires when,
and how an alert is sent, are ``opencbs.notify``'s.

Exactly once: an alert is a row of the outbox whose key is unique per rule (``enqueue``
inserts it or finds it there, on both databases, whichever process comes first); a process
sends a row only under its claim (``claim_due``, ``claim``: a conditional update that one
process wins), and records each attempt (``record_attempt``) only while it still holds it.
Times are epoch ms.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from opencbs.errors import AlertRuleNotFound
from opencbs.model.alerts import (
    SUCCESS_STATUSES,
    AlertEvent,
    Channel,
    DeliveryState,
    RuleSpec,
    ScopeKind,
)
from opencbs.reports.vocabulary import SystemRole
from opencbs.store.schema import (
    alert_deliveries,
    alert_events,
    alert_rules,
    backup_jobs,
    backup_sets,
    backup_users,
    system_users,
)

_R = alert_rules.c
_E = alert_events.c
_D = alert_deliveries.c


@dataclass(frozen=True)
class AlertRule:
    """A stored rule (``RuleSpec`` and its ``id``, ``enabled``, ``created_at``). ``secret``
    is the webhook's HMAC key: never served (``as_json`` leaves it out)."""

    id: int
    scope: ScopeKind
    scope_name: str
    event: AlertEvent
    set_id: int | None
    hours: int | None
    channel: Channel
    target: str
    secret: str
    enabled: bool
    created_at: int

    def as_json(self) -> dict[str, Any]:
        """The rule as the API and ``--json`` show it (cbs-api.md §15), without its secret:
        ``RuleID``, ``ScopeType``, ``LoginName`` or ``SysUser`` … (IDs strings)."""
        return {
            "RuleID": str(self.id),
            "ScopeType": "BACKUP_USER" if self.scope is ScopeKind.BACKUP_USER else "SYSTEM_USER",
            "ScopeName": self.scope_name,
            "Event": self.event.value,
            "BackupSetID": "" if self.set_id is None else str(self.set_id),
            "Hours": self.hours,
            "Channel": self.channel.value,
            "Target": self.target,
            "Enabled": self.enabled,
            "CreatedAt": self.created_at,
        }


def _rule(row: Row) -> AlertRule:  # type: ignore[type-arg]
    m = row._mapping
    return AlertRule(
        id=m["id"],
        scope=ScopeKind(m["scope_kind"]),
        scope_name=m["scope_name"],
        event=AlertEvent(m["event"]),
        set_id=m["set_id"],
        hours=m["hours"],
        channel=Channel(m["channel"]),
        target=m["target"],
        secret=m["secret"],
        enabled=m["enabled"],
        created_at=m["created_at"],
    )


# --- rules ---------------------------------------------------------------------------------


def insert_rule(conn: Connection, spec: RuleSpec, *, secret: str, at_ms: int) -> AlertRule:
    """Store rule ``spec`` (checked by the caller) with its webhook ``secret`` ("" for email),
    enabled, created at ``at_ms``."""
    result = conn.execute(
        alert_rules.insert().values(
            scope_kind=spec.scope.value,
            scope_name=spec.scope_name,
            event=spec.event.value,
            set_id=spec.set_id,
            hours=spec.hours,
            channel=spec.channel.value,
            target=spec.target,
            secret=secret,
            enabled=True,
            created_at=at_ms,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return get_rule(conn, int(pk[0]))


def get_rule(conn: Connection, rule_id: int) -> AlertRule:
    """Rule ``rule_id``; raises ``AlertRuleNotFound``."""
    row = conn.execute(select(alert_rules).where(_R.id == rule_id)).first()
    if row is None:
        raise AlertRuleNotFound(str(rule_id))
    return _rule(row)


def _in_reseller_scope(reseller: str) -> ColumnElement[bool]:
    """Rules a reseller sees: its own system-user rules and its backup users' rules."""
    own_users = select(backup_users.c.login_name).where(backup_users.c.owner == reseller)
    return or_(
        and_(_R.scope_kind == ScopeKind.SYSTEM_USER.value, _R.scope_name == reseller),
        and_(_R.scope_kind == ScopeKind.BACKUP_USER.value, _R.scope_name.in_(own_users)),
    )


def list_rules(
    conn: Connection, *, reseller: str | None = None, login_name: str | None = None
) -> list[AlertRule]:
    """Rules by ID; within a ``reseller``'s scope when given (``None``: every rule), and only
    backup user ``login_name``'s when given."""
    q = select(alert_rules).order_by(_R.id)
    if reseller is not None:
        q = q.where(_in_reseller_scope(reseller))
    if login_name is not None:
        q = q.where(_R.scope_kind == ScopeKind.BACKUP_USER.value, _R.scope_name == login_name)
    return [_rule(r) for r in conn.execute(q)]


def rule_in_scope(conn: Connection, rule: AlertRule, reseller: str | None) -> bool:
    """Whether ``rule`` lies in a ``reseller``'s scope (``None``: every rule does)."""
    if reseller is None:
        return True
    q = select(_R.id).where(_R.id == rule.id, _in_reseller_scope(reseller))
    return conn.execute(q).first() is not None


def delete_rule(conn: Connection, rule_id: int) -> None:
    """Remove rule ``rule_id`` with its alerts and their delivery log; raises
    ``AlertRuleNotFound``."""
    get_rule(conn, rule_id)
    events = select(_E.id).where(_E.rule_id == rule_id)
    conn.execute(delete(alert_deliveries).where(_D.event_id.in_(events)))
    conn.execute(delete(alert_events).where(_E.rule_id == rule_id))
    conn.execute(delete(alert_rules).where(_R.id == rule_id))


def _seeing_system_users(owner: str) -> Any:
    """Names of the system users that see a backup user of ``owner`` (cbs-api.md §2): every
    one that is not a reseller, and the reseller ``owner``."""
    return select(system_users.c.name).where(
        or_(system_users.c.role != SystemRole.RESELLER.value, system_users.c.name == owner)
    )


def rules_for_job(
    conn: Connection,
    *,
    login_name: str,
    owner: str,
    set_id: int,
    events: Collection[AlertEvent],
) -> list[AlertRule]:
    """The enabled rules with one of ``events`` that cover set ``set_id`` of backup user
    ``login_name`` (owned by ``owner``): the user's own, and those of the system users that
    see it; each naming that set or none."""
    if not events:
        return []
    q = select(alert_rules).where(
        _R.enabled.is_(True),
        _R.event.in_([e.value for e in events]),
        or_(_R.set_id.is_(None), _R.set_id == set_id),
        or_(
            and_(_R.scope_kind == ScopeKind.BACKUP_USER.value, _R.scope_name == login_name),
            and_(
                _R.scope_kind == ScopeKind.SYSTEM_USER.value,
                _R.scope_name.in_(_seeing_system_users(owner)),
            ),
        ),
    )
    return [_rule(r) for r in conn.execute(q.order_by(_R.id))]


def enabled_rules(conn: Connection, event: AlertEvent) -> list[AlertRule]:
    """The enabled rules of ``event``, by ID (the sweeps' NO_SUCCESS and DIGEST rules)."""
    q = select(alert_rules).where(_R.enabled.is_(True), _R.event == event.value)
    return [_rule(r) for r in conn.execute(q.order_by(_R.id))]


# --- what the sweeps read --------------------------------------------------------------------


@dataclass(frozen=True)
class SetOwner:
    """A backup set with its user: IDs, names, ``removed``, ``created_at`` (epoch ms)."""

    set_id: int
    set_name: str
    login_name: str
    owner: str
    removed: bool
    created_at: int


def set_owner(conn: Connection, set_id: int) -> SetOwner | None:
    """Set ``set_id`` and its backup user, or ``None`` when there is no such set."""
    row = conn.execute(
        select(
            backup_sets.c.id,
            backup_sets.c.name,
            backup_sets.c.removed,
            backup_sets.c.created_at,
            backup_users.c.login_name,
            backup_users.c.owner,
        )
        .join(backup_users, backup_users.c.id == backup_sets.c.user_id)
        .where(backup_sets.c.id == set_id)
    ).first()
    if row is None:
        return None
    return SetOwner(
        set_id=row.id,
        set_name=row.name,
        login_name=row.login_name,
        owner=row.owner,
        removed=row.removed,
        created_at=row.created_at,
    )


def last_success(conn: Connection, set_ids: Collection[int]) -> dict[int, int]:
    """Set ID -> the end (epoch ms) of its latest successful job (``BS_STOP_SUCCESS`` or with
    warnings) among ``set_ids``; sets without one are absent."""
    if not set_ids:
        return {}
    rows = conn.execute(
        select(backup_jobs.c.set_id, func.max(backup_jobs.c.end_time))
        .where(
            backup_jobs.c.set_id.in_(list(set_ids)),
            backup_jobs.c.status.in_(SUCCESS_STATUSES),
            backup_jobs.c.end_time.is_not(None),
        )
        .group_by(backup_jobs.c.set_id)
    )
    return {int(r[0]): int(r[1]) for r in rows}


@dataclass(frozen=True)
class JobLine:
    """One backup job for a digest or an alert: who, which set, its ID, status and times
    (epoch ms; ``end_time`` ``None`` while running), ``warn_entries`` / ``error_entries``."""

    pk: int
    login_name: str
    owner: str
    set_id: int
    set_name: str
    destination_id: int
    job_id: str
    mode: str
    status: str
    start_time: int
    end_time: int | None
    warn_entries: int
    error_entries: int


def _job_lines_query() -> Any:
    j = backup_jobs.c
    return (
        select(
            j.pk,
            backup_users.c.login_name,
            backup_users.c.owner,
            j.set_id,
            backup_sets.c.name.label("set_name"),
            j.destination_id,
            j.job_id,
            j.mode,
            j.status,
            j.start_time,
            j.end_time,
            j.warn_entries,
            j.error_entries,
        )
        .join(backup_sets, backup_sets.c.id == j.set_id)
        .join(backup_users, backup_users.c.id == backup_sets.c.user_id)
    )


def _job_line(row: Row) -> JobLine:  # type: ignore[type-arg]
    return JobLine(**dict(row._mapping))


def job_line(conn: Connection, pk: int) -> JobLine | None:
    """Job ``pk`` with its user and set, or ``None``."""
    row = conn.execute(_job_lines_query().where(backup_jobs.c.pk == pk)).first()
    return None if row is None else _job_line(row)


def jobs_started_between(
    conn: Connection,
    start_ms: int,
    end_ms: int,
    *,
    login_name: str | None = None,
    reseller: str | None = None,
) -> list[JobLine]:
    """Backup jobs started in [``start_ms``, ``end_ms``), by start time: of backup user
    ``login_name`` when given, of a ``reseller``'s users when given, else of every user."""
    q = _job_lines_query().where(
        backup_jobs.c.start_time >= start_ms, backup_jobs.c.start_time < end_ms
    )
    if login_name is not None:
        q = q.where(backup_users.c.login_name == login_name)
    if reseller is not None:
        q = q.where(backup_users.c.owner == reseller)
    return [_job_line(r) for r in conn.execute(q.order_by(backup_jobs.c.start_time))]


def system_role(conn: Connection, name: str) -> SystemRole | None:
    """The role of system user ``name``, or ``None`` when there is none."""
    row = conn.execute(select(system_users.c.role).where(system_users.c.name == name)).first()
    return None if row is None else SystemRole(row.role)


# --- the outbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """An alert to send, as claimed: the outbox row (``event_id``, ``event_key``, ``kind``,
    ``attempts`` made before this one, ``payload``) and its rule's ``channel``, ``target`` and
    webhook ``secret``."""

    event_id: int
    rule_id: int
    event_key: str
    kind: str
    attempts: int
    payload: Mapping[str, Any]
    channel: Channel
    target: str
    secret: str


def enqueue(
    conn: Connection,
    rule_id: int,
    event_key: str,
    payload: Mapping[str, Any],
    *,
    at_ms: int,
) -> int | None:
    """Put the alert ``event_key`` of rule ``rule_id`` in the outbox (``PENDING``, due at
    ``at_ms``) unless it is there already; its ID when this call inserted it, else ``None``.
    ``payload["event"]`` is its kind. Safe with several processes: the unique key decides
    (``INSERT … ON CONFLICT DO NOTHING``; on PostgreSQL a second inserter waits for the first
    transaction and then inserts nothing)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(alert_events)
        .values(
            rule_id=rule_id,
            event_key=event_key,
            kind=str(payload.get("event", "")),
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_ms=at_ms,
            payload=dict(payload),
            created_at=at_ms,
        )
        .on_conflict_do_nothing(index_elements=["rule_id", "event_key"])
        .returning(_E.id)
    )
    row = conn.execute(stmt).first()  # no row: it was there already
    return None if row is None else int(row.id)


def _claimable(now_ms: int) -> ColumnElement[bool]:
    """Due rows: pending and due, or sending under a claim that ran out (a process that died
    while it sent: sent again, at least once)."""
    return or_(
        and_(_E.state == DeliveryState.PENDING.value, _E.next_attempt_ms <= now_ms),
        and_(_E.state == DeliveryState.SENDING.value, _E.claim_until < now_ms),
    )


def _outgoing_query() -> Any:
    return select(
        _E.id, _E.rule_id, _E.event_key, _E.kind, _E.attempts, _E.payload,
        _R.channel, _R.target, _R.secret,
    ).join(alert_rules, _R.id == _E.rule_id)  # fmt: skip


def _outgoing(row: Row) -> Outgoing:  # type: ignore[type-arg]
    return Outgoing(
        event_id=row.id,
        rule_id=row.rule_id,
        event_key=row.event_key,
        kind=row.kind,
        attempts=row.attempts,
        payload=dict(row.payload),
        channel=Channel(row.channel),
        target=row.target,
        secret=row.secret,
    )


def claim(conn: Connection, event_id: int, *, worker: str, now_ms: int, lease_ms: int) -> bool:
    """Claim alert ``event_id`` for ``worker`` until ``now_ms + lease_ms`` if it is due
    (``_claimable``); ``True`` when this call won it."""
    done = conn.execute(
        update(alert_events)
        .where(_E.id == event_id, _claimable(now_ms))
        .values(state=DeliveryState.SENDING.value, claimed_by=worker, claim_until=now_ms + lease_ms)
    )
    return bool(done.rowcount)


def claim_due(
    conn: Connection, *, worker: str, now_ms: int, lease_ms: int, limit: int = 20
) -> list[Outgoing]:
    """Claim up to ``limit`` due alerts (oldest due first) for ``worker`` until ``now_ms +
    lease_ms``; the ones this call won. Each claim is a conditional update: of two processes
    that read the same row, one wins it."""
    ids = conn.execute(
        select(_E.id).where(_claimable(now_ms)).order_by(_E.next_attempt_ms, _E.id).limit(limit)
    ).all()
    won = [r.id for r in ids if claim(conn, r.id, worker=worker, now_ms=now_ms, lease_ms=lease_ms)]
    if not won:
        return []
    rows = conn.execute(_outgoing_query().where(_E.id.in_(won)).order_by(_E.id))
    return [_outgoing(r) for r in rows]


def outgoing(conn: Connection, event_id: int) -> Outgoing:
    """Alert ``event_id`` with its rule's channel and target (a claimed row)."""
    return _outgoing(conn.execute(_outgoing_query().where(_E.id == event_id)).one())


def record_attempt(
    conn: Connection,
    item: Outgoing,
    *,
    worker: str,
    ok: bool,
    detail: str,
    at_ms: int,
    retry_at_ms: int | None,
) -> DeliveryState | None:
    """Log one attempt to send ``item`` (``ok``, ``detail``: the reply or the error, no
    secret) and settle its row: ``SENT``; or ``PENDING`` again, due at ``retry_at_ms``; or
    ``FAILED`` when ``retry_at_ms`` is ``None``. Only while ``worker`` still holds the claim:
    else nothing changes and the answer is ``None`` (another process took it over)."""
    attempt = item.attempts + 1
    values: dict[str, Any]
    if ok:
        state, values = DeliveryState.SENT, {"sent_at": at_ms, "last_error": None}
    elif retry_at_ms is None:
        state, values = DeliveryState.FAILED, {"last_error": detail}
    else:
        state, values = (
            DeliveryState.PENDING,
            {"next_attempt_ms": retry_at_ms, "last_error": detail},
        )
    done = conn.execute(
        update(alert_events)
        .where(
            _E.id == item.event_id,
            _E.state == DeliveryState.SENDING.value,
            _E.claimed_by == worker,
        )
        .values(state=state.value, attempts=attempt, claimed_by=None, claim_until=None, **values)
    )
    if not done.rowcount:
        return None
    conn.execute(
        alert_deliveries.insert().values(
            event_id=item.event_id, attempt=attempt, at=at_ms, ok=ok, detail=detail[:2000]
        )
    )
    return state


@dataclass(frozen=True)
class DeliveryLine:
    """One attempt of the log, with its alert: IDs, key, kind, the alert's ``state`` now,
    ``attempt`` (1, 2, …), ``at`` (epoch ms), ``ok``, ``detail``."""

    event_id: int
    rule_id: int
    event_key: str
    kind: str
    state: str
    attempt: int
    at: int
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        """The attempt as the API and ``--json`` show it (cbs-api.md §15)."""
        return {
            "EventID": str(self.event_id),
            "RuleID": str(self.rule_id),
            "EventKey": self.event_key,
            "Event": self.kind,
            "State": self.state,
            "Attempt": self.attempt,
            "At": self.at,
            "Ok": self.ok,
            "Detail": self.detail,
        }


def list_deliveries(
    conn: Connection, rule_ids: Collection[int] | None = None, *, limit: int = 100
) -> list[DeliveryLine]:
    """The newest ``limit`` attempts (newest first), of the rules ``rule_ids`` when given."""
    q = (
        select(
            _D.event_id, _E.rule_id, _E.event_key, _E.kind, _E.state,
            _D.attempt, _D.at, _D.ok, _D.detail,
        )
        .join(alert_events, _E.id == _D.event_id)
        .order_by(_D.at.desc(), _D.id.desc())
        .limit(limit)
    )  # fmt: skip
    if rule_ids is not None:
        q = q.where(_E.rule_id.in_(list(rule_ids)))
    return [DeliveryLine(**dict(r._mapping)) for r in conn.execute(q)]


def event_state(conn: Connection, event_id: int) -> tuple[str, int]:
    """(state, attempts) of alert ``event_id`` (tests and ``SendTestAlert``)."""
    row = conn.execute(select(_E.state, _E.attempts).where(_E.id == event_id)).one()
    return str(row.state), int(row.attempts)
