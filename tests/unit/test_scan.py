"""The scan on real temporary trees: order, links, bytes names, filters, soft errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opencbs.engine.classify import path_sort_key
from opencbs.engine.entries import Entry
from opencbs.engine.scan import Scan, ScanFilter, ScanWarning, scan
from opencbs.reports.vocabulary import EntryType


def b(path: Path | str) -> bytes:
    return os.fsencode(path)


@pytest.fixture
def src(tmp_path: Path) -> bytes:
    """A small tree::

    src/ a-b.txt  a.txt  a/ (x.txt  deep/ (y.txt))  cache/ (junk.bin)  empty/
         link-dir -> a   link-file -> a.txt   broken -> nowhere   \\xff\\xfe.bin
    """
    root = tmp_path / "src"
    for d in ("a/deep", "cache", "empty"):
        (root / d).mkdir(parents=True)
    for name, data in {
        "a-b.txt": b"ab",
        "a.txt": b"hello",
        "a/x.txt": b"x",
        "a/deep/y.txt": b"yy",
        "cache/junk.bin": b"junk",
    }.items():
        (root / name).write_bytes(data)
    os.symlink("a", root / "link-dir")
    os.symlink("a.txt", root / "link-file")
    os.symlink("nowhere", root / "broken")
    with open(b(root) + b"/\xff\xfe.bin", "wb") as out:
        out.write(b"bytes name")
    return b(root)


def rel(entries: list[Entry], root: bytes) -> list[bytes]:
    return [e.path[len(root) :] or b"." for e in entries]


def entries_of(s: Scan) -> list[Entry]:
    return list(s.entries())


def test_walk_order_is_depth_first_sorted_by_name_bytes(src: bytes) -> None:
    s = scan([src])
    entries = entries_of(s)
    assert rel(entries, src) == [
        b".",
        b"/a",
        b"/a/deep",
        b"/a/deep/y.txt",
        b"/a/x.txt",
        b"/a-b.txt",
        b"/a.txt",
        b"/broken",
        b"/cache",
        b"/cache/junk.bin",
        b"/empty",
        b"/link-dir",
        b"/link-file",
        b"/\xff\xfe.bin",
    ]
    keys = [path_sort_key(e.path) for e in entries]
    assert keys == sorted(keys)  # the order classify merges on
    assert s.finished and s.warnings == () and s.incomplete_dirs == frozenset()
    assert s.completed_dirs == 5


def test_entries_carry_lstat_fields_and_no_content(src: bytes) -> None:
    entries = {e.path: e for e in entries_of(scan([src]))}
    root, a_txt = entries[src], entries[src + b"/a.txt"]
    assert root.etype is EntryType.DIRECTORY and root.size == 0
    st = os.lstat(src + b"/a.txt")
    assert a_txt == Entry(
        src + b"/a.txt",
        EntryType.FILE,
        5,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_ino,
        st.st_dev,
    )
    assert all(e.content_id is None for e in entries.values())


def test_symlinks_are_entries_and_never_followed(src: bytes) -> None:
    entries = {e.path: e for e in entries_of(scan([src]))}
    to_dir, to_file, broken = (entries[src + n] for n in (b"/link-dir", b"/link-file", b"/broken"))
    assert (to_dir.etype, to_dir.link_target, to_dir.link_to_dir, to_dir.size) == (
        EntryType.LINK,
        b"a",
        True,
        1,
    )
    assert (to_file.link_target, to_file.link_to_dir, to_file.size) == (b"a.txt", False, 5)
    assert (broken.link_target, broken.link_to_dir) == (b"nowhere", False)
    assert not any(p.startswith(src + b"/link-dir/") for p in entries)


def test_a_source_that_is_a_link_is_not_followed(src: bytes) -> None:
    (entry,) = entries_of(scan([src + b"/link-dir"]))
    assert entry.etype is EntryType.LINK and entry.link_target == b"a"


def test_non_utf8_names_survive(src: bytes) -> None:
    entries = {e.path: e for e in entries_of(scan([src]))}
    name = src + b"/\xff\xfe.bin"
    assert entries[name].size == len(b"bytes name")
    with open(name, "rb") as back:
        assert back.read() == b"bytes name"


def test_excludes_prune_directories_and_win_over_includes(src: bytes) -> None:
    filters = ScanFilter.of(include=["*"], exclude=["*/cache", b"*.txt"])
    paths = rel(entries_of(scan([src], filters)), src)
    assert b"/cache" not in paths and b"/cache/junk.bin" not in paths
    assert not [p for p in paths if p.endswith(b".txt")]
    assert b"/a/deep" in paths and b"/empty" in paths


def test_a_pattern_without_a_slash_matches_names_in_any_folder(src: bytes) -> None:
    """``cache`` names the folder wherever it is (as restic and rsync read it); a pattern
    with a ``/`` is matched against the full path, so ``a/cache`` matches nothing here."""
    paths = rel(entries_of(scan([src], ScanFilter.of(exclude=["cache"]))), src)
    assert b"/cache" not in paths and b"/cache/junk.bin" not in paths and b"/a.txt" in paths
    paths = rel(entries_of(scan([src], ScanFilter.of(exclude=["a/cache"]))), src)
    assert b"/cache/junk.bin" in paths
    deep = rel(entries_of(scan([src], ScanFilter.of(include=["deep"]))), src)
    assert b"/a/deep" in deep and b"/a.txt" not in deep


def test_excluded_directory_is_never_listed(src: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[bytes] = []
    real = os.scandir

    def spy(path: Any) -> Any:
        listed.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", spy)
    list(scan([src], ScanFilter.of(exclude=["*/cache"])))
    assert src + b"/cache" not in listed and src + b"/a/deep" in listed


def test_includes_keep_matches_their_subtrees_and_the_directories_leading_to_them(
    src: bytes,
) -> None:
    only_txt = rel(entries_of(scan([src], ScanFilter.of(include=["*.txt"]))), src)
    assert only_txt == [
        b".",
        b"/a",
        b"/a/deep",
        b"/a/deep/y.txt",
        b"/a/x.txt",
        b"/a-b.txt",
        b"/a.txt",
    ]
    subtree = rel(entries_of(scan([src], ScanFilter.of(include=["*/a/deep"]))), src)
    assert subtree == [b".", b"/a", b"/a/deep", b"/a/deep/y.txt"]


def test_an_unreadable_directory_is_a_warning_and_incomplete(
    src: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated with ``os.scandir`` (CI runs as root, where ``chmod 0`` does not block)."""
    locked = src + b"/a"
    real = os.scandir

    def scandir(path: Any) -> Any:
        if path == locked:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    s = scan([src])
    items = list(s)
    assert ScanWarning(locked, "cannot read directory: Permission denied") in items
    paths = [i.path for i in items if isinstance(i, Entry)]
    assert locked in paths  # the directory itself was stat-ed and is an entry
    assert not any(p.startswith(locked + b"/") for p in paths)
    assert src + b"/cache/junk.bin" in paths  # the walk went on
    assert s.incomplete_dirs == {locked}
    assert s.warnings == (ScanWarning(locked, "cannot read directory: Permission denied"),)
    assert s.completed_dirs == 3  # src, cache, empty


class _FailingStat:
    """A ``DirEntry`` whose ``stat`` fails with ``error`` (``FileNotFoundError``: as when a
    file vanishes during the scan)."""

    def __init__(self, inner: os.DirEntry[bytes], error: OSError) -> None:
        self.name = inner.name
        self.error = error

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        raise self.error


def _listing_with(
    real: Callable[[Any], Any], failing: bytes, error: OSError | None = None
) -> Callable[[Any], Any]:
    fails = error if error is not None else FileNotFoundError(2, "No such file or directory")

    class Listing:
        def __init__(self, path: Any) -> None:
            self.inner = real(path)

        def __enter__(self) -> Iterator[Any]:
            return (_FailingStat(e, fails) if e.name == failing else e for e in self.inner)

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

    return Listing


def test_a_file_vanishing_during_the_scan_is_a_warning_and_its_directory_stays_complete(
    src: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "scandir", _listing_with(os.scandir, b"x.txt"))
    s = scan([src])
    items = list(s)
    assert ScanWarning(src + b"/a/x.txt", "vanished during the scan") in items
    assert src + b"/a/x.txt" not in [i.path for i in items if isinstance(i, Entry)]
    assert s.incomplete_dirs == frozenset()
    assert s.warnings == (ScanWarning(src + b"/a/x.txt", "vanished during the scan"),)


def test_an_entry_that_cannot_be_stat_ed_makes_its_directory_incomplete(
    src: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = OSError(5, "Input/output error")
    monkeypatch.setattr(os, "scandir", _listing_with(os.scandir, b"x.txt", error))
    s = scan([src])
    items = list(s)
    assert ScanWarning(src + b"/a/x.txt", "cannot stat: Input/output error") in items
    assert src + b"/a/x.txt" not in [i.path for i in items if isinstance(i, Entry)]
    assert s.incomplete_dirs == {src + b"/a"}


def test_entries_gone_because_their_directory_was_renamed_away_make_it_incomplete(
    src: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory was listed, then renamed: its entries are not gone, they are elsewhere
    (or later, or already passed) — never reported deleted."""
    real = os.scandir
    directory = src + b"/a"

    def scandir(path: Any) -> Any:
        if path != directory:
            return real(path)
        with real(path) as listing:
            children = list(listing)
        os.rename(directory, src + b"/renamed")
        return _Fixed(children)

    monkeypatch.setattr(os, "scandir", scandir)
    s = scan([src])
    items = list(s)
    assert ScanWarning(directory + b"/x.txt", "cannot stat: No such file or directory") in items
    assert directory in s.incomplete_dirs


def test_a_link_vanishing_between_lstat_and_readlink_is_a_warning(
    src: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.readlink

    def readlink(path: Any) -> Any:
        if path == src + b"/link-file":
            os.unlink(path)
            raise FileNotFoundError(2, "No such file or directory")
        return real(path)

    monkeypatch.setattr(os, "readlink", readlink)
    s = scan([src])
    items = list(s)
    assert ScanWarning(src + b"/link-file", "vanished during the scan") in items
    assert src + b"/link-file" not in [i.path for i in items if isinstance(i, Entry)]
    assert s.incomplete_dirs == frozenset()


def test_a_link_that_cannot_be_read_makes_its_directory_incomplete(
    src: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.readlink

    def readlink(path: Any) -> Any:
        if path == src + b"/link-file":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "readlink", readlink)
    s = scan([src])
    items = list(s)
    assert ScanWarning(src + b"/link-file", "cannot read symbolic link: Permission denied") in items
    assert s.incomplete_dirs == {src}


class _Fixed:
    """What ``os.scandir`` returns, over a listing taken already."""

    def __init__(self, children: list[os.DirEntry[bytes]]) -> None:
        self.children = children

    def __enter__(self) -> Iterator[os.DirEntry[bytes]]:
        return iter(self.children)

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_missing_source_is_a_warning_and_incomplete(src: bytes, tmp_path: Path) -> None:
    missing = b(tmp_path / "gone")
    s = scan([missing, src])
    items = list(s)
    assert items[0] == ScanWarning(
        missing,
        "source not found or unreadable (No such file or directory); "
        "not reported deleted: its entries of an earlier backup, if any, stay in the snapshot",
    )
    assert s.incomplete_dirs == {missing}
    assert sum(isinstance(i, Entry) for i in items) == 14


def test_sources_are_absolute_sorted_and_not_nested(
    src: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = scan([os.fsdecode(src) + "/a/", "src", src + b"/cache", b"src/empty"])
    assert s.sources == (src,)
    other = tmp_path / "other"
    other.mkdir()
    assert scan([src, str(other)]).sources == (b(other), src)  # walk order
    assert entries_of(scan([src, str(other)]))[0].path == b(other)


def test_a_single_file_source(src: bytes) -> None:
    (entry,) = entries_of(scan([src + b"/a.txt"]))
    assert entry.etype is EntryType.FILE and entry.size == 5


def test_special_files_are_skipped_each_with_a_warning(src: bytes) -> None:
    os.mkfifo(src + b"/fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(src + b"/sock")
        s = scan([src])
        paths = [e.path for e in entries_of(s)]
    assert src + b"/fifo" not in paths and src + b"/sock" not in paths
    assert [(w.path, w.message) for w in s.warnings] == [
        (src + b"/fifo", "a FIFO (named pipe): not backed up"),
        (src + b"/sock", "a socket: not backed up"),
    ]
    assert s.incomplete_dirs == frozenset()  # the folder itself is whole
    excluded = scan([src], ScanFilter.of(exclude=["*/fifo", "*/sock"]))
    entries_of(excluded)
    assert excluded.warnings == ()  # what the filters leave out is not warned about


def test_a_scan_is_iterated_once(src: bytes) -> None:
    s = scan([src])
    assert not s.finished
    list(s)
    assert s.finished
    with pytest.raises(RuntimeError):
        list(s)


def test_a_filter_matches_full_paths_with_star_crossing_slashes() -> None:
    f = ScanFilter.of(include=["/home/*.txt"], exclude=[b"*/.cache"])
    assert f.includes(b"/home/u/deep/n.txt") and not f.includes(b"/etc/n.txt")
    assert f.excludes(b"/home/u/.cache") and not f.excludes(b"/home/u/.cache2")
    assert ScanFilter().includes(b"/anything") and not ScanFilter().excludes(b"/anything")
