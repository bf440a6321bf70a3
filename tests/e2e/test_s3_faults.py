"""Backups to S3 when things fail (issue 13): a SeaweedFS server of the test's own, stopped,
killed mid-upload and started again; an agent killed mid-upload; two agents writing into one
bucket at once. The real CLI as processes against a real ``opencbs serve``.

- S3 server down at the start: that destination's job ends ``BS_STOP_BY_SYSTEM_ERROR`` with the
  reason in its log, on the server; the set's local destination still gets its good job.
- S3 server killed mid-upload: no snapshot committed; after it is back the next job completes
  and the repository verifies, every byte read.
- An agent killed mid multipart upload leaves an upload (parts that cost money); its next job
  aborts it: none is left.
- Two agents backing up into one bucket and prefix at the same time: every snapshot is in the
  snapshot list (its conditional write), none lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencbs.destinations.s3 import S3Credentials, S3Storage
from opencbs.engine.repository import Repository
from opencbs.model.destinations import S3Location
from tests.e2e.serving import (
    OPENCBS,
    add_sysuser,
    add_user,
    agent_env,
    isolated_env,
    ok,
    run,
    serving,
)
from tests.s3server import SeaweedS3

LOGIN, PASSWORD, ENCRYPTION = "bob", "pw12345678", "repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
BIG = 48 * 1024 * 1024  # bytes of incompressible data: several packs, each a multipart upload


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A SeaweedFS server of this test alone (it stops, kills and restarts it)."""
    server = SeaweedS3(tmp_path / "weed")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _env(
    root: Path, url: str, s3: SeaweedS3, login: str = LOGIN, *, patience: float = 10
) -> dict[str, str]:
    """The agent's environment: the S3 server's keys, and ``patience``: seconds an S3
    operation is tried again (``s3_retry_seconds``, 60 by default; shorter here so a failing
    job fails soon)."""
    env = agent_env(isolated_env(root), url, login=login, password=PASSWORD, encryption=ENCRYPTION)
    return {
        **env,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "OPENCBS_S3_RETRY_SECONDS": str(patience),
    }


def _dest(s3: SeaweedS3, bucket: str, prefix: str = "p") -> list[str]:
    return ["--destination", f"s3://{bucket}/{prefix}", "--s3-endpoint", s3.endpoint]


def _big_source(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(3):
        (root / f"big-{i}.bin").write_bytes(os.urandom(BIG // 3))
    (root / "small.txt").write_text("small")
    return root


def _uploads(s3: SeaweedS3, bucket: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (
        s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    )
    return found


def _objects(s3: SeaweedS3, bucket: str, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _report(url: str, job: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(
        f"{url}/obs/api/json/GetBackupJobReport.do",
        json={
            **MONITOR,
            "LoginName": LOGIN,
            "BackupSetID": job["backup_set_id"],
            "DestinationID": job["destination_id"],
            "BackupJobID": job["job_id"],
        },
        timeout=30,
    ).json()
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = isolated_env(tmp_path / "server")
    add_user(env, LOGIN, PASSWORD)
    add_user(env, "carol", PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env) as srv:
        yield srv.url, env


def test_s3_down_at_the_start_fails_only_its_job(
    server_env: tuple[str, dict[str, str]], own_s3: SeaweedS3, tmp_path: Path
) -> None:
    url, _ = server_env
    env = _env(tmp_path / "agent", url, own_s3, patience=3)
    bucket = own_s3.make_bucket("down")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("one")
    ok(env, "backup", "--set", "S", "--source", str(src), *_dest(own_s3, bucket))
    ok(env, "backup", "--set", "S", "--add-destination", str(tmp_path / "local"))

    own_s3.stop()
    (src / "g.txt").write_text("two")
    res = run(env, "backup", "--set", "S", "--json")
    assert res.returncode == 9, (res.stdout, res.stderr)
    s3_job, local_job = json.loads(res.stdout)["jobs"]
    assert local_job["status"] == "BS_STOP_SUCCESS" and local_job["counts"]["new"] == 1
    assert (s3_job["exit_code"], local_job["exit_code"]) == (9, 0)  # which job made the 9
    assert s3_job["status"] == "BS_STOP_BY_SYSTEM_ERROR"
    assert s3_job["snapshot_id"] is None
    assert "Cannot reach the S3 server" in s3_job["message"], s3_job
    on_server = _report(url, s3_job)
    assert on_server["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"
    errors = [e["Message"] for e in on_server["Logs"] if e["Type"] == "error"]
    assert errors and "Cannot reach the S3 server" in errors[0], on_server["Logs"]
    assert _report(url, local_job)["BackupJobStatus"] == "BS_STOP_SUCCESS"

    own_s3.start()  # just started, it answers 500 for a moment: the default patience waits
    patient = {**env, "OPENCBS_S3_RETRY_SECONDS": "60"}
    again = json.loads(ok(patient, "backup", "--set", "S", "--json"))["jobs"]
    assert [j["status"] for j in again] == ["BS_STOP_SUCCESS"] * 2, again
    assert again[0]["counts"]["new"] == 1  # g.txt, against the last good job there
    out = json.loads(ok(patient, "verify", *_dest(own_s3, bucket), "--json"))
    assert out["ok"] is True and out["snapshots"] == 2, out


def test_s3_killed_mid_upload_commits_nothing_and_the_next_job_completes(
    server_env: tuple[str, dict[str, str]], own_s3: SeaweedS3, tmp_path: Path
) -> None:
    url, _ = server_env
    env = _env(tmp_path / "agent", url, own_s3)
    bucket = own_s3.make_bucket("killed")
    src = _big_source(tmp_path / "src")
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", "K", "--source", str(src), *_dest(own_s3, bucket), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client, deadline = own_s3.client(), time.monotonic() + 60
    while not client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    # The agent is frozen while the S3 server dies, so on a fast machine it cannot finish its
    # last uploads in the moment between seeing the first upload and the kill.
    proc.send_signal(signal.SIGSTOP)
    own_s3.kill()
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 9, (out, err)
    job = json.loads(out)
    assert job["status"] == "BS_STOP_BY_SYSTEM_ERROR" and job["snapshot_id"] is None, job
    assert _report(url, job)["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"

    own_s3.start()
    env["OPENCBS_S3_RETRY_SECONDS"] = "60"  # the default: waits out the restart's 500s
    assert not [k for k in _objects(own_s3, bucket, "p/snapshots/")]  # nothing committed
    again = json.loads(ok(env, "backup", "--set", "K", "--json"))
    assert again["status"] == "BS_STOP_SUCCESS" and again["counts"]["new"] == 5, (
        again
    )  # the folder and its 4 files
    out = ok(env, "verify", *_dest(own_s3, bucket), "--read-data", "--json")
    assert json.loads(out)["ok"] is True, out
    restored = tmp_path / "restored"
    ok(env, "restore", "latest", *_dest(own_s3, bucket), "--target", str(restored))
    for f in src.iterdir():
        assert (restored / f.relative_to("/")).read_bytes() == f.read_bytes()


def test_an_agent_killed_mid_upload_leaves_no_upload_after_its_next_job(
    server_env: tuple[str, dict[str, str]], own_s3: SeaweedS3, tmp_path: Path
) -> None:
    url, _ = server_env
    env = _env(tmp_path / "agent", url, own_s3)
    bucket = own_s3.make_bucket("orphans")
    src = _big_source(tmp_path / "src")
    args = [OPENCBS, "backup", "--set", "O", "--source", str(src), *_dest(own_s3, bucket)]
    for _attempt in range(5):  # until the kill lands while an upload is open
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not _uploads(own_s3, bucket) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):  # it may have ended just before
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if _uploads(own_s3, bucket):
            break
        args = [OPENCBS, "backup", "--set", "O"]  # the set exists now
    left = _uploads(own_s3, bucket)
    assert left, "no upload was open when the agent was killed"
    journal = list((tmp_path / "agent" / "data" / "s3-uploads").glob("*.json"))
    assert journal, "the killed agent's open upload is journaled"

    job = json.loads(ok(env, "backup", "--set", "O", "--json"))
    assert job["status"] == "BS_STOP_SUCCESS", job
    assert _uploads(own_s3, bucket) == []
    assert not list((tmp_path / "agent" / "data" / "s3-uploads").glob("*.json"))
    out = ok(env, "verify", *_dest(own_s3, bucket), "--read-data", "--json")
    assert json.loads(out)["ok"] is True, out


def test_two_agents_into_one_bucket_lose_no_snapshot(
    server_env: tuple[str, dict[str, str]], own_s3: SeaweedS3, tmp_path: Path
) -> None:
    url, _ = server_env
    bucket = own_s3.make_bucket("shared")
    envs = [
        _env(tmp_path / "agent-bob", url, own_s3, login=LOGIN),
        _env(tmp_path / "agent-carol", url, own_s3, login="carol"),
    ]
    sources = []
    for who in ("bob", "carol"):
        src = tmp_path / f"src-{who}"
        src.mkdir()
        (src / "f.txt").write_text(who)
        sources.append(src)
    # both agents create the repository at the same time (one wins, the other uses it), then
    # back up into it at the same time, three times more
    for rnd in range(4):
        procs = []
        for env, src in zip(envs, sources, strict=True):
            (src / f"r{rnd}.txt").write_text(str(rnd))
            first = ["--source", str(src), *_dest(own_s3, bucket)] if rnd == 0 else []
            procs.append(
                subprocess.Popen(
                    [OPENCBS, "backup", "--set", "S", *first, "--json"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, (out, err)
            assert json.loads(out)["status"] == "BS_STOP_SUCCESS"

    storage = S3Storage(
        S3Location("shared", "p", own_s3.endpoint),
        S3Credentials(access_key_id=own_s3.access_key, secret_access_key=own_s3.secret_key),
    )
    repo = Repository.open(storage, ENCRYPTION)
    stored = set(repo.snapshot_ids())
    listed = repo.snapshot_list()
    assert listed is not None
    assert len(stored) == 8
    assert listed.snapshots == stored  # every snapshot in the list: none lost to a race
    out = ok(envs[0], "verify", *_dest(own_s3, bucket), "--json")
    assert json.loads(out)["ok"] is True, out
