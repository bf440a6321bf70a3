"""Lost server (issue 4) with real processes: ``opencbs backup`` while ``opencbs serve`` is down
completes and spools its report (exit 0, "report spooled, not delivered"); ``opencbs agent
flush`` against a server SIGKILLed mid-delivery of that report (5,000 files: six batches) is told
the server is away (exit 7); after a restart ``opencbs agent flush`` delivers the rest. The
report then appears exactly once, complete, with counters equal to its lists.

The kill is placed by a small TCP relay between the agent and the server: it forwards bytes both
ways and SIGKILLs the server as soon as the third ``PUT`` (batch) request of the flush has been
forwarded, so the server dies after two batches, with the third in flight (applied or not). The
agent talks to the server through the relay throughout: its report spool is per server URL and
backup user (``opencbs.agent.spool``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent_support import tmpfs
from tests.e2e.serving import (
    Serve,
    add_sysuser,
    add_user,
    agent_env,
    free_port,
    isolated_env,
    ok,
    run,
)
from tests.integration.agent.test_agent_backup import _check_counters

LOGIN, PASSWORD, ENCRYPTION = "alice", "alice-pw", "repo-secret"
MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-pw"}
MANY = 5_000


class Relay:
    """Forwards TCP connections from a port of its own to ``target_port``; calls ``on_put``
    once, right after forwarding the ``kill_at``-th request that starts with ``PUT``."""

    def __init__(self, target_port: int, kill_at: int, on_put: Callable[[], None]) -> None:
        self.target_port = target_port
        self.kill_at = kill_at
        self.on_put = on_put
        self.puts = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                conn.close()
                continue
            threading.Thread(target=self._pipe, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        marker = b"PUT /api/agent/v1/"  # a batch request line, wherever the reads cut it
        tail = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if not requests:
                    continue
                window = tail + data
                tail = window[-(len(marker) - 1) :]
                for _ in range(window.count(marker)):
                    with self.lock:
                        self.puts += 1
                        if self.puts == self.kill_at:
                            self.on_put()
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    env = isolated_env(tmp_path / "root")
    add_user(env, LOGIN, PASSWORD)
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    server = Serve(env, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _agent_env(serve: Serve, url: str) -> dict[str, str]:
    return agent_env(serve.env, url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION)


def _report(url: str, job: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(
        url + "/obs/api/json/GetBackupJobReport.do",
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


def _jobs(url: str, set_id: str) -> list[str]:
    r = httpx.post(
        url + "/obs/api/json/ListBackupJobs.do", timeout=30, json={**MONITOR, "LoginName": LOGIN}
    )
    answer = r.json()
    assert answer["Status"] == "OK", answer
    return [j for s in answer["Data"] if str(s["BackupSetID"]) == set_id for j in s["BackupJob"]]


def _assert_once_and_complete(data: dict[str, Any], new_files: int) -> None:
    _check_counters(data)
    types = [e["Type"] for e in data["Logs"]]
    assert (types[0], types[-1], types.count("start"), types.count("end")) == ("start", "end", 1, 1)
    names = [e["Name"] for e in data["new"]]
    assert len(names) == len(set(names))
    assert int(data["NumOfNewFiles"]) == new_files


def test_backup_with_server_down_then_killed_mid_delivery(serve: Serve, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "first").mkdir(parents=True)
    (src / "first" / "a.txt").write_bytes(b"alpha")
    relay = Relay(serve.port, kill_at=0, on_put=serve.kill)  # armed only for the first flush
    env_up = _agent_env(serve, f"http://127.0.0.1:{relay.port}")

    # job 1 with the server up: creates the set (remembered by the agent)
    first = json.loads(
        ok(
            env_up,
            "backup",
            "--set",
            "many",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    assert first["report_delivered"] is True

    # job 2 with the server down for the whole job: 5,000 new files in 50 folders. It starts in
    # a later second than job 1, so that the server's job ID is the one the agent gave it (in
    # the same second, delivery moves it a second later: test_agent_spool.py covers that)
    serve.kill()
    time.sleep(1.05 - time.time() % 1)
    for d in range(50):
        folder = src / "many" / f"d{d:02d}"
        folder.mkdir(parents=True)
        for i in range(MANY // 50):
            (folder / f"f{i:03d}").write_bytes(f"{d}/{i}\n".encode())
    res = run(env_up, "backup", "--set", "many", "--json")
    assert res.returncode == 0, res.stderr
    assert "report spooled, not delivered" in res.stderr
    assert "Traceback" not in res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_SUCCESS" and job["snapshot_id"]
    assert job["counts"]["new"] == MANY + 51 and job["report_delivered"] is False
    spool = Path(job["report_spool"])
    batches = len(list(spool.glob("batch-*.json")))
    assert batches >= 4  # so that the server can die mid-delivery with batches left
    listed = json.loads(ok(env_up, "snapshots", "--destination", str(dest), "--json"))
    assert [s["job_id"] for s in listed] == [first["job_id"], job["job_id"]]

    # the server comes back and dies after two batches, the third in flight
    serve.start()
    with relay.lock:
        relay.puts, relay.kill_at = 0, 3
    broken = run(env_up, "agent", "flush")
    with relay.lock:
        assert relay.puts == 3
        relay.kill_at = 0  # disarmed
    assert broken.returncode == 7, broken.stdout + broken.stderr
    assert "pending" in broken.stdout and "Traceback" not in broken.stderr
    assert spool.is_dir()

    # restarted: flush delivers the rest, once
    serve.start()
    done = run(env_up, "agent", "flush", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)
    assert [(r["job_id"], r["state"]) for r in rows] == [(job["job_id"], "delivered")]
    assert 0 < rows[0]["batches_sent"] <= batches - 2  # the server had two or three already
    assert not spool.exists()
    assert ok(env_up, "agent", "flush").strip() == "nothing to deliver"

    assert sorted(_jobs(serve.url, job["backup_set_id"])) == sorted(
        [first["job_id"], job["job_id"]]
    )
    data = _report(serve.url, job)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    _assert_once_and_complete(data, MANY)
    assert int(data["NumOfNewDirCount"]) == 51
    relay.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at ``tmp_path/agent-data`` (root only): the agent's data_dir, too small
    for the report of a few thousand files."""
    with tmpfs(tmp_path / "agent-data", "256k") as mnt:
        yield mnt


def test_report_lost_when_the_server_is_down_and_the_agent_disk_is_full(
    serve: Serve, tiny_fs: Path, tmp_path: Path
) -> None:
    """With the server away and the agent's disk full, the report can be neither delivered nor
    spooled whole: the backup itself is committed, but the run says the report is lost (one
    error line and a hint naming data_dir, exit 7) instead of claiming it is spooled."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "first").mkdir(parents=True)
    (src / "first" / "a.txt").write_bytes(b"alpha")
    env = {**_agent_env(serve, serve.url), "OPENCBS_DATA_DIR": str(tiny_fs)}
    first = json.loads(
        ok(
            env,
            "backup",
            "--set",
            "lost",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    assert first["report_delivered"] is True
    for d in range(20):
        folder = src / "many" / f"d{d:02d}"
        folder.mkdir(parents=True)
        for i in range(200):
            (folder / f"{'long-name-' * 6}{i:03d}").write_bytes(b"%d/%d\n" % (d, i))
    serve.kill()
    time.sleep(1.05 - time.time() % 1)
    res = run(env, "backup", "--set", "lost", "--json")
    assert res.returncode == 7, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert any(line.startswith("opencbs: error:") for line in lines), res.stderr
    hint = [line for line in lines if line.startswith("hint:")]
    assert hint and "data_dir" in hint[-1], res.stderr
    job = json.loads(res.stdout)
    assert job["report_lost"] is True and job["report_delivered"] is False
    assert job["status"].startswith("BS_STOP_SUCCESS") and job["snapshot_id"]  # backed up
