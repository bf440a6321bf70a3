"""Releasing a repository lock (``engine.locks.RepositoryLock.release``) on a real local
destination: one on a file system remounted read-only (a tmpfs; skipped where it cannot be
mounted), where the lock could never be written, is not removed (nothing logged about it);
one written, then made immutable (``chattr +i``: refused for root too; skipped where the file
system refuses the attribute), is left to go stale, said at debug level only, never as a
warning on a user's terminal."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from opencbs.destinations import LocalStorage
from opencbs.destinations.base import DestinationError
from opencbs.engine.crypto import KdfParams
from opencbs.engine.locks import LockTiming, list_locks
from opencbs.engine.repository import Repository
from tests.agent_support import tmpfs

TIMING = LockTiming(wait=0.5, poll=0.1)


def _repo(root: Path) -> Repository:
    return Repository.init(
        LocalStorage(root, fsync=False),
        "pw",
        kdf=KdfParams(time_cost=1, memory_kib=8, parallelism=1),
    )


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"chattr +i is refused here: {res.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _about_removal(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "could not remove the repository lock" in r.message]


def test_a_lock_never_written_is_not_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        repo = _repo(disk / "dest")
        with repo.lock("shared", "backup", timing=TIMING):
            pass  # as an earlier backup: the folder of locks is there
        assert (disk / "dest" / "locks").is_dir()
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True, check=False
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
        caplog.set_level(logging.DEBUG, logger="opencbs")
        for kind in ("shared", "exclusive"):
            lock = repo.lock(kind, "backup", timing=TIMING)
            with pytest.raises(DestinationError, match="Read-only file system"):
                lock.acquire()
            lock.release()  # as a job does after a failed start
    assert _about_removal(caplog) == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_written_lock_that_cannot_be_removed_goes_stale_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = _repo(tmp_path / "dest")
    caplog.set_level(logging.DEBUG, logger="opencbs")
    lock = repo.lock("shared", "backup", timing=TIMING)
    lock.acquire()
    with _immutable(tmp_path / "dest" / "locks"):
        lock.release()
    tried = _about_removal(caplog)
    assert len(tried) == 1 and tried[0].levelno == logging.DEBUG, tried
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [i.name for i in list_locks(repo.storage, repo.keys)] == [lock.name]
