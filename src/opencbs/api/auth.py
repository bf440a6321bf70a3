"""Authentication of system users (cbs-api.md §2) and of backup users (AuthUser, agent API),
with the login lockout (``store.lockouts``) and a bound on concurrent password hashing.

Every rejection is the one generic error, after one argon2 verification whatever the cause
(unknown name, wrong password, suspended, locked, throttled, out of scope: the dummy hash
where there is no password to check), so neither the answer nor its time tells them apart.

A password check not answered from the cache takes a hashing slot (``HashSlots``; none free
within ``hash_wait_seconds``: ``ServerBusy``, HTTP 429), then reserves its attempt for the
client address and for the account name (one atomic statement each): a locked or over-limit
address or account is refused without verifying the password. Each lockout is logged at
WARNING with the account (kind and name) and the client address.

A successful verification is remembered for a short while (``VerifiedCache``), keyed by the
account's current password hash and a keyed digest of the password given, so a changed or
wrong password never matches; the account row and its lock are still read on every request, so
a suspension or lock applies at once. A remembered credential passes the address throttle (a
monitoring tool behind the same NAT as an attacker keeps working) but never an account lock.

The client address is ``client=`` when given, else the one the ``ClientAddress`` middleware
recorded for the request being served (``scope["client"]``), else none (no address throttle).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import itertools
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

from starlette.types import ASGIApp, Receive, Scope, Send

from opencbs.errors import AuthUserRejected, CredentialsRejected, ServerBusy
from opencbs.model.text import is_text
from opencbs.reports.vocabulary import AccountStatus, SystemRole
from opencbs.security import HashSlots, dummy_hash, hash_password, needs_rehash, verify_password
from opencbs.settings import Settings
from opencbs.store import lockouts, users
from opencbs.store.db import Database
from opencbs.store.lockouts import LockKind, LockoutPolicy
from opencbs.store.util import now_ms

log = logging.getLogger(__name__)

#: The client address of the request being served (set by ``ClientAddress``).
_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("opencbs_client", default=None)
#: Failed checks of this process; every ``_PRUNE_EVERY``-th prunes ended lockout rows.
_FAILURES = itertools.count(1)
_PRUNE_EVERY = 256


class ClientAddress:
    """ASGI middleware: records the client address of each HTTP request (``scope["client"]``,
    which uvicorn's proxy-headers option rewrites when it is on) for the authentication."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = _CLIENT.set(str(client[0]) if client else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _CLIENT.reset(token)


@dataclass(frozen=True)
class Caller:
    """An authenticated system user. ``scope`` is the reseller name whose backup users it may
    see, or ``None`` when it sees every backup user."""

    name: str
    role: SystemRole

    @property
    def scope(self) -> str | None:
        return None if self.role.sees_all_users else self.name


class VerifiedCache:
    """The server's authentication state: successful password verifications, remembered for
    ``ttl`` seconds (at most ``size``; when full, the oldest remembered goes first); the
    lockout ``policy``; the hashing ``slots``.

    Sized for a fleet of unattended agents (issue 16): each polls every ``agent_poll_interval``
    (60 s) with its own credentials, so the cache holds more credentials than the agents one
    process serves (``size`` 32,768, about 350 bytes each) for longer than the interval
    (``ttl`` 10 minutes); otherwise every poll would cost an argon2 verification (tens of ms
    of CPU). A longer ``ttl`` keeps nothing valid that is not: a changed password changes
    the key, and the account is read on every request."""

    def __init__(
        self,
        ttl: float = 600.0,
        size: int = 32_768,
        *,
        policy: LockoutPolicy | None = None,
        slots: HashSlots | None = None,
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._key = secrets.token_bytes(32)
        self._seen: dict[tuple[str, str, bytes], float] = {}
        self._lock = threading.Lock()
        self.policy = policy or LockoutPolicy()
        self.slots = slots or HashSlots()

    @classmethod
    def from_settings(cls, settings: Settings) -> VerifiedCache:
        """The state for a server run with ``settings`` (lockout and hashing settings)."""
        return cls(
            policy=LockoutPolicy.from_settings(settings),
            slots=HashSlots(settings.max_concurrent_hashes, settings.hash_wait_seconds),
        )

    def _k(self, kind: str, password_hash: str, password: str) -> tuple[str, str, bytes]:
        digest = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return (kind, password_hash, digest.digest())

    def hit(self, kind: str, password_hash: str, password: str) -> bool:
        """Whether this password was verified against this hash recently."""
        key = self._k(kind, password_hash, password)
        with self._lock:
            until = self._seen.get(key)
        return until is not None and until > time.monotonic()

    def remember(self, kind: str, password_hash: str, password: str) -> None:
        """Remember a successful verification."""
        key = self._k(kind, password_hash, password)
        with self._lock:
            self._seen.pop(key, None)  # re-inserted last: the oldest stay first
            while len(self._seen) >= self._size:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = time.monotonic() + self._ttl

    def forget_all(self) -> None:
        """Forget every verification (an account changed)."""
        with self._lock:
            self._seen.clear()


@dataclass(frozen=True)
class _Attempt:
    """One password check: the account's ``kind`` and ``name`` as given, the ``client``
    address (``None``: unknown), and what was found: the account's ``password_hash`` when it
    exists and may log in now (``None`` otherwise) and the end of its
    lock (epoch ms)."""

    kind: LockKind
    name: str
    password: str
    client: str | None
    password_hash: str | None
    locked_until_ms: int | None
    at_ms: int


def _shown_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_lock(kind: LockKind, key: str, until_ms: int, *, count: int, client: str | None) -> None:
    log.warning(
        "login lockout: %s %r locked until %s after %d failed password checks (client %s)",
        kind.value,
        key,
        _shown_time(until_ms),
        count,
        client or "unknown",
    )


def _reserve(db: Database, policy: LockoutPolicy, attempt: _Attempt) -> bool:
    """Reserve the attempt for its address, then its account; whether it may verify."""
    with db.write() as conn:
        targets = [(LockKind.ADDRESS, attempt.client)] if attempt.client else []
        for kind, key in [*targets, (attempt.kind, attempt.name)]:
            got = lockouts.reserve(conn, kind, key, policy, at_ms=attempt.at_ms)
            if got.newly_locked and got.locked_until_ms is not None:
                _log_lock(
                    kind, key, got.locked_until_ms, count=got.count - 1, client=attempt.client
                )
            if got.refused:
                return False
    return True


def _settle(db: Database, policy: LockoutPolicy, attempt: _Attempt, *, ok: bool) -> None:
    """Record the outcome of a verified attempt for its account and address."""
    keys = [(attempt.kind, attempt.name)]
    if attempt.client:
        keys.append((LockKind.ADDRESS, attempt.client))
    with db.write() as conn:
        for kind, key in keys:
            if ok:
                lockouts.record_success(conn, kind, key)
                continue
            count = lockouts.record_failure(conn, kind, key, policy, at_ms=attempt.at_ms)
            if count is not None:
                _log_lock(
                    kind, key, attempt.at_ms + policy.lock_ms, count=count, client=attempt.client
                )
        if not ok and next(_FAILURES) % _PRUNE_EVERY == 0:
            lockouts.prune(conn, policy, attempt.at_ms)


def _verify_slowly(db: Database, cache: VerifiedCache, attempt: _Attempt) -> bool:
    """The check not answered by the cache, in a hashing slot: reserve, verify (the dummy
    hash when refused or when there is no password to check), record."""
    if not cache.slots.acquire():
        raise ServerBusy(retry_after=max(1, math.ceil(cache.slots.wait_seconds)))
    try:
        if not _reserve(db, cache.policy, attempt):
            verify_password(dummy_hash(), attempt.password)
            return False
        ok = verify_password(attempt.password_hash or dummy_hash(), attempt.password)
        ok = ok and attempt.password_hash is not None
        if attempt.password_hash is not None:  # what a guesser learns from: counted in tests
            log.debug(
                "password check: %s %r (client %s): %s",
                attempt.kind.value,
                attempt.name,
                attempt.client or "unknown",
                "right" if ok else "wrong",
            )
        _settle(db, cache.policy, attempt, ok=ok)
    finally:
        cache.slots.release()
    if ok:
        assert attempt.password_hash is not None
        cache.remember(attempt.kind.value, attempt.password_hash, attempt.password)
        if needs_rehash(attempt.password_hash):
            _rehash(db, attempt.password_hash, attempt)
    return ok


def _rehash(db: Database, old_hash: str, attempt: _Attempt) -> None:
    """Store the verified password hashed with current parameters (``security.needs_rehash``);
    the remembered verification of the old hash then simply expires."""
    with db.write() as conn:
        users.replace_password_hash(
            conn,
            system=attempt.kind is LockKind.SYSUSER,
            name=attempt.name,
            old_hash=old_hash,
            new_hash=hash_password(attempt.password),
        )


def _check(db: Database, cache: VerifiedCache, attempt: _Attempt) -> bool:
    """Whether the attempt's password is right, its account may log in and is not locked.
    A remembered credential of an account not locked is the one answer without a hash."""
    if (
        attempt.password_hash is not None
        and attempt.locked_until_ms is None
        and cache.hit(attempt.kind.value, attempt.password_hash, attempt.password)
    ):
        return True
    return _verify_slowly(db, cache, attempt)


def _plausible(value: str | None, max_len: int) -> TypeGuard[str]:
    """Whether a credential can be looked up at all: a non-empty string of at most ``max_len``
    characters that the databases can hold (no NUL, no lone surrogate)."""
    return isinstance(value, str) and 0 < len(value) <= max_len and is_text(value)


def _client(client: str | None) -> str | None:
    found = client if client is not None else _CLIENT.get()
    return found[:255] if found else None


def authenticate_system(
    db: Database,
    cache: VerifiedCache,
    name: str | None,
    password: str | None,
    *,
    client: str | None = None,
) -> Caller:
    """The system user ``name`` if ``password`` is right and the account may call the API.

    ``client``: the caller's address (default: the request's, see the module docstring).
    Raises ``CredentialsRejected`` — the same for an unknown name, a wrong password, a role
    without API access, a suspended or a locked account, a throttled address, or a name or
    password that is not a storable string (NUL, lone surrogate, over-long) (cbs-api.md §2);
    ``ServerBusy`` when no hashing slot frees in time.
    """
    if not _plausible(name, 255) or not _plausible(password, 1024):
        raise CredentialsRejected()
    at = now_ms()
    with db.read() as conn:
        user = users.get_system_user(conn, name)
        locked = lockouts.lock_end(conn, LockKind.SYSUSER, name, at)
    may_login = (
        user is not None
        and not user.is_locked(at)
        and user.status is not AccountStatus.SUSPENDED
        and user.role.may_call_api
    )
    attempt = _Attempt(
        kind=LockKind.SYSUSER,
        name=name,
        password=password,
        client=_client(client),
        password_hash=user.password_hash if user is not None and may_login else None,
        locked_until_ms=locked,
        at_ms=at,
    )
    if not _check(db, cache, attempt):
        raise CredentialsRejected()
    assert user is not None
    if user.failed_logins or user.status is AccountStatus.LOCKED:
        with db.write() as conn:
            users.record_login_success(conn, user)
    return Caller(name=user.name, role=user.role)


def authenticate_backup_user(
    db: Database,
    cache: VerifiedCache,
    login_name: str | None,
    password: str | None,
    *,
    client: str | None = None,
    owner: str = "",
    scope: str | None = None,
) -> users.BackupUser:
    """The backup user ``login_name`` if ``password`` is its password and it is enabled.

    ``client``: the caller's address (default: the request's, see the module docstring).
    ``owner`` (non-empty) and ``scope`` (a reseller's name) limit which users may pass
    (AuthUser, cbs-api.md §7): one outside them is refused like a wrong password, its real
    password never checked. Raises ``AuthUserRejected`` for any failure, alike;
    ``ServerBusy`` when no hashing slot frees in time.
    """
    if not _plausible(login_name, 255) or not _plausible(password, 1024):
        raise AuthUserRejected()
    at = now_ms()
    with db.read() as conn:
        user = users.find_backup_user(conn, login_name)
        locked = lockouts.lock_end(conn, LockKind.USER, login_name, at)
    may_login = (
        user is not None
        and user.status == AccountStatus.ENABLE.value
        and (not owner or owner == user.owner)
        and (scope is None or scope == user.owner)
    )
    attempt = _Attempt(
        kind=LockKind.USER,
        name=login_name,
        password=password,
        client=_client(client),
        password_hash=user.password_hash if user is not None and may_login else None,
        locked_until_ms=locked,
        at_ms=at,
    )
    if not _check(db, cache, attempt):
        raise AuthUserRejected()
    assert user is not None
    return user
