"""Scan then classify a real tree in one streaming pass, as the agent chains them: pair the scan
with the previous snapshot, read only what :func:`needs_content` asks for, classify."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from opencbs.engine.classify import (
    Classification,
    Reason,
    classify_pairs,
    needs_content,
    pair_by_path,
    path_sort_key,
    reuse_content,
)
from opencbs.engine.entries import Entry
from opencbs.engine.scan import scan
from opencbs.reports.vocabulary import ReportList


def backup(previous: list[Entry], root: bytes) -> tuple[Classification, list[Entry], list[bytes]]:
    """One job: the classification, the new snapshot (walk order) and the paths read."""
    s = scan([root])
    reads: list[bytes] = []
    snapshot: list[Entry] = []

    def pairs() -> Iterator[tuple[Entry | None, Entry | None]]:
        for prev, cur in pair_by_path(previous, s.entries()):
            if cur is not None and needs_content(prev, cur):
                reads.append(cur.path)
                with open(cur.path, "rb") as data:
                    cur = replace(cur, content_id=hashlib.sha256(data.read()).digest())
            elif cur is not None:
                cur = reuse_content(prev, cur)
            if cur is not None:
                snapshot.append(cur)
            yield prev, cur

    result = classify_pairs(pairs(), lambda: s.incomplete_dirs)
    snapshot += result.carried
    snapshot.sort(key=lambda e: path_sort_key(e.path))
    return result, snapshot, reads


@pytest.fixture
def tree(tmp_path: Path) -> bytes:
    root = tmp_path / "data"
    (root / "docs").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "docs" / "report.txt").write_bytes(b"quarterly numbers")
    (root / "docs" / "notes.txt").write_bytes(b"notes")
    (root / "photos" / "cat.jpg").write_bytes(b"\x89 cat pixels")
    return os.fsencode(root)


def kinds(result: Classification, root: bytes) -> set[tuple[str, bytes, Reason]]:
    return {(c.kind.key, c.entry.path[len(root) :], c.reason) for c in result.changes}


def test_first_job_then_an_unchanged_job_that_reads_nothing(tree: bytes) -> None:
    first, snapshot, reads = backup([], tree)
    assert first.counts()[ReportList.NEW] == 6  # the source, 2 directories, 3 files
    assert len(reads) == 3
    again, _, reads = backup(snapshot, tree)
    assert again.changes == () and again.unchanged == 6 and reads == []


def test_rename_chmod_touch_copy_and_new_directory(tree: bytes) -> None:
    _, snapshot, _ = backup([], tree)
    os.rename(tree + b"/docs/report.txt", tree + b"/photos/report.txt")
    os.chmod(tree + b"/docs/notes.txt", 0o600)
    st = os.stat(tree + b"/photos/cat.jpg")
    os.utime(tree + b"/photos/cat.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with open(tree + b"/docs/cat-copy.jpg", "wb") as out:
        out.write(b"\x89 cat pixels")
    os.mkdir(tree + b"/new")
    result, _, _ = backup(snapshot, tree)
    assert kinds(result, tree) == {
        ("mov", b"/photos/report.txt", Reason.SAME_INODE_NEW_PATH),
        ("pmt", b"/docs/notes.txt", Reason.MODE_CHANGED),
        ("pmt", b"/photos/cat.jpg", Reason.MTIME_ONLY),
        ("cpy", b"/docs/cat-copy.jpg", Reason.CONTENT_ALREADY_STORED),
        ("new", b"/new", Reason.NEW_PATH),
    }


def test_an_unreadable_directory_keeps_its_files(
    tree: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, snapshot, _ = backup([], tree)
    os.remove(tree + b"/photos/cat.jpg")
    real = os.scandir

    def scandir(path: Any) -> Any:
        if path == tree + b"/docs":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result, new_snapshot, _ = backup(snapshot, tree)
    assert kinds(result, tree) == {("del", b"/photos/cat.jpg", Reason.PATH_GONE)}
    carried = {e.path for e in result.carried}
    assert carried == {tree + b"/docs/notes.txt", tree + b"/docs/report.txt"}
    assert [e for e in new_snapshot if e.path in carried] == list(result.carried)
