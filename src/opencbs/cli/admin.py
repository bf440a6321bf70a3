"""Administration commands: ``db upgrade``, ``sysuser``, ``user`` and ``set``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.filesize import decimal

from opencbs.agent.targets import require_sources
from opencbs.cli.common import (
    JSON,
    PASSWORD_STDIN,
    NonEmptyPath,
    echo,
    note,
    open_database,
    print_json,
    print_table,
    read_password,
    require_text_paths,
    with_settings,
)
from opencbs.errors import BackupUserNotFound, InvalidInput
from opencbs.model.destinations import (
    DEFAULT_S3_REGION,
    S3,
    S3Location,
    is_s3_url,
    parse_destination,
)
from opencbs.model.passwords import PasswordRule
from opencbs.reports.vocabulary import SystemRole
from opencbs.settings import Settings
from opencbs.store import migrate, sets, users
from opencbs.store.sets import BackupSet, Destination

# --- db -----------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@with_settings()
def db_upgrade(settings: Settings) -> None:
    """Create or upgrade the schema to this version's (serve does it too)."""
    database = open_database(settings)  # upgrades
    try:
        echo(migrate.current_revision(database) or "")
    finally:
        database.dispose()


# --- system users -------------------------------------------------------------------------


@click.group()
def sysuser() -> None:
    """System users: the accounts that call the CBS JSON API (SysUser/SysPwd)."""


@sysuser.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([r.value for r in SystemRole], case_sensitive=False),
    default=SystemRole.ADMIN.value,
    show_default=True,
    help="Role (cbs-api.md §2).",
)
@PASSWORD_STDIN
@with_settings()
def sysuser_add(settings: Settings, *, name: str, role: str, password_stdin: bool) -> None:
    """Add system user NAME. The password is read from stdin (--password-stdin) or typed twice;
    when stdin is not a terminal and no password is piped in, one is generated and printed
    once. It must meet the password rule (at least password_min_length characters, default 8;
    not the name)."""
    rule = settings.password_rule()
    users.check_name(name, "system user name")
    generated = not password_stdin and not sys.stdin.isatty()
    if generated:
        password = rule.generate()
    else:
        password = _new_password(rule, name, from_stdin=password_stdin)
    database = open_database(settings)
    try:
        with database.write() as conn:
            user = users.add_system_user(conn, name, password, SystemRole(role.upper()), rule=rule)
    finally:
        database.dispose()
    note(f"system user {user.name!r} added with role {user.role.value}")
    if generated:
        note("its generated password (shown only now):")
        echo(password)


def _new_password(
    rule: PasswordRule, name: str, *, from_stdin: bool, prompt: str = "Password"
) -> str:
    """A new password for user ``name``, read (stdin or typed twice: ``read_password``) and
    checked against ``rule`` at once, before the database is touched. Raises
    ``InvalidInput``."""
    password, _ = read_password(
        from_stdin=from_stdin, prompt=prompt, check=lambda typed: rule.check(typed, name)
    )
    rule.check(password, name)  # read from stdin: checked here
    return password


@sysuser.command("list")
@JSON
@with_settings()
def sysuser_list(settings: Settings, *, as_json: bool) -> None:
    """List the system users."""
    database = open_database(settings)
    try:
        with database.read() as conn:
            found = users.list_system_users(conn)
    finally:
        database.dispose()
    rows = [{"Name": u.name, "Role": u.role.value, "Status": u.status.value} for u in found]
    if as_json:
        print_json(rows)
    else:
        print_table("System users", ["Name", "Role", "Status"], [list(r.values()) for r in rows])


@sysuser.command("passwd")
@click.argument("name")
@PASSWORD_STDIN
@with_settings()
def sysuser_passwd(settings: Settings, *, name: str, password_stdin: bool) -> None:
    """Set the password of system user NAME (and unlock it). Exit code 4 when there is no
    such system user (asked before the password)."""
    rule = settings.password_rule()
    database = open_database(settings)
    try:
        with database.read() as conn:
            if users.get_system_user(conn, name) is None:
                raise users.system_user_not_found(name)
        password = _new_password(rule, name, from_stdin=password_stdin, prompt="New password")
        with database.write() as conn:
            users.set_system_password(conn, name, password, rule=rule)
    finally:
        database.dispose()
    note(f"password of system user {name!r} changed")


# --- backup users -------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Backup users: the accounts that own backup sets (LoginName)."""


@user.command("add")
@click.argument("login")
@click.option("--owner", default="", help="Owner (reseller system user); empty: the admins.")
@click.option("--alias", default="", help="Display name.")
@click.option("--email", default="", help="E-mail address.")
@click.option(
    "--quota",
    type=click.IntRange(min=0),
    default=0,
    metavar="BYTES",
    help="Quota in bytes; 0 = none.",
)
@PASSWORD_STDIN
@with_settings()
def user_add(
    settings: Settings,
    *,
    login: str,
    owner: str,
    alias: str,
    email: str,
    quota: int,
    password_stdin: bool,
) -> None:
    """Add backup user LOGIN. The password is read from stdin (--password-stdin) or typed
    twice; it must meet the password rule (at least password_min_length characters, default 8;
    not the login name)."""
    rule = settings.password_rule()
    users.check_name(login, "login name")
    password = _new_password(rule, login, from_stdin=password_stdin)
    database = open_database(settings)
    try:
        with database.write() as conn:
            added = users.add_backup_user(
                conn,
                login,
                password,
                owner=owner,
                alias=alias,
                email=email,
                quota=quota,
                rule=rule,
            )
    finally:
        database.dispose()
    note(f"backup user {added.login_name!r} added")
    echo(str(added.id))


def _user_row(u: users.BackupUser) -> dict[str, Any]:
    return {
        "LoginName": u.login_name,
        "UserId": str(u.id),
        "Owner": u.owner,
        "Alias": u.alias,
        "Email": u.email,
        "Status": u.status,
        "Quota": u.quota,
        "DataSize": u.data_size,
    }


@user.command("list")
@click.option("--owner", default=None, help="Only the users of this owner.")
@click.option("--search", default="", help="Only login names containing this text.")
@JSON
@with_settings()
def user_list(settings: Settings, *, owner: str | None, search: str, as_json: bool) -> None:
    """List the backup users."""
    database = open_database(settings)
    try:
        with database.read() as conn:
            found = users.list_backup_users(conn, search=search, owner=owner)
    finally:
        database.dispose()
    rows = [_user_row(u) for u in found]
    if as_json:
        print_json(rows)
    else:
        cols = ["LoginName", "UserId", "Owner", "Alias", "Email", "Status", "Quota"]
        shown = [{**r, "Quota": _quota(r["Quota"])} for r in rows]
        print_table("Backup users", cols, [[r[c] for c in cols] for r in shown])


def _quota(quota: int) -> str:
    """A quota in bytes for a person: decimal units (``10.0 GB``), ``none`` for 0."""
    return decimal(quota) if quota else "none"


# --- backup sets --------------------------------------------------------------------------


@click.group("set")
def backup_set() -> None:
    """Backup sets of a backup user, with their destinations."""


@backup_set.command("add")
@click.argument("login")
@click.argument("name")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    type=NonEmptyPath(),
    metavar="PATH",
    help="A folder or file to back up (repeatable).",
)
@click.option(
    "--destination",
    required=True,
    type=NonEmptyPath(file_okay=False),
    metavar="PATH|s3://BUCKET/PREFIX",
    help="Folder of the local destination (repository), or an S3 bucket and prefix.",
)
@click.option(
    "--s3-endpoint",
    "endpoint",  # not the setting s3_endpoint (the agent's): this set's own
    default=None,
    metavar="URL",
    help="URL of the S3-compatible server of an s3:// destination (default: AWS).",
)
@click.option(
    "--s3-region",
    "region",
    default=None,
    metavar="REGION",
    help=f"Signing region of an s3:// destination [default: {DEFAULT_S3_REGION}].",
)
@click.option(
    "--destination-name",
    default=None,
    help="Name of the destination [default: Local for a folder, S3 for s3://].",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="Glob pattern of what to leave out: a name in any folder, or a full path with a / "
    "(repeatable).",
)
@click.option(
    "--sources-elsewhere",
    is_flag=True,
    help="The sources are on the machine where the agent runs, not this one: do not check "
    "that they exist here (the agent's first job warns about, or fails on, missing ones).",
)
@JSON
@with_settings()
def set_add(
    settings: Settings,
    *,
    login: str,
    name: str,
    sources: tuple[str, ...],
    destination: str,
    endpoint: str | None,
    region: str | None,
    destination_name: str | None,
    excludes: tuple[str, ...],
    sources_elsewhere: bool,
    as_json: bool,
) -> None:
    """Add a file backup set NAME to backup user LOGIN, with one destination: a local folder,
    or an S3 bucket (s3://BUCKET/PREFIX, --s3-endpoint for a server other than AWS). S3
    credentials are the agent's, never given here.

    Each source must exist on this machine (exit code 2 otherwise; nothing is created), unless
    --sources-elsewhere says the agent runs on another machine."""
    s3 = is_s3_url(destination)
    require_text_paths(sources, None if s3 else destination)
    where = parse_destination(destination, s3_endpoint=endpoint, s3_region=region)
    if not sources_elsewhere:
        require_sources(sources)
    config = {
        "sources": [os.path.abspath(s) for s in sources],
        "filters": {"include": [], "exclude": list(excludes)},
    }
    database = open_database(settings)
    try:
        with database.write() as conn:
            owner = find_user(conn, login)
            created = sets.add_set(conn, owner.id, name, config, set_type="FILE")
            sets.add_destination(
                conn,
                owner.id,
                created.id,
                name=destination_name or ("S3" if where.is_s3 else "Local"),
                dest_type=where.type,
                settings=where.settings(),
            )
            created = sets.get_set(conn, owner.id, created.id)
    finally:
        database.dispose()
    if as_json:
        print_json(set_json(created))
        return
    note(f"backup set {name!r} added to {login!r}")
    echo(f"{created.id} {created.destinations[0].id}")


@backup_set.command("list")
@click.argument("login")
@JSON
@with_settings()
def set_list(settings: Settings, *, login: str, as_json: bool) -> None:
    """List the backup sets of backup user LOGIN."""
    database = open_database(settings)
    try:
        with database.read() as conn:
            owner = find_user(conn, login)
            found = [sets.get_set(conn, owner.id, s.id) for s in sets.list_sets(conn, owner.id)]
    finally:
        database.dispose()
    if as_json:
        print_json([set_json(s) for s in found])
        return
    print_table(
        f"Backup sets of {login}",
        ["ID", "Name", "Type", "Sources", "Destinations"],
        [
            [
                s.id,
                s.name,
                s.type,
                list(s.settings.sources),
                [_destination_cell(d) for d in s.destinations],
            ]
            for s in found
        ],
    )


def _destination_cell(d: Destination) -> str:
    """A destination in the set table: ``ID NAME (TYPE): PATH`` (its folder, when its
    settings name one), or ``ID NAME (S3): s3://BUCKET/PREFIX at ENDPOINT``."""
    where: object = d.settings.get("path")
    if d.type == S3:
        try:
            where = S3Location.from_settings(d.settings)
        except InvalidInput:  # stored before S3 settings were checked
            where = None
    return f"{d.id} {d.name} ({d.type})" + (f": {where}" if where else "")


def set_json(s: BackupSet) -> dict[str, Any]:
    """A backup set as JSON (IDs as strings, cbs-api.md §1)."""
    return {
        "ID": str(s.id),
        "Name": s.name,
        "Type": s.type,
        "Settings": s.settings.as_json(),
        "DestinationList": [
            {"Id": str(d.id), "Name": d.name, "Type": d.type, "Settings": d.settings}
            for d in s.destinations
        ],
    }


def find_user(conn: Any, login: str) -> users.BackupUser:
    """Backup user LOGIN, whoever owns it. Raises ``BackupUserNotFound``."""
    found = users.find_backup_user(conn, login)
    if found is None:
        err = BackupUserNotFound(login)
        err.hint = "see `opencbs user list`"
        raise err
    return found
