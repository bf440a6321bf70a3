"""Properties of scan then classify on real random trees (style.md item 10): a tree scanned
again without change has no changes and reads nothing; a random set of renames on disk is
classified as exactly those moves; a file vanishing during the scan is deleted, never carried.

Each example builds its tree in a fresh temporary directory (Hypothesis and function-scoped
fixtures do not mix); names include ones that sort differently in bytes and in walk order
(``a-b`` < ``a/x`` in bytes) and a name that is not UTF-8.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencbs.engine.classify import Reason
from opencbs.reports.vocabulary import ReportList
from tests.unit.test_scan_classify import backup

NAMES = [b"a", b"b", b"a-b", b"a.b", b"c d", b"\xff\xfe"]
CONTENTS = [b"", b"x", b"yy", b"zzz"]  # few, so that equal contents occur
EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Relative directories (parents first) and files (path → content) of a consistent tree."""
    rel = draw(
        st.sets(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple), max_size=12)
    )
    dirs = sorted({b"/".join(p[:i]) for p in rel for i in range(1, len(p))})
    files = {b"/".join(p): draw(st.sampled_from(CONTENTS)) for p in rel if b"/".join(p) not in dirs}
    return dirs, files


@contextmanager
def real_tree(layout: tuple[list[bytes], dict[bytes, bytes]]) -> Iterator[bytes]:
    dirs, files = layout
    with tempfile.TemporaryDirectory(prefix="opencbs-prop-") as tmp:
        root = os.fsencode(tmp) + b"/src"
        os.mkdir(root)
        for d in dirs:
            os.mkdir(root + b"/" + d)
        for path, content in files.items():
            with open(root + b"/" + path, "wb") as f:
                f.write(content)
        yield root


@EXAMPLES
@given(layouts())
def test_a_real_tree_scanned_again_has_no_changes_and_reads_nothing(
    layout: tuple[list[bytes], dict[bytes, bytes]],
) -> None:
    with real_tree(layout) as root:
        first, snapshot, reads = backup([], root)
        counts = first.counts()  # a file of content stored earlier in the job is a copy
        assert counts[ReportList.NEW] + counts[ReportList.CPY] == len(snapshot)
        assert len(snapshot) == 1 + len(layout[0]) + len(layout[1])
        assert sorted(reads) == sorted(root + b"/" + p for p in layout[1])
        again, _, reads = backup(snapshot, root)
        assert again.changes == () and again.carried == ()
        assert again.unchanged == len(snapshot)
        assert reads == []


@EXAMPLES
@given(st.data())
def test_random_renames_on_disk_are_exactly_those_moves(data: st.DataObject) -> None:
    layout = data.draw(layouts())
    dirs, files = layout
    moved = data.draw(st.lists(st.sampled_from(sorted(files)), unique=True)) if files else []
    with real_tree(layout) as root:
        _, snapshot, _ = backup([], root)
        renames: dict[bytes, bytes] = {}
        for n, rel in enumerate(moved):
            into = data.draw(st.sampled_from([b"", *dirs]))
            target = (root + b"/" + into if into else root) + b"/moved-%d" % n
            os.rename(root + b"/" + rel, target)
            renames[target] = root + b"/" + rel

        result, _, reads = backup(snapshot, root)

        assert {c.entry.path: c.from_path for c in result.changes} == renames
        assert {(c.kind, c.reason) for c in result.changes} <= {
            (ReportList.MOV, Reason.SAME_INODE_NEW_PATH)
        }
        assert result.unchanged == len(snapshot) - len(moved)
        assert sorted(reads) == sorted(renames)  # only the new paths are read


def _vanishing(real: Any, directory: bytes, victim: bytes) -> Any:
    """``os.scandir`` that lists ``directory``, then removes ``victim`` from the disk."""

    class Listed:
        def __init__(self, path: Any) -> None:
            self.path = path

        def __enter__(self) -> Iterator[os.DirEntry[bytes]]:
            with real(self.path) as listing:
                children = list(listing)
            if self.path == directory and os.path.lexists(victim):
                os.unlink(victim)
            return iter(children)

        def __exit__(self, *exc: object) -> None:
            return None

    return Listed


@EXAMPLES
@given(st.data())
def test_a_backed_up_file_vanishing_during_the_scan_is_deleted_not_carried(
    data: st.DataObject,
) -> None:
    layout = data.draw(layouts().filter(lambda lay: bool(lay[1])))
    victim_rel = data.draw(st.sampled_from(sorted(layout[1])))
    with real_tree(layout) as root:
        _, snapshot, _ = backup([], root)
        victim = root + b"/" + victim_rel
        directory = victim.rpartition(b"/")[0]
        real = os.scandir
        os.scandir = _vanishing(real, directory, victim)
        try:
            result, new_snapshot, _ = backup(snapshot, root)
        finally:
            os.scandir = real
        assert not os.path.lexists(victim)  # the hook ran
        assert [(c.kind, c.entry.path) for c in result.changes] == [(ReportList.DEL, victim)]
        assert result.carried == ()
        assert victim not in [e.path for e in new_snapshot]
