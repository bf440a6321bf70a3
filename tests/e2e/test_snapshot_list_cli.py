"""The snapshot list through the real CLI, as processes against a real ``opencbs serve``: a
removed snapshot makes ``opencbs verify`` exit 8 (with or without the agent's data dir), and a
rolled-back destination (an older list and its snapshots put back together) is found by
``verify`` from what the agent remembers in its data dir and reported by the next ``opencbs
backup`` (a warning on stderr, a ``warn`` entry, ``BS_STOP_SUCCESS_WITH_WARNING``), after which
``verify`` is clean again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from opencbs.destinations.local import LocalStorage
from opencbs.engine.manifest import anchor_path
from opencbs.engine.repository import Repository
from tests.e2e.serving import run
from tests.e2e.test_agent_cli import (  # noqa: F401 (server: the module's fixture)
    ENCRYPTION,
    Server,
    _report,
    _tree,
    server,
)


def _backup(srv: Server, name: str, src: Path, dest: Path) -> dict[str, Any]:
    res = run(
        srv.env,
        "backup",
        "--set",
        name,
        "--source",
        str(src),
        "--destination",
        str(dest),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    job: dict[str, Any] = json.loads(res.stdout)
    job["stderr"] = res.stderr
    return job


def _verify(env: dict[str, str], dest: Path) -> tuple[int, dict[str, Any], str]:
    res = run(env, "verify", "--destination", str(dest), "--json")
    assert "Traceback" not in res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def test_verify_finds_a_removed_snapshot(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    first = _backup(server, "removed", src, dest)
    (src / "a.txt").write_bytes(b"changed")
    _backup(server, "removed", src, dest)
    assert _verify(server.env, dest)[0] == 0
    (dest / "snapshots" / first["snapshot_id"]).unlink()
    code, answer, stderr = _verify(server.env, dest)
    assert code == 8
    assert {e["subject"] for e in answer["errors"]} == {f"snapshot {first['snapshot_id']}"}
    assert "removed" in answer["errors"][0]["message"]
    assert stderr.strip().splitlines()[-2].startswith("opencbs: error: ")
    # the list shows it by itself: another data dir (nothing remembered) finds it too
    elsewhere = {**server.env, "OPENCBS_DATA_DIR": str(tmp_path / "other-data")}
    assert _verify(elsewhere, dest)[0] == 8


def test_a_rollback_is_found_by_verify_and_reported_by_the_next_backup(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dest, saved = tmp_path / "src", tmp_path / "dest", tmp_path / "saved"
    _tree(src)
    _backup(server, "rollback", src, dest)
    saved.mkdir()
    shutil.copy2(dest / "manifest", saved / "manifest")
    shutil.copytree(dest / "snapshots", saved / "snapshots")
    (src / "a.txt").write_bytes(b"changed")
    second = _backup(server, "rollback", src, dest)
    # whoever holds the storage puts back the state after the first job
    shutil.rmtree(dest / "snapshots")
    shutil.copytree(saved / "snapshots", dest / "snapshots")
    shutil.copy2(saved / "manifest", dest / "manifest")
    # consistent by itself: only the agent's memory shows it
    elsewhere = {**server.env, "OPENCBS_DATA_DIR": str(tmp_path / "other-data")}
    assert _verify(elsewhere, dest)[0] == 0
    code, answer, _ = _verify(server.env, dest)
    assert code == 8
    problems = {e["subject"]: e["message"] for e in answer["errors"]}
    assert problems["snapshot list"].startswith("rolled back: generation 2 < 3 remembered")
    assert problems[f"snapshot {second['snapshot_id']}"].startswith("removed")
    third = _backup(server, "rollback", src, dest)
    assert third["status"] == "BS_STOP_SUCCESS_WITH_WARNING"
    said = [x for x in third["stderr"].splitlines() if "rolled back" in x]
    assert len(said) == 1 and said[0].startswith("opencbs: warning: "), third["stderr"]
    warns = [e["Message"] for e in _report(server, third)["Logs"] if e["Type"] == "warn"]
    assert any("snapshot list: rolled back: generation 2 < 3" in w for w in warns), warns
    assert _verify(server.env, dest)[0] == 0  # the third job's list supersedes it


def test_a_job_that_died_before_listing_its_snapshot_is_no_alarm(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dest, saved = tmp_path / "src", tmp_path / "dest", tmp_path / "saved"
    _tree(src)
    _backup(server, "crash", src, dest)
    repo_id = Repository.open(LocalStorage(dest), ENCRYPTION).config.repo_id
    remembered = anchor_path(Path(server.env["OPENCBS_DATA_DIR"]), repo_id)
    assert remembered is not None and remembered.exists()
    saved.mkdir()
    shutil.copy2(dest / "manifest", saved / "manifest")
    shutil.copy2(remembered, saved / "anchor")
    (src / "a.txt").write_bytes(b"changed")
    second = _backup(server, "crash", src, dest)
    # as if the second job died between its snapshot and its list: both as after job 1
    shutil.copy2(saved / "manifest", dest / "manifest")
    shutil.copy2(saved / "anchor", remembered)
    res = run(server.env, "verify", "--destination", str(dest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("ok: ")
    assert "1 snapshot is not in the snapshot list yet" in res.stderr
    (src / "b.txt").write_bytes(b"new")
    third = _backup(server, "crash", src, dest)
    assert third["status"] == "BS_STOP_SUCCESS", third["stderr"]
    code, answer, _ = _verify(server.env, dest)
    assert code == 0 and answer["notes"] == []
    listed = Repository.open(LocalStorage(dest), ENCRYPTION).snapshot_list()
    assert listed is not None and second["snapshot_id"] in listed.snapshots
