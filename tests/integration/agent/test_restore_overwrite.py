"""What a restore does with what the target already holds (issue 15, point 8;
``agent.restore_overwrite``), on real folders: ``REFUSE`` names the first path in the way and
writes nothing (not even when only a folder would be created), existing folders are no
conflict, ``IF_CHANGED`` compares size and time or content, ``NEVER`` keeps everything; and
a link planted in the target is never followed by the conflict check or by any choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opencbs.agent.restore import Overwrite, RestoreConflict, refuse_conflicts, restore
from opencbs.destinations.local import LocalStorage
from opencbs.engine.repository import Repository
from opencbs.reports.vocabulary import EntryType
from tests.agent_support import PASSWORD
from tests.integration.agent.test_restore_safety import MTIME, _crafted

JOB = "2026-01-02-03-04-05"
TREE: list[tuple[bytes, EntryType, int, bytes]] = [
    (b"/d", EntryType.DIRECTORY, 0o40755, b""),
    (b"/d/a.txt", EntryType.FILE, 0o100644, b"alpha" * 20),
    (b"/d/sub", EntryType.DIRECTORY, 0o40755, b""),
    (b"/d/sub/b.txt", EntryType.FILE, 0o100644, b"beta"),
    (b"/d/link", EntryType.LINK, 0o120777, b"a.txt"),
]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return _crafted(tmp_path / "dest", TREE)


def _restored(storage: LocalStorage, target: Path, mode: Overwrite) -> tuple[int, int]:
    result = restore(storage, PASSWORD, JOB, target, overwrite=mode)
    assert result.complete, result
    return result.files, result.kept


def test_refuse_names_the_first_path_and_writes_nothing(
    storage: LocalStorage, tmp_path: Path
) -> None:
    target = tmp_path / "t"
    (target / "d").mkdir(parents=True)  # an existing folder: no conflict
    assert _restored(storage, target, Overwrite.REFUSE) == (2, 0)

    (target / "d" / "sub" / "b.txt").write_bytes(b"mine")
    (target / "d" / "a.txt").unlink()
    with pytest.raises(RestoreConflict) as caught:
        restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.REFUSE)
    assert caught.value.path == str(target / "d" / "sub" / "b.txt")
    assert caught.value.exit_code == 5 and "--overwrite" in caught.value.hint
    assert not (target / "d" / "a.txt").exists()  # nothing written
    assert (target / "d" / "sub" / "b.txt").read_bytes() == b"mine"

    # a file where the snapshot has a folder is in the way too (it would be removed)
    other = tmp_path / "o"
    (other / "d").mkdir(parents=True)
    (other / "d" / "sub").write_bytes(b"a file")
    repo = Repository.open(storage, PASSWORD)
    info = repo.list_snapshots()[0]
    with pytest.raises(RestoreConflict) as caught:
        refuse_conflicts(repo, info.id, other)
    assert caught.value.path == str(other / "d" / "sub")
    refuse_conflicts(repo, info.id, other, paths=["/d/a.txt"])  # only a.txt: nothing in the way
    refuse_conflicts(repo, info.id, tmp_path / "missing")  # a missing target: nothing either


def test_a_planted_link_is_never_followed(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "b.txt").write_bytes(b"outside")
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(outside, target / "d")  # the snapshot's folder /d is a link here
    with pytest.raises(RestoreConflict) as caught:
        restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.REFUSE)
    assert caught.value.path == str(target / "d")  # the link, not what is behind it

    files, kept = _restored(storage, target, Overwrite.NEVER)
    assert (files, kept) == (0, 5)  # the link kept, and everything below /d with it
    assert os.readlink(target / "d") == str(outside)
    assert (outside / "sub" / "b.txt").read_bytes() == b"outside"
    assert sorted(p.name for p in outside.rglob("*")) == ["b.txt", "sub"]

    assert _restored(storage, target, Overwrite.IF_CHANGED) == (2, 0)  # replaced by the folder
    assert (target / "d").is_dir() and not (target / "d").is_symlink()
    assert (outside / "sub" / "b.txt").read_bytes() == b"outside"


def test_if_changed_compares_size_time_and_content(storage: LocalStorage, tmp_path: Path) -> None:
    target = tmp_path / "t"
    assert _restored(storage, target, Overwrite.ALWAYS) == (2, 0)
    a, b = target / "d" / "a.txt", target / "d" / "sub" / "b.txt"
    ino_a = a.stat().st_ino
    assert _restored(storage, target, Overwrite.IF_CHANGED) == (0, 3)  # both files and the link
    assert a.stat().st_ino == ino_a

    os.utime(b, ns=(5, 5))  # same content, other time: kept, its time set back
    b_ino = b.stat().st_ino
    a.write_bytes(b"ALPHA" * 20)  # same size, other content
    os.utime(a, ns=(MTIME, MTIME))  # even with the snapshot's time, size+time match: kept
    assert _restored(storage, target, Overwrite.IF_CHANGED) == (0, 3)
    assert a.read_bytes() == b"ALPHA" * 20
    assert (b.stat().st_ino, b.stat().st_mtime_ns) == (b_ino, MTIME)

    os.utime(a, ns=(7, 7))  # the time differs now: the content is compared, and differs
    os.unlink(target / "d" / "link")
    os.symlink("elsewhere", target / "d" / "link")
    assert _restored(storage, target, Overwrite.IF_CHANGED) == (1, 1)
    assert a.read_bytes() == b"alpha" * 20
    assert os.readlink(target / "d" / "link") == "a.txt"


def test_never_restores_only_what_is_missing(storage: LocalStorage, tmp_path: Path) -> None:
    target = tmp_path / "t"
    (target / "d").mkdir(parents=True)
    (target / "d" / "a.txt").write_bytes(b"mine")
    assert _restored(storage, target, Overwrite.NEVER) == (1, 1)
    assert (target / "d" / "a.txt").read_bytes() == b"mine"
    assert (target / "d" / "sub" / "b.txt").read_bytes() == b"beta"
    assert os.readlink(target / "d" / "link") == "a.txt"
