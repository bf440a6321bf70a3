"""Administration commands: ``db upgrade``, ``sysuser``, ``user`` and ``set`` (``set retention``:
a set's retention policy, ``model.sets.Retention``; cbs-api.md §10; ``set timezone``: the zone
of its schedules, cbs-api.md §13)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from pydantic import ValidationError
from rich.filesize import decimal

from opencbs.agent.targets import require_sources
from opencbs.cli.common import (
    JSON,
    PASSWORD_STDIN,
    TIMEZONE,
    Decorator,
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
from opencbs.errors import BackupSetNotFound, BackupUserNotFound, InvalidInput
from opencbs.model.destinations import (
    DEFAULT_S3_REGION,
    S3,
    S3Location,
    is_s3_url,
    parse_destination,
)
from opencbs.model.passwords import PasswordRule
from opencbs.model.sets import MAX_SIMPLE_RETENTION, Retention
from opencbs.reports.vocabulary import SystemRole
from opencbs.settings import Settings
from opencbs.store import migrate, schedules, sets, users
from opencbs.store.sets import BackupSet, Destination
from opencbs.store.util import now_ms

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
        ["ID", "Name", "Type", "Sources", "Destinations", "Retention"],
        [
            [
                s.id,
                s.name,
                s.type,
                list(s.settings.sources),
                [_destination_cell(d) for d in s.destinations],
                retention_rules(s.settings.retention),
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


# --- retention policy ---------------------------------------------------------------------

_KEEP_OPTIONS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def retention_rules(r: Retention) -> str:
    """What a retention policy keeps, for a person: ``7 days``, ``10 jobs``, or the ADVANCED
    rules that are on (``last 3, daily 7, within 30d``)."""
    if r.mode == "SIMPLE":
        return f"{r.days} days" if r.days is not None else f"{r.jobs} jobs"
    rules = [f"{k} {getattr(r, f'keep_{k}')}" for k in _KEEP_OPTIONS if getattr(r, f"keep_{k}")]
    if r.keep_within is not None:
        rules.append(f"within {r.keep_within}")
    return ", ".join(rules)


def describe_retention(r: Retention) -> str:
    """A retention policy in one line: its mode, what it keeps and when it runs."""
    when = "runs after each backup" if r.after_backup else "runs only when asked"
    return f"{r.mode}: keeps {retention_rules(r)}; {when}"


def new_retention(
    current: Retention,
    *,
    days: int | None,
    jobs: int | None,
    keeps: dict[str, int | None],
    keep_within: str | None,
    after_backup: bool | None,
) -> Retention | None:
    """The policy the options of ``set retention`` ask for, or ``None`` when they ask for no
    change. ``--days``/``--jobs`` make a SIMPLE policy, ``--keep-*`` an ADVANCED one (the rules
    not given are off); ``--[no-]after-backup`` alone changes only when it runs. Raises
    ``click.UsageError`` for SIMPLE and ADVANCED options together, ``InvalidInput`` for a
    policy the model refuses (no rule on, a bad ``--keep-within``)."""
    advanced = any(v is not None for v in keeps.values()) or keep_within is not None
    if (days is not None or jobs is not None) and advanced:
        raise click.UsageError("--days/--jobs (SIMPLE) and --keep-* (ADVANCED) exclude each other")
    if days is not None and jobs is not None:
        raise click.UsageError("give --days or --jobs, not both")
    after = current.after_backup if after_backup is None else after_backup
    if days is not None or jobs is not None:
        wanted: dict[str, Any] = {"mode": "SIMPLE", "days": days, "jobs": jobs}
    elif advanced:
        wanted = {f"keep_{k}": v or 0 for k, v in keeps.items()}
        wanted.update(mode="ADVANCED", keep_within=keep_within)
    elif after_backup is not None:
        wanted = current.model_dump(mode="json")
    else:
        return None
    if wanted["mode"] == "ADVANCED" and not any(v for k, v in wanted.items() if k != "mode"):
        raise InvalidInput(
            "an ADVANCED policy needs a --keep-* rule above 0 or --keep-within",
            "see `opencbs set retention --help`",
        )
    try:
        return Retention.model_validate({**wanted, "after_backup": after})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "--" + "-".join(str(part) for part in error["loc"]).replace("_", "-")
        raise InvalidInput(
            f"invalid retention policy: {where}: {error['msg']}",
            "durations are restic's --keep-within form: 30d, 12h, 1y2m3d4h; counts 0..10000; "
            "see `opencbs set retention --help`",
        ) from None


def find_set(conn: Any, user_id: int, name_or_id: str) -> BackupSet:
    """The user's set named ``name_or_id`` (not removed), else the one with that ID. Raises
    ``BackupSetNotFound`` with a hint."""
    found = sets.find_set_by_name(conn, user_id, name_or_id)
    if found is not None:
        return found
    try:
        return sets.get_set(conn, user_id, name_or_id)
    except BackupSetNotFound as exc:
        exc.hint = "see `opencbs set list LOGIN`"
        raise


def _keep_option(name: str) -> Decorator:
    """The option ``--keep-NAME N`` of an ADVANCED policy."""
    period = {"hourly": "hours", "daily": "days", "weekly": "weeks", "monthly": "months"}
    what = (
        "last N snapshots"
        if name == "last"
        else f"newest snapshot of each of the last N {period.get(name, 'years')}"
    )
    return click.option(
        f"--keep-{name}",
        f"keep_{name}",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help=f"ADVANCED: keep the {what} (0: rule off).",
    )


@backup_set.command("retention")
@click.argument("login")
@click.argument("set_name", metavar="SET")
@click.option(
    "--days",
    type=click.IntRange(1, MAX_SIMPLE_RETENTION),
    default=None,
    metavar="N",
    help="SIMPLE: keep the snapshots of the last N days.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, MAX_SIMPLE_RETENTION),
    default=None,
    metavar="N",
    help="SIMPLE: keep the snapshots of the last N jobs.",
)
@_keep_option("last")
@_keep_option("hourly")
@_keep_option("daily")
@_keep_option("weekly")
@_keep_option("monthly")
@_keep_option("yearly")
@click.option(
    "--keep-within",
    default=None,
    metavar="DURATION",
    help="ADVANCED: keep every snapshot within DURATION of the newest (30d, 1y2m3d4h).",
)
@click.option(
    "--after-backup/--no-after-backup",
    default=None,
    help="Run the policy after each backup job (SpaceFreeUpEnabled), or only when asked.",
)
@JSON
@with_settings()
def set_retention(
    settings: Settings,
    *,
    login: str,
    set_name: str,
    days: int | None,
    jobs: int | None,
    keep_within: str | None,
    after_backup: bool | None,
    as_json: bool,
    **keeps: int | None,
) -> None:
    """Show or set the retention policy of backup set SET (name or ID) of backup user LOGIN
    (cbs-api.md §10). Without options it shows the policy. --days or --jobs set a SIMPLE
    policy; --keep-* an ADVANCED one (the rules not given are off). Prints the policy (--json:
    its JSON form, as the set's settings keep it)."""
    database = open_database(settings)
    try:
        with database.write() as conn:
            owner = find_user(conn, login)
            bset = find_set(conn, owner.id, set_name)
            wanted = new_retention(
                bset.settings.retention,
                days=days,
                jobs=jobs,
                keeps={k.removeprefix("keep_"): v for k, v in keeps.items()},
                keep_within=keep_within,
                after_backup=after_backup,
            )
            if wanted is not None:
                retention = {"retention": wanted.model_dump(mode="json")}
                bset = sets.update_set(conn, owner.id, bset.id, settings=retention)
    finally:
        database.dispose()
    policy = bset.settings.retention
    if wanted is not None:
        note(f"retention policy of backup set {bset.name!r} changed")
    if as_json:
        print_json(policy.model_dump(mode="json"))
    else:
        echo(describe_retention(policy))


@backup_set.command("timezone")
@click.argument("login")
@click.argument("set_name", metavar="SET")
@click.argument("zone", required=False)
@with_settings(TIMEZONE)
def set_timezone(settings: Settings, *, login: str, set_name: str, zone: str | None) -> None:
    """Show or set the time zone of the schedules of backup set SET (name or ID) of backup user
    LOGIN (cbs-api.md §13): an IANA name such as Europe/Berlin, or `server` for the server's
    zone (setting timezone). Each schedule's next checked run is recomputed from now. Prints
    the zone."""
    at_ms = now_ms()
    database = open_database(settings)
    try:
        with database.write() as conn:
            owner = find_user(conn, login)
            bset = find_set(conn, owner.id, set_name)
            if zone is not None:
                wanted = None if zone.strip().lower() == "server" else zone.strip()
                bset = sets.update_set(conn, owner.id, bset.id, settings={"time_zone": wanted})
                server = settings.tz()
                schedules.rezone(conn, bset, zone=schedules.set_zone(bset, server), at_ms=at_ms)
    finally:
        database.dispose()
    if zone is not None:
        note(f"time zone of backup set {bset.name!r} changed")
    echo(bset.settings.time_zone or f"{settings.tz()} (the server's)")


def find_user(conn: Any, login: str) -> users.BackupUser:
    """Backup user LOGIN, whoever owns it. Raises ``BackupUserNotFound``."""
    found = users.find_backup_user(conn, login)
    if found is None:
        err = BackupUserNotFound(login)
        err.hint = "see `opencbs user list`"
        raise err
    return found
