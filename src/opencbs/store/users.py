"""System users and backup users (cbs-api.md §2, §7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Row, bindparam, select, update

from opencbs.errors import BackupUserNotFound, Conflict, InvalidInput, NotFound
from opencbs.model.passwords import PasswordRule
from opencbs.reports.vocabulary import AccountStatus, SystemRole
from opencbs.security import hash_password
from opencbs.store import lockouts
from opencbs.store.schema import backup_sets, backup_users, system_users
from opencbs.store.util import now_ms


@dataclass(frozen=True)
class SystemUser:
    """A system user (administrator, API user or reseller). ``locked_until`` is epoch ms.

    ``status`` ``LOCKED`` is an administrator's lock (``locked_until`` ``None``) or one left by
    the lockout of versions before ``store.lockouts`` (which now counts failed logins)."""

    id: int
    name: str
    password_hash: str
    role: SystemRole
    status: AccountStatus
    failed_logins: int
    locked_until: int | None

    def is_locked(self, at_ms: int) -> bool:
        """Whether the account is locked at instant ``at_ms`` (epoch ms)."""
        if self.status is AccountStatus.LOCKED:
            return self.locked_until is None or self.locked_until > at_ms
        return False


@dataclass(frozen=True)
class BackupUser:
    """A backup user (an end customer account). ``quota`` and ``data_size`` are bytes."""

    id: int
    login_name: str
    owner: str
    password_hash: str
    alias: str
    email: str
    client_type: str
    status: str
    quota: int
    data_size: int


def _sysuser(row: Row) -> SystemUser:  # type: ignore[type-arg]
    return SystemUser(
        id=row.id,
        name=row.name,
        password_hash=row.password_hash,
        role=SystemRole(row.role),
        status=AccountStatus(row.status),
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
    )


def _backup_user(row: Row) -> BackupUser:  # type: ignore[type-arg]
    return BackupUser(
        id=row.id,
        login_name=row.login_name,
        owner=row.owner,
        password_hash=row.password_hash,
        alias=row.alias,
        email=row.email,
        client_type=row.client_type,
        status=row.status,
        quota=row.quota,
        data_size=row.data_size,
    )


# --- system users -------------------------------------------------------------------------


def check_name(name: str, what: str) -> None:
    """The rule for the names of users (backup users' ``LoginName``, system users): not empty,
    no control character (C0, DEL, C1: a name shows in logs, tables and terminals), no ``/`` or
    ``\\`` (names end up in paths and URLs), no space at either end (invisible, and the same
    name typed without it would not log in). ``what`` names the kind in the message ("login
    name"). Raises ``InvalidInput``."""
    hint = "use letters, digits, '.', '-', '_' or '@'; no '/', '\\', control characters"
    if not name:
        raise InvalidInput(f"the {what} must not be empty", hint)
    bad = next((c for c in name if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F), None)
    if bad is not None:
        raise InvalidInput(
            f"the {what} {name!r} holds a control character (U+{ord(bad):04X})", hint
        )
    if "/" in name or "\\" in name:
        raise InvalidInput(f"the {what} {name!r} holds a '/' or '\\'", hint)
    if name != name.strip():
        raise InvalidInput(f"the {what} {name!r} begins or ends with a space", hint)


_DEFAULT_RULE = PasswordRule()


def system_user_not_found(name: str) -> NotFound:
    """The error for an unknown system user ``name`` (exit code 4)."""
    return NotFound(f"no system user {name!r}", "see `opencbs sysuser list`")


def add_system_user(
    conn: Connection,
    name: str,
    password: str,
    role: SystemRole,
    *,
    rule: PasswordRule = _DEFAULT_RULE,
) -> SystemUser:
    """Create a system user. Raises ``Conflict`` if the name exists, ``InvalidInput`` for a
    name against :func:`check_name` or a password against ``rule`` (``model.passwords``; the
    setting ``password_min_length`` makes it stricter)."""
    check_name(name, "system user name")
    rule.check(password, name)
    if get_system_user(conn, name) is not None:
        raise Conflict(f"system user {name!r} exists already", "choose another name")
    conn.execute(
        system_users.insert().values(
            name=name,
            password_hash=hash_password(password),
            role=role.value,
            status=AccountStatus.ENABLE.value,
            failed_logins=0,
            created_at=now_ms(),
        )
    )
    user = get_system_user(conn, name)
    assert user is not None
    return user


_SYSTEM_USER_BY_NAME = select(system_users).where(system_users.c.name == bindparam("name"))


def get_system_user(conn: Connection, name: str) -> SystemUser | None:
    """The system user named ``name`` (case-exact), or ``None``."""
    row = conn.execute(_SYSTEM_USER_BY_NAME, {"name": name}).first()
    return _sysuser(row) if row else None


def list_system_users(conn: Connection) -> list[SystemUser]:
    """Every system user, by name."""
    return [_sysuser(r) for r in conn.execute(select(system_users).order_by(system_users.c.name))]


def set_system_password(
    conn: Connection, name: str, password: str, *, rule: PasswordRule = _DEFAULT_RULE
) -> None:
    """Change a system user's password and unlock it (its status ``LOCKED`` and its lockout,
    logged at WARNING). Raises ``NotFound`` if unknown, ``InvalidInput`` for a password against
    ``rule`` (``model.passwords``)."""
    if get_system_user(conn, name) is None:
        raise system_user_not_found(name)
    rule.check(password, name)
    conn.execute(
        update(system_users)
        .where(system_users.c.name == name)
        .values(password_hash=hash_password(password))
    )
    lockouts.clear(conn, lockouts.LockKind.SYSUSER, name, by="a change of its password")


def set_system_status(conn: Connection, name: str, status: AccountStatus) -> None:
    """Set a system user's status (ENABLE, SUSPENDED, LOCKED without end). Raises
    ``NotFound`` if unknown."""
    res = conn.execute(
        update(system_users)
        .where(system_users.c.name == name)
        .values(status=status.value, failed_logins=0, locked_until=None)
    )
    if res.rowcount == 0:
        raise system_user_not_found(name)


def record_login_success(conn: Connection, user: SystemUser) -> None:
    """Reset what the lockout of earlier versions left on the row (failure count, an expired
    lock) after a successful login."""
    if user.failed_logins or user.status is AccountStatus.LOCKED:
        conn.execute(
            update(system_users)
            .where(system_users.c.id == user.id)
            .values(failed_logins=0, status=AccountStatus.ENABLE.value, locked_until=None)
        )


# --- backup users -------------------------------------------------------------------------


def new_id(conn: Connection, table: object, at_ms: int | None = None) -> int:
    """A fresh ID: the creation time in epoch ms (cbs-api.md §4), bumped until unused."""
    candidate = at_ms if at_ms is not None else now_ms()
    col = table.c.id  # type: ignore[attr-defined]
    while conn.execute(select(col).where(col == candidate)).first() is not None:
        candidate += 1
    return candidate


def add_backup_user(
    conn: Connection,
    login_name: str,
    password: str,
    *,
    owner: str = "",
    alias: str = "",
    email: str = "",
    client_type: str = "OBM",
    quota: int = 0,
    rule: PasswordRule = _DEFAULT_RULE,
) -> BackupUser:
    """Create a backup user. ``LoginName`` is unique server-wide (§2): raises ``Conflict`` if
    taken, ``InvalidInput`` for a name against :func:`check_name`, a password against ``rule``
    (``model.passwords``), a negative quota (bytes), or an ``owner`` that is not a RESELLER
    system user (empty: the admins)."""
    check_name(login_name, "login name")
    rule.check(password, login_name)
    if owner:
        reseller = get_system_user(conn, owner)
        if reseller is None or reseller.role is not SystemRole.RESELLER:
            raise InvalidInput(
                f"owner {owner!r} is not a reseller system user",
                "give the name of a RESELLER system user (`opencbs sysuser "
                "list`), or no --owner for the admins",
            )
    if quota < 0:
        raise InvalidInput("the quota must be zero (none) or a positive number of bytes")
    if find_backup_user(conn, login_name) is not None:
        raise Conflict(f"backup user {login_name!r} exists already", "choose another login name")
    uid = new_id(conn, backup_users)
    conn.execute(
        backup_users.insert().values(
            id=uid,
            login_name=login_name,
            owner=owner,
            password_hash=hash_password(password),
            alias=alias,
            email=email,
            client_type=client_type,
            status=AccountStatus.ENABLE.value,
            quota=quota,
            data_size=0,
            created_at=now_ms(),
        )
    )
    user = find_backup_user(conn, login_name)
    assert user is not None
    return user


def find_backup_user(conn: Connection, login_name: str) -> BackupUser | None:
    """The backup user with that ``LoginName``, ignoring scope; ``None`` if there is none."""
    row = conn.execute(select(backup_users).where(backup_users.c.login_name == login_name)).first()
    return _backup_user(row) if row else None


def get_backup_user(
    conn: Connection, login_name: str, *, owner: str | None = None, scope: str | None = None
) -> BackupUser:
    """The backup user ``login_name`` as seen by a caller (cbs-api.md §2).

    ``owner``: the request's ``Owner``; when non-empty it must equal the user's owner.
    ``scope``: the reseller name the caller is limited to (``None`` = sees every user).
    Raises ``BackupUserNotFound`` when it does not exist or is out of scope.
    """
    user = find_backup_user(conn, login_name)
    if user is None:
        raise BackupUserNotFound(login_name)
    if owner and owner != user.owner:
        raise BackupUserNotFound(login_name)
    if scope is not None and user.owner != scope:
        raise BackupUserNotFound(login_name)
    return user


def list_backup_users(
    conn: Connection, *, search: str = "", owner: str | None = None, scope: str | None = None
) -> list[BackupUser]:
    """Backup users whose ``LoginName`` contains ``search``, optionally of one ``owner``
    (reseller), limited to ``scope`` (a reseller's own users) when given; by login name."""
    q = select(backup_users).order_by(backup_users.c.login_name)
    if search:
        q = q.where(backup_users.c.login_name.contains(search, autoescape=True))
    if owner is not None:
        q = q.where(backup_users.c.owner == owner)
    if scope is not None:
        q = q.where(backup_users.c.owner == scope)
    return [_backup_user(r) for r in conn.execute(q)]


def set_backup_password(
    conn: Connection, login_name: str, password: str, *, rule: PasswordRule = _DEFAULT_RULE
) -> None:
    """Change a backup user's password. Raises ``BackupUserNotFound`` if unknown,
    ``InvalidInput`` for a password against ``rule`` (``model.passwords``)."""
    rule.check(password, login_name)
    res = conn.execute(
        update(backup_users)
        .where(backup_users.c.login_name == login_name)
        .values(password_hash=hash_password(password))
    )
    if res.rowcount == 0:
        raise BackupUserNotFound(login_name)


def replace_password_hash(
    conn: Connection, *, system: bool, name: str, old_hash: str, new_hash: str
) -> bool:
    """Replace the password hash of system user (``system``) or backup user ``name`` by
    ``new_hash`` (the same password hashed with current parameters), only while it is still
    ``old_hash`` (a password changed meanwhile wins). Whether it was replaced."""
    table = system_users if system else backup_users
    column = table.c.name if system else table.c.login_name
    res = conn.execute(
        update(table)
        .where(column == name, table.c.password_hash == old_hash)
        .values(password_hash=new_hash)
    )
    return bool(res.rowcount)


def backup_set_ids(conn: Connection, user_ids: Sequence[int]) -> dict[int, list[int]]:
    """The (not removed) backup set IDs of each user, ascending."""
    out: dict[int, list[int]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return out
    q = (
        select(backup_sets.c.user_id, backup_sets.c.id)
        .where(backup_sets.c.user_id.in_(list(user_ids)), backup_sets.c.removed.is_(False))
        .order_by(backup_sets.c.id)
    )
    for row in conn.execute(q):
        out[row.user_id].append(row.id)
    return out
