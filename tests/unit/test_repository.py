"""The repository format: write, commit, reopen, read back, dedupe, tamper, interruption."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencbs.destinations import LocalStorage, MemoryStorage
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.repository import (
    ChunkNotFound,
    CorruptData,
    FileResult,
    Repository,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotMeta,
    SnapshotNotFound,
    VerifyProblem,
    WrongPassword,
)
from opencbs.reports.vocabulary import EntryType

PASSWORD = "s3cret pass"
FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
SMALL_CHUNKS = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
PACK_SIZE = 64 * 1024


def make_repo(storage: MemoryStorage | LocalStorage | None = None) -> Repository:
    return Repository.init(
        storage if storage is not None else MemoryStorage(),
        PASSWORD,
        chunker=SMALL_CHUNKS,
        pack_target_size=PACK_SIZE,
        kdf=FAST_KDF,
    )


@pytest.fixture
def repo() -> Repository:
    return make_repo()


def rand(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def text(size: int) -> bytes:
    words = b"backup snapshot chunk pack index restore verify repository "
    return (words * (size // len(words) + 1))[:size]


def file_entry(path: bytes, result: FileResult, **kw: object) -> Entry:
    fields: dict[str, object] = dict(
        path=path,
        etype=EntryType.FILE,
        size=result.original_size,
        mtime_ns=1_700_000_000_123_456_789,
        ctime_ns=1_700_000_000_000_000_001,
        mode=0o100644,
        uid=1000,
        gid=1000,
        inode=42,
        device=2049,
        content_id=result.content_id,
    )
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def meta(**kw: object) -> SnapshotMeta:
    fields: dict[str, object] = dict(
        time_ns=1_700_000_000_000_000_000,
        set_id="1700000000000",
        destination_id="1700000000001",
        job_id="2026-01-02-03-04-05",
        hostname="host1",
        sources=(b"/home/user", b"/srv/\xff\xferaw"),
        parent_id=None,
    )
    fields.update(kw)
    return SnapshotMeta(**fields)  # type: ignore[arg-type]


def read_back(repo: Repository, chunk_ids: tuple[bytes, ...]) -> bytes:
    return b"".join(repo.read_chunk(c) for c in chunk_ids)


def test_write_commit_reopen_read_back(repo: Repository) -> None:
    contents = {
        b"/home/user/random.bin": rand(150_000, 1),
        b"/home/user/notes.txt": text(80_000),
        b"/home/user/empty": b"",
        b"/home/user/caf\xe9-latin1.txt": b"tiny",
    }
    items: list[tuple[Entry, tuple[bytes, ...]]] = []
    with repo.writer() as w:
        for path, data in contents.items():
            result = w.add_file(io.BytesIO(data))
            assert result.original_size == len(data)
            assert result.content_id == repo.content_id(data)
            items.append((file_entry(path, result), result.chunk_ids))
    directory = Entry(b"/home/user", EntryType.DIRECTORY, 0, -5, 7, 0o40755, 0, 0, 2, 2049)
    link = Entry(
        b"/home/user/link", EntryType.LINK, 6, 1, 2, 0o120777, 0, 0, 3, 2049,
        link_target=b"target", link_to_dir=True,
    )  # fmt: skip
    items += [(directory, ()), (link, ())]
    snapshot_id = repo.commit_snapshot(meta(), items)

    reopened = Repository.open(repo.storage, PASSWORD)
    [info] = reopened.list_snapshots()
    assert info.id == snapshot_id
    assert info.meta == meta()
    assert info.entry_count == len(items)
    loaded_info, loaded = reopened.load_snapshot(snapshot_id)
    assert loaded_info == info
    loaded_items = list(loaded)
    assert loaded_items == items
    for entry, chunk_ids in loaded_items:
        if entry.etype is EntryType.FILE:
            assert read_back(reopened, chunk_ids) == contents[entry.path]
    assert reopened.verify(read_data=True).ok


def test_add_file_from_a_path(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    data = rand(50_000, 3)
    source.write_bytes(data)
    with repo.writer() as w:
        result = w.add_file(source)
    assert read_back(repo, result.chunk_ids) == data
    with pytest.raises(FileNotFoundError):  # source errors are the caller's to report
        repo.writer().add_file(tmp_path / "missing")


def test_dedupe_same_file_twice(repo: Repository) -> None:
    data = rand(120_000, 2)
    with repo.writer() as w:
        first = w.add_file(io.BytesIO(data))
    objects = sorted(repo.storage.list())
    with repo.writer() as w:
        second = w.add_file(io.BytesIO(data))
    assert second.chunk_ids == first.chunk_ids
    assert first.dedup_saved_bytes == 0 and first.new_stored_bytes == first.stored_size
    assert second.new_stored_bytes == 0
    assert second.dedup_saved_bytes == len(data)
    assert second.stored_size == first.stored_size
    assert sorted(repo.storage.list()) == objects  # nothing new stored


def test_dedupe_within_one_open_pack(repo: Repository) -> None:
    with repo.writer() as w:
        a = w.add_file(io.BytesIO(b"same small content"))
        b = w.add_file(io.BytesIO(b"same small content"))
    assert a.chunk_ids == b.chunk_ids
    assert b.dedup_saved_bytes == 18 and b.new_stored_bytes == 0


def test_incompressible_stored_raw_compressible_smaller(repo: Repository) -> None:
    with repo.writer() as w:
        noise = w.add_file(io.BytesIO(rand(40_000, 4)))
        words = w.add_file(io.BytesIO(text(40_000)))
    assert noise.stored_size == noise.original_size  # raw: no bigger than the data
    assert words.stored_size < words.original_size // 5
    for chunk_id in noise.chunk_ids:
        loc = repo.chunk_location(chunk_id)
        assert loc is not None and loc.stored_size == loc.original_size
    assert read_back(repo, noise.chunk_ids) == rand(40_000, 4)
    assert read_back(repo, words.chunk_ids) == text(40_000)


def test_packs_and_indexes_layout(repo: Repository) -> None:
    with repo.writer() as w:
        w.add_file(io.BytesIO(rand(300_000, 5)))
    names = list(repo.storage.list())
    packs = [n for n in names if n.startswith("data/")]
    indexes = [n for n in names if n.startswith("index/")]
    assert len(packs) >= 4  # 300 KB of noise in 64 KiB packs
    assert len(indexes) == len(packs)
    for name in packs:
        _, two, pack_id = name.split("/")
        assert two == pack_id[:2] and len(pack_id) == 64
        assert len(repo.storage.get(name)) <= PACK_SIZE + 16384 + 1024
    assert {"keys/default", "config"} <= set(names)


def test_flipped_byte_in_a_pack_is_detected(repo: Repository) -> None:
    storage = repo.storage
    assert isinstance(storage, MemoryStorage)
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(text(30_000)))
    repo.commit_snapshot(meta(), [(file_entry(b"/f", result), result.chunk_ids)])
    victim = result.chunk_ids[0]
    loc = repo.chunk_location(victim)
    assert loc is not None
    storage.tamper(f"data/{loc.pack_id[:2]}/{loc.pack_id}", loc.offset + loc.length // 2)

    with pytest.raises(CorruptData):
        repo.read_chunk(victim)
    assert repo.verify(read_data=False).ok  # structure is intact
    result_data = repo.verify(read_data=True)
    assert not result_data.ok
    subjects = " ".join(p.subject + " " + p.message for p in result_data.errors)
    assert [c.chunk_id for p in result_data.errors for c in p.chunks] == [victim.hex()]
    assert "do not match the pack ID" in subjects


def test_wrong_password(repo: Repository) -> None:
    with pytest.raises(WrongPassword):
        Repository.open(repo.storage, "not the password")


def test_init_and_open_guards(repo: Repository) -> None:
    with pytest.raises(RepositoryExists):
        Repository.init(repo.storage, PASSWORD, kdf=FAST_KDF)
    with pytest.raises(RepositoryNotFound):
        Repository.open(MemoryStorage(), PASSWORD)


def test_interrupted_writer_then_new_writer_reuses_chunks(repo: Repository) -> None:
    # long enough that packs are finished while adding (up to MAX_INFLIGHT batches of small
    # chunks and the open pack are still in memory)
    data = rand(2_000_000, 6)
    w = repo.writer()
    w.add_file(io.BytesIO(data))
    del w  # the job dies: the open pack is lost, no snapshot is committed
    stored_packs = [n for n in repo.storage.list("data/")]
    assert stored_packs and not list(repo.storage.list("snapshots/"))

    again = Repository.open(repo.storage, PASSWORD)
    assert again.verify(read_data=True).ok
    with again.writer() as w2:
        result = w2.add_file(io.BytesIO(data))
    assert result.dedup_saved_bytes > len(data) // 2
    assert result.dedup_saved_bytes + result.new_stored_bytes == len(data)  # noise is raw
    snapshot_id = again.commit_snapshot(meta(), [(file_entry(b"/f", result), result.chunk_ids)])
    _, items = Repository.open(repo.storage, PASSWORD).load_snapshot(snapshot_id)
    [(_, chunk_ids)] = list(items)
    assert read_back(again, chunk_ids) == data


def test_pack_without_index_is_recovered(repo: Repository) -> None:
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(rand(20_000, 7)))
    [index_name] = list(repo.storage.list("index/"))
    repo.storage.delete(index_name)  # crash between the pack and its index
    reopened = Repository.open(repo.storage, PASSWORD)
    assert not reopened.has_chunk(result.chunk_ids[0])
    assert len(reopened.recover_indexes()) == 1
    assert read_back(reopened, result.chunk_ids) == rand(20_000, 7)
    assert Repository.open(repo.storage, PASSWORD).has_chunk(result.chunk_ids[0])


def test_commit_refuses_missing_chunks(repo: Repository) -> None:
    entry = Entry(b"/x", EntryType.FILE, 1, 0, 0, 0o100644, 0, 0, 1, 1)
    with pytest.raises(ChunkNotFound):
        repo.commit_snapshot(meta(), [(entry, (b"\x01" * 32,))])
    assert repo.list_snapshots() == []


def test_commit_flushes_open_writers(repo: Repository) -> None:
    w = repo.writer()
    result = w.add_file(io.BytesIO(b"still in the open pack"))
    assert not repo.has_chunk(result.chunk_ids[0])
    repo.commit_snapshot(meta(), [(file_entry(b"/f", result), result.chunk_ids)])
    assert repo.has_chunk(result.chunk_ids[0])


def many_entries(count: int) -> Iterator[tuple[Entry, tuple[bytes, ...]]]:
    for i in range(count):
        path = b"/data/dir%04d/file-%06d.txt" % (i // 100, i)
        yield Entry(path, EntryType.FILE, i, i * 1000, i * 1000, 0o100644, 0, 0, i, 1), ()


def test_large_tree_spans_chunks_and_dedupes(repo: Repository) -> None:
    first = repo.commit_snapshot(meta(), many_entries(5000))
    info, items = repo.load_snapshot(first)
    assert len(info.tree) > 5
    assert list(items) == list(many_entries(5000))
    packs_before = set(repo.storage.list("data/"))
    second = repo.commit_snapshot(meta(time_ns=2, parent_id=first), many_entries(5000))
    assert set(repo.storage.list("data/")) == packs_before  # identical tree: nothing new
    assert [s.id for s in repo.list_snapshots()] == [second, first]  # ordered by time
    assert repo.snapshot_info(second).meta.parent_id == first


def test_unknown_snapshot(repo: Repository) -> None:
    with pytest.raises(SnapshotNotFound):
        repo.load_snapshot("0" * 64)
    with pytest.raises(SnapshotNotFound):
        repo.load_snapshot("../config")


def test_nothing_readable_without_the_password(repo: Repository) -> None:
    secret_name = b"very-secret-file-name.txt"
    secret_text = b"the quarterly numbers are confidential " * 50
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(secret_text))
    repo.commit_snapshot(
        meta(hostname="secret-host"), [(file_entry(b"/" + secret_name, result), result.chunk_ids)]
    )
    storage = repo.storage
    for name in storage.list():
        blob = storage.get(name)
        for needle in (secret_name, b"quarterly", b"secret-host", b"1700000000000"):
            assert needle not in blob, (name, needle)
        assert result.chunk_ids[0] not in blob and result.chunk_ids[0].hex().encode() not in blob


def test_missing_pack_is_reported_by_verify(repo: Repository) -> None:
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(rand(10_000, 8)))
    repo.commit_snapshot(meta(), [(file_entry(b"/f", result), result.chunk_ids)])
    loc = repo.chunk_location(result.chunk_ids[0])
    assert loc is not None
    repo.storage.delete(f"data/{loc.pack_id[:2]}/{loc.pack_id}")
    outcome = repo.verify()
    assert any("missing" in p.message for p in outcome.errors)
    with pytest.raises(CorruptData):
        repo.read_chunk(result.chunk_ids[0])


def test_a_missing_pack_is_stored_again_by_the_next_backup(repo: Repository) -> None:
    data = rand(10_000, 9)
    with repo.writer() as w:
        first = w.add_file(io.BytesIO(data))
    repo.commit_snapshot(meta(), [(file_entry(b"/f", first), first.chunk_ids)])
    loc = repo.chunk_location(first.chunk_ids[0])
    assert loc is not None
    repo.storage.delete(f"data/{loc.pack_id[:2]}/{loc.pack_id}")
    reopened = Repository.open(repo.storage, PASSWORD)
    missing, recovered = reopened.reconcile_packs()
    assert missing == [loc.pack_id] and recovered == []
    assert not reopened.has_chunk(first.chunk_ids[0])
    with reopened.writer() as w:
        again = w.add_file(io.BytesIO(data))
    assert again.dedup_saved_bytes == 0  # stored anew, not deduplicated against the lost pack
    reopened.commit_snapshot(meta(), [(file_entry(b"/f", again), again.chunk_ids)])
    assert b"".join(reopened.read_chunk(c) for c in again.chunk_ids) == data


def test_an_index_opened_before_a_sweep_is_read_again_once_locked(repo: Repository) -> None:
    """A backup opens its repository, then waits for its lock while a prune sweeps (rewrites
    the index objects without a pack, deletes the pack): once it holds the lock it reads the
    index again, so it never takes the deleted pack for lost data (issue 14's concurrent
    backup and prune)."""
    with repo.writer() as w:
        kept = w.add_file(io.BytesIO(rand(10_000, 1)))
    with repo.writer() as w:
        dropped = w.add_file(io.BytesIO(rand(10_000, 2)))
    repo.commit_snapshot(meta(), [(file_entry(b"/k", kept), kept.chunk_ids)])
    loc = repo.chunk_location(dropped.chunk_ids[0])
    assert loc is not None
    backup = Repository.open(repo.storage, PASSWORD)  # opened before the sweep
    pruner = Repository.open(repo.storage, PASSWORD)
    pruner._index.forget_packs([loc.pack_id])
    assert pruner.compact_indexes() >= 2  # the old index objects are gone
    repo.storage.delete(f"data/{loc.pack_id[:2]}/{loc.pack_id}")
    assert backup.refresh_index() is True
    assert backup.reconcile_packs() == ([], [])
    assert not backup.has_chunk(dropped.chunk_ids[0]) and backup.has_chunk(kept.chunk_ids[0])
    # nothing changed since: only new index objects would be read
    assert backup.refresh_index() is False


def test_chunk_not_in_index(repo: Repository) -> None:
    with pytest.raises(ChunkNotFound):
        repo.read_chunk(b"\x00" * 32)


def test_compact_indexes_keeps_everything(repo: Repository) -> None:
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(rand(200_000, 9)))
    reopened = Repository.open(repo.storage, PASSWORD)
    merged = reopened.compact_indexes()
    assert merged >= 3
    assert len(list(repo.storage.list("index/"))) == 1
    again = Repository.open(repo.storage, PASSWORD)
    assert read_back(again, result.chunk_ids) == rand(200_000, 9)
    assert again.verify(read_data=True).ok


def test_change_password(repo: Repository) -> None:
    repo.change_password("new password", FAST_KDF)
    with pytest.raises(WrongPassword):
        Repository.open(repo.storage, PASSWORD)
    assert Repository.open(repo.storage, "new password").config == repo.config


def test_on_a_local_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "dest", fsync=False)
    repo = make_repo(storage)
    data = rand(100_000, 10)
    with repo.writer() as w:
        result = w.add_file(io.BytesIO(data))
    snapshot_id = repo.commit_snapshot(meta(), [(file_entry(b"/f", result), result.chunk_ids)])
    reopened = Repository.open(LocalStorage(tmp_path / "dest"), PASSWORD)
    _, items = reopened.load_snapshot(snapshot_id)
    [(entry, chunk_ids)] = list(items)
    assert read_back(reopened, chunk_ids) == data
    assert reopened.config.chunker == SMALL_CHUNKS
    assert reopened.verify(read_data=True).ok


def test_tampered_snapshot_is_detected(repo: Repository) -> None:
    snapshot_id = repo.commit_snapshot(meta(), many_entries(3))
    storage = repo.storage
    assert isinstance(storage, MemoryStorage)
    storage.tamper(f"snapshots/{snapshot_id}", 20)
    with pytest.raises(CorruptData):
        repo.load_snapshot(snapshot_id)
    outcome = repo.verify()
    assert [p.subject for p in outcome.errors] == [f"snapshot {snapshot_id}"]
    # A snapshot object moved under another name does not open either (bound to its ID).
    other = "f" * 64
    storage.put(f"snapshots/{other}", storage.get(f"snapshots/{snapshot_id}"))
    with pytest.raises(CorruptData):
        repo.snapshot_info(other)


def test_list_snapshots_skips_and_reports_a_damaged_snapshot(repo: Repository) -> None:
    first = repo.commit_snapshot(meta(time_ns=1), [])
    second = repo.commit_snapshot(meta(time_ns=2), [])
    storage = repo.storage
    assert isinstance(storage, MemoryStorage)
    storage.tamper(f"snapshots/{first}", 20)
    damaged: list[VerifyProblem] = []
    assert [s.id for s in repo.list_snapshots(damaged=damaged)] == [second]
    assert [p.subject for p in damaged] == [f"snapshot {first}"]
    assert [s.id for s in repo.list_snapshots()] == [second]  # without a list: skipped only
    assert [p.subject for p in repo.verify().errors] == [f"snapshot {first}"]


class _KilledAfter(MemoryStorage):
    """A destination whose process dies (``SystemExit``) after ``puts`` objects are stored."""

    def __init__(self, puts: int) -> None:
        super().__init__()
        self.left = puts

    def put(self, name: str, data: bytes | memoryview) -> None:
        if self.left == 0:
            raise SystemExit("killed")
        self.left -= 1
        super().put(name, data)

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        if self.left == 0:
            raise SystemExit("killed")
        self.left -= 1
        return super().put_if(name, data, version=version)


@pytest.mark.parametrize("puts", [1, 2])
def test_a_creation_killed_halfway_is_completed_by_the_next_open(puts: int) -> None:
    """init stores the key file first and the config last: a creation killed between them
    leaves only objects the password proves ours, and the next job's open finishes it (a
    folder of loose objects would be refused as someone else's)."""
    storage = _KilledAfter(puts)
    with pytest.raises(SystemExit):
        Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    assert "config" not in set(storage.list())
    storage.left = -1  # the next job's puts all succeed
    with pytest.raises(WrongPassword):
        Repository.open(storage, "another password")
    repo = Repository.open(storage, PASSWORD)
    assert "config" in set(storage.list())
    assert Repository.open(storage, PASSWORD).config.repo_id == repo.config.repo_id
    assert repo.verify().ok


def test_a_missing_config_beside_data_stays_an_error() -> None:
    """Only a creation's own first objects are completed: a repository with data whose config
    was removed is damaged, not new."""
    storage = MemoryStorage()
    make_repo(storage)
    storage.put("index/0", b"x")  # any object of a used repository
    storage.delete("config")
    with pytest.raises(CorruptData):
        Repository.open(storage, PASSWORD)
