"""Classification rules of cbs-api.md §5, one test per rule and reason; entries are literals."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from opencbs.engine.classify import (
    Change,
    Classification,
    Reason,
    classify,
    classify_pairs,
    needs_content,
    pair_by_path,
    path_sort_key,
    reuse_content,
    under_incomplete,
)
from opencbs.engine.entries import Entry
from opencbs.reports.vocabulary import EntryType, ReportList

NEW, UPD, PMT, DEL, MOV, CPY = (
    ReportList.NEW,
    ReportList.UPD,
    ReportList.PMT,
    ReportList.DEL,
    ReportList.MOV,
    ReportList.CPY,
)
_inodes = itertools.count(100)


def f(path: str, content: str, **kw: object) -> Entry:
    """A regular file whose content id is ``content`` (size = its length)."""
    fields: dict[str, object] = dict(
        path=path.encode(),
        etype=EntryType.FILE,
        size=len(content),
        mtime_ns=1_000,
        ctime_ns=1_000,
        mode=0o100644,
        uid=1000,
        gid=1000,
        inode=next(_inodes),
        device=1,
        content_id=b"c:" + content.encode(),
    )
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def d(path: str, **kw: object) -> Entry:
    fields: dict[str, object] = dict(
        path=path.encode(),
        etype=EntryType.DIRECTORY,
        size=0,
        mtime_ns=1_000,
        ctime_ns=1_000,
        mode=0o40755,
        uid=1000,
        gid=1000,
        inode=next(_inodes),
        device=1,
    )
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def ln(path: str, target: str, **kw: object) -> Entry:
    fields: dict[str, object] = dict(
        path=path.encode(),
        etype=EntryType.LINK,
        size=len(target),
        mtime_ns=1_000,
        ctime_ns=1_000,
        mode=0o120777,
        uid=1000,
        gid=1000,
        inode=next(_inodes),
        device=1,
        link_target=target.encode(),
    )
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def scanned(entry: Entry, **kw: object) -> Entry:
    """``entry`` as a fresh scan sees it (no content id), with changes ``kw``."""
    return replace(entry, content_id=None, **kw)  # type: ignore[arg-type]


def run(
    previous: list[Entry],
    current: list[Entry],
    incomplete: set[str] = frozenset(),  # type: ignore[assignment]
    known: set[bytes] | None = None,
) -> Classification:
    """Classify like the agent: reuse content where no read is needed, in walk order."""
    prev_by_path = {e.path: e for e in previous}
    ready = [reuse_content(prev_by_path.get(c.path), c) for c in current]
    return classify(
        sorted(previous, key=lambda e: path_sort_key(e.path)),
        sorted(ready, key=lambda e: path_sort_key(e.path)),
        {p.encode() for p in incomplete},
        known,
    )


def summary(result: Classification) -> list[tuple[str, str, Reason, str | None]]:
    return [
        (
            c.kind.key,
            c.entry.path.decode(),
            c.reason,
            c.from_path.decode() if c.from_path is not None else None,
        )
        for c in result.changes
    ]


@pytest.fixture
def tree() -> list[Entry]:
    return [
        d("/src"),
        d("/src/docs"),
        f("/src/docs/a.txt", "alpha"),
        f("/src/docs/b.txt", "bravo"),
        d("/src/img"),
        f("/src/img/logo.png", "logo"),
        f("/src/empty", ""),
    ]


def at(entries: list[Entry], path: str) -> Entry:
    return next(e for e in entries if e.path == path.encode())


def without(entries: list[Entry], *paths: str) -> list[Entry]:
    drop = {p.encode() for p in paths}
    return [e for e in entries if e.path not in drop]


# -- the planner ---------------------------------------------------------------------------------


def test_unchanged_metadata_needs_no_read() -> None:
    prev = f("/a", "x")
    assert needs_content(prev, scanned(prev)) is False
    assert reuse_content(prev, scanned(prev)).content_id == prev.content_id


@pytest.mark.parametrize("change", [{"size": 9}, {"mtime_ns": 2}, {"ctime_ns": 2}, {"inode": 1}])
def test_changed_metadata_needs_a_read(change: dict[str, int]) -> None:
    prev = f("/a", "x")
    assert needs_content(prev, scanned(prev, **change)) is True
    assert reuse_content(prev, scanned(prev, **change)).content_id is None


def test_new_files_and_type_changes_need_a_read_and_others_never() -> None:
    assert needs_content(None, scanned(f("/a", "x"))) is True
    assert needs_content(d("/a"), scanned(f("/a", "x"))) is True
    assert needs_content(f("/a", "x", content_id=None), scanned(f("/a", "x"))) is True
    assert needs_content(None, d("/a")) is False
    assert needs_content(None, ln("/a", "t")) is False


def test_missing_content_id_where_a_read_was_needed_is_an_error() -> None:
    prev = f("/a", "x")
    with pytest.raises(ValueError, match="content id required"):
        classify([prev], [scanned(prev, mtime_ns=5)])
    with pytest.raises(ValueError, match="content id required"):
        classify([], [scanned(prev)])


# -- walk order ----------------------------------------------------------------------------------


def test_walk_order_puts_a_subtree_before_names_with_lower_bytes() -> None:
    paths = [b"/a/b.txt", b"/a/b/x", b"/a-b", b"/a", b"/a/b"]
    assert sorted(paths, key=path_sort_key) == [b"/a", b"/a/b", b"/a/b/x", b"/a/b.txt", b"/a-b"]


def test_inputs_out_of_walk_order_are_refused() -> None:
    with pytest.raises(ValueError, match="walk order"):
        list(pair_by_path([f("/b", "1"), f("/a", "2")], []))
    with pytest.raises(ValueError, match="walk order"):
        list(pair_by_path([], [f("/a", "1"), f("/a", "2")]))


def test_a_mapping_is_accepted_and_sorted() -> None:
    prev = [f("/z", "1"), f("/a", "2")]
    result = classify({e.path: e for e in prev}, {e.path: e for e in prev})
    assert result.changes == () and result.unchanged == 2


def test_pair_by_path_pairs_same_paths() -> None:
    a, b, c = f("/a", "1"), f("/b", "2"), f("/c", "3")
    assert list(pair_by_path([a, b], [b, c])) == [(a, None), (b, b), (None, c)]


# -- unchanged, new, updated ---------------------------------------------------------------------


def test_unchanged_tree_has_no_changes(tree: list[Entry]) -> None:
    result = run(tree, [scanned(e) for e in tree])
    assert result.changes == () and result.carried == () and result.unchanged == len(tree)


def test_first_job_every_entry_new_sources_included(tree: list[Entry]) -> None:
    result = run([], tree)  # every file read
    assert [(k, p) for k, p, _, _ in summary(result)] == [
        ("new", e.path.decode()) for e in sorted(tree, key=lambda e: path_sort_key(e.path))
    ]
    assert {c.reason for c in result.changes} == {Reason.NEW_PATH}


def test_new_file(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/docs/c.txt", "charlie")]
    assert summary(run(tree, current)) == [("new", "/src/docs/c.txt", Reason.NEW_PATH, None)]


def test_content_update_with_same_size(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, content_id=b"c:ALPHA", mtime_ns=2_000, ctime_ns=2_000))
    (change,) = run(tree, current).changes
    assert (change.kind, change.reason, change.entry.size) == (UPD, Reason.CONTENT_CHANGED, 5)


def test_content_update_with_only_ctime_changed_is_detected(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, content_id=b"c:ALPHA", ctime_ns=2_000))
    assert summary(run(tree, current)) == [("upd", "/src/docs/a.txt", Reason.CONTENT_CHANGED, None)]


# -- permissions and times -----------------------------------------------------------------------


def test_chmod_only_is_pmt(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, mode=0o100600, ctime_ns=2_000))  # read again: same content
    assert summary(run(tree, current)) == [("pmt", "/src/docs/a.txt", Reason.MODE_CHANGED, None)]


def test_chown_only_is_pmt(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, gid=0, ctime_ns=2_000))
    assert summary(run(tree, current)) == [("pmt", "/src/docs/a.txt", Reason.OWNER_CHANGED, None)]


def test_touch_only_is_pmt(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, mtime_ns=5_000, ctime_ns=5_000))
    assert summary(run(tree, current)) == [("pmt", "/src/docs/a.txt", Reason.MTIME_ONLY, None)]


def test_ctime_or_inode_only_change_with_same_content_is_not_reported(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, ctime_ns=5_000, inode=999_999))
    result = run(tree, current)
    assert result.changes == () and result.unchanged == len(tree)


def test_directory_mtime_only_is_not_reported(tree: list[Entry]) -> None:
    current = [scanned(e) for e in without(tree, "/src/docs")]
    current.append(replace(at(tree, "/src/docs"), mtime_ns=9_000, ctime_ns=9_000))
    assert run(tree, current).changes == ()


def test_directory_chmod_and_chown_are_pmt(tree: list[Entry]) -> None:
    current = [scanned(e) for e in without(tree, "/src/docs", "/src/img")]
    current.append(replace(at(tree, "/src/docs"), mode=0o40700, mtime_ns=9_000))
    current.append(replace(at(tree, "/src/img"), uid=0))
    assert summary(run(tree, current)) == [
        ("pmt", "/src/docs", Reason.MODE_CHANGED, None),
        ("pmt", "/src/img", Reason.OWNER_CHANGED, None),
    ]


# -- deletions -----------------------------------------------------------------------------------


def test_deleted_file(tree: list[Entry]) -> None:
    current = [scanned(e) for e in without(tree, "/src/docs/b.txt")]
    assert summary(run(tree, current)) == [("del", "/src/docs/b.txt", Reason.PATH_GONE, None)]


def test_deleted_dir_with_files(tree: list[Entry]) -> None:
    current = [scanned(e) for e in without(tree, "/src/docs", "/src/docs/a.txt", "/src/docs/b.txt")]
    result = run(tree, current)
    assert summary(result) == [
        ("del", "/src/docs", Reason.PATH_GONE, None),
        ("del", "/src/docs/a.txt", Reason.PATH_GONE, None),
        ("del", "/src/docs/b.txt", Reason.PATH_GONE, None),
    ]
    assert result.changes[0].entry.etype is EntryType.DIRECTORY
    assert result.changes[1].entry.content_id == b"c:alpha"  # the previous entry


def test_deletion_under_an_incomplete_directory_is_carried_not_reported(tree: list[Entry]) -> None:
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt", "/src/img/logo.png")]
    result = run(tree, current, incomplete={"/src/docs"})
    assert summary(result) == [("del", "/src/img/logo.png", Reason.PATH_GONE, None)]
    assert result.carried == (at(tree, "/src/docs/a.txt"),)


def test_unreadable_subdirectory_carries_its_whole_subtree() -> None:
    prev = [d("/s"), d("/s/a"), d("/s/a/b"), f("/s/a/b/x", "x"), f("/s/a/y", "y")]
    current = [scanned(e) for e in prev[:2]]  # /s/a could not be listed
    result = run(prev, current, incomplete={"/s/a"})
    assert result.changes == ()
    assert [e.path for e in result.carried] == [b"/s/a/b", b"/s/a/b/x", b"/s/a/y"]


def test_missing_source_is_carried_whole(tree: list[Entry]) -> None:
    result = run(tree, [], incomplete={"/src"})
    assert result.changes == () and len(result.carried) == len(tree)


def test_carried_files_are_not_move_sources(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, path=b"/src/img/a.txt", ctime_ns=3_000))
    result = run(tree, current, incomplete={"/src/docs"})
    assert summary(result) == [
        ("cpy", "/src/img/a.txt", Reason.CONTENT_ALREADY_STORED, "/src/docs/a.txt")
    ]
    assert result.carried == (a,)


def test_under_incomplete_checks_every_ancestor() -> None:
    assert under_incomplete(b"/a/b/c", {b"/a"})
    assert under_incomplete(b"/a", {b"/a"})
    assert not under_incomplete(b"/ab/c", {b"/a"})
    assert under_incomplete(b"/etc/x", {b"/"})
    assert not under_incomplete(b"/etc/x", set())


# -- moves ---------------------------------------------------------------------------------------


def test_rename_in_place(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, path=b"/src/docs/renamed.txt", ctime_ns=2_000))  # read: same
    result = run(tree, current)
    assert summary(result) == [
        ("mov", "/src/docs/renamed.txt", Reason.SAME_INODE_NEW_PATH, "/src/docs/a.txt")
    ]
    assert result.counts()[MOV] == 1 and result.counts()[DEL] == 0


def test_move_to_another_dir(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, path=b"/src/img/a.txt", ctime_ns=2_000))
    assert summary(run(tree, current)) == [
        ("mov", "/src/img/a.txt", Reason.SAME_INODE_NEW_PATH, "/src/docs/a.txt")
    ]


def test_move_across_file_systems_matches_by_content(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, path=b"/src/img/a.txt", inode=1, device=2, mtime_ns=7))
    assert summary(run(tree, current)) == [
        ("mov", "/src/img/a.txt", Reason.SAME_CONTENT_NEW_PATH, "/src/docs/a.txt")
    ]


def test_same_inode_with_other_content_and_times_is_not_a_move(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, path=b"/src/x", content_id=b"c:other", size=3, mtime_ns=8))
    assert summary(run(tree, current)) == [
        ("del", "/src/docs/a.txt", Reason.PATH_GONE, None),
        ("new", "/src/x", Reason.NEW_PATH, None),
    ]


def test_a_vanished_path_is_the_source_of_one_move_only(tree: list[Entry]) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, path=b"/src/img/a1", inode=1))
    current.append(replace(a, path=b"/src/img/a2", inode=2))
    assert summary(run(tree, current)) == [
        ("mov", "/src/img/a1", Reason.SAME_CONTENT_NEW_PATH, "/src/docs/a.txt"),
        ("cpy", "/src/img/a2", Reason.CONTENT_ALREADY_STORED, "/src/docs/a.txt"),
    ]


def test_inode_matches_win_over_earlier_content_matches() -> None:
    x, y = f("/s/x", "same"), f("/s/y", "same")
    prev = [d("/s"), x, y]
    current = [scanned(prev[0]), replace(y, path=b"/s/a"), replace(x, path=b"/s/b")]
    assert summary(run(prev, current)) == [
        ("mov", "/s/a", Reason.SAME_INODE_NEW_PATH, "/s/y"),
        ("mov", "/s/b", Reason.SAME_INODE_NEW_PATH, "/s/x"),
    ]


def test_renamed_directory_is_del_and_new_its_files_moves() -> None:
    prev = [d("/s"), d("/s/old"), f("/s/old/x", "x")]
    old_dir, x = prev[1], prev[2]
    current = [
        scanned(prev[0]),
        scanned(old_dir, path=b"/s/new"),
        replace(x, path=b"/s/new/x", ctime_ns=2_000),
    ]
    assert summary(run(prev, current)) == [
        ("new", "/s/new", Reason.NEW_PATH, None),
        ("mov", "/s/new/x", Reason.SAME_INODE_NEW_PATH, "/s/old/x"),
        ("del", "/s/old", Reason.PATH_GONE, None),
    ]


# -- copies --------------------------------------------------------------------------------------


def test_copy_of_an_existing_file(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/img/a-copy.txt", "alpha")]
    assert summary(run(tree, current)) == [
        ("cpy", "/src/img/a-copy.txt", Reason.CONTENT_ALREADY_STORED, "/src/docs/a.txt")
    ]


def test_copy_of_an_existing_file_with_a_repository_index(tree: list[Entry]) -> None:
    """With ``known_content``, copies of unchanged files are found, their source is unknown."""
    known = {e.content_id for e in tree if e.content_id is not None}
    current = [scanned(e) for e in tree] + [f("/src/img/a-copy.txt", "alpha")]
    assert summary(run(tree, current, known=known)) == [
        ("cpy", "/src/img/a-copy.txt", Reason.CONTENT_ALREADY_STORED, None)
    ]


def test_copy_of_content_stored_earlier_in_the_repository(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/old-backup.bin", "from another set")]
    result = run(tree, current, known={b"c:from another set"})
    assert summary(result) == [("cpy", "/src/old-backup.bin", Reason.CONTENT_ALREADY_STORED, None)]


def test_copy_of_a_file_stored_earlier_in_this_job(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree]
    current += [f("/src/docs/n1", "fresh"), f("/src/img/n2", "fresh"), f("/src/n0", "fresh")]
    assert summary(run(tree, current)) == [
        ("new", "/src/docs/n1", Reason.NEW_PATH, None),
        ("cpy", "/src/img/n2", Reason.CONTENT_STORED_THIS_JOB, "/src/docs/n1"),
        ("cpy", "/src/n0", Reason.CONTENT_STORED_THIS_JOB, "/src/docs/n1"),
    ]


def test_a_new_file_before_an_update_with_its_content_is_new() -> None:
    a = f("/s/z", "v1")
    prev = [d("/s"), a]
    current = [scanned(prev[0]), f("/s/b", "v2"), replace(a, content_id=b"c:v2", mtime_ns=9)]
    assert summary(run(prev, current)) == [
        ("new", "/s/b", Reason.NEW_PATH, None),
        ("upd", "/s/z", Reason.CONTENT_CHANGED, None),
    ]
    later = [scanned(prev[0]), replace(a, content_id=b"c:v2", mtime_ns=9), f("/s/zz", "v2")]
    assert summary(run(prev, later))[-1] == ("cpy", "/s/zz", Reason.CONTENT_STORED_THIS_JOB, "/s/z")


# -- empty files ---------------------------------------------------------------------------------


def test_empty_files_are_never_copies(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/docs/also-empty", "")]
    assert summary(run(tree, current)) == [("new", "/src/docs/also-empty", Reason.NEW_PATH, None)]


def test_empty_file_moves_only_by_inode_with_same_mtime(tree: list[Entry]) -> None:
    empty = at(tree, "/src/empty")
    renamed = [scanned(e) for e in without(tree, "/src/empty")]
    renamed.append(replace(empty, path=b"/src/img/empty", ctime_ns=5_000))
    assert summary(run(tree, renamed)) == [
        ("mov", "/src/img/empty", Reason.SAME_INODE_NEW_PATH, "/src/empty")
    ]
    other = [scanned(e) for e in without(tree, "/src/empty")]
    other.append(f("/src/img/empty", ""))  # another inode, same (empty) content
    assert summary(run(tree, other)) == [
        ("del", "/src/empty", Reason.PATH_GONE, None),
        ("new", "/src/img/empty", Reason.NEW_PATH, None),
    ]


# -- links ---------------------------------------------------------------------------------------


def test_symlink_added_and_removed() -> None:
    prev = [d("/s"), ln("/s/old", "target")]
    current = [scanned(prev[0]), ln("/s/new", "elsewhere", link_to_dir=True)]
    result = run(prev, current)
    assert summary(result) == [
        ("new", "/s/new", Reason.NEW_PATH, None),
        ("del", "/s/old", Reason.PATH_GONE, None),
    ]
    assert all(c.entry.etype is EntryType.LINK for c in result.changes)


def test_symlink_target_changed_is_upd() -> None:
    link = ln("/s/l", "one")
    prev = [d("/s"), link]
    current = [scanned(prev[0]), replace(link, link_target=b"two", size=3, mtime_ns=8)]
    assert summary(run(prev, current)) == [("upd", "/s/l", Reason.LINK_TARGET_CHANGED, None)]


def test_symlink_recreated_with_same_target_is_pmt() -> None:
    link = ln("/s/l", "one")
    prev = [d("/s"), link]
    current = [scanned(prev[0]), replace(link, inode=5, mtime_ns=8, ctime_ns=8)]
    assert summary(run(prev, current)) == [("pmt", "/s/l", Reason.MTIME_ONLY, None)]


# -- type changes --------------------------------------------------------------------------------


def test_file_became_directory_is_del_and_new() -> None:
    prev = [d("/s"), f("/s/x", "data")]
    current = [scanned(prev[0]), d("/s/x"), f("/s/x/inner", "inner")]
    result = run(prev, current)
    assert summary(result) == [
        ("new", "/s/x", Reason.TYPE_CHANGED, None),
        ("del", "/s/x", Reason.TYPE_CHANGED, None),
        ("new", "/s/x/inner", Reason.NEW_PATH, None),
    ]
    assert [c.entry.etype for c in result.changes[:2]] == [EntryType.DIRECTORY, EntryType.FILE]


def test_directory_became_link_deletes_its_subtree() -> None:
    prev = [d("/s"), d("/s/x"), f("/s/x/inner", "inner")]
    current = [scanned(prev[0]), ln("/s/x", "/elsewhere", link_to_dir=True)]
    assert summary(run(prev, current)) == [
        ("new", "/s/x", Reason.TYPE_CHANGED, None),
        ("del", "/s/x", Reason.TYPE_CHANGED, None),
        ("del", "/s/x/inner", Reason.PATH_GONE, None),
    ]


def test_file_moved_over_a_removed_directory() -> None:
    y = f("/s/y", "why")
    prev = [d("/s"), d("/s/x"), y]
    current = [scanned(prev[0]), replace(y, path=b"/s/x", ctime_ns=7)]
    assert summary(run(prev, current)) == [
        ("del", "/s/x", Reason.TYPE_CHANGED, None),
        ("mov", "/s/x", Reason.SAME_INODE_NEW_PATH, "/s/y"),
    ]


# -- reasons, logging, results -------------------------------------------------------------------


def test_every_reason_has_human_text() -> None:
    assert all(reason.text and reason.text == reason.value for reason in Reason)


def test_each_decision_is_logged_at_debug(
    tree: list[Entry], caplog: pytest.LogCaptureFixture
) -> None:
    a = at(tree, "/src/docs/a.txt")
    current = [scanned(e) for e in without(tree, "/src/docs/a.txt")]
    current.append(replace(a, content_id=b"c:v2", size=2, mtime_ns=5_000))
    EPOCH = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(0))  # noqa: N806
    with caplog.at_level(logging.DEBUG, logger="opencbs.engine.classify"):
        run(tree, current)
    upd = [r.getMessage() for r in caplog.records if "a.txt" in r.getMessage()]
    assert upd == [
        f"upd /src/docs/a.txt: {Reason.CONTENT_CHANGED.text} (size 5→2, mtime {EPOCH}.000001000"
        f"→{EPOCH}.000005000)"
    ]
    assert sum("unchanged" in r.getMessage() for r in caplog.records) == len(tree) - 1


def test_classify_pairs_streams_what_pair_by_path_gives(tree: list[Entry]) -> None:
    current = [scanned(e) for e in without(tree, "/src/docs/b.txt")]
    pairs = (
        (p, reuse_content(p, c) if c is not None else None)
        for p, c in pair_by_path(tree_sorted(tree), tree_sorted(current))
    )
    result = classify_pairs(pairs)
    assert summary(result) == [("del", "/src/docs/b.txt", Reason.PATH_GONE, None)]
    assert result.unchanged == len(tree) - 1


def test_classification_helpers(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/n", "n"), f("/src/m", "alpha")]
    result = run(tree, current)
    assert result.counts() == {NEW: 1, UPD: 0, PMT: 0, DEL: 0, MOV: 0, CPY: 1}
    assert result.of_kind(CPY) == (
        Change(CPY, current[-1], Reason.CONTENT_ALREADY_STORED, b"/src/docs/a.txt"),
    )


def tree_sorted(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: path_sort_key(e.path))


def test_incomplete_dirs_are_read_after_the_last_pair(tree: list[Entry]) -> None:
    """A running scan may mark a directory incomplete after one of its vanished names has
    streamed by (a later sibling could not be stat-ed): carried or deleted is decided at the
    end, against the final set."""
    incomplete: set[bytes] = set()
    current = tree_sorted([scanned(e) for e in without(tree, "/src/docs/a.txt")])

    def pairs() -> Iterator[tuple[Entry | None, Entry | None]]:
        for prev, cur in pair_by_path(tree_sorted(tree), current):
            yield prev, reuse_content(prev, cur) if cur is not None else None
        incomplete.add(b"/src/docs")  # the scan finishes only now

    result = classify_pairs(pairs(), lambda: incomplete)
    assert result.changes == () and result.carried == (at(tree, "/src/docs/a.txt"),)
