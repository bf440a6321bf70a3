"""Repository locks: a backup and a prune on one repository at once, from any machine.

Locks are objects in the repository, so they work wherever the repository lives (a local
folder, a NAS share, an S3 bucket) and between machines::

    locks/<64 hex>     a shared lock: one per backup, restore, verify, forget or prune's
                       marking phase; many at once
    locks/exclusive    the exclusive lock: prune's delete phase (``prune.py``); one at a time

Each is sealed JSON (associated data ``b"opencbs:lock:" + name``): the kind, what holds it
(``purpose``), host name, process ID, and when it was taken and last refreshed (ns since the
epoch). A holder refreshes its lock every ``LockTiming.refresh`` seconds on a background
thread; a lock not refreshed for ``LockTiming.stale`` seconds (or one of this host whose
process is gone) is *stale*, and is ignored and removed by the next taker.

The protocol needs only that a write is visible to a later list or read, and an exclusive
lock created only if absent (``Storage.put_if`` with ``version=None``: ``If-None-Match`` on
S3, a lock file on a folder):

- shared: write ``locks/<id>``, then read ``locks/exclusive``; if a live exclusive lock is
  there, remove the own lock and wait;
- exclusive: create ``locks/exclusive`` only if absent (replace a stale one only if it is
  still that version), then list ``locks/``; if a live shared lock is there, remove the own
  exclusive lock and wait.

Of a backup and a prune starting at once at least one sees the other and steps back (both
may; they retry after a random pause), so a prune never deletes while a backup runs. Waiting
is bounded (``wait`` seconds): then ``RepositoryLocked`` names the holder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from opencbs.destinations.base import ObjectNotFound, PreconditionFailed, Storage
from opencbs.engine.crypto import Keys
from opencbs.engine.repo_errors import CorruptData, RepositoryError

__all__ = [
    "EXCLUSIVE_NAME",
    "LOCK_PREFIX",
    "Kind",
    "LockInfo",
    "LockTiming",
    "RepositoryLock",
    "RepositoryLocked",
    "list_locks",
]

log = logging.getLogger(__name__)

LOCK_PREFIX = "locks/"
EXCLUSIVE_NAME = LOCK_PREFIX + "exclusive"
_FORMAT = "opencbs-lock"
Kind = Literal["shared", "exclusive"]


@dataclass(frozen=True, slots=True)
class LockTiming:
    """How locks are kept and waited for (seconds): a holder refreshes its lock every
    ``refresh``; a lock not refreshed for ``stale`` is ignored (restic's 30 minutes); a taker
    waits up to ``wait`` for other holders, polling every ``poll`` (with jitter)."""

    refresh: float = 300.0
    stale: float = 1800.0
    wait: float = 600.0
    poll: float = 2.0


@dataclass(frozen=True, slots=True)
class LockInfo:
    """One stored lock: its object ``name``, ``kind``, ``purpose`` (``backup``, ``prune``,
    ``forget``, ``restore``, ``verify``), ``hostname``, ``pid``, and ``created_ns`` /
    ``refreshed_ns`` (ns since the epoch, the holder's clock)."""

    name: str
    kind: Kind
    purpose: str
    hostname: str
    pid: int
    created_ns: int
    refreshed_ns: int

    def is_stale(self, timing: LockTiming, now_ns: int) -> bool:
        """Whether the lock no longer counts: not refreshed for ``timing.stale`` seconds, or
        held by a process of this host that is gone."""
        if now_ns - self.refreshed_ns > timing.stale * 1e9:
            return True
        return self.hostname == socket.gethostname() and not _alive(self.pid)

    def describe(self) -> str:
        """``prune on host-a (pid 123), taken 2026-12-05 14:03:11 UTC``."""
        taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created_ns / 1e9))
        return f"{self.purpose} on {self.hostname} (pid {self.pid}), taken {taken}"


class RepositoryLocked(RepositoryError):
    """Another process holds a lock that this one must wait for, longer than it may wait."""

    code = "repository_locked"

    def __init__(self, holder: LockInfo, waited: float) -> None:
        super().__init__(
            f"The repository is in use: {holder.describe()} (waited {waited:.0f} s)",
            hint="try again when it has finished; a lock of a process that died is ignored "
            "once it is 30 minutes old",
        )
        self.holder = holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _aad(name: str) -> bytes:
    return b"opencbs:lock:" + name.encode("ascii")


def _seal(keys: Keys, info: LockInfo) -> bytes:
    doc = {
        "format": _FORMAT,
        "kind": info.kind,
        "purpose": info.purpose,
        "hostname": info.hostname,
        "pid": info.pid,
        "created_ns": info.created_ns,
        "refreshed_ns": info.refreshed_ns,
    }
    return keys.seal(json.dumps(doc).encode("utf-8"), _aad(info.name))


def _open(keys: Keys, name: str, sealed: bytes) -> LockInfo:
    """Raises ``CorruptData``."""
    doc: dict[str, Any] = json.loads(keys.unseal(sealed, _aad(name), what=name))
    try:
        if doc["format"] != _FORMAT or doc["kind"] not in ("shared", "exclusive"):
            raise ValueError("not a lock")
        return LockInfo(
            name,
            doc["kind"],
            str(doc["purpose"]),
            str(doc["hostname"]),
            int(doc["pid"]),
            int(doc["created_ns"]),
            int(doc["refreshed_ns"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptData(f"{name}: unreadable lock ({exc})") from None


def list_locks(storage: Storage, keys: Keys) -> list[LockInfo]:
    """Every readable lock of the repository (an unreadable one is logged and skipped: it
    cannot be honoured, and a lock of another repository key is no lock here). Raises
    ``DestinationError``."""
    found: list[LockInfo] = []
    for name in storage.list(LOCK_PREFIX):
        try:
            found.append(_open(keys, name, storage.get(name)))
        except ObjectNotFound:
            continue
        except (CorruptData, ValueError) as exc:
            log.warning("ignoring the unreadable lock %s: %s", name, exc)
    return found


class RepositoryLock:
    """A lock held on a repository; use as a context manager (``acquire`` on enter,
    ``release`` on exit). ``lost`` is set when a refresh finds the lock gone or replaced (a
    stale takeover after this process stalled): a holder about to delete must check it."""

    def __init__(
        self,
        storage: Storage,
        keys: Keys,
        kind: Kind,
        purpose: str,
        *,
        timing: LockTiming | None = None,
    ) -> None:
        self._storage = storage
        self._keys = keys
        self.kind: Kind = kind
        self.purpose = purpose
        self.timing = timing or LockTiming()
        self.name = EXCLUSIVE_NAME if kind == "exclusive" else LOCK_PREFIX + secrets.token_hex(32)
        self._created_ns = 0
        self._version: str | None = None
        self._written = False  # whether the own lock object is in the destination now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def __enter__(self) -> RepositoryLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _info(self) -> LockInfo:
        return LockInfo(
            self.name,
            self.kind,
            self.purpose,
            socket.gethostname(),
            os.getpid(),
            self._created_ns,
            time.time_ns(),
        )

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timing.wait`` seconds for conflicting holders.
        Raises ``RepositoryLocked`` (naming a holder) and ``DestinationError``."""
        started = time.monotonic()
        while True:
            self._created_ns = time.time_ns()
            holder = self._try_once()
            if holder is None:
                break
            waited = time.monotonic() - started
            if waited >= self.timing.wait:
                raise RepositoryLocked(holder, waited)
            log.debug("waiting for the repository lock held by %s", holder.describe())
            pause = self.timing.poll * random.uniform(0.5, 1.5)
            time.sleep(min(pause, max(0.05, self.timing.wait - waited)))
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()
        log.debug("took the %s lock %s for %s", self.kind, self.name, self.purpose)

    def _try_once(self) -> LockInfo | None:
        """One attempt; ``None`` when taken, else the holder that stands in the way (the own
        lock is removed again then)."""
        if self.kind == "shared":
            self._storage.put(self.name, _seal(self._keys, self._info()))
            self._written = True
            blocker = self._live_exclusive()
        else:
            blocker = self._create_exclusive()
            if blocker is None:
                blocker = self._live_shared()
        if blocker is not None and self._holds_object():
            self._remove_own()
        return blocker

    def _live_exclusive(self) -> LockInfo | None:
        try:
            info = _open(self._keys, EXCLUSIVE_NAME, self._storage.get(EXCLUSIVE_NAME))
        except ObjectNotFound:
            return None
        except CorruptData as exc:
            log.warning("ignoring the unreadable exclusive lock: %s", exc)
            return None
        return None if info.is_stale(self.timing, time.time_ns()) else info

    def _create_exclusive(self) -> LockInfo | None:
        """Create ``locks/exclusive``, or take over a stale one; the live holder otherwise."""
        sealed = _seal(self._keys, self._info())
        try:
            self._version = self._storage.put_if(EXCLUSIVE_NAME, sealed, version=None)
            return None
        except PreconditionFailed:
            pass
        try:
            blob, version = self._storage.get_versioned(EXCLUSIVE_NAME)
        except ObjectNotFound:
            return self._create_exclusive_again(sealed)
        try:
            info = _open(self._keys, EXCLUSIVE_NAME, blob)
        except CorruptData as exc:
            log.warning("replacing the unreadable exclusive lock: %s", exc)
            info = None
        if info is not None and not info.is_stale(self.timing, time.time_ns()):
            return info
        try:
            self._version = self._storage.put_if(EXCLUSIVE_NAME, sealed, version=version)
            if info is not None:
                log.warning("took over the stale lock of %s", info.describe())
            return None
        except PreconditionFailed:  # another taker was quicker
            return info or self._info()

    def _create_exclusive_again(self, sealed: bytes) -> LockInfo | None:
        try:
            self._version = self._storage.put_if(EXCLUSIVE_NAME, sealed, version=None)
            return None
        except PreconditionFailed:
            return self._info()  # someone else took it in between: wait a round

    def _live_shared(self) -> LockInfo | None:
        now = time.time_ns()
        for info in list_locks(self._storage, self._keys):
            if info.name == self.name or info.kind != "shared":
                continue
            if info.is_stale(self.timing, now):
                log.warning("removing the stale lock of %s", info.describe())
                self._storage.delete(info.name)
                continue
            return info
        return None

    def _holds_object(self) -> bool:
        """Whether this holder wrote its lock object and has not removed it (a shared lock's
        ``put`` succeeded; an exclusive one has its version)."""
        return self._written if self.kind == "shared" else self._version is not None

    def _remove_own(self) -> None:
        try:
            self._storage.delete(self.name)
        except ObjectNotFound:
            pass
        self._version = None
        self._written = False

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.timing.refresh):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the next refresh tries again
                log.warning("could not refresh the repository lock %s: %s", self.name, exc)

    def refresh(self) -> None:
        """Write the lock again with the current time; sets ``lost`` when the exclusive lock
        was replaced meanwhile. Raises ``DestinationError``."""
        sealed = _seal(self._keys, self._info())
        if self.kind == "shared":
            self._storage.put(self.name, sealed)
            return
        try:
            self._version = self._storage.put_if(EXCLUSIVE_NAME, sealed, version=self._version)
        except (PreconditionFailed, ObjectNotFound):
            log.error("the exclusive repository lock was taken over by another process")
            self.lost.set()

    def release(self) -> None:
        """Stop refreshing and remove the lock (an exclusive one only while still this
        holder's; nothing when it was never written: an ``acquire`` that failed, a
        destination that refused the lock). Never raises for the storage: a lock left behind
        goes stale and is removed by the next taker (``_live_shared``), so a failure is only
        logged at debug level."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._holds_object() or (self.kind == "exclusive" and self.lost.is_set()):
            return
        try:
            self._storage.delete(self.name)
        except ObjectNotFound:
            pass
        except Exception as exc:  # noqa: BLE001 - it goes stale
            log.debug("could not remove the repository lock %s (it goes stale): %s", self.name, exc)
        self._version = None
        self._written = False
