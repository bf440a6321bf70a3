"""The agent's commands as real processes against a real ``opencbs serve``: backup, snapshots,
verify (clean and after a flipped byte), restore to an identical tree, SIGTERM during a backup
(``BS_STOP_BY_USER``), and one-line errors with a hint — also for a job whose destination
fails, a restore that fails (creating nothing) and a bad destination on first use (no set left
on the server)."""

from __future__ import annotations

import filecmp
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.filesize import decimal

from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from tests.e2e.serving import (
    OPENCBS,
    TIMEOUT,
    add_sysuser,
    add_user,
    agent_env,
    free_port,
    isolated_env,
    ok,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "alice", "alice-pw", "repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]  # the agent's environment: server, login, passwords


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("agent-cli")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env) as srv:
        yield Server(
            srv.url,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
        )


def _report(srv: Server, job: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(
        srv.url + "/obs/api/json/GetBackupJobReport.do",
        timeout=30,
        json={
            **MONITOR,
            "LoginName": LOGIN,
            "BackupSetID": job["backup_set_id"],
            "DestinationID": job["destination_id"],
            "BackupJobID": job["job_id"],
        },
    )
    answer: dict[str, Any] = r.json()
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n" * 100)
    (root / "r.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "b.txt").write_bytes(b"beta")
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / "sub" / "x.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "sub" / "x.sh", 0o750)
    os.symlink("a.txt", root / "link")


def _same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files), (
        cmp.left_only,
        cmp.right_only,
        cmp.diff_files,
    )
    for name in cmp.common_files:
        sa, sb = (a / name).lstat(), (b / name).lstat()
        assert (sa.st_mode, sa.st_mtime_ns) == (sb.st_mode, sb.st_mtime_ns), name
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    for name in cmp.common_dirs:
        _same_tree(a / name, b / name)


def test_backup_snapshots_verify_restore(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    res = run(
        server.env,
        "backup",
        "--set",
        "docs",
        "--source",
        str(src),
        "--destination",
        str(dest),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_SUCCESS"
    assert job["counts"]["new"] == 9  # 3 directories (the source too), 5 files, 1 link
    data = _report(server, job)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert data["NumOfNewFiles"] == 5 and data["NumOfNewLinkFileCount"] == 1

    # a second job by set name, scheduled, verbose: one change, with its reason
    (src / "sub" / "b.txt").write_bytes(b"beta, longer")
    again = run(server.env, "backup", "--set", "docs", "--scheduled", "--verbose")
    assert again.returncode == 0, again.stderr
    assert f"upd {src / 'sub' / 'b.txt'}: " in again.stdout
    assert "content hash differs" in again.stdout

    listed = json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json"))
    assert [s["job_id"] for s in listed][0] == job["job_id"] and len(listed) == 2
    assert listed[0]["id"] == job["snapshot_id"] and listed[0]["sources"] == [str(src)]
    assert listed[0]["backup_set_id"] == job["backup_set_id"]

    checked = run(server.env, "verify", "--destination", str(dest), "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("ok: 2 snapshots")

    target = tmp_path / "restored"
    ok(
        server.env,
        "restore",
        listed[1]["job_id"],
        "--destination",
        str(dest),
        "--target",
        str(target),
    )
    _same_tree(src, target / src.relative_to("/"))


def test_verify_names_a_flipped_byte(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    ok(server.env, "backup", "--set", "flip", "--source", str(src), "--destination", str(dest))
    packs = sorted((dest / "data").rglob("*"), key=lambda p: p.stat().st_size)
    pack = [p for p in packs if p.is_file()][-1]  # the largest: file content
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))
    res = run(server.env, "verify", "--destination", str(dest), "--read-data")
    assert res.returncode == 8, res.stdout + res.stderr
    assert "damaged: " in res.stdout
    assert pack.name in res.stdout
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-2].startswith("opencbs: error: ")


def test_sigterm_stops_the_job_cleanly(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "big", tmp_path / "dest"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:03}.bin").write_bytes(os.urandom(1 << 20))
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", "big", "--source", str(src), "--destination", str(dest)],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        # "started" (progress, plain lines) is printed once SIGTERM stops the job cleanly, and
        # before the 40 MiB are read
        for line in proc.stderr:
            if "backup big: started" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "backup big: stopped" in err and "done:" not in err, err
    m = re.search(
        r"^job (\S+): BS_STOP_BY_USER\nset big \((\d+)\), destination Local \((\d+)\)$",
        out,
        re.MULTILINE,
    )
    assert m is not None, out
    assert "snapshot " not in out
    job = {"job_id": m[1], "backup_set_id": m[2], "destination_id": m[3]}
    assert _report(server, job)["BackupJobStatus"] == "BS_STOP_BY_USER"
    # the repository stays consistent, with no snapshot
    assert run(server.env, "verify", "--destination", str(dest)).returncode == 0
    assert run(server.env, "snapshots", "--destination", str(dest), "--json").stdout.strip() == "[]"


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("opencbs: error: ") and text in lines[0], lines[0]
    assert lines[1].startswith("hint: ")


def test_errors_are_one_line_with_a_hint(server: Server, tmp_path: Path) -> None:
    wrong = {**server.env, "OPENCBS_PASSWORD": "nope"}
    _one_line_error(run(wrong, "backup", "--set", "docs"), 3, "rejected backup user 'alice'")
    # (a fresh data directory: no backup sets remembered from earlier runs to back up with)
    down = {
        **server.env,
        "OPENCBS_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "OPENCBS_DATA_DIR": str(tmp_path / "fresh"),
    }
    _one_line_error(run(down, "backup", "--set", "docs"), 7, "cannot reach the server at")
    _one_line_error(run(server.env, "backup", "--set", "nosuch"), 4, "no backup set 'nosuch'")
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    ok(server.env, "backup", "--set", "pw", "--source", str(src), "--destination", str(dest))
    bad_key = {**server.env, "OPENCBS_ENCRYPTION_PASSWORD": "wrong"}
    _one_line_error(
        run(bad_key, "snapshots", "--destination", str(dest)), 3, "Wrong encryption password"
    )
    no_pw = {k: v for k, v in server.env.items() if k != "OPENCBS_PASSWORD"}
    _one_line_error(run(no_pw, "backup", "--set", "docs"), 2, "no password")


def test_restore_by_id_prefix_display_path_and_clear_errors(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    odd = os.fsencode(src) + b"/caf\xe9 \\x.txt"  # not UTF-8, and a literal backslash
    with open(odd, "wb") as f:
        f.write(b"odd\n")
    ok(server.env, "backup", "--set", "prefix", "--source", str(src), "--destination", str(dest))
    table = ok(server.env, "snapshots", "--destination", str(dest))
    (full,) = [
        s["id"]
        for s in json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json"))
    ]
    assert full[:8] in table  # the table shows 8 characters: they restore
    shown = f"{src}/caf\\xe9 \\\\x.txt"  # as the report shows it (display_path)

    target = tmp_path / "t1"
    out = ok(
        server.env,
        "restore",
        full[:16],
        "--destination",
        str(dest),
        "--target",
        str(target),
        "--path",
        shown,
    )
    assert full in out
    restored = os.fsencode(target) + odd
    with open(restored, "rb") as f:
        assert f.read() == b"odd\n"
    assert not (target / src.relative_to("/") / "a.txt").exists()  # only that path

    raw = subprocess.run(
        [
            os.fsencode(OPENCBS),
            b"restore",
            full[:8].encode(),
            b"--destination",
            os.fsencode(dest),
            b"--target",
            os.fsencode(tmp_path / "t2"),
            b"--path",
            odd,
        ],
        env=server.env,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert raw.returncode == 0, raw.stderr
    assert os.path.exists(os.fsencode(tmp_path / "t2") + odd)

    base = ["restore", full[:16], "--destination", str(dest)]
    _one_line_error(
        run(server.env, *base, "--target", "/proc/nope"), 7, "cannot create target /proc/nope"
    )
    _one_line_error(run(server.env, *base, "--target", ""), 2, "--target must not be empty")
    _one_line_error(
        run(server.env, *base, "--target", str(tmp_path / "t3"), "--path", str(src / "nosuch")),
        4,
        f"path {src / 'nosuch'} not found in snapshot {full[:16]}",
    )
    missing = run(
        server.env,
        "restore",
        "0123abcd",
        "--destination",
        str(dest),
        "--target",
        str(tmp_path / "t4"),
    )
    assert missing.returncode == 4, missing.stderr
    assert missing.stderr.splitlines()[-2] == "opencbs: error: Snapshot 0123abcd not found"
    assert "opencbs snapshots --destination" in missing.stderr.splitlines()[-1]


def test_verbose_names_reach_the_terminal_escaped(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    evil = "title\x1b]0;pwned\x07\nupd passwd: fake"
    (src / evil).write_bytes(b"x")
    res = run(
        server.env,
        "backup",
        "--set",
        "evil",
        "--source",
        str(src),
        "--destination",
        str(dest),
        "--verbose",
    )
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout + res.stderr and "\x07" not in res.stdout + res.stderr
    assert not [line for line in res.stdout.splitlines() if line.startswith("upd passwd")]
    assert f"new {src}/title\\x1b]0;pwned\\x07\\nupd passwd: fake: " in res.stdout


def test_existing_set_destination_and_filters_are_never_silently_changed(
    server: Server, tmp_path: Path
) -> None:
    src, one, two = tmp_path / "src", tmp_path / "one", tmp_path / "two"
    _tree(src)
    first = json.loads(
        ok(
            server.env,
            "backup",
            "--set",
            "dests",
            "--source",
            str(src),
            "--destination",
            str(one),
            "--exclude",
            "*.bin",
            "--json",
        )
    )
    _one_line_error(
        run(server.env, "backup", "--set", "dests", "--destination", str(two)),
        2,
        f"backup set 'dests' has no destination {two} (it has: {one})",
    )
    assert not two.exists()
    _one_line_error(
        run(server.env, "backup", "--set", "dests", "--exclude", "*.txt"),
        2,
        "--exclude/--include only apply when a set is created",
    )
    refused = run(server.env, "backup", "--set", "dests", "--include", "*.txt")
    _one_line_error(refused, 2, "exclude *.bin; include (none)")

    added = json.loads(
        ok(server.env, "backup", "--set", "dests", "--add-destination", str(two), "--json")
    )
    assert added["destination_id"] != first["destination_id"]
    assert added["counts"]["new"] == first["counts"]["new"]  # a full backup there
    again = json.loads(
        ok(server.env, "backup", "--set", "dests", "--destination", str(two), "--json")
    )
    assert again["destination_id"] == added["destination_id"]
    assert again["counts"]["new"] == 0
    back = json.loads(
        ok(server.env, "backup", "--set", "dests", "--destination", str(one), "--json")
    )
    assert back["destination_id"] == first["destination_id"] and back["counts"]["new"] == 0


def test_encryption_password_file_errors_say_what_is_wrong(server: Server, tmp_path: Path) -> None:
    base = ["snapshots", "--destination", str(tmp_path), "--encryption-password-file"]
    missing = run(server.env, *base, str(tmp_path / "nonexistent"))
    _one_line_error(missing, 2, f"{tmp_path / 'nonexistent'}: no such file or directory")
    assert "is a directory" not in missing.stderr and "Errno" not in missing.stderr
    empty = run(server.env, *base, "")
    _one_line_error(empty, 2, "must not be empty")
    assert "is a directory" not in empty.stderr
    blank = tmp_path / "blank"
    blank.write_text("\n")
    no_pw = run(server.env, *base, str(blank))
    _one_line_error(no_pw, 2, f"the encryption password file {blank} is empty")
    assert no_pw.stderr.splitlines()[1] == (
        "hint: write the repository's encryption password on its first line (no blank line "
        "before it)"
    )


def test_restore_json_and_plain_progress_lines(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    job = json.loads(
        ok(
            server.env,
            "backup",
            "--set",
            "restore-json",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())

    # --json: one document on stdout, no progress on stderr
    res = run(
        server.env,
        "restore",
        job["job_id"],
        "--destination",
        str(dest),
        "--target",
        str(tmp_path / "t1"),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", doc.pop("restore_job_id"))
    assert doc == {
        "snapshot_id": job["snapshot_id"],
        "files": 5,
        "dirs": 3,
        "links": 1,
        "bytes": size,
        "kept": 0,
        "blocked": 0,
        "skipped": [],
        "warnings": [],
        "damaged": [],
        "failed_count": 0,
        "failed": [],
        "complete": True,
        "report_delivered": True,
    }
    assert res.stderr == ""
    _same_tree(src, tmp_path / "t1" / src.relative_to("/"))

    # not a terminal (pipes): plain lines on stderr, the last with the true totals
    target = tmp_path / "t2"
    res = run(
        server.env, "restore", job["job_id"], "--destination", str(dest), "--target", str(target)
    )
    assert res.returncode == 0, res.stderr
    title = f"restore {job['job_id']} into {target}"
    lines = res.stderr.splitlines()
    assert lines[0] == f"{title}: started"
    assert re.fullmatch(
        rf"{re.escape(title)}: done in 0:\d\d: 5 files, 3 directories, 1 link, "
        rf"{re.escape(decimal(size))} restored(, .*/s)?",
        lines[-1],
    ), lines[-1]
    assert "\x1b" not in res.stderr  # no terminal control sequences
    assert f"restored snapshot {job['snapshot_id']}" in res.stdout


def test_restore_json_lists_damaged_files_and_exits_8(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    job = json.loads(
        ok(
            server.env,
            "backup",
            "--set",
            "restore-damaged",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    packs = [p for p in (dest / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)  # the largest: r.bin's content
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))

    res = run(
        server.env,
        "restore",
        job["job_id"],
        "--destination",
        str(dest),
        "--target",
        str(tmp_path / "t"),
        "--json",
    )
    assert res.returncode == 8, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["complete"] is False and doc["snapshot_id"] == job["snapshot_id"]
    assert [d["path"] for d in doc["damaged"]] == [str(src / "r.bin")]
    assert doc["files"] == 4 and doc["bytes"] == 600 + 4 + 10  # a.txt, b.txt, x.sh, empty
    assert res.stderr.splitlines()[-2].startswith("opencbs: error: Restore incomplete: ")
    assert "Traceback" not in res.stderr


def test_destination_failure_mid_job_is_an_error_line_with_a_hint(
    server: Server, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    # an empty repository (a destination folder must be empty or a repository: agent.targets),
    # then a file where the packs' folder goes: every pack fails
    Repository.init(LocalStorage(dest, fsync=False), ENCRYPTION, kdf=KdfParams(1, 8 * 1024, 1))
    (dest / "data").write_bytes(b"")
    res = run(
        server.env,
        "backup",
        "--set",
        "broken-dest",
        "--source",
        str(src),
        "--destination",
        str(dest),
    )
    assert res.returncode == 9, res.stdout + res.stderr
    assert "BS_STOP_BY_SYSTEM_ERROR" in res.stdout and "Traceback" not in res.stderr
    error, hint = res.stderr.strip().splitlines()[-2:]
    assert error.startswith("opencbs: error: backup job ") and error.endswith(
        "failed (BS_STOP_BY_SYSTEM_ERROR)"
    ), error
    # the why was said once, as the job logged it
    assert res.stderr.count("opencbs: error: Destination error: Cannot write 'data/") == 1
    assert hint.startswith(
        f"hint: free space on the destination {dest} or check that it is "
        "mounted and writable, then run the backup again"
    ), hint
    assert f"opencbs verify --destination {dest}" in hint
    # the progress's last word is how the job ended, never "done: 0/0 files read"
    assert "done:" not in res.stderr
    assert re.search(r"^backup broken-dest: failed( after .*)?$", res.stderr, re.MULTILINE), (
        res.stderr
    )

    as_json = run(server.env, "backup", "--set", "broken-dest", "--json")
    assert as_json.returncode == 9, as_json.stderr
    job = json.loads(as_json.stdout)  # stdout is the JSON document alone, as before
    assert job["status"] == "BS_STOP_BY_SYSTEM_ERROR" and job["snapshot_id"] is None
    assert as_json.stderr.strip().splitlines()[-2].startswith("opencbs: error: backup job ")
    assert as_json.stderr.strip().splitlines()[-1].startswith("hint: free space")
    assert run(server.env, "verify", "--destination", str(dest)).returncode == 0


def test_a_failed_restore_creates_nothing(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    job = json.loads(
        ok(
            server.env,
            "backup",
            "--set",
            "restore-nothing",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    target = tmp_path / "target"

    nx = tmp_path / "nx"  # no repository there
    res = run(
        server.env, "restore", job["job_id"], "--destination", str(nx), "--target", str(target)
    )
    _one_line_error(res, 7, f"No repository at {nx}")
    assert res.stderr.splitlines()[0] == f"opencbs: error: No repository at {nx}"
    assert "opencbs backup" in res.stderr.splitlines()[1]
    assert not nx.exists() and not target.exists()

    wrong = {**server.env, "OPENCBS_ENCRYPTION_PASSWORD": "wrong"}
    _one_line_error(
        run(wrong, "restore", job["job_id"], "--destination", str(dest), "--target", str(target)),
        3,
        "Wrong encryption password",
    )
    assert not target.exists()

    for ref in ("2001-01-01-00-00-00", "0123abcd", "x"):
        res = run(server.env, "restore", ref, "--destination", str(dest), "--target", str(target))
        _one_line_error(res, 4, f"Snapshot {ref} not found")  # "started" never printed
        assert not target.exists()
    _one_line_error(
        run(
            server.env,
            "restore",
            job["job_id"],
            "--destination",
            str(dest),
            "--target",
            str(target),
            "--path",
            str(src / "nosuch"),
        ),
        4,
        f"path {src / 'nosuch'} not found in snapshot",
    )
    assert not target.exists()

    for command in ("snapshots", "verify"):
        res = run(server.env, command, "--destination", str(nx))
        _one_line_error(res, 7, f"No repository at {nx}")
        assert "LocalStorage" not in res.stderr and not nx.exists()

    res = run(
        server.env, "restore", job["job_id"], "--destination", str(dest), "--target", str(target)
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[0] == f"restore {job['job_id']} into {target}: started"
    _same_tree(src, target / src.relative_to("/"))


def test_a_bad_destination_on_first_use_leaves_no_set(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    for bad in (Path("/proc/opencbs-nope"), blocker / "dest"):
        res = run(
            server.env,
            "backup",
            "--set",
            "new-bad",
            "--source",
            str(src),
            "--destination",
            str(bad),
        )
        _one_line_error(res, 7, f"Cannot create the destination folder {bad}: ")
        assert "created" not in res.stderr
        assert res.stderr.splitlines()[1].startswith(
            "hint: Choose a folder you can create and write"
        )
        _one_line_error(run(server.env, "backup", "--set", "new-bad"), 4, "no backup set 'new-bad'")

    # a folder holding a repository that this encryption password does not open
    other, src2 = tmp_path / "other", tmp_path / "src2"
    _tree(src2)
    ok(
        server.env,
        "backup",
        "--set",
        "other-owner",
        "--source",
        str(src2),
        "--destination",
        str(other),
    )
    wrong = {**server.env, "OPENCBS_ENCRYPTION_PASSWORD": "wrong"}
    _one_line_error(
        run(wrong, "backup", "--set", "new-bad", "--source", str(src), "--destination", str(other)),
        3,
        "Wrong encryption password",
    )
    _one_line_error(run(server.env, "backup", "--set", "new-bad"), 4, "no backup set 'new-bad'")

    # --add-destination: checked before the server adds it
    _one_line_error(
        run(
            server.env, "backup", "--set", "other-owner", "--add-destination", str(blocker / "dest")
        ),
        7,
        "Cannot create the destination folder",
    )
    _one_line_error(
        run(server.env, "backup", "--set", "other-owner", "--destination", str(blocker / "dest")),
        2,
        "has no destination",
    )

    # a good folder: the set is created and backed up, the folder made only then
    good = tmp_path / "new" / "dest"
    job = json.loads(
        ok(
            server.env,
            "backup",
            "--set",
            "new-bad",
            "--source",
            str(src),
            "--destination",
            str(good),
            "--json",
        )
    )
    assert job["status"] == "BS_STOP_SUCCESS" and (good / "config").exists()
