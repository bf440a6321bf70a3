"""``opencbs lockout list`` and ``opencbs lockout clear``: the login lockout
(``store.lockouts``) seen and lifted by an administrator."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import click

from opencbs.cli.common import JSON, note, open_database, print_json, print_table, with_settings
from opencbs.errors import InvalidInput, NotFound
from opencbs.settings import Settings
from opencbs.store import lockouts
from opencbs.store.lockouts import LockKind
from opencbs.store.util import now_ms


@click.group()
def lockout() -> None:
    """Accounts and client addresses locked after failed logins."""


def _until(ms: int | None) -> str:
    if ms is None:
        return "until unlocked"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@lockout.command("list")
@JSON
@with_settings()
def lockout_list(settings: Settings, *, as_json: bool) -> None:
    """List the system users, backup users and client addresses locked now."""
    database = open_database(settings)
    try:
        with database.read() as conn:
            found = lockouts.list_lockouts(conn, now_ms())
    finally:
        database.dispose()
    if as_json:
        print_json([x.as_json() for x in found])
        return
    rows = [[x.kind.value, x.key, x.failures, _until(x.locked_until_ms)] for x in found]
    print_table("Lockouts", ["Kind", "Key", "Failures", "Locked until"], rows)


def _target(sysuser: str | None, user: str | None, address: str | None) -> tuple[LockKind, str]:
    given = [
        (kind, key)
        for kind, key in (
            (LockKind.SYSUSER, sysuser),
            (LockKind.USER, user),
            (LockKind.ADDRESS, address),
        )
        if key is not None
    ]
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one of --sysuser NAME, --user LOGIN, --address ADDR",
            "see `opencbs lockout list`",
        )
    kind, key = given[0]
    if kind is LockKind.ADDRESS:
        try:
            key = str(ipaddress.ip_address(key))
        except ValueError:
            raise InvalidInput(
                f"{key!r} is not an IP address", "give it as `opencbs lockout list` shows it"
            ) from None
    return kind, key


@lockout.command("clear")
@click.option("--sysuser", default=None, metavar="NAME", help="Unlock this system user.")
@click.option("--user", default=None, metavar="LOGIN", help="Unlock this backup user.")
@click.option("--address", default=None, metavar="ADDR", help="Unlock this client address.")
@with_settings()
def lockout_clear(
    settings: Settings, *, sysuser: str | None, user: str | None, address: str | None
) -> None:
    """Unlock one account or client address and forget its failed logins."""
    kind, key = _target(sysuser, user, address)
    database = open_database(settings)
    try:
        with database.write() as conn:
            cleared = lockouts.clear(conn, kind, key, by="the command line")
    finally:
        database.dispose()
    if not cleared:
        raise NotFound(f"no lockout of {kind.value} {key!r}", "see `opencbs lockout list`")
    note(f"{kind.value} {key!r} unlocked")
