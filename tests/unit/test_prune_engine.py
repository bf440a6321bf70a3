"""Forget and prune in the engine (``engine.prune``, ``engine.locks``): unused packs deleted,
mostly unused ones repacked, the two phases and their grace period, the locks, a backup that
deduplicated against a condemned pack, and a crash at every write of a prune."""

from __future__ import annotations

import io
import random
import shutil
import time
from pathlib import Path

import pytest

from opencbs.destinations import LocalStorage, MemoryStorage
from opencbs.destinations.base import Storage
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.locks import LockTiming, RepositoryLock, RepositoryLocked, list_locks
from opencbs.engine.packs import DATA_PREFIX
from opencbs.engine.prune import (
    DELETIONS_PREFIX,
    PruneOptions,
    forget_snapshots,
    prune,
    read_pending,
)
from opencbs.engine.prune_scan import UsedSet
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.engine.snapshot_format import snapshot_name
from opencbs.reports.vocabulary import EntryType

PASSWORD = "prune password"
FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
CHUNKER = ChunkerParams(min_size=1024, avg_size=2048, max_size=4096)
QUICK = LockTiming(refresh=60, stale=600, wait=0.5, poll=0.05)
NOW = PruneOptions(grace=0, max_unused=0.0, timing=QUICK)


def _content(seed: str) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(rng.randint(1500, 3500))


def _commit(repo: Repository, day: int, files: dict[str, bytes]) -> str:
    items = []
    with repo.writer() as w:
        results = {name: w.add_file(io.BytesIO(data)) for name, data in files.items()}
    for n, (name, data) in enumerate(sorted(files.items())):
        r = results[name]
        entry = Entry(
            name.encode(), EntryType.FILE, len(data), day, day, 0o100644, 0, 0, n, 1,
            content_id=r.content_id,
        )  # fmt: skip
        items.append((entry, r.chunk_ids))
    meta = SnapshotMeta(
        time_ns=1_700_000_000_000_000_000 + day * 86_400_000_000_000,
        set_id="1",
        destination_id="2",
        job_id=f"job-{day}",
        hostname="host",
    )
    return repo.commit_snapshot(meta, items)


def _history(repo: Repository, days: int = 5) -> dict[str, dict[str, bytes]]:
    """Snapshots of 12 files, a third of them rewritten each day; ID -> expected files."""
    files = {f"/f{i:02d}": _content(f"0-{i}") for i in range(12)}
    expected: dict[str, dict[str, bytes]] = {}
    for day in range(days):
        if day:
            for i in range(day % 3, 12, 3):
                files[f"/f{i:02d}"] = _content(f"{day}-{i}")
        expected[_commit(repo, day, dict(files))] = dict(files)
    return expected


def _restored(repo: Repository, snapshot_id: str) -> dict[str, bytes]:
    _info, items = repo.load_snapshot(snapshot_id)
    return {e.path.decode(): b"".join(repo.read_chunk(c) for c in chunks) for e, chunks in items}


def _new_repo(storage: Storage) -> Repository:
    return Repository.init(storage, PASSWORD, kdf=FAST_KDF, chunker=CHUNKER, pack_target_size=8192)


def _pack_bytes(storage: Storage) -> int:
    return sum(size for _name, size in storage.list_sizes(DATA_PREFIX))


def _check_whole(storage: Storage, expected: dict[str, dict[str, bytes]]) -> None:
    """A fresh open verifies with every byte read and restores every snapshot kept."""
    repo = Repository.open(storage, PASSWORD)
    result = repo.verify(read_data=True)
    assert result.ok, result.errors
    assert set(repo.snapshot_ids()) == set(expected)
    for sid, files in expected.items():
        assert _restored(repo, sid) == files


def test_forget_then_prune_frees_space_and_keeps_the_rest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    repo = _new_repo(storage)
    expected = _history(repo)
    before = _pack_bytes(storage)
    old = list(expected)[:3]
    result = forget_snapshots(repo, old, timing=QUICK)
    assert result.removed == tuple(old)
    for sid in old:
        del expected[sid]
    assert not any(storage.exists(snapshot_name(s)) for s in old)
    listed = repo.snapshot_list()
    assert listed is not None and set(old) <= listed.removed
    pruned = prune(repo, NOW)
    assert pruned.deleted > 0 and pruned.bytes_freed > 0 and pruned.pending == 0
    assert pruned.bytes_after == _pack_bytes(storage) < before
    assert not list(storage.list(DELETIONS_PREFIX)) and not list(storage.list("locks/"))
    _check_whole(storage, expected)
    again = prune(Repository.open(storage, PASSWORD), NOW)
    assert (again.condemned, again.deleted) == (0, 0)


def test_repacking_keeps_used_chunks_of_mostly_unused_packs(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    repo = _new_repo(storage)
    files = {f"/f{i:02d}": _content(f"a-{i}") for i in range(12)}
    gone_id = _commit(repo, 0, files)
    keep_id = _commit(repo, 1, {"/f00": files["/f00"], "/f05": files["/f05"]})  # deduplicated
    forget_snapshots(repo, [gone_id], timing=QUICK)
    result = prune(repo, NOW)
    assert result.repacked > 0 and result.packs_written > 0
    _check_whole(storage, {keep_id: {"/f00": files["/f00"], "/f05": files["/f05"]}})
    # with a tolerance of everything, nothing partly used is repacked
    repo2 = _new_repo(MemoryStorage())
    gone = _commit(repo2, 0, files)
    _commit(repo2, 1, {"/f00": files["/f00"]})
    forget_snapshots(repo2, [gone], timing=QUICK)
    lax = prune(repo2, PruneOptions(grace=0, max_unused=1.0, timing=QUICK))
    assert lax.repacked == 0


def test_grace_period_marks_first_and_a_later_backup_stores_condemned_chunks_again(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    repo = _new_repo(storage)
    expected = _history(repo, days=3)
    first = next(iter(expected))
    first_files = expected.pop(first)
    forget_snapshots(repo, [first], timing=QUICK)
    marked = prune(repo, PruneOptions(grace=3600, max_unused=0.0, timing=QUICK))
    assert marked.condemned > 0 and marked.deleted == 0 and marked.pending == marked.condemned
    (pending,) = read_pending(storage, repo.keys)
    # a backup that starts now brings back the forgotten files: it must not deduplicate
    # against the condemned packs
    later = Repository.open(storage, PASSWORD)
    assert later.exclude_condemned() == set(pending.packs)
    back = _commit(later, 9, first_files)
    expected[back] = first_files
    swept = prune(Repository.open(storage, PASSWORD), NOW)
    assert swept.deleted == len(pending.packs) and swept.kept == 0
    _check_whole(storage, expected)


def test_a_backup_that_used_a_condemned_pack_before_the_mark_keeps_it(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    repo = _new_repo(storage)
    expected = _history(repo, days=3)
    first = next(iter(expected))
    first_files = expected.pop(first)
    early = Repository.open(storage, PASSWORD)  # a backup that loaded the index already
    forget_snapshots(repo, [first], timing=QUICK)
    prune(repo, PruneOptions(grace=3600, max_unused=0.0, timing=QUICK))
    back = _commit(early, 9, first_files)  # deduplicated against the condemned packs
    expected[back] = first_files
    swept = prune(Repository.open(storage, PASSWORD), NOW)
    assert swept.kept > 0
    _check_whole(storage, expected)


def test_an_exclusive_lock_waits_for_shared_ones_and_stale_locks_are_ignored() -> None:
    storage = MemoryStorage()
    repo = _new_repo(storage)
    expected = _history(repo, days=2)
    forget_snapshots(repo, [next(iter(expected))], timing=QUICK)
    with RepositoryLock(storage, repo.keys, "shared", "backup", timing=QUICK):
        with pytest.raises(RepositoryLocked) as caught:
            prune(repo, NOW)
        assert "backup on" in caught.value.message
        assert [i.kind for i in list_locks(storage, repo.keys)] == ["shared"]
        assert read_pending(storage, repo.keys)  # marked; the sweep waits for the next run
    # a backup cannot start while a prune deletes
    with RepositoryLock(storage, repo.keys, "exclusive", "prune", timing=QUICK):
        with pytest.raises(RepositoryLocked):
            RepositoryLock(storage, repo.keys, "shared", "backup", timing=QUICK).acquire()
    # a lock not refreshed for longer than ``stale`` no longer counts
    stale = LockTiming(refresh=60, stale=0.2, wait=0.5, poll=0.05)
    RepositoryLock(storage, repo.keys, "shared", "backup", timing=stale).acquire()  # never released
    time.sleep(0.3)
    done = prune(repo, PruneOptions(grace=0, max_unused=0.0, timing=stale))
    assert done.deleted > 0
    assert list_locks(storage, repo.keys) == []


class _Crash(Exception):
    pass


class _CrashingStorage:
    """A storage that fails (as a killed process stops) at its ``n``-th put or delete."""

    def __init__(self, inner: Storage, n: int) -> None:
        self._inner = inner
        self._left = n
        self.crashed = False

    def _step(self) -> None:
        self._left -= 1
        if self._left < 0:
            self.crashed = True
            raise _Crash()

    def put(self, name: str, data: bytes | memoryview) -> None:
        self._step()
        self._inner.put(name, data)

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        self._step()
        return self._inner.put_if(name, data, version=version)

    def delete(self, name: str) -> None:
        self._step()
        self._inner.delete(name)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_crash_at_any_write_of_forget_or_prune_loses_nothing(tmp_path: Path) -> None:
    base = tmp_path / "base"
    repo = _new_repo(LocalStorage(base, fsync=False))
    expected = _history(repo)
    old = list(expected)[:3]
    kept = {sid: files for sid, files in expected.items() if sid not in old}
    finished_at = None
    for n in range(80):
        target = tmp_path / f"crash-{n}"
        shutil.copytree(base, target)
        storage = _CrashingStorage(LocalStorage(target, fsync=False), n)
        try:
            crashing = Repository.open(storage, PASSWORD)  # type: ignore[arg-type]
            forget_snapshots(crashing, old, timing=QUICK)
            prune(crashing, NOW)
        except _Crash:
            pass
        local = LocalStorage(target, fsync=False)
        survivors = set(Repository.open(local, PASSWORD).snapshot_ids())
        # a crash inside forget may leave some of the old snapshots: they restore whole
        state = {sid: expected[sid] for sid in survivors}
        assert set(kept) <= survivors
        for lock in list_locks(local, Repository.open(local, PASSWORD).keys):
            local.delete(lock.name)  # the killed process's locks (stale in real life)
        _check_whole(local, state)
        # the next forget and prune finish the work
        again = Repository.open(local, PASSWORD)
        forget_snapshots(again, [s for s in old if s in survivors], timing=QUICK)
        prune(again, NOW)
        _check_whole(local, kept)
        assert not list(local.list(DELETIONS_PREFIX))
        if not storage.crashed:
            finished_at = n
            break
    assert finished_at is not None and finished_at > 5


def test_the_used_set_holds_what_is_added_and_grows() -> None:
    used = UsedSet(capacity=16)
    ids = [random.Random(n).randbytes(32) for n in range(5000)]
    for cid in ids[:2500]:
        used.add(cid)
        used.add(cid)  # twice: counted once
    assert len(used) == 2500
    assert all(cid in used for cid in ids[:2500])
    assert sum(cid in used for cid in ids[2500:]) == 0
    zero = bytes(32)  # a key of 0 is the table's empty slot: kept as 1
    used.add(zero)
    assert zero in used and len(used) == 2501


class _CrashAtPending(_CrashingStorage):
    """Fails at the write of the pending deletion: the repacked copies are stored, the
    packs they came from not yet condemned (a prune killed there)."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner, 10**9)

    def put(self, name: str, data: bytes | memoryview) -> None:
        if name.startswith(DELETIONS_PREFIX):
            self.crashed = True
            raise _Crash()
        super().put(name, data)


def test_copies_left_by_a_killed_prune_are_freed_by_the_next(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    repo = _new_repo(storage)
    expected = _history(repo)
    old = list(expected)[:3]
    forget_snapshots(repo, old, timing=QUICK)
    kept = {sid: files for sid, files in expected.items() if sid not in old}
    crashing = _CrashAtPending(storage)
    with pytest.raises(_Crash):
        prune(Repository.open(crashing, PASSWORD), NOW)  # type: ignore[arg-type]
    for lock in list_locks(storage, repo.keys):
        storage.delete(lock.name)  # the killed process's lock (stale in real life)
    prune(Repository.open(storage, PASSWORD), NOW)
    fresh = Repository.open(storage, PASSWORD)
    places: dict[bytes, set[str]] = {}
    for pack_id, items in fresh.index.by_pack():
        for cid, _loc in items:
            places.setdefault(cid, set()).add(pack_id)
    for cid in list(places):
        places[cid] |= {c.pack_id for c in fresh.index.copies(cid)}
    assert not [cid for cid, packs in places.items() if len(packs) > 1]
    _check_whole(storage, kept)
