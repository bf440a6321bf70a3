"""The snapshot list (``engine.manifest``): written with every commit, checked by ``verify``
against the snapshots stored and against what the agent remembers (its anchor); a removed
snapshot, a rollback and a deleted list are problems; a crash between a snapshot and its list
is not; a repository made before the list still opens and gets one with its next commit."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opencbs.destinations import LocalStorage, MemoryStorage, PreconditionFailed
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.manifest import (
    MANIFEST_NAME,
    Anchor,
    Manifest,
    anchor_path,
    check_snapshot_list,
    load_anchor,
    remember,
)
from opencbs.engine.repository import (
    _CONFIG_AAD,
    CONFIG_NAME,
    LIST_WRITE_ATTEMPTS,
    Repository,
    SnapshotMeta,
)
from opencbs.engine.snapshot_format import snapshot_name
from opencbs.reports.vocabulary import EntryType

PASSWORD = "list password"
FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
A, B, C = "a" * 64, "b" * 64, "c" * 64


def _meta(n: int) -> SnapshotMeta:
    return SnapshotMeta(
        time_ns=1_700_000_000_000_000_000 + n,
        set_id="1",
        destination_id="2",
        job_id=f"job-{n}",
        hostname="host",
    )


def _commit(repo: Repository, n: int) -> str:
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(b"content %d" % n))
    entry = Entry(
        b"/f%d" % n, EntryType.FILE, result.original_size, 1, 1, 0o100644, 0, 0, n, 1,
        content_id=result.content_id,
    )  # fmt: skip
    return repo.commit_snapshot(_meta(n), [(entry, result.chunk_ids)])


@pytest.fixture
def repo() -> Repository:
    return Repository.init(MemoryStorage(), PASSWORD, kdf=FAST_KDF)


def _subjects(repo: Repository, anchor: Anchor | None = None) -> dict[str, str]:
    result = repo.verify(anchor=anchor)
    return {p.subject: p.message for p in result.errors}


def _anchor(tmp_path: Path, repo: Repository) -> Anchor:
    recorded = repo.recorded
    assert recorded is not None
    assert remember(tmp_path, repo.config.repo_id, recorded)
    anchor = load_anchor(tmp_path, repo.config.repo_id)
    assert anchor is not None
    return anchor


# The pure check ---------------------------------------------------------------------------


def test_check_rules_without_storage() -> None:
    listed = Manifest(5, frozenset({A, B}), frozenset({C}), "d5")
    clean = check_snapshot_list(listed, {A, B}, None, required=True)
    assert clean.problems == () and clean.unrecorded == ()
    # B removed: a problem; C (removed on purpose) still stored: a leftover of a forget
    # stopped halfway, not a problem; D not listed yet: unrecorded
    d = "d" * 64
    check = check_snapshot_list(listed, {A, C, d}, None, required=True)
    assert dict(check.problems) == {
        f"snapshot {B}": "removed: named by the snapshot list (generation 5)",
    }
    assert check.unrecorded == (d,)
    assert check.leftovers == (C,)
    remembered = Anchor("r", 7, "d7", frozenset({A, B, C}))
    rolled = dict(check_snapshot_list(listed, {A, B}, remembered, required=True).problems)
    assert rolled["snapshot list"] == "rolled back: generation 5 < 7 remembered by this agent"
    assert rolled[f"snapshot {C}"].startswith("removed: this agent remembers it")
    # a newer list is authoritative: what it no longer names was removed by a key holder
    newer = Manifest(8, frozenset({A}), frozenset(), "d8")
    assert check_snapshot_list(newer, {A}, remembered, required=True).problems == ()
    # no list at all: a problem when the repository had one or the agent remembers one
    assert check_snapshot_list(None, {A}, None, required=False).problems == ()
    assert check_snapshot_list(None, {A}, None, required=True).problems
    assert check_snapshot_list(None, {A}, remembered, required=False).problems


def test_same_generation_other_list_is_fine_while_every_remembered_snapshot_is_stored() -> None:
    # two agents committed to one destination at once: one list replaced the other
    remembered = Anchor("r", 4, "mine", frozenset({A, B}))
    theirs = Manifest(4, frozenset({A, C}), frozenset(), "theirs")
    assert check_snapshot_list(theirs, {A, B, C}, remembered, required=True).problems == ()
    gone = dict(check_snapshot_list(theirs, {A, C}, remembered, required=True).problems)
    assert list(gone) == [f"snapshot {B}"]


# Through the repository -------------------------------------------------------------------


def test_every_commit_writes_a_new_generation_naming_every_snapshot(repo: Repository) -> None:
    initial = repo.snapshot_list()
    assert initial is not None and initial.generation == 1 and not initial.snapshots
    first = _commit(repo, 1)
    second = _commit(repo, 2)
    listed = Repository.open(repo.storage, PASSWORD).snapshot_list()
    assert listed is not None
    assert listed.generation == 3
    assert listed.snapshots == {first, second}
    assert repo.recorded == listed
    result = repo.verify()
    assert result.ok and result.notes == ()


def test_a_removed_snapshot_is_found_by_verify(repo: Repository) -> None:
    first = _commit(repo, 1)
    _commit(repo, 2)
    repo.storage.delete(snapshot_name(first))
    reopened = Repository.open(repo.storage, PASSWORD)
    problems = _subjects(reopened)
    assert problems == {f"snapshot {first}": "removed: named by the snapshot list (generation 3)"}
    # the next commit lists what is stored now: the removal is reported once, by that backup
    third = _commit(reopened, 3)
    listed = reopened.snapshot_list()
    assert listed is not None and first not in listed.snapshots and third in listed.snapshots
    assert reopened.verify().ok


def test_a_deleted_or_damaged_list_is_a_problem(repo: Repository) -> None:
    _commit(repo, 1)
    sealed = repo.storage.get(MANIFEST_NAME)
    repo.storage.delete(MANIFEST_NAME)
    assert _subjects(repo) == {"snapshot list": "missing (the repository had one)"}
    repo.storage.put(MANIFEST_NAME, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    problems = _subjects(repo)
    assert "authentication failed" in problems["snapshot list"]
    _commit(repo, 2)  # replaced by the next commit, every stored snapshot named
    listed = repo.snapshot_list()
    assert listed is not None and len(listed.snapshots) == 2
    assert repo.verify().ok


def test_rollback_is_found_with_the_anchor_and_superseded_by_the_next_commit(
    repo: Repository, tmp_path: Path
) -> None:
    storage = repo.storage
    assert isinstance(storage, MemoryStorage)
    first = _commit(repo, 1)
    old_list, old_snapshot = storage.get(MANIFEST_NAME), storage.get(snapshot_name(first))
    second = _commit(repo, 2)
    anchor = _anchor(tmp_path, repo)
    assert anchor.generation == 3 and anchor.snapshots == {first, second}
    # whoever holds the storage puts the older state back, consistent with itself
    storage.delete(snapshot_name(second))
    storage.put(MANIFEST_NAME, old_list)
    storage.put(snapshot_name(first), old_snapshot)
    reopened = Repository.open(storage, PASSWORD)
    assert reopened.verify().ok  # consistent by itself: only what is remembered shows it
    problems = _subjects(reopened, load_anchor(tmp_path, reopened.config.repo_id))
    assert problems == {
        "snapshot list": "rolled back: generation 2 < 3 remembered by this agent",
        f"snapshot {second}": "removed: this agent remembers it (snapshot list generation 3)",
    }
    # the next commit (after a check with the anchor) writes a generation above the anchor's
    reopened.check_snapshot_list(anchor)
    _commit(reopened, 3)
    assert reopened.recorded is not None and reopened.recorded.generation == 4
    assert remember(tmp_path, reopened.config.repo_id, reopened.recorded)
    assert reopened.verify(anchor=load_anchor(tmp_path, reopened.config.repo_id)).ok


def test_a_crash_between_snapshot_and_list_is_no_alarm(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _commit(repo, 1)
    anchor = _anchor(tmp_path, repo)

    def crash(**_kw: object) -> None:
        raise KeyboardInterrupt  # the process dies after the snapshot's put

    monkeypatch.setattr(repo, "record_snapshots", crash)
    with pytest.raises(KeyboardInterrupt):
        _commit(repo, 2)
    monkeypatch.undo()
    reopened = Repository.open(repo.storage, PASSWORD)
    [unlisted] = set(reopened.snapshot_ids()) - anchor.snapshots
    result = reopened.verify(anchor=anchor)
    assert result.ok, result.errors
    assert (
        len(result.notes) == 1 and "1 snapshot is not in the snapshot list yet" in (result.notes[0])
    )
    check = reopened.check_snapshot_list(anchor)
    assert check.problems == () and check.unrecorded == (unlisted,)
    third = _commit(reopened, 3)
    listed = reopened.snapshot_list()
    assert listed is not None and listed.snapshots == anchor.snapshots | {unlisted, third}


def test_a_forged_unlisted_snapshot_is_not_adopted(repo: Repository) -> None:
    _commit(repo, 1)
    repo.storage.put(snapshot_name(B), b"\x01" + b"\x00" * 40)
    problems = _subjects(repo)
    assert set(problems) == {f"snapshot {B}"}  # damaged, not a list problem
    _commit(repo, 2)
    listed = repo.snapshot_list()
    assert listed is not None and B not in listed.snapshots and len(listed.snapshots) == 2


def test_removed_snapshots_are_recorded_and_never_listed_again(repo: Repository) -> None:
    first = _commit(repo, 1)
    _commit(repo, 2)
    sealed = repo.storage.get(snapshot_name(first))
    listed = repo.record_snapshots(removed=[first])  # as forget does: record, then delete
    repo.storage.delete(snapshot_name(first))
    assert first in listed.removed and first not in listed.snapshots
    assert repo.verify().ok
    repo.storage.put(snapshot_name(first), sealed)  # stored again: a leftover, noted
    result = repo.verify()
    assert result.ok and any("removed snapshot is still stored" in n for n in result.notes)
    assert repo.removed_leftovers() == [first]
    _commit(repo, 3)
    again = repo.snapshot_list()
    assert again is not None and first not in again.snapshots and first in again.removed


def test_a_repository_made_before_the_list_opens_and_gets_one(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    first = _commit(repo, 1)
    # make it look like an earlier opencbs made it: no list, no flag in the config
    storage.delete(MANIFEST_NAME)
    doc = json.loads(repo.keys.unseal(storage.get(CONFIG_NAME), _CONFIG_AAD))
    del doc["snapshot_list"]
    storage.put(CONFIG_NAME, repo.keys.seal(json.dumps(doc).encode(), _CONFIG_AAD))
    legacy = Repository.open(storage, PASSWORD)
    assert not legacy.config.snapshot_list
    result = legacy.verify()
    assert result.ok and len(result.notes) == 1
    second = _commit(legacy, 2)
    listed = legacy.snapshot_list()
    assert listed is not None and listed.snapshots == {first, second}
    upgraded = Repository.open(storage, PASSWORD)
    assert upgraded.config.snapshot_list  # from now on a deleted list is a problem
    storage.delete(MANIFEST_NAME)
    assert _subjects(upgraded) == {"snapshot list": "missing (the repository had one)"}


def test_anchor_file_rules(tmp_path: Path) -> None:
    repo_id = "0123abcd" * 4
    newer = Manifest(9, frozenset({A}), frozenset(), "d9")
    assert remember(tmp_path, repo_id, newer)
    path = anchor_path(tmp_path, repo_id)
    assert path is not None and path.parent.name == "snapshot-lists"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not remember(tmp_path, repo_id, Manifest(8, frozenset(), frozenset(), "d8"))
    assert load_anchor(tmp_path, repo_id) == Anchor(repo_id, 9, "d9", frozenset({A}))
    assert anchor_path(tmp_path, "../escape") is None
    path.write_text("{not json")
    assert load_anchor(tmp_path, repo_id) is None  # unreadable: ignored with a warning
    assert load_anchor(tmp_path, "f" * 32) is None


# Two writers of one list (issue 13) ---------------------------------------------------------


class _Interleaved:
    """A storage mixin whose next ``put_if`` first runs ``before_put_if`` (once): another
    writer commits between this writer's read of the list and its write."""

    before_put_if: Callable[[], object] | None = None

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        hook, self.before_put_if = self.before_put_if, None
        if hook is not None:
            hook()
        return super().put_if(name, data, version=version)  # type: ignore[misc]


class _InterleavedMemory(_Interleaved, MemoryStorage):
    pass


class _InterleavedLocal(_Interleaved, LocalStorage):
    pass


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_two_writers_committing_at_once_both_stay_listed(kind: str, tmp_path: Path) -> None:
    storage = _InterleavedMemory() if kind == "memory" else _InterleavedLocal(tmp_path / "d")
    first = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    second = Repository.open(storage, PASSWORD)
    ids = {_commit(first, 1)}
    late: list[str] = []
    # second reads the list, then first commits before second writes: second's read is stale.
    storage.before_put_if = lambda: late.append(_commit(first, 2))
    ids.add(_commit(second, 3))
    ids.update(late)
    assert len(ids) == 3
    listed = second.snapshot_list()
    assert listed is not None and listed.snapshots == ids
    assert listed.generation == 4  # 1 at init, then one per commit
    assert first.check_snapshot_list().problems == ()
    assert storage.before_put_if is None  # the race did happen


def test_a_writer_losing_every_race_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _InterleavedMemory()
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    sleeps: list[float] = []
    monkeypatch.setattr("opencbs.engine.repository.time.sleep", sleeps.append)

    def spoil() -> None:  # another writer replaces the list before every write
        storage.put(MANIFEST_NAME, storage.get(MANIFEST_NAME)[::-1])
        storage.before_put_if = spoil

    storage.before_put_if = spoil
    with pytest.raises(PreconditionFailed):
        repo.record_snapshots()
    assert len(sleeps) == LIST_WRITE_ATTEMPTS - 1
    assert all(0.05 <= s <= 0.5 for s in sleeps)


class _BlindStorage(MemoryStorage):
    """Memory storage whose ``exists`` never sees an object: a second agent that checked the
    place before the first one's key file was stored."""

    def exists(self, name: str) -> bool:
        return False

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(()) if not self.seeing else super().list(prefix)

    seeing = False


def test_two_agents_creating_one_repository_keep_the_first_key_file() -> None:
    from opencbs.engine.repo_errors import RepositoryExists
    from opencbs.engine.repository import KEYFILE_NAME

    storage = _BlindStorage()
    first = Repository.init(storage, "pw", kdf=FAST_KDF)
    key_file = storage.get(KEYFILE_NAME)
    with pytest.raises(RepositoryExists):
        Repository.init(storage, "pw", kdf=FAST_KDF)
    assert storage.get(KEYFILE_NAME) == key_file
    storage.seeing = True
    assert Repository.open(storage, "pw").config.repo_id == first.config.repo_id
