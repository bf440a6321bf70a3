"""Copy sources in two passes (engine.classify, "Copy sources"; issue 4 item 3): the streaming
classification keeps only a 64-bit hash per previous file, leaves copies of previous content
tentative, and :func:`resolve_sources` names their source from a second pass over the previous
snapshot — or, when no previous file has the content after all, gives the fallback."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable, Iterator

import pytest

from opencbs.engine.classify import (
    Change,
    Classification,
    Reason,
    classify,
    classify_pairs,
    pair_by_path,
    path_sort_key,
    resolve_sources,
    reuse_content,
)
from opencbs.engine.entries import Entry
from opencbs.reports.vocabulary import EntryType, ReportList
from tests.unit.test_classify import d, f, scanned, summary

CPY, NEW = ReportList.CPY, ReportList.NEW


def walk(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: path_sort_key(e.path))


def stream(previous: list[Entry], current: list[Entry]) -> Classification:
    """The first pass only, as the agent runs it: pairs streamed, content reused."""
    pairs = (
        (p, reuse_content(p, c) if c is not None else None)
        for p, c in pair_by_path(walk(previous), walk(current))
    )
    return classify_pairs(pairs)


@pytest.fixture
def tree() -> list[Entry]:
    return [
        d("/src"),
        d("/src/a"),
        f("/src/a-y", "alpha"),  # walk order: /src/a/..., then /src/a-y, then /src/b/...
        d("/src/b"),
        f("/src/b/x", "alpha"),
        f("/src/b/z", "zulu"),
        f("/src/empty", ""),
    ]


def test_a_copy_of_previous_content_is_tentative_until_resolved(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/a/c1", "alpha"), f("/src/c2", "zulu")]
    first = stream(tree, current)
    assert summary(first) == [
        ("cpy", "/src/a/c1", Reason.CONTENT_ALREADY_STORED, None),
        ("cpy", "/src/c2", Reason.CONTENT_ALREADY_STORED, None),
    ]
    assert first.sources_wanted == {b"c:alpha", b"c:zulu"}
    resolved = resolve_sources(first, walk(tree))
    assert summary(resolved) == [  # the first previous path in walk order with the content
        ("cpy", "/src/a/c1", Reason.CONTENT_ALREADY_STORED, "/src/a-y"),
        ("cpy", "/src/c2", Reason.CONTENT_ALREADY_STORED, "/src/b/z"),
    ]
    assert resolved.sources_wanted == frozenset() and not resolved.fallbacks
    assert (resolved.carried, resolved.unchanged) == (first.carried, first.unchanged)
    assert classify(walk(tree), walk(current)) == resolved  # classify does both passes


def test_without_a_copy_of_previous_content_nothing_is_read_again(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/n1", "fresh"), f("/src/n2", "fresh")]
    first = stream(tree, current)
    assert summary(first) == [
        ("new", "/src/n1", Reason.NEW_PATH, None),
        ("cpy", "/src/n2", Reason.CONTENT_STORED_THIS_JOB, "/src/n1"),
    ]
    assert first.sources_wanted == frozenset()

    def never() -> Iterator[Entry]:
        raise AssertionError("the previous snapshot was read again")
        yield  # pragma: no cover

    assert resolve_sources(first, never()) is first


def test_resolution_stops_once_every_source_is_found(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/c", "alpha")]
    read: list[bytes] = []

    def previous() -> Iterator[Entry]:
        for entry in walk(tree):
            read.append(entry.path)
            yield entry

    resolved = resolve_sources(stream(tree, current), previous())
    assert resolved.changes[0].from_path == b"/src/a-y"
    assert read[-1] == b"/src/a-y" and len(read) < len(tree)


def test_a_hash_match_without_a_previous_file_falls_back(tree: list[Entry]) -> None:
    """A false hash match (simulated: the second pass does not hold the content) becomes what
    the file would have been without it: ``new`` with its reason, or a copy of this job's."""
    current = [scanned(e) for e in tree if e.path != b"/src/a"]
    current += [f("/src/a", "alpha"), f("/src/b/c", "alpha"), f("/src/zz", "zulu")]
    first = stream(tree, current)
    assert [(c.kind, c.entry.path, c.from_path) for c in first.changes] == [
        (ReportList.DEL, b"/src/a", None),
        (CPY, b"/src/a", None),
        (CPY, b"/src/b/c", None),
        (CPY, b"/src/zz", None),
    ]
    without_alpha = [e for e in walk(tree) if e.content_id != b"c:alpha"]
    resolved = resolve_sources(first, without_alpha)
    assert summary(resolved) == [
        ("new", "/src/a", Reason.TYPE_CHANGED, None),  # same order as the classifier's
        ("del", "/src/a", Reason.TYPE_CHANGED, None),
        ("cpy", "/src/b/c", Reason.CONTENT_STORED_THIS_JOB, "/src/a"),
        ("cpy", "/src/zz", Reason.CONTENT_ALREADY_STORED, "/src/b/z"),
    ]
    assert resolved.counts()[NEW] == 1 and resolved.counts()[CPY] == 2


def test_empty_files_and_moves_are_never_tentative(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree if e.path != b"/src/b/z"]
    current += [f("/src/e2", ""), f("/src/moved", "zulu", inode=999)]
    first = stream(tree, current)
    assert first.sources_wanted == frozenset()
    assert summary(first) == [
        ("new", "/src/e2", Reason.NEW_PATH, None),
        ("mov", "/src/moved", Reason.SAME_CONTENT_NEW_PATH, "/src/b/z"),
    ]


def test_known_content_mode_has_no_tentative_copy(tree: list[Entry]) -> None:
    current = [scanned(e) for e in tree] + [f("/src/c", "alpha")]
    prev_by_path = {e.path: e for e in tree}
    pairs = (
        (p, reuse_content(prev_by_path.get(c.path), c) if c is not None else None)
        for p, c in pair_by_path(walk(tree), walk(current))
    )
    result = classify_pairs(pairs, known_content={b"c:alpha"})
    assert result.sources_wanted == frozenset()
    assert result.changes == (Change(CPY, current[-1], Reason.CONTENT_ALREADY_STORED),)


def _files(n: int) -> Iterator[Entry]:
    yield Entry(b"/m", EntryType.DIRECTORY, 0, 1, 1, 0o40755, 0, 0, 1, 1)
    for k in range(n):
        yield Entry(
            b"/m/f%07d" % k,
            EntryType.FILE,
            100,
            2,
            2,
            0o100644,
            0,
            0,
            k + 2,
            1,
            content_id=(k + 1).to_bytes(32, "big"),
        )


def test_the_previous_index_costs_a_few_bytes_per_file() -> None:
    """Issue 4: the previous snapshot's file index must stay well under ~150 bytes per file.
    Both sides are generated lazily, so what tracemalloc sees beyond the stream's few live
    entries is what the classifier holds per previous file (a ``content id -> path`` dict
    held about 200 bytes per file here)."""
    n = 20_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = classify_pairs(pair_by_path(_files(n), _files(n)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.changes == () and result.unchanged == n + 1
    assert (peak - base) / n < 32
