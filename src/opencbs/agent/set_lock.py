"""One backup job of a backup set at a time on this agent (issue 15, point 11).

Two backups of one set started at once collided: their job IDs are start times to the second
(cbs-api.md §4), so both moved to the next second and then raced for one report spool folder.
A job now holds its set's lock, ``<spool root>/set-<set ID>.lock`` (the report spool of the
server and backup user, ``agent.spool``), from before it delivers earlier reports until it
ends; a second job of the set finds it held and is refused at once with :class:`JobRunning`
("a job of backup set … is running (pid …)"), before anything is started on the server.

The lock is ``flock(2)`` on that file: the kernel releases it when its process ends however it
ends (SIGKILL, a crash), so a lock is never stale; the file holds the holder's process ID, for
the message only. Jobs of other sets, and jobs of one set run by other agents or as other
backup users, are not serialised here (their report spools differ).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from opencbs.errors import Conflict, ExitCode, OpenCBSError

__all__ = ["JobRunning", "SetLockError", "set_lock"]


class JobRunning(Conflict):
    """A job of the backup set is running on this agent already (exit code 5, conflict)."""

    code = "job_running"
    exit_code = ExitCode.CONFLICT

    def __init__(self, set_id: str, pid: int | None, *, set_name: str = "") -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        stop = f"`kill {pid}` stops it cleanly" if pid is not None else "stop it"
        named = f"'{set_name}' ({set_id})" if set_name else set_id
        super().__init__(
            f"a job of backup set {named} is running ({who}); not starting another",
            f"wait for it to end and run the backup again, or {stop}",
        )
        self.set_id = set_id
        self.pid = pid


class SetLockError(OpenCBSError):
    """The set's lock file cannot be created or opened (exit code 7: the agent's data_dir
    cannot be used)."""

    code = "agent_set_lock"
    exit_code = ExitCode.UNAVAILABLE


def lock_path(root: Path, set_id: str) -> Path:
    """The lock file of set ``set_id`` in the spool root ``root``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in set_id)
    return root / f"set-{safe}.lock"


@contextlib.contextmanager
def set_lock(root: Path, set_id: str, *, set_name: str = "") -> Iterator[None]:
    """Hold the lock of backup set ``set_id`` (named ``set_name`` in the error) in spool root
    ``root`` (created if missing) while inside (module docstring). Raises
    :class:`JobRunning` when another process holds it, :class:`SetLockError` when it cannot
    be created. Re-entrant within a process: the command line takes it before it shows the
    job's progress, the job again inside."""
    path = lock_path(root, set_id)
    with _HELD_GUARD:
        if path in _HELD:  # this process holds it already (the command line, then the job)
            _HELD[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[path] -= 1
        return
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SetLockError(
            f"cannot create the lock of backup set {set_id} ({path}): {exc.strerror or exc}",
            "the agent keeps it in its data_dir (OPENCBS_DATA_DIR): make it writable",
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobRunning(set_id, _holder(fd), set_name=set_name) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _HELD_GUARD:
            _HELD[path] = 1
        try:
            yield
        finally:
            with _HELD_GUARD:
                del _HELD[path]
    finally:
        os.close(fd)  # releases the lock


#: The set locks this process holds, and how many times each is entered (re-entry is free).
_HELD: dict[Path, int] = {}
_HELD_GUARD = threading.Lock()


def _holder(fd: int) -> int | None:
    """The process ID the lock file names, once it names a live process (its holder writes it
    just after taking the lock, over the ID of an earlier holder): asked again for up to
    ``_HOLDER_WAIT`` seconds; ``None`` when it never does."""
    deadline = time.monotonic() + _HOLDER_WAIT
    while True:
        pid = _named_pid(fd)
        if pid is not None and _alive(pid):
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


#: Seconds a refused job waits for the lock's holder to name itself.
_HOLDER_WAIT = 1.0


def _named_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
