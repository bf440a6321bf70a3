"""Browsing snapshots stored in S3 (issue 15, point 9): ``opencbs ls``, ``find``, ``diff`` and
``mount`` take ``--destination s3://BUCKET/PREFIX --s3-endpoint URL`` as ``snapshots`` and
``restore`` do; the real CLI as processes, a real ``opencbs serve`` and a real SeaweedFS S3
server (``tests.s3server``). The mount part runs where FUSE is (always in CI: ``.ci/run``
installs fuse3)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.serving import OPENCBS, ok
from tests.e2e.test_browse_snapshots import _expected_rows, _same_files, _wait_mounted, fuse
from tests.e2e.test_s3_backup import Setup, _backup_json, _tree, s3_server, setup

__all__ = ["fuse", "s3_server", "setup"]  # fixtures of this module


def test_ls_find_diff_and_mount_on_s3(setup: Setup, tmp_path: Path, fuse: None) -> None:
    src = _tree(tmp_path / "src")
    first = _backup_json(setup, "--set", "Docs", "--source", str(src), *setup.dest())
    (src / "a.txt").write_text("alpha, changed\n")
    (src / "new.txt").write_text("new\n")
    second = _backup_json(setup, "--set", "Docs", *setup.dest())

    listed = json.loads(ok(setup.env, "ls", "latest", *setup.dest(), "--json"))
    assert {r["path"]: (r["type"], r["mode"], r["size"], r["mtime_ns"]) for r in listed} == (
        _expected_rows(src)
    )
    found = json.loads(
        ok(setup.env, "find", "*.txt", "--snapshot", "latest", *setup.dest(), "--json")
    )
    assert sorted(os.path.basename(r["path"]) for r in found) == ["a.txt", "c.txt", "new.txt"]
    diff = json.loads(
        ok(setup.env, "diff", first["snapshot_id"], second["snapshot_id"], *setup.dest(), "--json")
    )
    assert [(c["kind"], c["path"]) for c in diff["changes"]] == [
        ("upd", str(src / "a.txt")),
        ("new", str(src / "new.txt")),
    ]

    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = subprocess.Popen(
        [OPENCBS, "mount", str(mp), *setup.dest()],
        env=setup.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_mounted(mp, proc)
        _same_files(src, mp / "snapshots" / "latest" / src.relative_to("/"))
    finally:
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", str(mp)], check=True, timeout=30)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err
