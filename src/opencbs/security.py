"""Password hashing: argon2id, salted and slow (cbs-api.md §2). Verification is constant-time
inside argon2; ``DUMMY_HASH`` lets a lookup of an unknown name cost the same as a wrong password.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults


def hash_password(password: str) -> str:
    """An argon2id hash (PHC string) of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; never raises for a mismatch or bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the account is unknown (made once, on first use)."""
    return hash_password("opencbs-dummy-password-for-timing")


def __getattr__(name: str) -> str:
    # ``DUMMY_HASH`` is computed lazily: an argon2 hash at import would slow every CLI start.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(name)
