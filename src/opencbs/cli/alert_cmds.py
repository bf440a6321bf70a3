"""``opencbs alert add|list|remove|test|deliveries``: the server's alert rules (cbs-api.md §15;
README "Alerts"), through the same services as the API (``notify.rules``,
``notify.delivery``), with the server's database and SMTP settings and an administrator's
scope (every rule)."""

from __future__ import annotations

from datetime import datetime

import click

from opencbs.cli.common import (
    JSON,
    echo,
    note,
    open_database,
    print_json,
    print_table,
    with_settings,
)
from opencbs.errors import AlertNotDelivered, InvalidInput
from opencbs.model.alerts import RULE_EVENTS, AlertEvent, Channel, RuleSpec, ScopeKind
from opencbs.notify import rules
from opencbs.notify.channels import SmtpConfig
from opencbs.notify.delivery import ChannelSender, send_test
from opencbs.settings import Settings
from opencbs.store.util import now_ms

_EVENTS = [e.value for e in RULE_EVENTS]


@click.group()
def alert() -> None:
    """Alert rules: email or webhook on failed, warned, missed or every job, no success of a
    set for N hours, a daily digest; their test and delivery log."""


def _spec(
    user: str | None,
    sysuser: str | None,
    *,
    event: str,
    email: str | None,
    webhook: str | None,
    set_id: int | None,
    hours: int | None,
) -> RuleSpec:
    if (user is None) == (sysuser is None):
        raise InvalidInput(
            "give one of --user LOGIN or --sysuser NAME", "see `opencbs alert add -h`"
        )
    if (email is None) == (webhook is None):
        raise InvalidInput(
            "give one of --email ADDRESS or --webhook URL", "see `opencbs alert add -h`"
        )
    return RuleSpec(
        scope=ScopeKind.BACKUP_USER if user is not None else ScopeKind.SYSTEM_USER,
        scope_name=user if user is not None else sysuser or "",
        event=AlertEvent(event.upper()),
        channel=Channel.EMAIL if email is not None else Channel.WEBHOOK,
        target=email if email is not None else webhook or "",
        set_id=set_id,
        hours=hours,
    )


@alert.command("add")
@click.option("--user", default=None, metavar="LOGIN", help="A backup user's rule: its sets.")
@click.option(
    "--sysuser", default=None, metavar="NAME", help="A system user's rule: every user it sees."
)
@click.option(
    "--event",
    required=True,
    type=click.Choice(_EVENTS, case_sensitive=False),
    help="What to notify about.",
)
@click.option("--email", default=None, metavar="ADDRESS", help="Send the alerts by email.")
@click.option("--webhook", default=None, metavar="URL", help="POST the alerts, signed, to URL.")
@click.option("--set", "set_id", type=int, default=None, metavar="ID", help="One backup set.")
@click.option("--hours", type=int, default=None, help="NO_SUCCESS: hours without a success.")
@JSON
@with_settings()
def alert_add(
    settings: Settings,
    *,
    user: str | None,
    sysuser: str | None,
    event: str,
    email: str | None,
    webhook: str | None,
    set_id: int | None,
    hours: int | None,
    as_json: bool,
) -> None:
    """Add an alert rule; prints its ID (and a webhook's secret, shown only now)."""
    spec = _spec(
        user, sysuser, event=event, email=email, webhook=webhook, set_id=set_id, hours=hours
    )
    database = open_database(settings)
    try:
        with database.write() as conn:
            new = rules.add_rule(conn, spec, reseller=None, at_ms=now_ms())
    finally:
        database.dispose()
    if as_json:
        data = new.rule.as_json()
        if new.secret:
            data["WebhookSecret"] = new.secret
        print_json(data)
        return
    echo(str(new.rule.id))
    if new.secret:
        note(f"webhook secret (shown only now; it signs X-OpenCBS-Signature): {new.secret}")


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@alert.command("list")
@click.option("--user", default=None, metavar="LOGIN", help="Only this backup user's rules.")
@JSON
@with_settings()
def alert_list(settings: Settings, *, user: str | None, as_json: bool) -> None:
    """List the alert rules (never a secret)."""
    database = open_database(settings)
    try:
        with database.read() as conn:
            found = rules.list_rules(conn, reseller=None, login_name=user)
    finally:
        database.dispose()
    if as_json:
        print_json([r.as_json() for r in found])
        return
    rows = [
        [
            r.id,
            f"{'user' if r.scope is ScopeKind.BACKUP_USER else 'sysuser'} {r.scope_name}",
            r.event.value + (f" {r.hours}h" if r.hours else ""),
            r.set_id if r.set_id is not None else "all",
            r.channel.value,
            r.target,
        ]
        for r in found
    ]
    print_table(
        "Alert rules", ["ID", "Scope", "Event", "Set", "Channel", "Target"], rows, no_wrap=["ID"]
    )


@alert.command("remove")
@click.argument("rule_id", type=int)
@with_settings()
def alert_remove(settings: Settings, *, rule_id: int) -> None:
    """Remove alert rule RULE_ID with its alerts and delivery log."""
    database = open_database(settings)
    try:
        with database.write() as conn:
            rules.remove_rule(conn, rule_id, reseller=None)
    finally:
        database.dispose()
    note(f"alert rule {rule_id} removed")


@alert.command("test")
@click.argument("rule_id", type=int)
@with_settings()
def alert_test(settings: Settings, *, rule_id: int) -> None:
    """Send a test alert of rule RULE_ID to its target now; one line says how it went."""
    database = open_database(settings)
    try:
        sender = ChannelSender(SmtpConfig.from_settings(settings))
        done = send_test(database, sender, rule_id, reseller=None, now_ms=now_ms())
    finally:
        database.dispose()
    if not done.ok:
        raise AlertNotDelivered(rule_id, done.detail)
    echo(f"test alert of rule {rule_id} delivered: {done.detail}")


@alert.command("deliveries")
@click.option("--rule", "rule_id", type=int, default=None, metavar="ID", help="Only this rule's.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@JSON
@with_settings()
def alert_deliveries(settings: Settings, *, rule_id: int | None, limit: int, as_json: bool) -> None:
    """The delivery log: one line per attempt to send an alert, newest first."""
    database = open_database(settings)
    try:
        with database.read() as conn:
            found = rules.deliveries(conn, reseller=None, rule_id=rule_id, limit=limit)
    finally:
        database.dispose()
    if as_json:
        print_json([d.as_json() for d in found])
        return
    rows = [
        [
            _time(d.at),
            d.rule_id,
            d.event_id,
            d.kind,
            d.attempt,
            "ok" if d.ok else "failed",
            d.state,
            d.detail,
        ]
        for d in found
    ]
    columns = ["At", "Rule", "Alert", "Event", "Attempt", "Result", "State", "Detail"]
    print_table("Alert deliveries", columns, rows, no_wrap=["At"])
