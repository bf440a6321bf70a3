"""Browsing snapshots without restoring them (issue 15, point 9), through the real CLI as
processes: real trees backed up by ``opencbs backup`` to a real ``opencbs serve``, then
``opencbs ls``, ``find``, ``diff`` and ``mount`` read the destination's repository (no server).

- ``ls`` lists what the source tree held: every path, type, mode, size and time; a folder and
  what it directly holds; a folder above the sources; a path the snapshot lacks (exit 4).
- ``find`` across three snapshots: which of them hold a matching path, with size and time.
- ``diff`` between two real snapshots equals the second job's report, list by list, as the
  server answers GetBackupJobReport (new, upd, pmt, del, mov, cpy), and the edits made.
- ``mount`` serves every snapshot through FUSE: folder listings, files byte for byte, link
  targets, modes and times, then ``fusermount3 -u`` ends it cleanly. A snapshot forgotten by
  another process while mounted is ``No such file or directory`` (said once, no traceback); a
  damaged pack fails a file's reads with ``EIO``, named once in the CLI's warning format. It
  runs wherever ``/dev/fuse`` and fuse3 are (``.ci/run`` installs fuse3); in CI it never
  skips. Where libfuse cannot be loaded, ``mount`` says so in one line and exits 7.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serving import OPENCBS, ok, run
from tests.e2e.test_agent_cli import (  # noqa: F401 (server: the module's fixture)
    Server,
    _report,
    _tree,
    server,
)

KEYS = ("new", "upd", "pmt", "del", "mov", "cpy")
IN_CI = os.environ.get("CI", "") not in ("", "false", "0")


def _backup(srv: Server, name: str, src: Path, dest: Path) -> dict[str, Any]:
    res = run(
        srv.env, "backup", "--set", name, "--source", str(src), "--destination", str(dest), "--json"
    )
    assert res.returncode == 0, res.stderr
    job: dict[str, Any] = json.loads(res.stdout)
    return job


def _json(env: dict[str, str], *args: str) -> Any:
    return json.loads(ok(env, *args, "--json"))


def _walk(root: Path) -> Iterator[Path]:
    """``root`` and every path under it."""
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _type(st: os.stat_result) -> str:
    return "D" if stat.S_ISDIR(st.st_mode) else "L" if stat.S_ISLNK(st.st_mode) else "F"


def _expected_rows(src: Path) -> dict[str, tuple[str, str, int, int]]:
    """What ``ls --json`` must say of each path of ``src``: type, mode, size, mtime_ns."""
    rows = {}
    for path in _walk(src):
        st = path.lstat()
        size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
        rows[str(path)] = (_type(st), f"{stat.S_IMODE(st.st_mode):04o}", size, st.st_mtime_ns)
    return rows


def test_ls_lists_the_source_tree(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    (src / "sub" / "deeper" / "more.txt").write_bytes(b"more\n")
    job = _backup(server, "browse-ls", src, dest)
    d = ("--destination", str(dest))

    listed = _json(server.env, "ls", job["snapshot_id"][:8], *d)
    rows = {r["path"]: (r["type"], r["mode"], r["size"], r["mtime_ns"]) for r in listed}
    assert rows == _expected_rows(src)
    link = next(r for r in listed if r["path"] == str(src / "link"))
    assert link["link_target"] == "a.txt"

    # a folder and what it directly holds (not deeper), by job ID
    sub = _json(server.env, "ls", job["job_id"], str(src / "sub"), *d)
    assert [r["path"] for r in sub] == [
        str(src / "sub"),
        str(src / "sub" / "b.txt"),
        str(src / "sub" / "deeper"),
        str(src / "sub" / "x.sh"),
    ]
    deep = _json(server.env, "ls", "latest", str(src / "sub"), "--recursive", *d)
    assert {r["path"] for r in deep} == {str(p) for p in _walk(src / "sub")}
    # a folder above the source (the snapshot has no entry of it) shows the source
    above = _json(server.env, "ls", "latest", str(tmp_path), *d)
    assert [r["path"] for r in above] == [str(src)]

    # the text lines: mode, size, time, path (and a link's target), with --long the owner
    lines = ok(server.env, "ls", "latest", str(src), *d).splitlines()
    st = (src / "a.txt").lstat()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(st.st_mtime))
    assert f"-rw-r--r--  {st.st_size:>12}  {when}  {src / 'a.txt'}" in lines
    assert any(line.endswith(f"{src / 'link'} -> a.txt") for line in lines)
    assert len(lines) == 1 + len(os.listdir(src))
    long = ok(server.env, "ls", "latest", str(src / "a.txt"), "-l", *d).split()
    assert long[:3] == ["-rw-r--r--", str(st.st_uid), str(st.st_gid)]

    res = run(server.env, "ls", "latest", str(src / "nothing-here"), *d)
    assert res.returncode == 4, res.stderr
    error, hint = res.stderr.strip().splitlines()
    assert error.startswith("opencbs: error: path ") and "not found in snapshot" in error
    assert hint.startswith("hint: ")
    assert f"opencbs ls {job['snapshot_id'][:8]} --destination {dest}" in hint


def test_find_says_which_snapshots_hold_a_path(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report-2024.txt").write_bytes(b"first year\n")
    (src / "notes.txt").write_bytes(b"notes\n")
    first = _backup(server, "browse-find", src, dest)
    (src / "docs" / "REPORT-2025.txt").write_bytes(b"second year, longer\n")
    second = _backup(server, "browse-find", src, dest)
    (src / "docs" / "report-2024.txt").unlink()
    third = _backup(server, "browse-find", src, dest)
    d = ("--destination", str(dest))

    found = _json(server.env, "find", "report-*", *d)
    held = [(r["snapshot_id"], Path(r["path"]).name, r["size"]) for r in found]
    assert held == [
        (first["snapshot_id"], "report-2024.txt", 11),
        (second["snapshot_id"], "report-2024.txt", 11),
    ]
    mtime = (src / "docs" / "REPORT-2025.txt").stat().st_mtime_ns
    folded = _json(server.env, "find", "report-*", "-i", *d)
    assert [(r["snapshot_id"], Path(r["path"]).name) for r in folded] == [
        (first["snapshot_id"], "report-2024.txt"),
        (second["snapshot_id"], "REPORT-2025.txt"),
        (second["snapshot_id"], "report-2024.txt"),
        (third["snapshot_id"], "REPORT-2025.txt"),
    ]
    assert [r["mtime_ns"] for r in folded if r["path"].endswith("2025.txt")] == [mtime] * 2
    # a pattern with a / is matched against the whole path; --snapshot narrows
    by_path = _json(server.env, "find", f"{src}/*.txt", "--snapshot", "latest", *d)
    assert [r["path"] for r in by_path] == [
        str(src / "docs" / "REPORT-2025.txt"),
        str(src / "notes.txt"),
    ]

    res = run(server.env, "find", "report-*", *d)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith(f"snapshot {first['snapshot_id'][:8]} of ")
    assert f"(job {first['job_id']}, set browse-find):" in out[0]
    assert out[1].strip().endswith(str(src / "docs" / "report-2024.txt"))
    assert len(out) == 4  # two snapshots, one match each
    assert "2 matches of report-* in 2 of 3 snapshots" in res.stderr
    none = run(server.env, "find", "*.pdf", *d)
    assert none.returncode == 0 and none.stdout == ""
    assert "0 matches of *.pdf in 3 snapshots" in none.stderr


def _edit(src: Path) -> None:
    """One change of each kind the report knows, made to the tree of ``_tree``."""
    (src / "new.txt").write_bytes(b"brand new\n")  # new
    (src / "a.txt").write_bytes(b"alpha changed\n")  # upd
    os.chmod(src / "sub" / "b.txt", 0o600)  # pmt
    (src / "sub" / "x.sh").unlink()  # del
    (src / "r.bin").rename(src / "moved.bin")  # mov
    shutil.copyfile(src / "sub" / "b.txt", src / "sub" / "b-copy.txt")  # cpy


def _report_lists(data: dict[str, Any]) -> dict[str, list[tuple[str, ...]]]:
    """A report's file lists as sorted tuples: (Type, path) and, for moves and copies,
    the source path."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for key in KEYS:
        rows = []
        for e in data[key]:
            if key == "mov":
                rows.append((e["Type"], e["ToFile"], e["FromFile"]))
            elif key == "cpy":
                rows.append((e["Type"], e["Name"], e["FromFile"]))
            else:
                rows.append((e["Type"], e["Name"]))
        out[key] = sorted(rows)
    return out


def _diff_lists(doc: dict[str, Any]) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {k: [] for k in KEYS}
    for c in doc["changes"]:
        row = (c["type"], c["path"])
        out[c["kind"]].append(row + ((c["from_path"],) if c["kind"] in ("mov", "cpy") else ()))
    return {k: sorted(v) for k, v in out.items()}


def test_diff_equals_the_job_report(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    first = _backup(server, "browse-diff", src, dest)
    _edit(src)
    second = _backup(server, "browse-diff", src, dest)
    d = ("--destination", str(dest))

    doc = _json(server.env, "diff", first["snapshot_id"], second["snapshot_id"][:10], *d)
    assert (doc["older"], doc["newer"]) == (first["snapshot_id"], second["snapshot_id"])
    lists = _diff_lists(doc)
    assert lists == _report_lists(_report(server, second))
    s = str(src)
    assert lists == {
        "new": [("F", f"{s}/new.txt")],
        "upd": [("F", f"{s}/a.txt")],
        "pmt": [("F", f"{s}/sub/b.txt")],
        "del": [("F", f"{s}/sub/x.sh")],
        "mov": [("F", f"{s}/moved.bin", f"{s}/r.bin")],
        "cpy": [("F", f"{s}/sub/b-copy.txt", f"{s}/sub/b.txt")],
    }
    assert doc["counts"] == dict.fromkeys(KEYS, 1)

    lines = ok(server.env, "diff", first["job_id"], "latest", *d).splitlines()
    assert lines == [
        f"updated     F  {s}/a.txt",
        f"moved       F  {s}/r.bin -> {s}/moved.bin",
        f"new         F  {s}/new.txt",
        f"copied      F  {s}/sub/b-copy.txt (from {s}/sub/b.txt)",
        f"permission  F  {s}/sub/b.txt",
        f"deleted     F  {s}/sub/x.sh",
        lines[-1],
    ]
    assert lines[-1].startswith("1 new, 1 updated, 1 permission, 1 deleted, 1 moved, 1 copied (")
    # the other way round: what the first job had that the second lost, and nothing moved back
    back = _diff_lists(_json(server.env, "diff", "latest", first["snapshot_id"], *d))
    assert back["del"] == [("F", f"{s}/new.txt"), ("F", f"{s}/sub/b-copy.txt")]
    assert back["mov"] == [("F", f"{s}/r.bin", f"{s}/moved.bin")]
    assert back["new"] == [("F", f"{s}/sub/x.sh")]


# -- mount ---------------------------------------------------------------------------------------


def _fuse_ready() -> str | None:
    """Why a mount cannot run here (None: it can)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (apt-get install fuse3)"
    return None


@pytest.fixture()
def fuse() -> None:
    why = _fuse_ready()
    if why is not None:
        if IN_CI:  # .ci/run installs fuse3: in CI a mount test never skips
            pytest.fail(f"FUSE is needed in CI: {why}")
        pytest.skip(why)


def _wait_mounted(mp: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not os.path.ismount(mp):
        if proc.poll() is not None:
            raise AssertionError(f"mount exited with {proc.returncode}: {proc.stderr}")
        assert time.monotonic() < deadline, "not mounted within 30 s"
        time.sleep(0.1)


def _same_files(source: Path, mounted: Path) -> None:
    """Every path of ``source`` at ``mounted`` with the same type, mode, size, mtime, content
    (byte for byte) or link target, and nothing else there."""
    names = {p.relative_to(source) for p in _walk(source)}
    assert {p.relative_to(mounted) for p in _walk(mounted)} == names
    for rel in names:
        a, b = source / rel, mounted / rel
        sa, sb = a.lstat(), b.lstat()
        assert (sa.st_mode, sa.st_mtime_ns) == (sb.st_mode, sb.st_mtime_ns), rel
        if stat.S_ISREG(sa.st_mode):
            assert sb.st_size == sa.st_size, rel
            assert b.read_bytes() == a.read_bytes(), rel
        elif stat.S_ISLNK(sa.st_mode):
            assert os.readlink(b) == os.readlink(a), rel


def test_mount_serves_every_snapshot(server: Server, tmp_path: Path, fuse: None) -> None:  # noqa: F811
    src, dest, mp = tmp_path / "src", tmp_path / "dest", tmp_path / "mnt"
    _tree(src)
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several chunks
    first = _backup(server, "browse-mount", src, dest)
    kept = tmp_path / "first-state"
    shutil.copytree(src, kept, symlinks=True)
    time.sleep(1.1)  # the second snapshot's folder is named by another second
    _edit(src)
    second = _backup(server, "browse-mount", src, dest)
    mp.mkdir()

    proc = subprocess.Popen(
        [OPENCBS, "mount", str(mp), "--destination", str(dest)],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_mounted(mp, proc)
        folders = sorted(os.listdir(mp / "snapshots"))
        assert len(folders) == 3 and folders[-1] == "latest", folders
        assert sorted(os.listdir(mp)) == ["ids", "snapshots"]
        assert os.readlink(mp / "snapshots" / "latest") == folders[1]
        ids = sorted(os.listdir(mp / "ids"))
        assert ids == sorted([first["snapshot_id"][:8], second["snapshot_id"][:8]])
        old = mp / "ids" / first["snapshot_id"][:8]
        assert os.readlink(old) == f"../snapshots/{folders[0]}"

        _same_files(src, mp / "snapshots" / "latest" / src.relative_to("/"))
        _same_files(kept, old / src.relative_to("/"))
        # a read in the middle of a file, across a chunk's end
        with open(mp / "snapshots" / "latest" / src.relative_to("/") / "big.bin", "rb") as f:
            f.seek(1_500_000)
            assert f.read(2_000_000) == (src / "big.bin").read_bytes()[1_500_000:3_500_000]
        # a second mount on top is refused
        again = run(server.env, "mount", str(mp), "--destination", str(dest))
        assert again.returncode == 2, again.stderr
        assert f"something is mounted at {mp} already" in again.stderr
        # read-only
        with pytest.raises(OSError):
            (mp / "snapshots" / "latest" / src.relative_to("/") / "a.txt").write_bytes(b"x")
    finally:
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", str(mp)], check=True, timeout=30)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert not os.path.ismount(mp) and os.listdir(mp) == []
    assert "serving 2 snapshots of " in err and f"fusermount3 -u {mp}" in err
    assert f"unmounted {mp}" in err

    # SIGTERM (as Ctrl-C) unmounts too and ends normally; the repository's lock is released
    proc = subprocess.Popen(
        [OPENCBS, "mount", str(mp), "--destination", str(dest)],
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_mounted(mp, proc)
        assert os.listdir(dest / "locks")  # held while mounted
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert not os.path.ismount(mp) and not os.listdir(dest / "locks")


def _stop_mount(mp: Path, proc: subprocess.Popen[str]) -> str:
    """Unmount ``mp`` and return the mount's stderr (it ended with exit code 0)."""
    if os.path.ismount(mp):
        subprocess.run(["fusermount3", "-u", str(mp)], check=True, timeout=30)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    assert proc.returncode == 0, err
    return err


def _damage_packs(dest: Path) -> int:
    """Flip bytes in the middle of every pack of ``dest`` (sizes kept); how many."""
    packs = [p for p in (dest / "data").rglob("*") if p.is_file()]
    for pack in packs:
        blob = bytearray(pack.read_bytes())
        for i in range(len(blob) // 4, len(blob) * 3 // 4, 97):
            blob[i] ^= 0xFF
        pack.write_bytes(bytes(blob))
    return len(packs)


def test_mount_outlives_a_forget_and_damage(server: Server, tmp_path: Path, fuse: None) -> None:  # noqa: F811
    src, dest, mp = tmp_path / "src", tmp_path / "dest", tmp_path / "mnt"
    _tree(src)
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    first = _backup(server, "browse-forget", src, dest)
    time.sleep(1.1)
    _edit(src)
    _backup(server, "browse-forget", src, dest)
    mp.mkdir()
    proc = subprocess.Popen(
        [OPENCBS, "mount", str(mp), "--destination", str(dest)],
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_mounted(mp, proc)
        short = first["snapshot_id"][:8]
        # forgotten by another process while mounted, before the mount looked into it
        ok(server.env, "forget", "--destination", str(dest), first["snapshot_id"])
        gone = subprocess.run(
            ["ls", "-R", f"{mp}/ids/{short}/"], capture_output=True, text=True, timeout=30
        )
        assert gone.returncode != 0
        assert "No such file or directory" in gone.stderr, gone.stderr
        assert "Invalid argument" not in gone.stderr
        assert short not in os.listdir(mp / "ids")  # it left the view
        assert len(os.listdir(mp / "snapshots")) == 2  # the other one and latest
        # the newest snapshot's tree is indexed; then every pack is damaged
        latest = mp / "snapshots" / "latest" / src.relative_to("/")
        assert "big.bin" in os.listdir(latest)
        assert _damage_packs(dest) > 0
        for _ in range(2):
            with pytest.raises(OSError) as caught:
                (latest / "big.bin").read_bytes()
            assert caught.value.errno == errno.EIO
    finally:
        err = _stop_mount(mp, proc)
    assert "Traceback" not in err and "ERROR fuse" not in err, err
    assert "Uncaught exception" not in err, err
    forgotten = [line for line in err.splitlines() if short in line]
    assert len(forgotten) == 1, err
    assert forgotten[0].startswith("opencbs: warning: snapshot ") and "forgotten" in forgotten[0]
    damaged = [line for line in err.splitlines() if "big.bin" in line]
    assert len(damaged) == 1, err
    assert damaged[0].startswith("opencbs: warning: cannot read ")
    # no raw log record: every line the mount wrote is the CLI's
    raw = [line for line in err.splitlines() if " WARNING " in line or " ERROR " in line]
    assert raw == [], err


def test_mount_without_fuse_says_so(server: Server, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "mnt").mkdir()
    env = {**server.env, "FUSE_LIBRARY_PATH": str(tmp_path / "no" / "libfuse3.so.3")}
    res = run(env, "mount", str(tmp_path / "mnt"), "--destination", str(tmp_path))
    assert res.returncode == 7, res.stderr
    error, hint = res.stderr.strip().splitlines()
    assert error.startswith("opencbs: error: FUSE is not available: ")
    assert hint.startswith("hint: install FUSE 3 (Debian/Ubuntu: apt-get install fuse3")
    res = run(server.env, "mount", str(tmp_path / "missing"), "--destination", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert "is not a folder" in res.stderr and "mkdir -p" in res.stderr
