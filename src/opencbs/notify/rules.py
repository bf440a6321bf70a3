"""Alert rules added, listed and removed within a caller's scope (cbs-api.md §2, §15).

``reseller`` is the caller's scope as everywhere in the server (``api.auth.Caller.scope``):
``None`` for a system user that sees every backup user (and the command line), else the
reseller's name. A reseller adds, sees and removes only its own system-user rules and rules of
its own backup users; anything else is "not found", never "forbidden" (that would confirm it
exists). A backup-user rule covers that user's sets (or the one named); a system-user rule
covers every backup user that system user sees, at the time a job ends.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection

from opencbs.errors import AlertRuleNotFound, BackupSetNotFound
from opencbs.model.alerts import Channel, RuleSpec, ScopeKind
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import alerts, sets, users
from opencbs.store.alerts import AlertRule


@dataclass(frozen=True)
class NewRule:
    """A rule just added, and its webhook secret (``""`` for email): the only time the secret
    is shown."""

    rule: AlertRule
    secret: str


def add_rule(conn: Connection, spec: RuleSpec, *, reseller: str | None, at_ms: int) -> NewRule:
    """Check ``spec`` and keep it (enabled), with a new random webhook secret (32 bytes, hex)
    for a ``WEBHOOK`` rule. Raises ``InvalidInput`` (``RuleSpec.check``),
    ``BackupUserNotFound`` / ``NotFound`` for a backup user or system user that does not
    exist or lies outside ``reseller``'s scope, ``BackupSetNotFound`` for a set outside the
    rule's scope."""
    spec.check()
    if spec.scope is ScopeKind.BACKUP_USER:
        user = users.get_backup_user(conn, spec.scope_name, scope=reseller)
        if spec.set_id is not None:
            sets.get_set(conn, user.id, spec.set_id)
    else:
        _check_system_scope(conn, spec, reseller)
    secret = secrets.token_hex(32) if spec.channel is Channel.WEBHOOK else ""
    rule = alerts.insert_rule(conn, spec, secret=secret, at_ms=at_ms)
    return NewRule(rule, secret)


def _check_system_scope(conn: Connection, spec: RuleSpec, reseller: str | None) -> None:
    role = alerts.system_role(conn, spec.scope_name)
    if role is None or (reseller is not None and spec.scope_name != reseller):
        raise users.system_user_not_found(spec.scope_name)
    if spec.set_id is None:
        return
    owner = alerts.set_owner(conn, spec.set_id)
    if owner is None or (role is SystemRole.RESELLER and owner.owner != spec.scope_name):
        raise BackupSetNotFound(str(spec.set_id))


def visible_rule(conn: Connection, rule_id: int, *, reseller: str | None) -> AlertRule:
    """Rule ``rule_id`` if it lies in ``reseller``'s scope; raises ``AlertRuleNotFound``."""
    rule = alerts.get_rule(conn, rule_id)
    if not alerts.rule_in_scope(conn, rule, reseller):
        raise AlertRuleNotFound(str(rule_id))
    return rule


def list_rules(
    conn: Connection, *, reseller: str | None, login_name: str | None = None
) -> list[AlertRule]:
    """The rules in ``reseller``'s scope (every rule for ``None``), only backup user
    ``login_name``'s when given (which must lie in the scope: else ``BackupUserNotFound``)."""
    if login_name is not None:
        users.get_backup_user(conn, login_name, scope=reseller)
    return alerts.list_rules(conn, reseller=reseller, login_name=login_name)


def remove_rule(conn: Connection, rule_id: int, *, reseller: str | None) -> AlertRule:
    """Remove rule ``rule_id`` (in ``reseller``'s scope) with its alerts and their delivery
    log; the rule as it was. Raises ``AlertRuleNotFound``."""
    rule = visible_rule(conn, rule_id, reseller=reseller)
    alerts.delete_rule(conn, rule_id)
    return rule


def deliveries(
    conn: Connection, *, reseller: str | None, rule_id: int | None = None, limit: int = 100
) -> list[alerts.DeliveryLine]:
    """The newest ``limit`` delivery attempts, newest first: of rule ``rule_id`` when given
    (in scope, else ``AlertRuleNotFound``), else of every rule in ``reseller``'s scope."""
    if rule_id is not None:
        visible_rule(conn, rule_id, reseller=reseller)
        return alerts.list_deliveries(conn, [rule_id], limit=limit)
    if reseller is None:
        return alerts.list_deliveries(conn, None, limit=limit)
    ids = [r.id for r in alerts.list_rules(conn, reseller=reseller)]
    return alerts.list_deliveries(conn, ids, limit=limit)
