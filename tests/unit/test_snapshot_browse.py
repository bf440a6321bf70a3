"""Browsing a snapshot without restoring it, over a real repository (in memory): the entries at
and under a path (``engine.snapshot_browse.entries_under``), glob matches, the on-disk tree
index of ``opencbs mount`` (``engine.tree_index``, with the folders above the sources) and the
mount's view (``agent.mount.MountView``: listings, links, reads at any offset across chunks,
damage as ``EIO``), without FUSE."""

from __future__ import annotations

import errno
import io
import os
import random
import stat
from datetime import UTC
from pathlib import Path

import pytest

from opencbs.agent.mount import MountView, _errno_of, _Operations, snapshot_folder_names
from opencbs.destinations.base import DestinationError, ObjectNotFound
from opencbs.destinations.memory import MemoryStorage
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.packs import DATA_PREFIX
from opencbs.engine.prune import forget_snapshots
from opencbs.engine.repo_errors import CorruptData, SnapshotNotFound
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.engine.snapshot_browse import PathMatcher, entries_under
from opencbs.engine.tree_index import SYNTHETIC_MODE, TreeIndex
from opencbs.reports.vocabulary import EntryType
from tests.unit.test_cli_imports import _SERVER_LIBS, _loaded

FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
CHUNKER = ChunkerParams(min_size=1024, avg_size=2048, max_size=4096)
T0 = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC, in ns
SOURCE = b"/home/ann"
TREE: dict[bytes, bytes | None] = {  # path -> content (None: a folder)
    b"/home/ann": None,
    b"/home/ann/a.txt": b"alpha\n",
    b"/home/ann/big.bin": random.Random(7).randbytes(50_000),
    b"/home/ann/docs": None,
    b"/home/ann/docs/r-1.pdf": b"report one",
    b"/home/ann/docs/sub": None,
    b"/home/ann/docs/sub/R-2.PDF": b"report two",
    b"/home/ann/docs-old": None,
    b"/home/ann/z\xff.txt": b"not utf-8 name",
}
LINK = (b"/home/ann/link", b"a.txt")  # after a.txt in walk order, before docs


def _walk_order(paths: list[bytes]) -> list[bytes]:
    return sorted(paths, key=lambda p: p.replace(b"/", b"\x00"))


def _snapshot(repo: Repository, *, seconds: int = 0) -> str:
    items = []
    files = {p: c for p, c in TREE.items() if c is not None}
    with repo.writer() as w:
        stored = {p: w.add_file(io.BytesIO(c)) for p, c in files.items()}
    for n, path in enumerate(_walk_order([*TREE, LINK[0]])):
        mtime = T0 + n * 1_000_000_000
        if path == LINK[0]:
            e = Entry(
                path, EntryType.LINK, 5, mtime, mtime, stat.S_IFLNK | 0o777, 1, 1, n, 1, LINK[1]
            )
            items.append((e, ()))
        elif TREE[path] is None:
            e = Entry(path, EntryType.DIRECTORY, 0, mtime, mtime, stat.S_IFDIR | 0o750, 1, 2, n, 1)
            items.append((e, ()))
        else:
            r = stored[path]
            data = TREE[path]
            assert data is not None
            e = Entry(
                path, EntryType.FILE, len(data), mtime, mtime, stat.S_IFREG | 0o640, 1, 2, n, 1,
                content_id=r.content_id,
            )  # fmt: skip
            items.append((e, r.chunk_ids))
    meta = SnapshotMeta(T0 + seconds * 1_000_000_000, "1", "2", f"job-{seconds}", "h", (SOURCE,))
    return repo.commit_snapshot(meta, items)


@pytest.fixture()
def repo() -> Repository:
    return Repository.init(MemoryStorage(), "pw", kdf=FAST_KDF, chunker=CHUNKER)


def _paths(repo: Repository, sid: str, top: bytes, *, recursive: bool) -> list[bytes]:
    info, items = repo.load_snapshot(sid)
    found = entries_under(items, top, recursive=recursive, roots=info.meta.sources)
    return [e.path for e, _ in found]


def test_entries_under_a_path(repo: Repository) -> None:
    sid = _snapshot(repo)
    everything = _walk_order([*TREE, LINK[0]])
    assert _paths(repo, sid, b"/", recursive=True) == everything
    assert _paths(repo, sid, b"/home/ann/docs", recursive=False) == [
        b"/home/ann/docs",
        b"/home/ann/docs/r-1.pdf",
        b"/home/ann/docs/sub",
    ]  # not docs-old (a sibling whose name starts alike), not deeper
    assert _paths(repo, sid, b"/home/ann/docs", recursive=True)[-1] == b"/home/ann/docs/sub/R-2.PDF"
    # above the source: the source itself, though it is not a direct child
    assert _paths(repo, sid, b"/home", recursive=False) == [SOURCE]
    assert _paths(repo, sid, b"/", recursive=False) == [SOURCE]
    assert _paths(repo, sid, b"/home/ann/a.txt", recursive=False) == [b"/home/ann/a.txt"]
    assert _paths(repo, sid, b"/home/bob", recursive=True) == []


def test_entries_under_stops_after_the_subtree() -> None:
    def items() -> object:
        for path in (b"/a", b"/a/x", b"/b"):
            yield Entry(path, EntryType.DIRECTORY, 0, 0, 0, 0o40755, 0, 0, 0, 0), ()
        raise AssertionError("read past the subtree")

    got = entries_under(items(), b"/a", recursive=True)  # type: ignore[arg-type]
    assert [e.path for e, _ in got] == [b"/a", b"/a/x"]


def test_path_matcher(repo: Repository) -> None:
    sid = _snapshot(repo)

    def matched(pattern: str, *, ignore_case: bool = False) -> list[bytes]:
        _, items = repo.load_snapshot(sid)
        return [e.path for e, _ in PathMatcher(pattern, ignore_case).matches(items)]

    assert matched("*.pdf") == [b"/home/ann/docs/r-1.pdf"]
    assert matched("*.pdf", ignore_case=True) == [
        b"/home/ann/docs/r-1.pdf",
        b"/home/ann/docs/sub/R-2.PDF",
    ]
    assert matched("/home/ann/docs/*") == [
        b"/home/ann/docs/r-1.pdf",
        b"/home/ann/docs/sub",
        b"/home/ann/docs/sub/R-2.PDF",
    ]  # with a /, the whole path, * crossing /
    assert matched("z\\xff.txt") == [b"/home/ann/z\xff.txt"]  # as reports show the name
    assert matched("docs") == [b"/home/ann/docs"]


def test_tree_index_adds_the_folders_above_the_sources(repo: Repository, tmp_path: Path) -> None:
    sid = _snapshot(repo)
    _, items = repo.load_snapshot(sid)
    index = TreeIndex.build(items, tmp_path / "t.sqlite", time_ns=T0)
    try:
        for folder in (b"/", b"/home"):
            above = index.lookup(folder)
            assert above is not None and above.synthetic and above.mode == SYNTHETIC_MODE
        assert [n for n, _ in index.names(b"/")] == [b"home"]
        assert [n for n, _ in index.names(b"/home")] == [b"ann"]
        ann = index.lookup(SOURCE)
        assert ann is not None and not ann.synthetic and ann.mode == stat.S_IFDIR | 0o750
        assert [n for n, _ in index.names(SOURCE)] == sorted(
            [b"a.txt", b"big.bin", b"docs", b"docs-old", b"link", b"z\xff.txt"]
        )
        big = index.lookup(b"/home/ann/big.bin")
        assert big is not None and big.size == 50_000 and len(big.chunk_ids) > 5
        assert index.lookup(b"/home/ann/nothing") is None
    finally:
        index.close()


def test_mount_view(repo: Repository, tmp_path: Path) -> None:
    first, second = _snapshot(repo), _snapshot(repo, seconds=90)
    infos = repo.list_snapshots()
    names = snapshot_folder_names(infos, UTC)
    assert list(names) == [b"2023-11-14T22:13:20", b"2023-11-14T22:14:50"]
    view = MountView(repo, infos, UTC, tmp_path)
    try:
        assert list(view.list_folder(b"/")) == [b".", b"..", b"snapshots", b"ids"]
        assert list(view.list_folder(b"/snapshots"))[2:] == [*names, b"latest"]
        assert view.read_link(b"/snapshots/latest") == b"2023-11-14T22:14:50"
        assert view.read_link(b"/ids/" + first[:8].encode()) == b"../snapshots/2023-11-14T22:13:20"
        root = b"/snapshots/2023-11-14T22:14:50"
        assert list(view.list_folder(root + b"/home"))[2:] == [b"ann"]
        big = view.stat(root + b"/home/ann/big.bin")
        assert (big.mode, big.size, big.uid, big.gid) == (stat.S_IFREG | 0o640, 50_000, 1, 2)
        assert view.read_link(root + b"/home/ann/link") == b"a.txt"

        data = TREE[b"/home/ann/big.bin"]
        handle = view.open(root + b"/home/ann/big.bin")
        for offset, size in ((0, 4096), (3000, 9000), (49_000, 4096), (50_000, 10), (0, 60_000)):
            assert view.read(handle, size, offset) == data[offset : offset + size], (offset, size)
        view.release(handle)

        for missing in (b"/nothing", root + b"/home/bob", b"/ids/00000000"):
            with pytest.raises(OSError) as caught:
                view.stat(missing)
            assert caught.value.errno == errno.ENOENT
        with pytest.raises(OSError) as caught:
            view.open(root + b"/home/ann/docs")
        assert caught.value.errno == errno.EISDIR
        assert second in {i.id for i in infos}
    finally:
        view.close()


def test_mount_view_damage_is_eio(repo: Repository, tmp_path: Path) -> None:
    _snapshot(repo)
    for name in list(repo.storage.list(DATA_PREFIX)):
        repo.storage.delete(name)  # every pack gone: the tree cannot be read
    view = MountView(repo, repo.list_snapshots(), UTC, tmp_path)
    with pytest.raises(OSError) as caught:
        view.stat(b"/snapshots/2023-11-14T22:13:20/home")
    assert caught.value.errno == errno.EIO
    view.close()


@pytest.mark.parametrize("command", ["ls", "find", "diff", "mount"])
def test_browse_commands_load_neither_the_server_nor_libfuse(command: str) -> None:
    # mfusepy loads libfuse when imported: only a mount that runs may load it
    assert _loaded([command, "--help"], (*_SERVER_LIBS, "mfusepy")) == []


def test_mount_operations_answer_an_errno(
    repo: Repository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the FUSE operations never raise anything but an OSError with an errno (mfusepy answers
    # anything else EINVAL, with a traceback): a snapshot forgotten meanwhile is ENOENT, said
    # once, and leaves the view; damage is EIO, said once per file however often it is read
    first, second = _snapshot(repo), _snapshot(repo, seconds=90)
    view = MountView(repo, repo.list_snapshots(), UTC, tmp_path)
    ops = _Operations(view, lambda: None)
    try:
        forget_snapshots(repo, [first])
        older = "/snapshots/2023-11-14T22:13:20"
        for _ in range(2):
            with pytest.raises(OSError) as caught:
                ops.getattr(older + "/home")
            assert caught.value.errno == errno.ENOENT
        assert first[:8] not in ops.readdir("/ids", 0)
        assert ops.readdir("/snapshots", 0)[2:] == ["2023-11-14T22:14:50", "latest"]
        said = [r for r in caplog.records if first[:8] in r.getMessage()]
        assert len(said) == 1 and "forgotten" in said[0].getMessage()

        big = "/snapshots/2023-11-14T22:14:50/home/ann/big.bin"
        handle = ops.open(big, os.O_RDONLY)
        for name in list(repo.storage.list(DATA_PREFIX)):
            repo.storage.delete(name)
        for offset in (0, 0, 30_000):
            with pytest.raises(OSError) as caught:
                ops.read(big, 4096, offset, handle)
            assert caught.value.errno == errno.EIO
        assert len([r for r in caplog.records if "big.bin" in r.getMessage()]) == 1
        with pytest.raises(OSError) as caught:
            ops.read(big, 10, 0, 12345)
        assert caught.value.errno == errno.EBADF
        assert second
    finally:
        view.close()


def test_mount_errno_of_the_projects_errors() -> None:
    assert _errno_of(SnapshotNotFound("ab" * 32)) == errno.ENOENT
    assert _errno_of(ObjectNotFound("snapshots/x")) == errno.ENOENT
    assert _errno_of(CorruptData("config: damaged")) == errno.EIO
    assert _errno_of(DestinationError("Cannot read")) == errno.EIO
    assert _errno_of(OSError(errno.EACCES, "denied")) == errno.EACCES
    assert _errno_of(ValueError("a fault of the mount")) == errno.EIO
