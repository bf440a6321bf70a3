"""Retention on S3: forget and prune through the real CLI on ``s3://`` destinations of a real
SeaweedFS server, with the locks and pending deletions as objects in the bucket; and the
locks' protocol itself on S3 (an exclusive lock created only if absent with ``If-None-Match``,
a backup's shared lock making a prune's delete phase wait)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from opencbs.destinations.s3 import S3Credentials, S3Storage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.locks import EXCLUSIVE_NAME, LockTiming, RepositoryLock, RepositoryLocked
from opencbs.engine.repository import Repository
from opencbs.model.destinations import S3Location
from tests import s3server
from tests.e2e.serving import ok, run
from tests.e2e.test_s3_backup import Setup, setup  # noqa: F401 (the fixture)
from tests.s3server import SeaweedS3

s3_server = s3server.s3_server


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_forget_and_prune_on_s3(setup: Setup, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    expected: dict[str, dict[str, str]] = {}
    for day in range(3):
        for i in range(4):
            if day == 0 or i == day:
                (src / f"f{i}.bin").write_bytes(os.urandom(3_000_000))
        job = json.loads(
            ok(setup.env, "backup", "--set", "s3-retention", "--source", str(src), *setup.dest(),
               "--json")
        )  # fmt: skip
        expected[job["snapshot_id"]] = _hashes(src)
    ok(setup.env, "forget", *setup.dest(), "--keep-last", "1")
    marked = json.loads(ok(setup.env, "prune", *setup.dest(), "--json"))
    assert marked["condemned"] > 0 and marked["deleted"] == 0
    freed = json.loads(ok(setup.env, "prune", *setup.dest(), "--grace", "0", "--json"))
    assert freed["deleted"] > 0 and freed["bytes_freed"] >= 2 * 3_000_000
    assert freed["bytes_after"] < freed["bytes_before"]
    check = json.loads(ok(setup.env, "verify", *setup.dest(), "--read-data", "--json"))
    assert check["ok"] and check["snapshots"] == 1, check
    target = tmp_path / "back"
    ok(setup.env, "restore", job["snapshot_id"], *setup.dest(), "--target", str(target))
    assert _hashes(target / str(src).lstrip("/")) == expected[job["snapshot_id"]]
    listed = setup.s3.client().list_objects_v2(Bucket=setup.bucket, Prefix="bob/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert keys and not [k for k in keys if "/locks/" in k or "/deletions/" in k], keys


def test_locks_on_s3_use_conditional_writes(s3_server: SeaweedS3) -> None:
    bucket = s3_server.make_bucket(f"l-{os.urandom(6).hex()}")
    storage = S3Storage(
        S3Location(bucket, "locks-test", s3_server.endpoint, "us-east-1"),
        S3Credentials(s3_server.access_key, s3_server.secret_key),
    )
    repo = Repository.init(storage, "pw", kdf=KdfParams(time_cost=1, memory_kib=8, parallelism=1))
    quick = LockTiming(refresh=60, stale=600, wait=0.3, poll=0.05)
    first = RepositoryLock(storage, repo.keys, "exclusive", "prune", timing=quick)
    first.acquire()
    assert storage.exists(EXCLUSIVE_NAME)
    with pytest.raises(RepositoryLocked):  # the second creation fails: If-None-Match
        RepositoryLock(storage, repo.keys, "exclusive", "prune", timing=quick).acquire()
    with pytest.raises(RepositoryLocked):
        RepositoryLock(storage, repo.keys, "shared", "backup", timing=quick).acquire()
    first.release()
    with RepositoryLock(storage, repo.keys, "shared", "backup", timing=quick):
        with pytest.raises(RepositoryLocked) as caught:
            RepositoryLock(storage, repo.keys, "exclusive", "prune", timing=quick).acquire()
        assert "backup on" in caught.value.message
        assert not storage.exists(EXCLUSIVE_NAME)  # stepped back
    assert list(storage.list("locks/")) == []


def test_prune_refuses_while_a_backup_holds_the_repository(setup: Setup, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    ok(setup.env, "backup", "--set", "s3-busy", "--source", str(src), *setup.dest("busy"))
    (src / "a.bin").write_bytes(os.urandom(100_000))
    ok(setup.env, "backup", "--set", "s3-busy", *setup.dest("busy"))
    ok(setup.env, "forget", *setup.dest("busy"), "--keep-last", "1")
    storage = S3Storage(
        S3Location(setup.bucket, "busy", setup.s3.endpoint, "us-east-1"),
        S3Credentials(setup.s3.access_key, setup.s3.secret_key),
    )
    repo = Repository.open(storage, "repo-secret")
    with RepositoryLock(storage, repo.keys, "shared", "backup"):
        res = run(
            {**setup.env, "OPENCBS_LOCK_WAIT": "1"}, "prune", *setup.dest("busy"), "--grace", "0"
        )
        assert res.returncode == 7, res.stderr
        assert "The repository is in use: backup on" in res.stderr and "hint:" in res.stderr
    done = json.loads(ok(setup.env, "prune", *setup.dest("busy"), "--grace", "0", "--json"))
    assert done["deleted"] > 0
