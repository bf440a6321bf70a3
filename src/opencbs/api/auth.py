"""Authentication of system users (cbs-api.md §2) and of backup users (AuthUser, agent API).

Every rejection is the one generic error. A successful argon2 verification is remembered for a
short while, keyed by the account's current password hash and a keyed digest of the password
given, so a changed or wrong password never matches; the account row is still read on every
request, so a suspension or lock applies at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TypeGuard

from opencbs.errors import AuthUserRejected, CredentialsRejected
from opencbs.model.text import is_text
from opencbs.reports.vocabulary import AccountStatus, SystemRole
from opencbs.security import dummy_hash, verify_password
from opencbs.store import users
from opencbs.store.db import Database
from opencbs.store.util import now_ms


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
    """Successful password verifications, remembered for ``ttl`` seconds (at most ``size``)."""

    def __init__(self, ttl: float = 60.0, size: int = 4096) -> None:
        self._ttl = ttl
        self._size = size
        self._key = secrets.token_bytes(32)
        self._seen: dict[tuple[str, str, bytes], float] = {}
        self._lock = threading.Lock()

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
            if len(self._seen) >= self._size:
                self._seen.clear()
            self._seen[key] = time.monotonic() + self._ttl

    def forget_all(self) -> None:
        """Forget every verification (an account changed)."""
        with self._lock:
            self._seen.clear()


def _check(cache: VerifiedCache, kind: str, password_hash: str, password: str) -> bool:
    if cache.hit(kind, password_hash, password):
        return True
    if verify_password(password_hash, password):
        cache.remember(kind, password_hash, password)
        return True
    return False


def _plausible(value: str | None, max_len: int) -> TypeGuard[str]:
    """Whether a credential can be looked up at all: a non-empty string of at most ``max_len``
    characters that the databases can hold (no NUL, no lone surrogate)."""
    return isinstance(value, str) and 0 < len(value) <= max_len and is_text(value)


def authenticate_system(
    db: Database, cache: VerifiedCache, name: str | None, password: str | None
) -> Caller:
    """The system user ``name`` if ``password`` is right and the account may call the API.

    Raises ``CredentialsRejected`` — the same for an unknown name, a wrong password, a role
    without API access, a suspended or a locked account, or a name or password that is not a
    storable string (NUL, lone surrogate, over-long) (cbs-api.md §2). Failed passwords are
    counted and lock the account after ``users.LOCK_AFTER_FAILURES``.
    """
    if not _plausible(name, 255) or not _plausible(password, 1024):
        raise CredentialsRejected()
    with db.read() as conn:
        user = users.get_system_user(conn, name)
    if user is None:
        verify_password(dummy_hash(), password)  # same cost as a wrong password
        raise CredentialsRejected()
    at = now_ms()
    if user.is_locked(at) or user.status is AccountStatus.SUSPENDED or not user.role.may_call_api:
        # Never check (nor remember) the real password of an account that may not log in: the
        # answer then takes as long as a wrong password, whatever was sent, so neither timing
        # nor the cache tells a guesser that a locked account's password was right.
        verify_password(dummy_hash(), password)
        raise CredentialsRejected()
    if not _check(cache, "sys", user.password_hash, password):
        with db.write() as conn:
            users.record_login_failure(conn, user.id, at)
        raise CredentialsRejected()
    if user.failed_logins or user.status is AccountStatus.LOCKED:
        with db.write() as conn:
            users.record_login_success(conn, user)
    return Caller(name=user.name, role=user.role)


def authenticate_backup_user(
    db: Database, cache: VerifiedCache, login_name: str | None, password: str | None
) -> users.BackupUser:
    """The backup user ``login_name`` if ``password`` is its password and it is enabled.

    Raises ``AuthUserRejected`` for any failure, alike.
    """
    if not _plausible(login_name, 255) or not _plausible(password, 1024):
        raise AuthUserRejected()
    with db.read() as conn:
        user = users.find_backup_user(conn, login_name)
    if user is None:
        verify_password(dummy_hash(), password)
        raise AuthUserRejected()
    if not _check(cache, "user", user.password_hash, password):
        raise AuthUserRejected()
    if user.status != AccountStatus.ENABLE.value:
        raise AuthUserRejected()
    return user
