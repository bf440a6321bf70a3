"""What a restore does with what the target already holds (issue 15, point 8;
``agent.restore_overwrite``), on real folders: ``REFUSE`` names the first path in the way and
writes nothing (not even when only a folder would be created), existing folders are no
conflict, ``IF_CHANGED`` compares size and time or content, ``NEVER`` keeps everything; and
a link planted in the target is never followed by the conflict check or by any choice."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from opencbs.agent.restore import Overwrite, RestoreConflict, refuse_conflicts, restore
from opencbs.destinations.local import LocalStorage
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.reports.vocabulary import EntryType
from tests.agent_support import PASSWORD, local_storage
from tests.integration.agent.test_restore_safety import MTIME, _crafted, _entry

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

    result = restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.NEVER)
    # the link kept (it existed); the 4 entries below /d were never there: not restored, said
    assert (result.files, result.kept, result.blocked) == (0, 1, 4)
    assert result.warnings == (
        "/d: a link where the snapshot has a folder: its 4 entries not restored "
        "(--overwrite never)",
    )
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


def test_never_counts_apart_what_a_file_in_the_way_blocks(
    storage: LocalStorage, tmp_path: Path
) -> None:
    """A file where the snapshot has a folder: the file is an existing path kept, the folder's
    entries were never there (not "kept"): counted apart and named in a warning."""
    target = tmp_path / "t"
    (target / "d").mkdir(parents=True)
    (target / "d" / "sub").write_bytes(b"a file")
    result = restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.NEVER)
    assert (result.files, result.links, result.kept, result.blocked) == (1, 1, 1, 1)
    assert result.warnings == (
        "/d/sub: a file where the snapshot has a folder: its 1 entry not restored "
        "(--overwrite never)",
    )
    assert (target / "d" / "sub").read_bytes() == b"a file"
    assert result.complete  # nothing refused nor damaged: a warning, not an error


def _planted(outside: Path, name: Path, content: bytes) -> os.stat_result:
    """A file outside the target, old and of another mode, with a second name in it."""
    outside.write_bytes(content)
    os.chmod(outside, 0o640)
    os.utime(outside, ns=(5, 5))
    os.link(outside, name)
    return outside.stat()


@pytest.mark.parametrize("same_time", [False, True])
def test_a_hard_link_to_a_file_outside_is_never_modified(
    storage: LocalStorage, tmp_path: Path, *, same_time: bool
) -> None:
    """A name in the target that is a hard link of a file outside, holding the entry's
    content: ``if-changed`` replaces the name (a new file) and the file outside keeps its
    content, mode and time; ``never`` does not touch it at all."""
    target = tmp_path / "t"
    (target / "d" / "sub").mkdir(parents=True)
    outside, name = tmp_path / "v", target / "d" / "sub" / "b.txt"
    before = _planted(outside, name, b"beta")
    if same_time:  # size and time match: kept once, but a name with two links is not kept
        os.utime(outside, ns=(MTIME, MTIME))
        before = outside.stat()

    result = restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.NEVER)
    assert result.kept == 1 and name.stat().st_ino == before.st_ino
    after = outside.stat()
    assert (after.st_mtime_ns, after.st_mode, after.st_ctime_ns) == (
        before.st_mtime_ns,
        before.st_mode,
        before.st_ctime_ns,
    )

    result = restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.IF_CHANGED)
    assert result.complete and result.files == 1  # b.txt written anew
    after = outside.stat()
    assert (after.st_mtime_ns, stat.S_IMODE(after.st_mode), after.st_nlink) == (
        before.st_mtime_ns,
        0o640,
        1,
    )
    assert outside.read_bytes() == b"beta"
    now = name.stat()
    assert now.st_ino != before.st_ino and now.st_nlink == 1
    assert (now.st_mtime_ns, stat.S_IMODE(now.st_mode), name.read_bytes()) == (
        MTIME,
        0o644,
        b"beta",
    )


def _linked_pair(dest: Path) -> LocalStorage:
    """A snapshot of /h with two names of one hard-linked file, /h/one and /h/two."""
    storage = local_storage(dest)
    repo = Repository.open(storage, PASSWORD)
    with repo.writer() as w:
        r = w.add_file(io.BytesIO(b"shared" * 10))
    names = [
        _entry(
            p, EntryType.FILE, 0o100644, size=60, content_id=r.content_id, hard_link=True, inode=7
        )
        for p in (b"/h/one", b"/h/two")
    ]
    items = [(_entry(b"/h", EntryType.DIRECTORY, 0o40755), ())]
    items += [(e, r.chunk_ids) for e in names]
    meta = SnapshotMeta(MTIME, "1", "2", JOB, "host", (b"/",))
    repo.commit_snapshot(meta, items)
    return storage


@pytest.mark.parametrize("mode", [Overwrite.IF_CHANGED, Overwrite.NEVER])
def test_a_kept_name_of_a_hard_linked_file_gets_its_missing_names_linked(
    tmp_path: Path, mode: Overwrite
) -> None:
    storage = _linked_pair(tmp_path / "dest")
    target = tmp_path / "t"
    (target / "h").mkdir(parents=True)
    one, two = target / "h" / "one", target / "h" / "two"
    one.write_bytes(b"shared" * 10)
    os.utime(one, ns=(9, 9))  # another time: its content is compared
    result = restore(storage, PASSWORD, JOB, target, overwrite=mode)
    assert (result.kept, result.files, result.warnings) == (1, 1, ())
    assert two.stat().st_ino == one.stat().st_ino and one.stat().st_nlink == 2

    # again, on the whole group: nothing breaks it apart
    result = restore(storage, PASSWORD, JOB, target, overwrite=mode)
    assert result.complete and two.stat().st_ino == one.stat().st_ino
    assert one.stat().st_nlink == 2 and two.read_bytes() == b"shared" * 10

    # a name with other content is never linked to: the missing name is a file of its own
    two.unlink()
    os.unlink(one)
    one.write_bytes(b"SHARED" * 10)
    restore(storage, PASSWORD, JOB, target, overwrite=Overwrite.NEVER)
    assert two.read_bytes() == b"shared" * 10 and one.read_bytes() == b"SHARED" * 10
    assert two.stat().st_ino != one.stat().st_ino
