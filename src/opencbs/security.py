"""Password hashing: argon2id, salted and slow (cbs-api.md §2). Verification is constant-time
inside argon2; ``DUMMY_HASH`` lets a lookup of an unknown name cost the same as a wrong password.
``HashSlots`` bounds how many verifications run at once (each takes ``HASH_MEMORY`` bytes).
"""

from __future__ import annotations

import functools
import os
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: argon2id with OWASP's first recommended profile (19 MiB, 2 passes, 1 lane): slow enough
#: against guessing, small enough that a wrong password costs a server under attack 19 MiB, not
#: the 64 MiB of RFC 9106's low-memory profile (a bound on what any one request may cost). Hashes
#: made with other parameters still verify and are replaced at the next successful login
#: (``needs_rehash``).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

#: Memory one hash or verification takes (bytes): argon2's memory cost (KiB) of our hasher.
HASH_MEMORY = _hasher.memory_cost * 1024


def hash_password(password: str) -> str:
    """An argon2id hash (PHC string) of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; never raises for a mismatch or bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether ``password_hash`` was made with other parameters than ours (so it should be
    replaced by ``hash_password`` of the password just verified); ``False`` for a hash that
    cannot be read."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return False


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the account is unknown (made once, on first use)."""
    return hash_password("opencbs-dummy-password-for-timing")


#: glibc's ``mallopt`` parameter number of the mmap threshold (malloc.h ``M_MMAP_THRESHOLD``).
_M_MMAP_THRESHOLD = -3


def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Make the C allocator map every allocation of ``threshold`` bytes or more on its own and
    unmap it when freed (glibc ``mallopt(M_MMAP_THRESHOLD)``, which also turns off glibc's
    dynamic threshold). Without it glibc raises the threshold after the first such buffer is
    freed and keeps later ones in its per-thread arenas: argon2's 19 MiB work area, hashed on
    many server threads, then stays in the process (about 440 MiB more RSS under 50 parallel
    guessers, ``bench/hostile.py`` case 5). Whether it applied (``False`` off glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, threshold) == 1)


def _available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``, else free pages; 1 GiB when
    the system says neither)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def default_hash_slots() -> int:
    """How many verifications may run at once on this machine: two per CPU, at most a quarter
    of the memory available now divided by ``HASH_MEMORY``, at least 2."""
    cpus = os.cpu_count() or 1
    by_memory = _available_memory() // (HASH_MEMORY * 4)
    return int(max(2, min(cpus * 2, by_memory)))


class HashSlots:
    """A bound on concurrent password verifications: ``size`` slots (0: ``default_hash_slots``),
    each waited for at most ``wait_seconds``."""

    def __init__(self, size: int = 0, wait_seconds: float = 2.0) -> None:
        self.size = size or default_hash_slots()
        self.wait_seconds = wait_seconds
        self._sem = threading.BoundedSemaphore(self.size)

    def acquire(self) -> bool:
        """Take a slot, waiting at most ``wait_seconds``; ``False`` when none freed."""
        return self._sem.acquire(timeout=self.wait_seconds)

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        self._sem.release()


def __getattr__(name: str) -> str:
    # ``DUMMY_HASH`` is computed lazily: an argon2 hash at import would slow every CLI start.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(name)
