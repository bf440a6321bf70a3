"""Interrupted jobs (issue 4, item 1): SIGKILL at random moments, and a destination that fills up.

- ``test_sigkill_series``: a real ``opencbs serve`` (``--job-idle-timeout 2``) and real
  ``opencbs backup`` processes SIGKILLed at seeded random moments, 20+ times in a row against one
  destination; after each kill a real ``opencbs verify`` accepts the repository. Then a job runs
  to completion; the report of the job that committed the first snapshot lists every entry of
  the tree once in ``new`` and nothing else, every later completed job reports nothing (the tree
  did not change: no mass deletion, no double count); the killed jobs read
  ``BS_BACKUP_NOT_FINISHED`` once the idle timeout has passed; a restore equals the source; the
  chunks written by killed jobs were reused (the packs hold far less than one copy of the data
  per attempt). ``OPENCBS_KILL_SEED`` replays a series.
- ``test_disk_full_in_process``: ``run_backup`` to a ``LocalStorage`` whose writes start failing
  with ``ENOSPC`` after N bytes: ``BS_STOP_BY_SYSTEM_ERROR``, verify OK, no snapshot; with space
  again the next job completes and reuses the chunks written before.
- ``test_disk_full_real_filesystem``: ``opencbs backup`` of 60 MB to a 20 MB tmpfs (root only).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.agent import AgentClient, NewDestination
from opencbs.agent.job import JobOptions, run_backup
from opencbs.destinations.local import LocalStorage
from opencbs.engine.chunk_index import INDEX_PREFIX, open_index
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from opencbs.reports.vocabulary import JobStatus
from opencbs.store import users
from opencbs.store.db import Database
from opencbs.store.migrate import upgrade
from tests.agent_support import tmpfs
from tests.e2e.serving import (
    OPENCBS,
    TIMEOUT,
    add_sysuser,
    add_user,
    free_port,
    isolated_env,
    ok,
    run,
    start_serve,
    stop_serve,
)
from tests.e2e.test_agent_cli import _same_tree

LOGIN, PASSWORD, ENCRYPTION = "killer", "killer-pw", "kill-repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
IDLE_TIMEOUT = 2.0  # seconds: killed jobs are closed as BS_BACKUP_NOT_FINISHED after this
KILLS = 20  # in a row, until a first snapshot exists
LATER_KILLS = 4  # then after a snapshot, while changed files are stored
SEED = int(os.environ.get("OPENCBS_KILL_SEED", "4242"))
LISTS = ("new", "upd", "pmt", "del", "mov", "cpy")
EXIT_NO_REPOSITORY = 7  # verify before any job created the repository (a DestinationError)


# --- the server, restartable on the same port and data --------------------------------------


@dataclass
class Server:
    root: Path
    env: dict[str, str]  # the server's environment
    agent_env: dict[str, str]  # the agent's: OPENCBS_CONFIG names a 0600 file with passwords
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_serve(
            self.env,
            "--job-idle-timeout",
            str(IDLE_TIMEOUT),
            port=self.port,
            log=self.root / "serve.log",
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_serve(self.proc, signal.SIGTERM)
            self.proc = None

    def cbs(self, call: str, **params: str) -> Any:
        r = httpx.post(
            f"{self.url}/obs/api/json/{call}.do",
            timeout=TIMEOUT,
            json={**MONITOR, "LoginName": LOGIN, **params},
        )
        body = r.json()
        assert body["Status"] == "OK", (call, params, body)
        return body["Data"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("interruption")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    port = free_port()
    config = root / "agent.toml"
    config.write_text(
        f'[agent]\nserver_url = "http://127.0.0.1:{port}"\n'
        f'login_name = "{LOGIN}"\npassword = "{PASSWORD}"\n'
        f'encryption_password = "{ENCRYPTION}"\n',
        encoding="utf-8",
    )
    config.chmod(0o600)
    srv = Server(root, env, {**env, "OPENCBS_CONFIG": str(config)}, port)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# --- the source tree ------------------------------------------------------------------------


def _make_tree(
    root: Path, rng: random.Random, *, files: int = 300, big: tuple[int, int] = (2 << 20, 6 << 20)
) -> int:
    """A tree of ``files`` files in 12 folders, every content distinct (no copies): mostly small
    compressible text, some random files of 50 KiB to 1 MiB, one in 25 ``big`` (bytes, random).
    Returns the total size in bytes."""
    total = 0
    for i in range(files):
        folder = root / f"d{i % 12:02}" / ("deep" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        kind = i % 25
        if kind == 0:
            data = rng.randbytes(rng.randint(*big))
        elif kind < 5:
            data = rng.randbytes(rng.randint(50 << 10, 1 << 20))
        else:
            line = f"file {i} line {{}}: {rng.randbytes(24).hex()}\n"
            data = "".join(line.format(n) for n in range(rng.randint(10, 400))).encode()
        (folder / f"f{i:03}.{'bin' if kind < 5 else 'txt'}").write_bytes(data)
        total += len(data)
    return total


def _entries(src: Path) -> set[str]:
    """Every path the report names for a source: the source itself, its folders and files."""
    found = {str(src)}
    for dirpath, dirnames, filenames in os.walk(src):
        found.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return found


# --- helpers --------------------------------------------------------------------------------


def _pack_bytes(dest: Path) -> int:
    data = dest / "data"
    if not data.exists():
        return 0
    return sum(
        p.stat().st_size for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def _next_second() -> None:
    """Sleep to the next whole second: a job's ID is its start time to the second (cbs-api.md
    §4), and two jobs of a set cannot share one."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def _verify(srv: Server, dest: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return run(srv.agent_env, "verify", "--destination", str(dest), *more)


def _snapshots(srv: Server, dest: Path) -> list[dict[str, Any]]:
    res = run(srv.agent_env, "snapshots", "--destination", str(dest), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    listed: list[dict[str, Any]] = json.loads(res.stdout)
    return listed


@dataclass
class Attempt:
    delay: str  # when it was killed: "<seconds>L" after its launch, "<seconds>S" after "started"
    killed: bool
    outcome: dict[str, str] | None  # job_id, status, backup_set_id, destination_id, snapshot_id
    packs_before: int  # bytes of the destination's packs at launch
    startup: float  # seconds from launch to the "started" line (0 when not seen)
    duration: float  # seconds from launch to the end of the process


_OUTCOME = re.compile(r"^job (\S+): (\S+)\nset .* \((\d+)\),? ?\n?destination .* \((\d+)\)$", re.M)
_SNAPSHOT = re.compile(r"^snapshot ([0-9a-f]{64})$", re.M)


def _attempt(
    srv: Server, set_name: str, src: Path, dest: Path, kill: tuple[str, float] | None, log: Path
) -> Attempt:
    """One ``opencbs backup`` process; with ``kill`` = (``"launch"`` or ``"started"``, seconds)
    SIGKILLed that long after its launch or after it printed "started" (before it opens the
    repository and starts the job), unless it ended first."""
    packs_before = _pack_bytes(dest)
    launched = time.monotonic()
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", set_name, "--source", str(src), "--destination", str(dest)],
        env=srv.agent_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = threading.Event()
    startup = 0.0

    def drain() -> None:
        nonlocal startup
        assert proc.stderr is not None
        with open(log, "a", encoding="utf-8") as f:
            for line in proc.stderr:
                f.write(line)
                if line.startswith(f"backup {set_name}: started") and not started.is_set():
                    startup = time.monotonic() - launched
                    started.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    killed = False
    try:
        if kill is not None:
            anchor, seconds = kill
            while anchor == "started" and not started.wait(0.005) and proc.poll() is None:
                assert time.monotonic() - launched < TIMEOUT
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                killed = proc.wait(timeout=TIMEOUT) == -signal.SIGKILL  # else it just ended
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    duration = time.monotonic() - launched
    when = "" if kill is None else f"{kill[1]:.2f}{kill[0][0].upper()}"
    if killed:
        return Attempt(when, True, None, packs_before, startup, duration)
    assert proc.returncode == 0, (proc.returncode, out, log.read_text(errors="replace")[-2000:])
    m = _OUTCOME.search(out)
    assert m is not None, out
    snap = _SNAPSHOT.search(out)
    outcome = {
        "job_id": m[1],
        "status": m[2],
        "backup_set_id": m[3],
        "destination_id": m[4],
        "snapshot_id": snap[1] if snap else "",
    }
    return Attempt(when, False, outcome, packs_before, startup, duration)


def _names(data: dict[str, Any], key: str) -> list[str]:
    return [e["Name"] if "Name" in e else e["ToFile"] for e in data[key]]


# --- SIGKILL series -------------------------------------------------------------------------


def _mutate(src: Path, rng: random.Random, count: int = 3) -> set[str]:
    """Rewrite ``count`` files chosen at random with new random content of a similar size (in
    place: their folders do not change); returns their paths."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    chosen = rng.sample(files, count)
    for path in chosen:
        path.write_bytes(rng.randbytes(max(1, path.stat().st_size + rng.randint(-999, 999))))
    return {str(p) for p in chosen}


def _job_second(job_id: str) -> int:
    """Epoch seconds of a job ID (its start time, UTC here: cbs-api.md §4)."""
    return int(datetime.strptime(job_id, "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC).timestamp())


def test_sigkill_series(server: Server, tmp_path: Path) -> None:
    """Kills land anywhere: during start-up (before the repository exists, at first), while
    the first snapshot is being built (every file read, chunks of earlier killed jobs reused),
    and after a completed job while a few changed files are stored. Each attempt starts after
    3 files were rewritten, so every job has content to store, and each report is checked
    against the last committed snapshot."""
    rng = random.Random(SEED)
    src, dest = tmp_path / "src", tmp_path / "dest"
    size = _make_tree(src, rng)
    assert 40 << 20 < size < 150 << 20
    everything = _entries(src)
    log = tmp_path / "agent.log"

    # how long a whole job of this tree takes, against a destination of its own: its start-up
    # (to "started") and its work (from "started" to its end)
    measured = _attempt(server, "measure", src, tmp_path / "measure-dest", None, log)
    assert measured.outcome is not None and measured.outcome["status"] == "BS_STOP_SUCCESS"
    assert 0 < measured.startup < measured.duration
    startup, work = measured.startup, measured.duration - measured.startup

    def moment() -> tuple[str, float]:
        """One kill in five during the start-up, the others while the job works."""
        if rng.random() < 0.2:
            return "launch", rng.uniform(0.0, startup)
        return "started", rng.uniform(0.0, work)

    attempts: list[Attempt] = []
    launched: list[int] = []  # epoch second of each attempt's launch
    mutated: list[set[str]] = []  # files rewritten just before each attempt

    def one(kill: tuple[str, float] | None) -> Attempt:
        nonlocal work
        mutated.append(_mutate(src, rng))
        _next_second()
        launched.append(int(time.time()))
        attempt = _attempt(server, "kill", src, dest, kill, log)
        attempts.append(attempt)
        if not attempt.killed:  # later jobs store less: kill within their duration
            work = attempt.duration - attempt.startup
        if kill is None:
            return attempt
        checked = _verify(server, dest)
        if (dest / "keys" / "default").exists():
            assert checked.returncode == 0, (len(attempts), attempt, checked.stdout, checked.stderr)
            assert checked.stdout.startswith("ok: ")
        else:  # killed before the repository was created: nothing to check, nothing damaged
            assert checked.returncode == EXIT_NO_REPOSITORY, checked.stdout + checked.stderr
            assert checked.stderr.startswith("opencbs: error: No repository at ")
        return attempt

    while sum(a.killed for a in attempts) < KILLS:
        assert len(attempts) < 3 * KILLS, attempts
        one(moment())
    # a job to completion, then kills while a few rewritten files are stored against it
    assert one(None).outcome is not None
    for _ in range(LATER_KILLS):
        one(moment())
    final = one(None)
    assert final.outcome is not None
    snapshots = _snapshots(server, dest)
    print(
        f"seed {SEED}: {size >> 20} MiB, start-up {startup:.2f} s, work "
        f"{measured.duration - startup:.2f} s; attempts (killed after s from Launch or "
        "Started, or Completed; MiB of packs before): "
        + ", ".join(f"{a.delay if a.killed else 'C'}/{a.packs_before >> 20}" for a in attempts)
        + f"; {len(snapshots)} snapshots"
    )

    # what killed writes left: temporary files only (never listed), removed by the clean-up
    left = _temporaries(dest)
    storage = LocalStorage(dest, fsync=False)
    assert storage.remove_stale_temporaries(older_than=0) == len(left)
    assert _temporaries(dest) == []
    print(f"{len(left)} temporary files of killed writes removed")

    # the repository: sound, every stored byte included
    checked = _verify(server, dest, "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # every job's report against the snapshot before it. The killed jobs, once the idle
    # timeout has passed, read BS_BACKUP_NOT_FINISHED. The sweeper runs at start-up and then
    # every ServerState.sweep_interval (60 s, not settable): restart the server to run it now.
    time.sleep(IDLE_TIMEOUT + 0.5)
    server.stop()
    server.start()
    set_id, dest_id = final.outcome["backup_set_id"], final.outcome["destination_id"]
    listed = server.cbs("ListBackupJobs", SkipEmpty="true")
    job_ids: list[str] = next(s["BackupJob"] for s in listed if s["BackupSetID"] == set_id)
    completed = {a.outcome["job_id"]: a for a in attempts if a.outcome is not None}
    committed = {s["job_id"] for s in snapshots}
    assert set(completed) <= committed <= set(job_ids)

    def attempt_of(job_id: str) -> int:
        second = _job_second(job_id)
        return max(i for i, at in enumerate(launched) if at <= second)

    snapshot_attempts = sorted(attempt_of(j) for j in committed)
    for job_id in job_ids:
        i = attempt_of(job_id)
        data = server.cbs(
            "GetBackupJobReport", BackupSetID=set_id, DestinationID=dest_id, BackupJobID=job_id
        )
        status = data["BackupJobStatus"]
        whole = job_id in committed  # every entry was sent before the snapshot was committed
        if job_id in completed or (whole and status == "BS_STOP_SUCCESS"):
            assert status == "BS_STOP_SUCCESS", (job_id, data["Logs"])
        else:  # killed before its finish
            assert status == "BS_BACKUP_NOT_FINISHED", (job_id, status, data["Logs"])
        before = [k for k in snapshot_attempts if k < i]
        expected = {k: set[str]() for k in LISTS}
        if before:  # the files rewritten since the last committed snapshot were scanned
            expected["upd"] = set().union(*mutated[before[-1] + 1 : i + 1])
        else:
            expected["new"] = everything
        for key in LISTS:
            names = _names(data, key)
            assert len(names) == len(set(names)), (job_id, key)  # never an entry twice
            if whole:
                assert set(names) == expected[key], (job_id, key, set(names) ^ expected[key])
            else:  # what a killed job had delivered: a part of it
                assert set(names) <= expected[key], (job_id, key, set(names) - expected[key])
        assert data["NumOfNewFiles"] == sum(1 for e in data["new"] if e["Type"] == "F")
        assert data["NumOfUpdatedFiles"] == len(data["upd"])

    # chunks reused: no chunk is stored twice (a job after a killed one stored only what that
    # one had not), the packs hold about one copy of the data and of each rewrite, not one per
    # attempt; and a first snapshot made after killed jobs had stored packs found their chunks
    repo = Repository.open(LocalStorage(dest, fsync=False), ENCRYPTION)
    indexed = sum(
        len(entries)
        for name in repo.storage.list(INDEX_PREFIX)
        for _, entries in open_index(repo.keys, name, repo.storage.get(name))
    )
    assert indexed == len(repo.index)
    rewritten = sum(os.path.getsize(p) for m in mutated for p in m)
    stored = _pack_bytes(dest)
    assert stored < 1.3 * (size + rewritten) + (16 << 20), (stored, size, rewritten)
    first = attempts[snapshot_attempts[0]]
    if first.outcome is not None and first.packs_before > 0:  # (a job killed after its commit
        # never sent its dedupe figures: they travel with the finish)
        data = server.cbs(
            "GetBackupJobReport",
            BackupSetID=set_id,
            DestinationID=dest_id,
            BackupJobID=snapshots[0]["job_id"],
        )
        assert int(data["DedupeSaving"]) > 0, (first, data["DedupeSaving"])

    # a restore of the last job equals the source
    target = tmp_path / "restored"
    ok(
        server.agent_env,
        "restore",
        final.outcome["job_id"],
        "--destination",
        str(dest),
        "--target",
        str(target),
    )
    _same_tree(src, target / src.relative_to("/"))
    shutil.rmtree(target)


# --- the destination fills up: in process -------------------------------------------------------

USER = ("filler", "filler-secret")
REPO_PASSWORD = "fill-repo-password"
T0 = 1_719_408_275_000  # 2024-06-26 13:24:35 UTC: job start times
ADMIN = ("system", "system-secret")  # tests/conftest.py's system user


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """SQLite only (overrides conftest's parametrised fixture: this tests the agent)."""
    database = Database(f"sqlite:///{tmp_path / 'opencbs.db'}")
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def agent(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentClient]:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    with client.app.state.opencbs.db.write() as conn:  # type: ignore[attr-defined]
        users.add_backup_user(conn, *USER)
    with AgentClient("http://testserver", *USER, transport=client._transport) as c:
        yield c


class FillingStorage(LocalStorage):
    """A local destination on a disk with ``free`` bytes left: the write that would go past
    them writes what fits, then fails with ``ENOSPC`` like a full file system, and so does
    every later write."""

    def __init__(self, root: Path, free: int) -> None:
        super().__init__(root, fsync=False)
        self.free = free
        self.failures = 0

    def _write_file(self, tmp: Path, data: bytes | memoryview) -> None:
        room = min(self.free, len(data))
        with open(tmp, "wb") as f:
            f.write(data[:room])
        self.free -= room
        if room < len(data):
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))


def _in_process_report(
    client: TestClient, set_id: str, dest_id: str, job_id: str
) -> dict[str, Any]:
    r = client.post(
        "/obs/api/json/GetBackupJobReport.do",
        json={
            "SysUser": ADMIN[0],
            "SysPwd": ADMIN[1],
            "LoginName": USER[0],
            "BackupSetID": set_id,
            "DestinationID": dest_id,
            "BackupJobID": job_id,
        },
    )
    body = r.json()
    assert body["Status"] == "OK", body
    data: dict[str, Any] = body["Data"]
    return data


def _temporaries(dest: Path) -> list[Path]:
    """Dot-files a write left behind, but the lock files of conditional writes
    (``.lock-<name>``: kept by design, empty, ``LocalStorage.put_if``)."""
    return [p for p in dest.rglob(".*") if p.is_file() and not p.name.startswith(".lock-")]


def test_disk_full_in_process(client: TestClient, agent: AgentClient, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    size = _make_tree(src, random.Random(SEED + 1), files=60, big=(1 << 20, 2 << 20))
    everything = _entries(src)
    Repository.init(
        LocalStorage(dest, fsync=False),
        REPO_PASSWORD,
        kdf=KdfParams(1, 8 * 1024, 1),
        pack_target_size=512 << 10,
    )
    bset = agent.create_set(
        "Full",
        settings={"sources": [str(src)]},
        destinations=[NewDestination("Local", "LOCAL", {"path": str(dest)})],
    )
    set_id, dest_id = bset.id, bset.destinations[0].id

    full = FillingStorage(dest, free=size // 2)
    outcome = run_backup(
        JobOptions(
            client=agent,
            set_id=set_id,
            destination_id=dest_id,
            storage=full,
            password=REPO_PASSWORD,
            start_time_ms=T0,
        )
    )
    # the job stops at the first failed write it learns of; the writer's store thread may
    # have tried the next finished pack meanwhile, no more
    assert 1 <= full.failures <= 2
    assert outcome.status is JobStatus.STOP_BY_SYSTEM_ERROR and outcome.snapshot_id is None
    data = _in_process_report(client, set_id, dest_id, outcome.ref.job_id)
    assert data["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"
    errors = [e["Message"] for e in data["Logs"] if e["Type"] == "error"]
    assert len(errors) == 1 and "No space left on device" in errors[0], errors
    assert data["Logs"][-1]["Type"] == "end"

    # consistent, no snapshot, no half-written object left behind
    repo = Repository.open(LocalStorage(dest, fsync=False), REPO_PASSWORD)
    checked = repo.verify(read_data=True)
    assert checked.ok, checked.errors
    assert repo.list_snapshots() == []
    assert _temporaries(dest) == []
    stored_before = len(repo.index)
    assert stored_before > 0  # packs written before the disk filled up

    # space again: the next job completes, everything new, reusing the stored chunks
    outcome = run_backup(
        JobOptions(
            client=agent,
            set_id=set_id,
            destination_id=dest_id,
            storage=LocalStorage(dest, fsync=False),
            password=REPO_PASSWORD,
            start_time_ms=T0 + 60_000,
        )
    )
    assert outcome.status is JobStatus.STOP_SUCCESS, outcome
    assert outcome.dedupe_saving > 0
    data = _in_process_report(client, set_id, dest_id, outcome.ref.job_id)
    assert sorted(_names(data, "new")) == sorted(everything)
    assert all(data[k] == [] for k in LISTS if k != "new")
    assert int(data["DedupeSaving"]) == outcome.dedupe_saving
    repo = Repository.open(LocalStorage(dest, fsync=False), REPO_PASSWORD)
    assert repo.verify(read_data=True).ok
    assert len(repo.list_snapshots()) == 1


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "dest", fsync=False)
    storage.put("data/ab/" + "ab" * 32, b"pack")
    storage.put("snapshots/" + "cd" * 32, b"snapshot")
    old, young = tmp_path / "dest/data/ab/.tmp-x-1", tmp_path / "dest/snapshots/.tmp-y-2"
    old.write_bytes(b"half a pack")
    young.write_bytes(b"being written")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    (tmp_path / "dest/data/.hidden").write_bytes(b"not ours")  # only .tmp- files go
    assert storage.remove_stale_temporaries() == 1
    assert not old.exists() and young.exists() and (tmp_path / "dest/data/.hidden").exists()
    assert list(storage.list()) == ["data/ab/" + "ab" * 32, "snapshots/" + "cd" * 32]
    assert storage.remove_stale_temporaries(older_than=0) == 1 and not young.exists()


# --- the destination fills up: a real file system ---------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs mounted at ``tmp_path/small`` (root only)."""
    with tmpfs(tmp_path / "small", "20m") as mnt:
        yield mnt


def test_disk_full_real_filesystem(server: Server, small_fs: Path, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", small_fs / "repo"
    rng = random.Random(SEED + 2)
    src.mkdir()
    for i in range(15):
        (src / f"r{i:02}.bin").write_bytes(rng.randbytes(4 << 20))  # 60 MiB, incompressible
    _next_second()
    res = run(
        server.agent_env,
        "backup",
        "--set",
        "tmpfs",
        "--source",
        str(src),
        "--destination",
        str(dest),
        "--json",
    )
    assert res.returncode == 9, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_BY_SYSTEM_ERROR" and job["snapshot_id"] is None
    assert "No space left on device" in job["message"]
    data = server.cbs(
        "GetBackupJobReport",
        BackupSetID=job["backup_set_id"],
        DestinationID=job["destination_id"],
        BackupJobID=job["job_id"],
    )
    assert data["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"
    checked = _verify(server, dest, "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _snapshots(server, dest) == []
    assert _temporaries(dest) == []
    stored = _pack_bytes(dest)
    assert stored > 0

    # more space: the next job completes and stores only what the first could not
    subprocess.run(["mount", "-o", "remount,size=100m", str(small_fs)], check=True)
    _next_second()
    res = run(server.agent_env, "backup", "--set", "tmpfs", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_SUCCESS" and job["counts"]["new"] == 16
    assert job["dedupe_saving"] >= stored - (1 << 20)  # what the packs held, overhead aside
    assert _pack_bytes(dest) < 62 << 20
    checked = _verify(server, dest)
    assert checked.returncode == 0, checked.stdout + checked.stderr
