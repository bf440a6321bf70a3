"""Restore on a hostile or untidy target (issue 11, finding 8): the target's own mode, owner and
times are left alone; owners and set-user-ID/set-group-ID/sticky bits only with
``same_owner`` (``--same-owner``); a path the target refuses is reported, counted and skipped
while the rest restores (exit code 10 through the real CLI); nothing is written outside the
target, whether the link in the way comes from the snapshot or was planted in the target.

Real backups (``run_backup`` against the app in process) where a real tree can hold the case;
snapshots committed by hand (``Repository.commit_snapshot``) where it cannot (a ``/`` entry, a
link followed by a file under it, ``..`` paths), always restored to real folders.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencbs.agent import AgentClient
from opencbs.agent import restore as restore_module
from opencbs.agent.job import run_backup
from opencbs.agent.restore import RestoreResult, restore
from opencbs.destinations.base import DestinationError
from opencbs.destinations.local import LocalStorage
from opencbs.engine.entries import Entry
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.errors import ExitCode
from opencbs.reports.vocabulary import EntryType, JobStatus
from tests.agent_support import PASSWORD, T0, job_options, local_storage, new_set
from tests.e2e.serving import OPENCBS, TIMEOUT, isolated_env

ROOT = os.geteuid() == 0
MTIME = 1_600_000_000_000_000_000


def _backup(agent: AgentClient, src: Path, dest: Path) -> tuple[LocalStorage, str]:
    """A real backup job of ``src`` into a new local destination ``dest``: (storage, job ID)."""
    storage = local_storage(dest)
    set_id, dest_id = new_set(agent, src, dest)
    outcome = run_backup(job_options(agent, set_id, dest_id, storage, start_time_ms=T0))
    assert outcome.status is JobStatus.STOP_SUCCESS, outcome
    return storage, outcome.ref.job_id


def _entry(path: bytes, etype: EntryType, mode: int, **more: object) -> Entry:
    fields: dict[str, object] = dict(
        path=path,
        etype=etype,
        size=0,
        mtime_ns=MTIME,
        ctime_ns=MTIME,
        mode=mode,
        uid=os.geteuid(),
        gid=os.getegid(),
        inode=1,
        device=1,
    )
    fields.update(more)
    return Entry(**fields)  # type: ignore[arg-type]


def _crafted(
    dest: Path, entries: list[tuple[bytes, EntryType, int, bytes]], *, root_uid: int | None = None
) -> LocalStorage:
    """A repository in ``dest`` with one snapshot (job ``2026-01-02-03-04-05``) of
    ``(path, type, mode, content or link target)`` entries, in that order; ``root_uid``: the
    owner (uid and gid) of the ``/`` entry (default the current user)."""
    storage = local_storage(dest)
    repo = Repository.open(storage, PASSWORD)
    items: list[tuple[Entry, tuple[bytes, ...]]] = []
    with repo.writer() as w:
        for path, etype, mode, data in entries:
            if etype is EntryType.FILE:
                r = w.add_file(io.BytesIO(data))
                entry = _entry(path, etype, mode, size=len(data), content_id=r.content_id)
                items.append((entry, r.chunk_ids))
            elif etype is EntryType.LINK:
                items.append((_entry(path, etype, mode, size=len(data), link_target=data), ()))
            elif path == b"/" and root_uid is not None:
                items.append((_entry(path, etype, mode, uid=root_uid, gid=root_uid), ()))
            else:
                items.append((_entry(path, etype, mode), ()))
    meta = SnapshotMeta(MTIME, "1", "2", "2026-01-02-03-04-05", "host", (b"/",))
    repo.commit_snapshot(meta, items)
    return storage


def _files(root: Path) -> dict[str, bytes | str]:
    """Every path below ``root``: a file's bytes, ``"dir"`` or ``"-> target"``."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


# --- the target itself ------------------------------------------------------------------------


def test_the_targets_times_stay_what_they_were(tmp_path: Path) -> None:
    """Creating the restored entries in the target changes its mtime; the restore puts the
    target's own times back (README: DIR's own mode, owner and times are left alone)."""
    storage = _crafted(
        tmp_path / "dest",
        [(b"/a", EntryType.DIRECTORY, 0o40750, b""), (b"/a/f", EntryType.FILE, 0o100640, b"x")],
        root_uid=0,
    )
    target = tmp_path / "target"
    target.mkdir()
    os.utime(target, ns=(MTIME + 5, MTIME + 7))
    restore(storage, PASSWORD, "2026-01-02-03-04-05", target)
    assert (target / "a" / "f").read_bytes() == b"x"
    assert os.stat(target).st_mtime_ns == MTIME + 7


@pytest.mark.parametrize("same_owner", [False, True])
def test_a_root_entry_leaves_the_target_alone(tmp_path: Path, *, same_owner: bool) -> None:
    # a foreign owner for "/": as root, a chown of the target to it would succeed
    storage = _crafted(
        tmp_path / "dest",
        [
            (b"/", EntryType.DIRECTORY, 0o40755 | stat.S_ISVTX, b""),
            (b"/a", EntryType.DIRECTORY, 0o40750, b""),
            (b"/a/f", EntryType.FILE, 0o100640, b"inside"),
        ],
        root_uid=4321 if ROOT else 0,
    )
    repo = Repository.open(storage, PASSWORD)
    [info] = repo.list_snapshots()
    assert next(iter(repo.load_snapshot(info.id)[1]))[0].path == b"/"
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    (target / "a").mkdir()  # so that restoring touches no entry of the target itself
    os.chmod(target, 0o700)
    os.utime(target, ns=(MTIME + 5, MTIME + 7))
    before = os.stat(target)

    result = restore(storage, PASSWORD, "2026-01-02-03-04-05", target, same_owner=same_owner)

    after = os.stat(target)
    assert stat.S_IMODE(after.st_mode) == 0o700
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_mtime_ns == before.st_mtime_ns == MTIME + 7
    assert stat.S_IMODE(os.stat(target / "a").st_mode) == 0o750  # the entries below: restored
    assert (target / "a" / "f").read_bytes() == b"inside"
    assert result.complete and (result.files, result.dirs) == (1, 2)


def test_a_root_entry_that_is_not_a_directory_is_skipped(tmp_path: Path) -> None:
    storage = _crafted(
        tmp_path / "dest",
        [
            (b"/", EntryType.FILE, 0o100644, b"not a folder"),
            (b"/ok", EntryType.FILE, 0o100644, b"y"),
        ],
    )
    target = tmp_path / "target"
    result = restore(storage, PASSWORD, "2026-01-02-03-04-05", target)
    assert result.skipped == ("/",) and result.files == 1
    assert _files(target) == {"ok": b"y"}


# --- owners and special bits ------------------------------------------------------------------


@pytest.fixture
def special_src(tmp_path: Path) -> Path:
    """A set-user-ID program, a set-group-ID + sticky folder and a plain file; owned by
    1234:5678 when running as root (else by the current user, which may set those bits)."""
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "shared" / "plain.txt").write_bytes(b"plain")
    owner = (1234, 5678) if ROOT else (os.geteuid(), os.getegid())
    for p in (src / "run.sh", src / "shared", src / "shared" / "plain.txt"):
        os.chown(p, *owner)
    (src / "run.sh").chmod(0o4755)
    (src / "shared").chmod(0o3775)
    (src / "shared" / "plain.txt").chmod(0o640)
    return src


def test_special_bits_and_owners_are_dropped_by_default(
    agent: AgentClient, special_src: Path, tmp_path: Path
) -> None:
    storage, job = _backup(agent, special_src, tmp_path / "dest")
    target = tmp_path / "target"
    assert restore(storage, PASSWORD, job, target).complete
    out = target / special_src.relative_to("/")
    me = (os.geteuid(), os.getegid())
    modes = {}
    for name in ("run.sh", "shared", "shared/plain.txt"):
        st = os.lstat(out / name)
        assert (st.st_uid, st.st_gid) == me, name  # whoever restores, root included
        modes[name] = stat.S_IMODE(st.st_mode)
    assert modes == {"run.sh": 0o755, "shared": 0o775, "shared/plain.txt": 0o640}
    assert (out / "run.sh").read_bytes() == (special_src / "run.sh").read_bytes()


def test_same_owner_restores_owners_and_special_bits(
    agent: AgentClient, special_src: Path, tmp_path: Path
) -> None:
    storage, job = _backup(agent, special_src, tmp_path / "dest")
    target = tmp_path / "target"
    assert restore(storage, PASSWORD, job, target, same_owner=True).complete
    out = target / special_src.relative_to("/")
    for name in ("run.sh", "shared", "shared/plain.txt"):
        want, got = os.lstat(special_src / name), os.lstat(out / name)
        assert (got.st_uid, got.st_gid) == (want.st_uid, want.st_gid), name
        assert stat.S_IMODE(got.st_mode) == stat.S_IMODE(want.st_mode), name
    assert stat.S_IMODE(os.stat(out / "run.sh").st_mode) == 0o4755


# --- paths the target refuses -----------------------------------------------------------------


@pytest.fixture
def plain_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha" * 1000)
    (src / "sub" / "b.txt").write_bytes(os.urandom(300_000))
    (src / "c.txt").write_bytes(b"gamma")
    os.symlink("c.txt", src / "link")
    return src


def _in_the_way(out: Path) -> None:
    """Folders (with content) where the snapshot has the file ``a.txt`` and the link ``link``."""
    for name in ("a.txt", "link"):
        (out / name).mkdir(parents=True)
        (out / name / "keep").write_bytes(b"mine")


def test_a_folder_in_the_way_is_reported_and_the_rest_restores(
    agent: AgentClient, plain_src: Path, tmp_path: Path
) -> None:
    storage, job = _backup(agent, plain_src, tmp_path / "dest")
    target = tmp_path / "target"
    out = target / plain_src.relative_to("/")
    _in_the_way(out)
    result = restore(storage, PASSWORD, job, target)  # strict: still no exception
    assert not result.complete and result.damaged == ()
    assert result.failed_count == 2
    assert {f.path: f.reason for f in result.failed} == {
        str(plain_src / "a.txt"): "a directory exists where a file belongs",
        str(plain_src / "link"): "a directory exists where a file belongs",
    }
    assert (result.files, result.links) == (2, 0)
    assert (out / "sub" / "b.txt").read_bytes() == (plain_src / "sub" / "b.txt").read_bytes()
    assert (out / "c.txt").read_bytes() == b"gamma"
    assert (out / "a.txt" / "keep").read_bytes() == b"mine"  # what was in the way: untouched


def test_the_list_of_refused_paths_is_bounded(
    agent: AgentClient, plain_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_module, "FAILED_LISTED", 1)
    storage, job = _backup(agent, plain_src, tmp_path / "dest")
    target = tmp_path / "target"
    _in_the_way(target / plain_src.relative_to("/"))
    result = restore(storage, PASSWORD, job, target)
    assert result.failed_count == 2 and len(result.failed) == 1


def _cli_restore(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = isolated_env(tmp_path / "cli", OPENCBS_ENCRYPTION_PASSWORD=PASSWORD)
    return subprocess.run(
        [OPENCBS, "restore", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )


def test_cli_reports_each_refused_path_and_exits_incomplete(
    agent: AgentClient, plain_src: Path, tmp_path: Path
) -> None:
    _, job = _backup(agent, plain_src, tmp_path / "dest")
    target = tmp_path / "target"
    out = target / plain_src.relative_to("/")
    _in_the_way(out)
    args = (job, "--destination", str(tmp_path / "dest"), "--target", str(target))

    res = _cli_restore(tmp_path, *args)
    assert res.returncode == ExitCode.INCOMPLETE == 10, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    warnings = [line for line in res.stderr.splitlines() if "opencbs: warning:" in line]
    assert warnings == [
        f"opencbs: warning: cannot restore {plain_src / name}: "
        "a directory exists where a file belongs"
        for name in ("a.txt", "link")
    ]
    assert ", 2 paths not restored" in res.stdout
    last = res.stderr.strip().splitlines()[-2:]
    assert last[0].startswith("opencbs: error: restore incomplete: 2 paths not restored")
    assert last[1].startswith("hint: ")
    assert (out / "sub" / "b.txt").read_bytes() == (plain_src / "sub" / "b.txt").read_bytes()
    assert (out / "c.txt").read_bytes() == b"gamma"

    res = _cli_restore(tmp_path, *args, "--json", "--overwrite", "always")
    assert res.returncode == 10, res.stderr
    doc = json.loads(res.stdout)
    assert doc["failed_count"] == 2 and doc["complete"] is False
    assert [f["path"] for f in doc["failed"]] == [str(plain_src / "a.txt"), str(plain_src / "link")]
    assert doc["files"] == 2 and doc["damaged"] == []

    # the paths cleared, restoring just those again completes
    for name in ("a.txt", "link"):
        (out / name / "keep").unlink()
        (out / name).rmdir()
    res = _cli_restore(
        tmp_path, *args, "--path", str(plain_src / "a.txt"), "--path", str(plain_src / "link")
    )
    assert res.returncode == 0, res.stderr
    assert (out / "a.txt").read_bytes() == b"alpha" * 1000
    assert os.readlink(out / "link") == "c.txt"


def test_cli_damage_wins_over_refused_paths(
    agent: AgentClient, plain_src: Path, tmp_path: Path
) -> None:
    """Damaged contents keep their stronger answer (exit code 8, an error naming the damaged
    file); the refused path is still named in a warning and listed in the document."""
    _, job = _backup(agent, plain_src, tmp_path / "dest")
    packs = [p for p in (tmp_path / "dest" / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)  # the one holding sub/b.txt
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))
    target = tmp_path / "target"
    out = target / plain_src.relative_to("/")
    _in_the_way(out)
    res = _cli_restore(
        tmp_path, job, "--destination", str(tmp_path / "dest"), "--target", str(target), "--json"
    )
    assert res.returncode == ExitCode.REFUSED == 8, res.stderr
    doc = json.loads(res.stdout)
    assert [d["path"] for d in doc["damaged"]] == [str(plain_src / "sub" / "b.txt")]
    assert doc["failed_count"] == 2 and doc["complete"] is False
    assert f"opencbs: warning: cannot restore {plain_src / 'a.txt'}: " in res.stderr
    assert "opencbs: error: Restore incomplete: " in res.stderr
    assert not (out / "sub" / "b.txt").exists()  # no wrong content left
    assert (out / "c.txt").read_bytes() == b"gamma"


def test_cli_same_owner_flag(agent: AgentClient, special_src: Path, tmp_path: Path) -> None:
    _, job = _backup(agent, special_src, tmp_path / "dest")
    for flag, mode in (((), 0o755), (("--same-owner",), 0o4755)):
        target = tmp_path / f"target{len(flag)}"
        res = _cli_restore(
            tmp_path, job, "--destination", str(tmp_path / "dest"), "--target", str(target), *flag
        )
        assert res.returncode == 0, res.stderr
        st = os.lstat(target / special_src.relative_to("/") / "run.sh")
        assert stat.S_IMODE(st.st_mode) == mode
        want = os.lstat(special_src / "run.sh")
        owner = (want.st_uid, want.st_gid) if flag else (os.geteuid(), os.getegid())
        assert (st.st_uid, st.st_gid) == owner


# --- nothing outside the target ---------------------------------------------------------------


def test_a_link_in_the_snapshot_is_not_followed_by_what_comes_after(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"untouched")
    storage = _crafted(
        tmp_path / "dest",
        [
            (b"/a", EntryType.LINK, 0o120777, os.fsencode(outside)),
            (b"/a/x", EntryType.FILE, 0o100644, b"x content"),
            (b"/a/victim", EntryType.FILE, 0o100644, b"overwritten?"),
            (b"/v", EntryType.LINK, 0o120777, os.fsencode(outside / "victim")),
            (b"/v", EntryType.FILE, 0o100644, b"through the link?"),
            (b"/../escape", EntryType.FILE, 0o100644, b"up"),
            (b"/b/../../escape2", EntryType.FILE, 0o100644, b"up"),
        ],
    )
    target = tmp_path / "target"
    result = restore(storage, PASSWORD, "2026-01-02-03-04-05", target)
    assert _files(outside) == {"victim": b"untouched"}
    assert not (tmp_path / "escape").exists() and not (tmp_path / "escape2").exists()
    assert _files(target) == {
        "a": "dir",  # the link was replaced by a folder, inside the target
        "a/victim": b"overwritten?",
        "a/x": b"x content",
        "v": b"through the link?",
    }
    assert set(result.skipped) == {"/../escape", "/b/../../escape2"}


def test_links_planted_in_the_target_are_never_followed(
    agent: AgentClient, plain_src: Path, tmp_path: Path
) -> None:
    storage, job = _backup(agent, plain_src, tmp_path / "dest")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"untouched")
    target = tmp_path / "target"
    out = target / plain_src.relative_to("/")
    out.mkdir(parents=True)
    os.symlink(outside / "victim", out / "a.txt")  # a file's name: the link, to a file
    os.symlink(outside, out / "sub")  # a folder's name: the link, to a folder
    result = restore(storage, PASSWORD, job, target, same_owner=True)
    assert result.complete, result
    assert _files(outside) == {"victim": b"untouched"}
    assert not (out / "a.txt").is_symlink() and (out / "a.txt").read_bytes() == b"alpha" * 1000
    assert not (out / "sub").is_symlink()
    assert (out / "sub" / "b.txt").read_bytes() == (plain_src / "sub" / "b.txt").read_bytes()


def test_a_planted_target_component_link_is_not_followed(
    agent: AgentClient, plain_src: Path, tmp_path: Path
) -> None:
    """A link planted higher up (the first component below the target) points outside."""
    storage, job = _backup(agent, plain_src, tmp_path / "dest")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    first = plain_src.relative_to("/").parts[0]
    os.symlink(outside, target / first)
    result: RestoreResult = restore(storage, PASSWORD, job, target)
    assert result.complete
    assert _files(outside) == {}
    assert (target / plain_src.relative_to("/") / "c.txt").read_bytes() == b"gamma"


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_link_planted_during_the_restore_is_not_written_through(
    agent: AgentClient,
    plain_src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """The race: a link planted at a file's name after the restore cleared the name and before
    it creates the file (simulated by planting it right after the clearing step)."""
    storage, job = _backup(agent, plain_src, tmp_path / "dest")
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    victim.write_bytes(b"untouched")
    clear = restore_module._remove_non_dir

    def clear_then_plant(dfd: int, name: bytes) -> None:
        clear(dfd, name)
        if name == b"a.txt":
            if kind == "symlink":
                os.symlink(victim, name, dir_fd=dfd)
            else:
                os.link(victim, name, dst_dir_fd=dfd)

    monkeypatch.setattr(restore_module, "_remove_non_dir", clear_then_plant)
    result = restore(storage, PASSWORD, job, tmp_path / "target")
    assert victim.read_bytes() == b"untouched"
    assert [f.path for f in result.failed] == [str(plain_src / "a.txt")]
    assert result.failed[0].reason == "file exists"
    assert result.files == 2  # the others restored


# --- as an unprivileged user: permission denied, owners refused --------------------------------

NOBODY = 65534


def _restore_as_nobody(dest: Path, job: str, target: Path, *, same_owner: bool) -> dict[str, Any]:
    """Restore in a child process that dropped to uid/gid ``NOBODY`` (forked: the interpreter
    need not be reachable by that user); the result's fields, or ``{"error": ...}``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            r = restore(LocalStorage(dest), PASSWORD, job, target, same_owner=same_owner)
            doc: dict[str, Any] = {
                "files": r.files,
                "failed": {f.path: f.reason for f in r.failed},
                "count": r.failed_count,
            }
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            doc, code = {"error": repr(exc)}, 1
        os.write(write, json.dumps(doc).encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    answer: dict[str, Any] = json.loads(out)
    return answer


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder that user ``NOBODY`` can reach (``tmp_path``'s parents are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="opencbs-restore-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not ROOT, reason="dropping to another user needs root")
def test_unprivileged_restore_reports_denied_paths_and_refused_owners(
    agent: AgentClient, tmp_path: Path, shared_dir: Path
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "mine.sh").write_bytes(b"#!/bin/sh\n")
    (src / "sub" / "b.txt").write_bytes(b"bee")
    (src / "roots.sh").write_bytes(b"#!/bin/sh\nid\n")
    for p in (src, src / "sub", src / "sub" / "b.txt", src / "mine.sh"):
        os.chown(p, NOBODY, NOBODY)
    (src / "mine.sh").chmod(0o4755)  # nobody's own set-user-ID file
    (src / "roots.sh").chmod(0o4755)  # root's: an unprivileged restore must not make it so
    _, job = _backup(agent, src, tmp_path / "dest")
    dest = shared_dir / "dest"
    shutil.copytree(tmp_path / "dest", dest)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
    rel = src.relative_to("/")

    # default: a folder of root's in the way (permission denied); the rest restores
    denied = shared_dir / "t1"
    (denied / rel / "sub").mkdir(parents=True)
    for p in [denied, *(denied / rel).parents, denied / rel]:
        if p.is_relative_to(denied):
            os.chown(p, NOBODY, NOBODY)
    got = _restore_as_nobody(dest, job, denied, same_owner=False)
    assert got["failed"] == {
        str(src / "sub" / "b.txt"): "permission denied",
        str(src / "sub"): "operation not permitted",  # its mode: not nobody's folder
    }, got
    assert got["count"] == 2 and got["files"] == 2
    assert stat.S_IMODE(os.stat(denied / rel / "roots.sh").st_mode) == 0o755
    assert os.stat(denied / rel / "roots.sh").st_uid == NOBODY

    # --same-owner: nobody's own files get their bits; root's owner is refused and reported
    asked = shared_dir / "t2"
    asked.mkdir()
    os.chown(asked, NOBODY, NOBODY)
    got = _restore_as_nobody(dest, job, asked, same_owner=True)
    assert got["failed"] == {str(src / "roots.sh"): "cannot set owner 0:0: operation not permitted"}
    mine, roots = os.stat(asked / rel / "mine.sh"), os.stat(asked / rel / "roots.sh")
    assert (mine.st_uid, stat.S_IMODE(mine.st_mode)) == (NOBODY, 0o4755)
    assert (roots.st_uid, stat.S_IMODE(roots.st_mode)) == (NOBODY, 0o755)  # no set-user-ID
    assert (asked / rel / "roots.sh").read_bytes() == b"#!/bin/sh\nid\n"


class _GoneMidway(LocalStorage):
    """A destination that goes away (``DestinationError``) after ``reads`` ranged reads: an S3
    server killed during a restore."""

    reads = 1

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if name.startswith("data/"):
            if type(self).reads == 0:
                raise DestinationError("Cannot reach the S3 server (test)")
            type(self).reads -= 1
        return super().get_range(name, offset, length)


def test_a_destination_lost_mid_file_leaves_no_cut_off_file(tmp_path: Path) -> None:
    """The review of issue 13: a restore whose destination failed mid-file left the file,
    cut off, under its real name. Nothing partly written stays now."""
    big = os.urandom(3 * 1024 * 1024)  # several chunks, read one by one
    storage = _crafted(
        tmp_path / "dest",
        [(b"/big", EntryType.FILE, 0o100644, big)],
    )
    gone = _GoneMidway(storage.root, fsync=False)
    target = tmp_path / "target"
    with pytest.raises(DestinationError):
        restore(gone, PASSWORD, "2026-01-02-03-04-05", target)
    assert not (target / "big").exists()
