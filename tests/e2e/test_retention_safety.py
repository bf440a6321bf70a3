"""Retention under stress, as real processes against a real ``opencbs serve``: backups and
forget + prune running at once on one destination (every snapshot that is kept restores byte
for byte), and ``opencbs prune`` killed with SIGKILL at random moments (the repository passes
``verify --read-data`` after each kill, every kept snapshot restores, and the next prune
finishes the work).

Both are soak tests: CI runs a handful of rounds; ``OPENCBS_SOAK=1`` runs the full count
(``SOAK_ROUNDS``: at least 20 kills, 20 backups against a pruning loop)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serving import OPENCBS, ok, run
from tests.e2e.test_agent_cli import Server, server  # noqa: F401 (server: the module's fixture)

SOAK = os.environ.get("OPENCBS_SOAK") == "1"
KILL_ROUNDS = 20 if SOAK else 4
BACKUP_ROUNDS = 20 if SOAK else 5


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _change(src: Path, rng: random.Random, *, big: bool = False) -> None:
    """Rewrite a few files of ``src`` (created on first use) with random bytes."""
    src.mkdir(exist_ok=True)
    count = 8 if big else 12
    for i in range(count):
        path = src / f"f{i:02d}.bin"
        if not path.exists() or rng.random() < 0.4:
            size = rng.randint(2_000_000, 6_000_000) if big else rng.randint(1_000, 200_000)
            path.write_bytes(rng.randbytes(size))


def _backup(env: dict[str, str], name: str, src: Path, dest: Path) -> dict[str, Any]:
    res = run(
        env, "backup", "--set", name, "--source", str(src), "--destination", str(dest), "--json"
    )
    assert res.returncode == 0, res.stderr
    job: dict[str, Any] = json.loads(res.stdout)
    return job


def _check_restores(
    env: dict[str, str], dest: Path, expected: dict[str, dict[str, str]], scratch: Path, src: Path
) -> set[str]:
    """``verify --read-data`` is clean and every snapshot stored restores to what was backed
    up (``expected``: snapshot ID -> file hashes); returns the snapshot IDs stored."""
    verified = run(env, "verify", "--destination", str(dest), "--read-data", "--json")
    assert verified.returncode == 0, (verified.stdout, verified.stderr)
    rows = json.loads(ok(env, "snapshots", "--destination", str(dest), "--json"))
    for row in rows:
        target = scratch / f"restore-{row['id'][:12]}"
        shutil.rmtree(target, ignore_errors=True)
        ok(env, "restore", row["id"], "--destination", str(dest), "--target", str(target))
        assert _hashes(target / str(src).lstrip("/")) == expected[row["id"]], row["id"]
        shutil.rmtree(target)
    return {row["id"] for row in rows}


@pytest.mark.slow
def test_backups_and_prunes_at_once_lose_nothing(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    env = {**server.env, "OPENCBS_LOCK_WAIT": "120"}
    rng = random.Random(14)
    expected: dict[str, dict[str, str]] = {}
    _change(src, rng)
    first = _backup(env, "concurrent", src, dest)
    expected[first["snapshot_id"]] = _hashes(src)
    done = threading.Event()
    failures: list[str] = []
    prunes = 0

    def pruning() -> None:
        nonlocal prunes
        while not done.is_set():
            for args in (
                ("forget", "--destination", str(dest), "--keep-last", "3"),
                ("prune", "--destination", str(dest), "--grace", "0", "--max-unused", "0%"),
            ):
                res = run(env, *args)
                if res.returncode != 0:
                    failures.append(f"{args[0]}: {res.returncode} {res.stderr}")
            prunes += 1

    pruner = threading.Thread(target=pruning)
    pruner.start()
    try:
        for _ in range(BACKUP_ROUNDS):
            _change(src, rng)
            job = _backup(env, "concurrent", src, dest)
            assert job["status"] == "BS_STOP_SUCCESS", job
            expected[job["snapshot_id"]] = _hashes(src)
    finally:
        done.set()
        pruner.join(timeout=300)
    assert not failures, failures
    assert prunes >= 1
    ok(env, "prune", "--destination", str(dest), "--grace", "0")
    stored = _check_restores(env, dest, expected, tmp_path, src)
    assert job["snapshot_id"] in stored and len(stored) >= 3


@pytest.mark.slow
def test_prune_killed_at_random_moments_leaves_a_sound_repository(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, base = tmp_path / "src", tmp_path / "base"
    rng = random.Random(2026)
    expected: dict[str, dict[str, str]] = {}
    for _day in range(5):
        _change(src, rng, big=True)
        job = _backup(server.env, "killed-prune", src, base)
        expected[job["snapshot_id"]] = _hashes(src)
    ok(server.env, "forget", "--destination", str(base), "--keep-last", "2")
    kept = {sid: h for sid, h in expected.items() if sid in _ids(server.env, base)}
    assert len(kept) == 2
    # how long a whole prune takes here, on a copy
    timing = tmp_path / "timing"
    shutil.copytree(base, timing)
    started = time.monotonic()
    ok(server.env, "prune", "--destination", str(timing), "--grace", "0", "--max-unused", "0%")
    whole = time.monotonic() - started
    killed = 0
    for round_no in range(KILL_ROUNDS):
        dest = tmp_path / f"round-{round_no}"
        shutil.copytree(base, dest)
        proc = subprocess.Popen(
            [OPENCBS, "prune", "--destination", str(dest), "--grace", "0", "--max-unused", "0%"],
            env=server.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, whole))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        assert _check_restores(server.env, dest, expected, tmp_path, src) == set(kept)
        ok(server.env, "prune", "--destination", str(dest), "--grace", "0", "--max-unused", "0%")
        assert not list((dest / "deletions").glob("*")) if (dest / "deletions").exists() else True
        assert _check_restores(server.env, dest, expected, tmp_path, src) == set(kept)
        shutil.rmtree(dest)
    assert killed >= KILL_ROUNDS // 2, f"only {killed} of {KILL_ROUNDS} prunes were killed"


def _ids(env: dict[str, str], dest: Path) -> set[str]:
    return {r["id"] for r in json.loads(ok(env, "snapshots", "--destination", str(dest), "--json"))}
