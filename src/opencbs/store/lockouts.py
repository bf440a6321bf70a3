"""The login lockout: failed password checks counted per account and per client address, in
the database, so that every server process sharing it applies one limit.

One row of ``login_failures`` per (kind, key): ``sysuser`` + a system user's name, ``user`` + a
backup user's login name (known or not: an unknown name behaves as a known one) or ``address``
+ a client address. A password check first *reserves* its attempt with one atomic statement
(``INSERT … ON CONFLICT DO UPDATE … RETURNING``): the count goes up and, past the limit, the
key is locked, so that however many checks run in parallel, at most ``limit`` of them per
window are verified. A failed check locks the key once ``limit`` are counted; a successful one
gets its attempt back, and the window's other failures still count (at most ``limit`` wrong
passwords per account per window, issue 11). Locks last
``LockoutPolicy.lock_ms``; an administrator clears one with :func:`clear` (``opencbs lockout
clear``, ``DELETE /api/admin/v1/lockouts/{kind}/{key}``).

A system user whose status is ``LOCKED`` (set by an administrator, or by the lockout of
versions before this table) is listed here too, and :func:`clear` enables it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    case,
    delete,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from opencbs.errors import InvalidInput
from opencbs.reports.vocabulary import AccountStatus
from opencbs.settings import (
    DEFAULT_ADDRESS_FAILURES,
    DEFAULT_LOCKOUT_FAILURES,
    DEFAULT_LOCKOUT_SECONDS,
    DEFAULT_LOCKOUT_WINDOW,
    Settings,
)
from opencbs.store.schema import login_failures, system_users

log = logging.getLogger(__name__)

_T = login_failures


class LockKind(StrEnum):
    """What a lockout row counts: a system user, a backup user or a client address."""

    SYSUSER = "sysuser"
    USER = "user"
    ADDRESS = "address"


@dataclass(frozen=True)
class LockoutPolicy:
    """The limits: ``account_failures`` wrong passwords per account, ``address_failures`` per
    client address, counted over ``window_ms``; a lock lasts ``lock_ms`` (milliseconds).
    The defaults are the settings' (``settings.DEFAULT_LOCKOUT_*``)."""

    account_failures: int = DEFAULT_LOCKOUT_FAILURES
    address_failures: int = DEFAULT_ADDRESS_FAILURES
    window_ms: int = int(DEFAULT_LOCKOUT_WINDOW * 1000)
    lock_ms: int = int(DEFAULT_LOCKOUT_SECONDS * 1000)

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        """The policy of ``settings`` (``lockout_failures``, ``address_failures``,
        ``lockout_window``, ``lockout_seconds``)."""
        return cls(
            account_failures=settings.lockout_failures,
            address_failures=settings.address_failures,
            window_ms=int(settings.lockout_window * 1000),
            lock_ms=int(settings.lockout_seconds * 1000),
        )

    def limit(self, kind: LockKind) -> int:
        """The failures allowed to ``kind`` per window."""
        return self.address_failures if kind is LockKind.ADDRESS else self.account_failures


@dataclass(frozen=True)
class Reservation:
    """The outcome of :func:`reserve`: ``count`` checks begun in the window (this one
    included), ``locked_until_ms`` (epoch ms) when locked, ``refused`` when this check must not
    verify the password, ``newly_locked`` when this reservation set the lock."""

    count: int
    locked_until_ms: int | None
    refused: bool
    newly_locked: bool


@dataclass(frozen=True)
class Lockout:
    """A locked key: ``failures`` counted, ``locked_until_ms`` (epoch ms; ``None``: until an
    administrator unlocks it, a system user with status ``LOCKED``)."""

    kind: LockKind
    key: str
    failures: int
    locked_until_ms: int | None

    def as_json(self) -> dict[str, Any]:
        """``{"kind", "key", "failures", "locked_until_ms"}``."""
        return {
            "kind": self.kind.value,
            "key": self.key,
            "failures": self.failures,
            "locked_until_ms": self.locked_until_ms,
        }


def _insert(conn: Connection) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(_T)


def _ms(value: int) -> Any:
    return literal(value, BigInteger)


def _row_of(kind: LockKind, key: str) -> Any:
    return and_(_T.c.kind == kind.value, _T.c.key == key)


def reserve(
    conn: Connection, kind: LockKind, key: str, policy: LockoutPolicy, *, at_ms: int
) -> Reservation:
    """Count one password check of ``kind``/``key`` at ``at_ms`` (epoch ms), atomically: a
    window or lock that ended starts over; past ``policy.limit(kind)`` checks the key is
    locked for ``policy.lock_ms``. The check may verify the password only if not ``refused``."""
    limit = policy.limit(kind)
    until = at_ms + policy.lock_ms
    fresh = or_(
        and_(_T.c.locked_until_ms.is_not(None), _T.c.locked_until_ms <= _ms(at_ms)),
        and_(_T.c.locked_until_ms.is_(None), _T.c.window_start_ms <= _ms(at_ms - policy.window_ms)),
    )
    stmt = _insert(conn).values(
        kind=kind.value, key=key, failures=1, window_start_ms=at_ms, locked_until_ms=None
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[_T.c.kind, _T.c.key],
        set_={
            "failures": case((fresh, 1), else_=_T.c.failures + 1),
            "window_start_ms": case((fresh, _ms(at_ms)), else_=_T.c.window_start_ms),
            "locked_until_ms": case(
                (fresh, null()),
                (and_(_T.c.locked_until_ms.is_(None), _T.c.failures + 1 > limit), _ms(until)),
                else_=_T.c.locked_until_ms,
            ),
        },
    ).returning(_T.c.failures, _T.c.locked_until_ms)
    row = conn.execute(stmt).one()
    locked = row.locked_until_ms is not None and row.locked_until_ms > at_ms
    return Reservation(
        count=row.failures,
        locked_until_ms=row.locked_until_ms if locked else None,
        refused=locked or row.failures > limit,
        newly_locked=row.failures == limit + 1 and row.locked_until_ms == until,
    )


def record_failure(
    conn: Connection, kind: LockKind, key: str, policy: LockoutPolicy, *, at_ms: int
) -> int | None:
    """A reserved check of ``kind``/``key`` failed: lock the key for ``policy.lock_ms`` when
    ``policy.limit(kind)`` checks are counted. Returns the count when this call set the lock,
    else ``None``."""
    stmt = (
        update(_T)
        .where(
            _row_of(kind, key),
            _T.c.failures >= policy.limit(kind),
            or_(_T.c.locked_until_ms.is_(None), _T.c.locked_until_ms <= _ms(at_ms)),
        )
        .values(locked_until_ms=_ms(at_ms + policy.lock_ms))
        .returning(_T.c.failures)
    )
    row = conn.execute(stmt).first()
    return int(row.failures) if row is not None else None


def record_success(conn: Connection, kind: LockKind, key: str) -> None:
    """A reserved check of ``kind``/``key`` succeeded: it gets its attempt back. The key's
    failures in the window still count (a success does not start the count over, so guesses
    between a user's logins add up: at most ``policy.limit(kind)`` wrong ones per window,
    issue 11), and a lock stays."""
    conn.execute(
        update(_T).where(_row_of(kind, key), _T.c.failures > 0).values(failures=_T.c.failures - 1)
    )
    # nothing left to count: no row (a key is "counted" only while it has failures or a lock)
    conn.execute(
        delete(_T).where(_row_of(kind, key), _T.c.failures <= 0, _T.c.locked_until_ms.is_(None))
    )


def lock_end(conn: Connection, kind: LockKind, key: str, at_ms: int) -> int | None:
    """When the lock of ``kind``/``key`` ends (epoch ms); ``None`` when it is not locked at
    ``at_ms``."""
    until = conn.execute(select(_T.c.locked_until_ms).where(_row_of(kind, key))).scalar()
    return int(until) if until is not None and until > at_ms else None


def list_lockouts(conn: Connection, at_ms: int) -> list[Lockout]:
    """Every key locked at ``at_ms``, and every system user of status ``LOCKED``; by kind and
    key."""
    rows = conn.execute(
        select(_T).where(_T.c.locked_until_ms > _ms(at_ms)).order_by(_T.c.kind, _T.c.key)
    )
    found = [
        Lockout(LockKind(r.kind), r.key, int(r.failures), int(r.locked_until_ms)) for r in rows
    ]
    seen = {(x.kind, x.key) for x in found}
    admin_locked = conn.execute(
        select(system_users.c.name, system_users.c.locked_until).where(
            system_users.c.status == AccountStatus.LOCKED.value,
            or_(system_users.c.locked_until.is_(None), system_users.c.locked_until > at_ms),
        )
    )
    for r in admin_locked:
        if (LockKind.SYSUSER, r.name) not in seen:
            found.append(Lockout(LockKind.SYSUSER, r.name, 0, r.locked_until))
    return sorted(found, key=lambda x: (x.kind.value, x.key))


def parse_kind(text: str) -> LockKind:
    """The ``LockKind`` named ``text`` (``sysuser``, ``user``, ``address``); raises
    ``InvalidInput`` otherwise."""
    try:
        return LockKind(text)
    except ValueError:
        raise InvalidInput(
            f"unknown lockout kind {text!r}", "give sysuser, user or address"
        ) from None


def clear(conn: Connection, kind: LockKind, key: str, *, by: str) -> bool:
    """Unlock ``kind``/``key`` and forget its failures; a system user of status ``LOCKED``
    becomes ``ENABLE``. Logged at WARNING with ``by`` (who asked: "the command line", "admin
    'ops' from 10.0.0.5"). Returns whether there was anything to clear."""
    res = conn.execute(delete(_T).where(_row_of(kind, key)))
    cleared = res.rowcount > 0
    if kind is LockKind.SYSUSER:
        enabled = conn.execute(
            update(system_users)
            .where(system_users.c.name == key, system_users.c.status == AccountStatus.LOCKED.value)
            .values(status=AccountStatus.ENABLE.value, failed_logins=0, locked_until=None)
        )
        cleared = cleared or enabled.rowcount > 0
    if cleared:
        log.warning("login lockout cleared: %s %r, by %s", kind.value, key, by)
    return cleared


def prune(conn: Connection, policy: LockoutPolicy, at_ms: int) -> int:
    """Delete the rows whose window and lock have ended (unknown names guessed once stay no
    longer than a window). Returns how many."""
    res = conn.execute(
        delete(_T).where(
            or_(
                and_(_T.c.locked_until_ms.is_not(None), _T.c.locked_until_ms <= _ms(at_ms)),
                and_(
                    _T.c.locked_until_ms.is_(None),
                    _T.c.window_start_ms <= _ms(at_ms - policy.window_ms),
                ),
            )
        )
    )
    return int(res.rowcount)
