"""How hard-linked files are classified (engine/classify.py, "Hard links"; cbs-api.md §5): each
name is a path of its own, a later name is ``new`` (never a copy of its own file), a path that
joins or leaves a link is ``pmt``, and nothing that did not change is reported."""

from __future__ import annotations

from dataclasses import replace

from opencbs.engine.classify import Reason, classify
from opencbs.engine.entries import Entry
from opencbs.reports.vocabulary import EntryType, ReportList
from tests.unit.test_classify import d, f

NEW, PMT, MOV, CPY = ReportList.NEW, ReportList.PMT, ReportList.MOV, ReportList.CPY


def names(*paths: str, content: str = "shared", inode: int = 7000) -> list[Entry]:
    """The names of one hard-linked file."""
    return [f(p, content, inode=inode, hard_link=True) for p in paths]


def kinds(prev: list[Entry], cur: list[Entry]) -> dict[str, tuple[ReportList, Reason]]:
    result = classify({e.path: e for e in prev}, {e.path: e for e in cur})
    return {c.entry.path.decode(): (c.kind, c.reason) for c in result.changes}


def test_a_new_file_with_two_names_is_two_new_files_not_a_copy() -> None:
    got = kinds([], [d("/s"), *names("/s/a", "/s/b")])
    assert got == {
        "/s": (NEW, Reason.NEW_PATH),
        "/s/a": (NEW, Reason.NEW_PATH),
        "/s/b": (NEW, Reason.HARD_LINK),
    }


def test_two_files_of_equal_content_that_are_not_linked_stay_a_copy() -> None:
    got = kinds([], [d("/s"), f("/s/a", "shared"), f("/s/b", "shared")])
    assert got["/s/b"] == (CPY, Reason.CONTENT_STORED_THIS_JOB)


def test_names_of_different_files_or_contents_are_not_one_file() -> None:
    other_inode = names("/s/b", inode=7001)
    other_content = names("/s/c", content="changed between the reads")
    got = kinds([], [d("/s"), *names("/s/a"), *other_inode, *other_content])
    assert got["/s/b"] == (CPY, Reason.CONTENT_STORED_THIS_JOB)
    assert got["/s/c"] == (NEW, Reason.NEW_PATH)


def test_nothing_changed_reports_nothing() -> None:
    tree = [d("/s"), *names("/s/a", "/s/b", "/s/c")]
    assert kinds(tree, tree) == {}


def test_a_new_name_of_a_file_backed_up_before_is_new_wherever_it_is() -> None:
    before = [d("/s"), *names("/s/m")]
    for path in ("/s/a", "/s/z"):  # before and after the existing name in walk order
        now = [d("/s"), *names("/s/m", path)]
        assert kinds(before, now) == {path: (NEW, Reason.HARD_LINK)}


def test_a_path_made_a_name_of_another_file_is_pmt_the_file_itself_is_not() -> None:
    """``ln -f a b``: b (same content, another inode before) is now a name of a."""
    before = [d("/s"), f("/s/a", "same", inode=1), f("/s/b", "same", inode=2)]
    now = [d("/s"), f("/s/a", "same", inode=1, hard_link=True)]
    now.append(f("/s/b", "same", inode=1, hard_link=True))
    assert kinds(before, now) == {"/s/b": (PMT, Reason.LINKED)}
    # and back: b a file of its own again (a copy), a a file with one name
    assert kinds(now, before) == {"/s/b": (PMT, Reason.UNLINKED)}


def test_a_renamed_name_is_a_move() -> None:
    before = [d("/s"), *names("/s/a", "/s/b")]
    now = [d("/s"), *names("/s/a2", "/s/b")]
    got = kinds(before, now)
    assert got == {"/s/a2": (MOV, Reason.SAME_INODE_NEW_PATH)}


def test_snapshots_before_hard_links_were_recorded_report_nothing_new() -> None:
    """The previous snapshot has no link flags (written before them): the same files, now
    flagged, are not changes."""
    now = [d("/s"), *names("/s/a", "/s/b")]
    before = [replace(e, hard_link=False) if e.etype is EntryType.FILE else e for e in now]
    assert kinds(before, now) == {}
