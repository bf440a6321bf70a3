"""Backups to S3 (issue 13): the real CLI as processes, a real ``opencbs serve`` and a real
SeaweedFS S3 server (``tests.s3server``, real SigV4 credentials).

- backup → restore byte for byte → ``verify --read-data`` → ``snapshots``, all on
  ``--destination s3://bucket/prefix --s3-endpoint URL``;
- a set with a local and an S3 destination: one job per destination, each with its own status
  and ``DestinationID`` (ListBackupJobStatus), and a failing S3 server fails only its job;
- wrong credentials, a missing bucket: one clear line naming the destination, exit 7.
"""

from __future__ import annotations

import filecmp
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencbs.agent.client import AgentClient
from opencbs.model.jobs import JobRef
from tests import s3server
from tests.e2e.serving import add_sysuser, add_user, agent_env, isolated_env, ok, run, serving
from tests.s3server import SeaweedS3

s3_server = s3server.s3_server

LOGIN, PASSWORD, ENCRYPTION = "bob", "pw12345678", "repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}


@dataclass(frozen=True)
class Setup:
    """A running server, the S3 server, the agent's environment (S3 keys in the standard AWS
    variables) and a fresh bucket."""

    url: str
    env: dict[str, str]
    s3: SeaweedS3
    bucket: str

    def dest(self, prefix: str = "bob") -> list[str]:
        """The destination options of ``s3://bucket/prefix``."""
        return ["--destination", f"s3://{self.bucket}/{prefix}", "--s3-endpoint", self.s3.endpoint]


def s3_agent_env(env: dict[str, str], s3: SeaweedS3) -> dict[str, str]:
    """``env`` with the S3 server's keys as the standard AWS variables."""
    return {**env, "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}


@pytest.fixture
def setup(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Setup]:
    env = isolated_env(tmp_path / "root")
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    bucket = s3_server.make_bucket(f"b-{os.urandom(6).hex()}")
    with serving(env) as srv:
        a_env = agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION)
        yield Setup(srv.url, s3_agent_env(a_env, s3_server), s3_server, bucket)


def _tree(root: Path) -> Path:
    """A source tree: small files, an empty one, a 20 MiB incompressible file (multipart
    packs), a nested folder and a symbolic link."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n" * 1000)
    (root / "empty").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma")
    (root / "link").symlink_to("a.txt")
    return root


def _cbs(setup: Setup, call: str, **params: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(
        f"{setup.url}/obs/api/json/{call}.do",
        json={**MONITOR, "LoginName": LOGIN, **params},
        timeout=30,
    ).json()
    return answer


def _backup_json(setup: Setup, *args: str) -> Any:
    return json.loads(ok(setup.env, "backup", *args, "--json"))


def test_backup_restore_verify_on_s3(setup: Setup, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    job = _backup_json(setup, "--set", "Docs", "--source", str(src), *setup.dest())
    assert job["status"] == "BS_STOP_SUCCESS", job
    assert job["counts"]["new"] >= 5

    # the objects are in the bucket, under the prefix, and no multipart upload is left
    client = setup.s3.client()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=setup.bucket)
        for o in page.get("Contents", [])
    ]
    assert keys and all(k.startswith("bob/") for k in keys), keys
    assert any(k.startswith("bob/data/") for k in keys)
    assert not client.list_multipart_uploads(Bucket=setup.bucket).get("Uploads")

    # the server shows the destination as S3, without any secret
    found = _cbs(setup, "GetBackupSet", BackupSetID=job["backup_set_id"])
    assert found["Status"] == "OK", found
    [dest] = found["Data"]["DestinationList"]
    assert dest["Type"] == "S3"
    assert setup.s3.secret_key not in json.dumps(found)

    target = tmp_path / "restored"
    ok(setup.env, "restore", job["job_id"], *setup.dest(), "--target", str(target))
    restored = target / src.relative_to("/")
    cmp = filecmp.dircmp(src, restored)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), cmp.report()
    for rel in ("sub/b.bin", "sub/deeper/c.txt", "a.txt"):
        assert (restored / rel).read_bytes() == (src / rel).read_bytes()
    assert os.readlink(restored / "link") == "a.txt"

    out = ok(setup.env, "verify", *setup.dest(), "--read-data", "--json")
    assert json.loads(out)["ok"] is True, out
    snaps = json.loads(ok(setup.env, "snapshots", *setup.dest(), "--json"))
    assert [s["job_id"] for s in snaps] == [job["job_id"]]

    # a second backup: nothing new, the list has two snapshots
    again = _backup_json(setup, "--set", "Docs")
    assert again["status"] == "BS_STOP_SUCCESS" and again["counts"]["new"] == 0, again
    assert len(json.loads(ok(setup.env, "snapshots", *setup.dest(), "--json"))) == 2


def test_a_local_and_an_s3_destination_get_a_job_each(setup: Setup, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("one")
    first = _backup_json(setup, "--set", "Two", "--source", str(src), *setup.dest("two"))
    local = tmp_path / "local-dest"
    added = _backup_json(setup, "--set", "Two", "--add-destination", str(local))
    assert added["status"] == "BS_STOP_SUCCESS"
    assert added["destination_id"] != first["destination_id"]

    (src / "g.txt").write_text("two")
    both = _backup_json(setup, "--set", "Two")
    jobs = both["jobs"]
    assert [j["destination_id"] for j in jobs] == [first["destination_id"], added["destination_id"]]
    assert all(j["status"] == "BS_STOP_SUCCESS" and j["counts"]["new"] == 1 for j in jobs), jobs

    listed = _cbs(setup, "ListBackupJobStatus")
    assert listed["Status"] == "OK", listed
    by_dest: dict[str, list[str]] = {}
    for rec in listed["Data"]:
        by_dest.setdefault(rec["DestinationID"], []).append(rec["BackupJobStatus"])
    assert by_dest[first["destination_id"]] == ["BS_STOP_SUCCESS"] * 2
    assert by_dest[added["destination_id"]] == ["BS_STOP_SUCCESS"] * 2

    # jobs of both destinations started in one second share a job ID: `report JOBID` shows
    # the first destination's and says the other has one too (an hour back: no job then)
    set_id = first["backup_set_id"]
    with AgentClient(setup.url, LOGIN, PASSWORD) as agent:
        job = agent.get_job(JobRef(set_id, first["destination_id"], first["job_id"]))
        early = job.start_time - 3_600_000
        one = agent.start_job(set_id, first["destination_id"], start_time=early)
        twin = agent.start_job(set_id, added["destination_id"], start_time=early)
        assert twin.ref.job_id == one.ref.job_id
    res = run(setup.env, "report", one.ref.job_id, "--user", LOGIN, "--set", "Two", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["Data"]["BackupJobStatus"] == "BS_STILL_RUNNING"
    said = f"has a job {one.ref.job_id} too; see it with --destination {added['destination_id']}"
    assert said in res.stderr, res.stderr

    # a readable run says each destination and each outcome
    res = run(setup.env, "backup", "--set", "Two")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("BS_STOP_SUCCESS") == 2
    assert f"s3://{setup.bucket}/two" in res.stdout and str(local) in res.stdout


def test_wrong_credentials_and_missing_bucket_are_one_line(setup: Setup, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("one")
    wrong = {**setup.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    res = run(wrong, "backup", "--set", "W", "--source", str(src), *setup.dest())
    assert res.returncode == 7, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines[-2].startswith("opencbs: error: ") and f"s3://{setup.bucket}/bob" in lines[-2]
    assert "credentials" in lines[-2]
    assert lines[-1].startswith("hint: ")
    assert "not-the-secret" not in res.stderr + res.stdout

    res = run(
        setup.env,
        "backup",
        "--set",
        "W",
        "--source",
        str(src),
        "--destination",
        "s3://no-such-bucket-here/x",
        "--s3-endpoint",
        setup.s3.endpoint,
    )
    assert res.returncode == 7, (res.stdout, res.stderr)
    line = res.stderr.strip().splitlines()[-2]
    assert "no-such-bucket-here" in line and "does not exist" in line, res.stderr
    # nothing was created on the server for either
    assert json.loads(ok(setup.env, "set", "list", LOGIN, "--json")) == []

    # a set made right, then run with the wrong secret: the job fails on the server, exit 7
    ok(setup.env, "backup", "--set", "W", "--source", str(src), *setup.dest("w"))
    res = run(wrong, "backup", "--set", "W", "--json")
    assert res.returncode == 7, (res.stdout, res.stderr)
    outcome = json.loads(res.stdout)
    assert outcome["status"] == "BS_STOP_BY_SYSTEM_ERROR"
    assert "credentials" in outcome["message"]
    report = _cbs(
        setup,
        "GetBackupJobReport",
        BackupSetID=outcome["backup_set_id"],
        DestinationID=outcome["destination_id"],
        BackupJobID=outcome["job_id"],
    )
    assert report["Data"]["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"
    assert any("credentials" in e["Message"] for e in report["Data"]["Logs"]), report


def test_s3_options_with_a_folder_are_an_error(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "root", OPENCBS_ENCRYPTION_PASSWORD=ENCRYPTION)
    for command in ("verify", "snapshots"):
        res = run(env, command, "--destination", str(tmp_path), "--s3-endpoint", "http://h:1")
        assert res.returncode == 2, (command, res.stdout, res.stderr)
        assert "apply to an s3:// destination" in res.stderr
    # the setting serves s3:// destinations only: with a folder it is not in the way
    res = run(
        {**env, "OPENCBS_S3_ENDPOINT": "http://h:1"}, "snapshots", "--destination", str(tmp_path)
    )
    assert res.returncode == 7 and "No repository at" in res.stderr, res.stderr
    res = run(env, "snapshots", "--destination", "s3://xyz/y", "--s3-endpoint", "ftp://h")
    assert res.returncode == 2 and "invalid S3 endpoint" in res.stderr, res.stderr
    res = run(env, "snapshots", "--destination", "s3://no_such!bucket/y")
    assert res.returncode == 2 and "invalid S3 bucket name" in res.stderr, res.stderr
