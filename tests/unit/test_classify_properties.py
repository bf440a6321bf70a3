"""Properties of the classifier (style.md item 10) over random trees built as literals."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opencbs.engine.classify import Classification, Reason, classify, path_sort_key
from opencbs.engine.entries import Entry
from opencbs.reports.counters import Counters
from opencbs.reports.vocabulary import EntryType, ReportList

ROOT = b"/src"
NAMES = [b"a", b"b", b"a-b", b"a.b", b"c d", b"\xff\xfe"]
CONTENTS = [b"", b"x", b"yy", b"zzz", b"wwww"]  # few, so that equal contents occur
ACTIONS = ["keep", "delete", "modify", "chmod", "touch", "rename", "copy", "retype"]


def walk_order(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: path_sort_key(e.path))


def directory(path: bytes, inode: int) -> Entry:
    return Entry(path, EntryType.DIRECTORY, 0, 1, 1, 0o40755, 0, 0, inode, 1)


def file(path: bytes, inode: int, content: bytes, mtime: int) -> Entry:
    return Entry(
        path, EntryType.FILE, len(content), mtime, mtime, 0o100644, 0, 0, inode, 1,
        content_id=b"id:" + content,
    )  # fmt: skip


@st.composite
def trees(draw: st.DrawFn) -> list[Entry]:
    """A consistent tree under ``/src``: directories for every prefix, unique inodes."""
    rel = draw(st.sets(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)))
    dirs = {p[:i] for p in rel for i in range(1, len(p))}
    files = sorted(p for p in rel if p not in dirs)
    entries = [directory(ROOT, 1)]
    inode = 2
    for parts in sorted(dirs):
        entries.append(directory(b"/".join((ROOT, *parts)), inode))
        inode += 1
    for parts in files:
        content = draw(st.sampled_from(CONTENTS))
        mtime = draw(st.integers(1, 3))
        entries.append(file(b"/".join((ROOT, *parts)), inode, content, mtime))
        inode += 1
    return walk_order(entries)


def scanned(entries: list[Entry]) -> list[Entry]:
    """The entries as a scan gives them: no content ids (none needs reading)."""
    return [replace(e, content_id=None) for e in entries]


def dirs_of(tree: list[Entry]) -> list[bytes]:
    return [e.path for e in tree if e.etype is EntryType.DIRECTORY]


def files_of(tree: list[Entry]) -> list[Entry]:
    return [e for e in tree if e.etype is EntryType.FILE]


def under(path: bytes, directory: bytes) -> bool:
    return path.startswith(directory + b"/")


# -- a tree against itself -----------------------------------------------------------------------


@given(trees())
def test_a_tree_classified_against_itself_has_no_changes(tree: list[Entry]) -> None:
    for current in (tree, scanned(tree)):
        result = classify(tree, current)
        assert result.changes == ()
        assert result.carried == ()
        assert result.unchanged == len(tree)


# -- renames are exactly moves -------------------------------------------------------------------


@given(st.data())
def test_random_renames_are_exactly_those_moves(data: st.DataObject) -> None:
    tree = data.draw(trees())
    files = files_of(tree)
    moved = data.draw(st.lists(st.sampled_from(files), unique=True)) if files else []
    dirs = dirs_of(tree)
    renames: dict[bytes, bytes] = {}
    current = [e for e in tree if e not in moved]
    for n, entry in enumerate(moved):
        target = data.draw(st.sampled_from(dirs)) + b"/moved-%d" % n
        renames[target] = entry.path
        current.append(replace(entry, path=target, ctime_ns=entry.ctime_ns + 10))
    current = [
        replace(e, mtime_ns=99) if e.etype is EntryType.DIRECTORY else e for e in current
    ]  # directories whose names changed get a new mtime: not reported

    result = classify(tree, walk_order(current))

    assert {c.kind for c in result.changes} <= {ReportList.MOV}
    assert {c.entry.path: c.from_path for c in result.changes} == renames
    assert all(c.reason is Reason.SAME_INODE_NEW_PATH for c in result.changes)
    assert result.unchanged == len(tree) - len(moved)


@given(st.data())
def test_random_moves_across_file_systems_are_exactly_those_moves_by_content(
    data: st.DataObject,
) -> None:
    """A move to another file system gives the file a new device and inode: with distinct,
    non-empty contents the content hash alone finds each move, and nothing else is reported."""
    tree = [
        replace(e, size=len(b"unique %d" % i), content_id=b"id:unique %d" % i)
        if e.etype is EntryType.FILE
        else e
        for i, e in enumerate(data.draw(trees()))
    ]
    files = files_of(tree)
    moved = data.draw(st.lists(st.sampled_from(files), unique=True)) if files else []
    dirs = dirs_of(tree)
    renames: dict[bytes, bytes] = {}
    current = [e for e in tree if e not in moved]
    for n, entry in enumerate(moved):
        target = data.draw(st.sampled_from(dirs)) + b"/moved-%d" % n
        renames[target] = entry.path
        current.append(replace(entry, path=target, device=2, inode=entry.inode, ctime_ns=50))

    result = classify(tree, walk_order(current))

    assert {c.entry.path: c.from_path for c in result.changes} == renames
    assert {(c.kind, c.reason) for c in result.changes} <= {
        (ReportList.MOV, Reason.SAME_CONTENT_NEW_PATH)
    }
    assert result.unchanged == len(tree) - len(moved)


# -- random mutations: invariants ----------------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn) -> tuple[list[Entry], list[Entry], set[bytes], dict[bytes, str]]:
    """A previous tree, a current tree after random per-file actions and new files, the
    incomplete directories, and the action done to each previous file."""
    tree = draw(trees())
    dirs = dirs_of(tree)
    current: list[Entry] = [e for e in tree if e.etype is EntryType.DIRECTORY]
    actions: dict[bytes, str] = {}
    inode = 10_000
    for n, entry in enumerate(files_of(tree)):
        action = draw(st.sampled_from(ACTIONS))
        actions[entry.path] = action
        inode += 1
        current += _apply(draw, action, entry, n, inode, dirs)
    for n in range(draw(st.integers(0, 3))):  # brand new files, maybe of known content
        inode += 1
        content = draw(st.sampled_from(CONTENTS))
        current.append(file(draw(st.sampled_from(dirs)) + b"/new-%d" % n, inode, content, 7))
    incomplete: set[bytes] = set()
    if draw(st.booleans()):
        lost = draw(st.sampled_from(dirs))
        incomplete.add(lost)
        current = [e for e in current if not under(e.path, lost)]
    return tree, walk_order(current), incomplete, actions


def _apply(
    draw: st.DrawFn, action: str, e: Entry, n: int, inode: int, dirs: list[bytes]
) -> list[Entry]:
    if action == "keep":
        return [replace(e, content_id=None)]
    if action == "delete":
        return []
    if action == "modify":
        return [replace(e, content_id=b"fresh:%d" % n, size=e.size + 1, mtime_ns=50)]
    if action == "chmod":
        return [replace(e, mode=0o100600, ctime_ns=50)]
    if action == "touch":
        return [replace(e, mtime_ns=50, ctime_ns=50)]
    if action == "rename":
        return [replace(e, path=draw(st.sampled_from(dirs)) + b"/ren-%d" % n, ctime_ns=50)]
    if action == "copy":
        target = draw(st.sampled_from(dirs)) + b"/cp-%d" % n
        return [replace(e, content_id=None), replace(e, path=target, inode=inode, ctime_ns=50)]
    assert action == "retype"
    return [directory(e.path, inode)]


def _paths(result: Classification, *kinds: ReportList) -> list[bytes]:
    return [c.entry.path for c in result.changes if c.kind in kinds]


@settings(max_examples=200)
@given(mutations())
def test_counts_per_kind_equal_list_lengths(
    case: tuple[list[Entry], list[Entry], set[bytes], dict[bytes, str]],
) -> None:
    previous, current, incomplete, _ = case
    result = classify(previous, current, incomplete)
    counters = Counters()
    for change in result.changes:
        e = change.entry
        counters.add_file(change.kind, e.etype.value, e.size, e.size, link_dir=e.link_to_dir)
    lengths = Counter(c.kind for c in result.changes)
    assert result.counts() == {k: lengths[k] for k in result.counts()}
    c = counters
    assert c.new_files + c.new_dirs + c.new_link_dirs + c.new_link_files == lengths[ReportList.NEW]
    assert c.upd_files == lengths[ReportList.UPD]
    assert c.pmt_files == lengths[ReportList.PMT]
    assert c.del_files + c.del_dirs + c.del_links == lengths[ReportList.DEL]
    assert c.mov_files == lengths[ReportList.MOV]
    assert c.cpy_files == lengths[ReportList.CPY]


@settings(max_examples=200)
@given(mutations())
def test_no_path_in_two_lists_but_a_type_change(
    case: tuple[list[Entry], list[Entry], set[bytes], dict[bytes, str]],
) -> None:
    previous, current, incomplete, _ = case
    result = classify(previous, current, incomplete)
    by_path: dict[bytes, list[Any]] = {}
    for change in result.changes:
        by_path.setdefault(change.entry.path, []).append(change)
    for changes in by_path.values():
        if len(changes) > 1:
            assert len(changes) == 2
            deleted = [c for c in changes if c.kind is ReportList.DEL]
            assert len(deleted) == 1 and deleted[0].reason is Reason.TYPE_CHANGED
    sources = [c.from_path for c in result.changes if c.kind is ReportList.MOV]
    assert len(sources) == len(set(sources))
    assert not set(sources) & set(_paths(result, ReportList.DEL))


@settings(max_examples=200)
@given(mutations())
def test_every_entry_is_accounted_for_once(
    case: tuple[list[Entry], list[Entry], set[bytes], dict[bytes, str]],
) -> None:
    previous, current, incomplete, actions = case
    result = classify(previous, current, incomplete)
    prev_paths = [e.path for e in previous]
    cur_paths = {e.path for e in current}
    cur_types = {e.path: e.etype for e in current}
    reported_current = [c for c in result.changes if c.kind is not ReportList.DEL]
    assert len(reported_current) + result.unchanged == len(current)

    # a previous entry is matched (same path and type), deleted, moved away or carried
    matched = [e.path for e in previous if cur_types.get(e.path) is e.etype]
    gone = _paths(result, ReportList.DEL)
    moved_from = [c.from_path or b"" for c in result.changes if c.kind is ReportList.MOV]
    carried = [e.path for e in result.carried]
    assert sorted(matched + gone + moved_from + carried) == sorted(prev_paths)
    assert all(any(p == d or under(p, d) for d in incomplete) for p in carried)

    kinds = {c.entry.path: (c.kind, c.reason) for c in result.changes}
    for path, action in actions.items():
        if path not in cur_paths:
            continue
        if action == "modify":
            assert kinds[path] == (ReportList.UPD, Reason.CONTENT_CHANGED)
        elif action == "chmod":
            assert kinds[path] == (ReportList.PMT, Reason.MODE_CHANGED)
        elif action == "touch":
            assert kinds[path] == (ReportList.PMT, Reason.MTIME_ONLY)
        elif action == "keep":
            assert path not in kinds
