"""Retention through the real CLI, as processes against a real ``opencbs serve``: ``opencbs
forget`` (named snapshots, a policy, ``--dry-run`` naming the rule that keeps each) and
``opencbs prune`` (``--grace 0`` frees at once; the default grace only condemns), the set's own
policy applied after each backup (said in the job's report log), and every snapshot kept still
restoring byte for byte with ``verify --read-data`` clean."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.serving import ok, run
from tests.e2e.test_agent_cli import (  # noqa: F401 (server: the module's fixture)
    LOGIN,
    PASSWORD,
    Server,
    _report,
    _same_tree,
    server,
)


def _backup(srv: Server, name: str, src: Path, dest: Path, *extra: str) -> dict[str, Any]:
    res = run(
        srv.env,
        "backup", "--set", name, "--source", str(src), "--destination", str(dest), "--json",
        *extra,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    job: dict[str, Any] = json.loads(res.stdout)
    return job


def _day(src: Path, day: int) -> None:
    """Day ``day`` of a small tree: some files rewritten with new random data."""
    src.mkdir(exist_ok=True)
    for i in range(6):
        path = src / f"f{i}.bin"
        if day == 0 or i % 3 == day % 3:
            path.write_bytes(os.urandom(40_000 + 1000 * i + day))


def _pack_bytes(dest: Path) -> int:
    return sum(p.stat().st_size for p in (dest / "data").rglob("*") if p.is_file())


def _snapshots(srv: Server, dest: Path, *extra: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        ok(srv.env, "snapshots", "--destination", str(dest), "--json", *extra)
    )
    return rows


def test_forget_and_prune_free_space_and_keep_what_is_kept(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    copies: list[Path] = []
    for day in range(4):
        _day(src, day)
        _backup(server, "forget-cli", src, dest)
        copies.append(tmp_path / f"copy-{day}")
        ok(server.env, "restore", "latest", "--destination", str(dest), "--target", str(copies[-1]))
    rows = _snapshots(server, dest)
    assert len(rows) == 4
    # a dry run names the rule of each snapshot and changes nothing
    dry = run(server.env, "forget", "--destination", str(dest), "--keep-last", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 2 snapshots" in dry.stdout and "last snapshot" in dry.stdout
    assert dry.stdout.count("remove") >= 3  # two rows and the summary
    assert len(_snapshots(server, dest)) == 4
    kept = _snapshots(server, dest, "--keep-last", "2")
    assert [r["kept_by"] for r in kept] == [[], [], ["last snapshot"], ["last snapshot"]]
    # forget one by its job ID, then the policy's choice
    first_job = rows[0]["job_id"]
    ok(server.env, "forget", first_job, "--destination", str(dest))
    assert [r["id"] for r in _snapshots(server, dest)] == [r["id"] for r in rows[1:]]
    answer = json.loads(
        ok(server.env, "forget", "--destination", str(dest), "--keep-last", "2", "--json")
    )
    assert answer["removed"] == [rows[1]["id"]]
    before = _pack_bytes(dest)
    # the default grace period only condemns; --grace 0 deletes
    marked = json.loads(ok(server.env, "prune", "--destination", str(dest), "--json"))
    assert marked["condemned"] > 0 and marked["deleted"] == 0 and marked["pending"] > 0
    assert _pack_bytes(dest) >= before
    freed = json.loads(
        ok(server.env, "prune", "--destination", str(dest), "--grace", "0", "--json")
    )
    assert freed["deleted"] > 0 and freed["bytes_freed"] > 0
    assert _pack_bytes(dest) < before
    check = json.loads(
        ok(server.env, "verify", "--destination", str(dest), "--read-data", "--json")
    )
    assert check["ok"] and check["snapshots"] == 2
    for day, snap in ((2, rows[2]), (3, rows[3])):
        target = tmp_path / f"back-{day}"
        ok(server.env, "restore", snap["id"], "--destination", str(dest), "--target", str(target))
        _same_tree(copies[day], target)


def test_forget_refuses_what_it_cannot_do(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    _day(src, 0)
    _backup(server, "forget-refusals", src, dest)
    none = run(server.env, "forget", "--destination", str(dest))
    assert none.returncode == 2 and "no retention policy given" in none.stderr
    assert "hint:" in none.stderr and "Traceback" not in none.stderr
    bad = run(server.env, "forget", "--destination", str(dest), "--keep-within", "7x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    unknown = run(server.env, "forget", "deadbeefdeadbeef", "--destination", str(dest))
    assert unknown.returncode == 4, unknown.stderr
    grace = run(server.env, "prune", "--destination", str(dest), "--grace", "soon")
    assert grace.returncode == 2 and "--grace" in grace.stderr
    assert len(_snapshots(server, dest)) == 1


def _set_retention(srv: Server, set_id: str, retention: dict[str, Any]) -> None:
    r = httpx.patch(
        f"{srv.url}/api/agent/v1/backup-sets/{set_id}",
        json={"settings": {"retention": retention}},
        auth=(LOGIN, PASSWORD),
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_the_sets_policy_runs_after_each_backup(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    env = {**server.env, "OPENCBS_PRUNE_GRACE": "0"}
    _day(src, 0)
    first = _backup(Server(server.url, env), "after-backup", src, dest)
    _set_retention(server, first["backup_set_id"], {"mode": "SIMPLE", "jobs": 2})
    jobs = [first]
    for day in range(1, 4):
        _day(src, day)
        jobs.append(_backup(Server(server.url, env), "after-backup", src, dest))
    assert [j["status"] for j in jobs] == ["BS_STOP_SUCCESS"] * 4
    rows = _snapshots(server, dest)
    assert [r["job_id"] for r in rows] == [j["job_id"] for j in jobs[-2:]]
    logs = [e["Message"] for e in _report(server, jobs[-1])["Logs"]]
    said = [m for m in logs if m.startswith("Retention policy")]
    assert said and "removed 1 of 3 snapshots" in said[0], logs
    assert "freed" in said[0]
    check = json.loads(ok(env, "verify", "--destination", str(dest), "--read-data", "--json"))
    assert check["ok"], check
    target = tmp_path / "back"
    ok(env, "restore", "latest", "--destination", str(dest), "--target", str(target))
    _same_tree(src, target / str(src).lstrip("/"))


def test_a_job_that_would_pass_the_quota_stops_and_storage_is_reported(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    login, password = "quota-user", "quota-user-pw"
    ok(server.env, "user", "add", login, "--quota", "3000000", "--password-stdin",
       stdin=password + "\n")  # fmt: skip
    env = {**server.env, "OPENCBS_LOGIN_NAME": login, "OPENCBS_PASSWORD": password}
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(1_000_000))
    first = _backup(Server(server.url, env), "quota", src, dest)
    assert first["status"] == "BS_STOP_SUCCESS"
    # what the destination stores reached the server, and counts against the quota
    monitor = {"SysUser": "monitor", "SysPwd": "monitor-pw", "LoginName": login}
    stat = httpx.post(
        f"{server.url}/obs/api/json/GetUserStorageStat.do",
        json={**monitor, "BackupSetID": "all"},
        timeout=30,
    ).json()
    assert stat["Status"] == "OK", stat
    stored = int(stat["Data"][0]["AvgTotalStorageRawSize"])
    assert 1_000_000 <= stored < 1_200_000, stat
    assert int(stat["Data"][0]["AvgDataNo"]) == 1
    # the next job would store 4 MB more: it stops before, with the vendor's status
    (src / "two.bin").write_bytes(os.urandom(4_000_000))
    res = run(env, "backup", "--set", "quota", "--json")
    assert res.returncode == 9, res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_BY_QUOTA_EXCEEDED" and job["snapshot_id"] is None
    report = httpx.post(
        f"{server.url}/obs/api/json/GetBackupJobReport.do",
        json={**monitor, "BackupSetID": job["backup_set_id"], "BackupJobID": job["job_id"],
              "DestinationID": job["destination_id"]},
        timeout=30,
    ).json()  # fmt: skip
    assert report["Data"]["BackupJobStatus"] == "BS_STOP_BY_QUOTA_EXCEEDED", report
    logs = [e["Message"] for e in report["Data"]["Logs"]]
    assert any("quota of 3000000 bytes is reached" in m for m in logs), logs
    assert len(_snapshots(Server(server.url, env), dest)) == 1
