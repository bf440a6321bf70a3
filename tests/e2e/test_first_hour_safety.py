"""The first hour of a new user (issue 12), what must not go wrong quietly: the real CLI as
processes against a real ``opencbs serve``.

- A destination folder that held a set's backups and is now missing or empty (a disk not
  mounted) is refused (exit 7, nothing created), with a hint naming ``--new-repository``; with
  it a new repository starts there; the folder put back works as before.
- A job backed up while the server was away is reported with its own end time, not the time
  its report was delivered.
- With the server away and a report pending, a backup does not retry the pending delivery
  (connection refused); the reports stay spooled and are delivered later, in order.
- A second Ctrl-C aborts at once: one line, exit 130, no traceback; the next backup and a
  verify are fine. SIGTERM says SIGTERM, not Ctrl-C.
- ``verify`` after damage does not promise that a backup repairs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serving import OPENCBS, TIMEOUT, Serve, free_port, ok, run
from tests.e2e.serving import isolated_env as _env

LOGIN, PASSWORD, ENCRYPTION = "carol", "pw12345678", "repo-secret"
EXIT_UNAVAILABLE = 7


@dataclass(frozen=True)
class Agent:
    """A server (which can be stopped and started again) and an agent's environment."""

    serve: Serve
    env: dict[str, str]
    data: Path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    env = _env(tmp_path / "root")
    ok(env, "user", "add", LOGIN, "--password-stdin", stdin=PASSWORD + "\n")
    serve = Serve(env, free_port())
    serve.start()
    try:
        yield Agent(
            serve,
            {
                **env,
                "OPENCBS_SERVER_URL": serve.url,
                "OPENCBS_LOGIN_NAME": LOGIN,
                "OPENCBS_PASSWORD": PASSWORD,
                "OPENCBS_ENCRYPTION_PASSWORD": ENCRYPTION,
            },
            tmp_path / "root" / "data",
        )
    finally:
        serve.kill()


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    (src / "b.txt").write_bytes(b"beta")
    return src


def _backup(a: Agent, *args: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(ok(a.env, "backup", *args, "--json"))
    return job


def _report(a: Agent, job_id: str, set_id: str) -> dict[str, Any]:
    answer = json.loads(ok(a.env, "report", job_id, "--user", LOGIN, "--set", set_id, "--json"))
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


def _epoch(report_time: str) -> float:
    """A report time (``yyyy-MM-dd HH:mm:ss``, the server's zone: UTC here) in epoch seconds."""
    return datetime.strptime(report_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def _pending(a: Agent) -> list[Path]:
    return [p for p in a.data.glob("agent-spool/*/*-*-*") if (p / "job.json").exists()]


# --- 1. a destination folder that held the set's backups ---------------------------------------


@pytest.mark.parametrize("how", ["moved", "emptied"])
def test_a_vanished_repository_is_refused_not_recreated(
    agent: Agent, tmp_path: Path, how: str
) -> None:
    src, dest = _source(tmp_path), tmp_path / "disk" / "D"
    first = _backup(agent, "--set", "EX", "--source", str(src), "--destination", str(dest))
    assert first["status"] == "BS_STOP_SUCCESS" and first["snapshot_id"]
    # a second job: the record holds the folder (not only the first use)
    assert _backup(agent, "--set", "EX")["status"] == "BS_STOP_SUCCESS"
    dest.rename(tmp_path / "disk" / "D.unmounted")
    if how == "emptied":
        dest.mkdir()  # the mount point of a disk not mounted

    res = run(agent.env, "backup", "--set", "EX")
    assert res.returncode == EXIT_UNAVAILABLE, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    state = "is missing" if how == "moved" else "is empty"
    assert lines[-2] == (
        f"opencbs: error: destination folder {dest} {state}, but it held the backups of "
        "backup set 'EX': is the disk mounted? nothing was backed up or created"
    ), res.stderr
    assert lines[-1].startswith("hint: mount the disk or put the folder back")
    assert "--new-repository" in lines[-1]
    assert "initialised" not in res.stderr
    assert dest.exists() is (how == "emptied")
    assert how == "moved" or not any(dest.iterdir())  # nothing created
    assert not _pending(agent)  # no job started

    # the folder back: an incremental backup as before
    if how == "emptied":
        dest.rmdir()
    (tmp_path / "disk" / "D.unmounted").rename(dest)
    again = _backup(agent, "--set", "EX")
    assert again["status"] == "BS_STOP_SUCCESS" and again["counts"]["new"] == 0, again

    # a new repository there, on purpose
    shutil.rmtree(dest)
    fresh = _backup(agent, "--set", "EX", "--new-repository")
    assert fresh["status"] == "BS_STOP_SUCCESS" and fresh["counts"]["new"] > 0, fresh
    # and from then on it is this set's repository: incremental, no flag needed
    assert _backup(agent, "--set", "EX")["counts"]["new"] == 0


def test_a_first_backup_and_a_new_destination_still_create_their_repository(
    agent: Agent, tmp_path: Path
) -> None:
    src, dest, other = _source(tmp_path), tmp_path / "D", tmp_path / "E"
    _backup(agent, "--set", "EX", "--source", str(src), "--destination", str(dest))
    assert (dest / "keys" / "default").is_file()
    added = _backup(agent, "--set", "EX", "--add-destination", str(other))
    assert added["status"] == "BS_STOP_SUCCESS" and (other / "keys" / "default").is_file()


# --- 2. the end time of a job backed up offline ------------------------------------------------


def test_an_offline_job_is_reported_with_its_own_end_time(agent: Agent, tmp_path: Path) -> None:
    src, dest = _source(tmp_path), tmp_path / "D"
    _backup(agent, "--set", "EX", "--source", str(src), "--destination", str(dest))
    agent.serve.kill()
    (src / "c.txt").write_bytes(b"gamma")
    offline = run(agent.env, "backup", "--set", "EX", "--json")
    assert offline.returncode == 0, offline.stderr
    job = json.loads(offline.stdout)
    assert job["report_delivered"] is False
    ended_before = time.time()  # the job has ended: its process exited
    time.sleep(2.1)  # the delivery comes whole seconds later
    agent.serve.start()
    flushed = json.loads(ok(agent.env, "agent", "flush", "--json"))
    [row] = [r for r in flushed if r["state"] == "delivered"]

    report = _report(agent, row["job_id"], job["backup_set_id"])
    assert report["BackupJobStatus"] == "BS_STOP_SUCCESS"
    end, start = _epoch(report["EndTime"]), _epoch(report["StartTime"])
    assert start <= end <= ended_before, (report["StartTime"], report["EndTime"], ended_before)


# --- 3. no retries of a pending report when the server is away ---------------------------------


def test_an_offline_backup_does_not_retry_a_pending_report(agent: Agent, tmp_path: Path) -> None:
    src, dest = _source(tmp_path), tmp_path / "D"
    _backup(agent, "--set", "EX", "--source", str(src), "--destination", str(dest))
    agent.serve.kill()
    assert run(agent.env, "backup", "--set", "EX").returncode == 0
    assert len(_pending(agent)) == 1

    res = run(agent.env, "--debug", "backup", "--set", "EX")
    assert res.returncode == 0, res.stderr
    assert "retrying in" not in res.stderr, res.stderr  # agent.retry's debug line
    assert "earlier report of" in res.stderr and ": pending" in res.stderr
    assert len(_pending(agent)) == 2  # both kept

    agent.serve.start()
    flushed = json.loads(ok(agent.env, "agent", "flush", "--json"))
    assert [r["state"] for r in flushed] == ["delivered", "delivered"], flushed
    assert not _pending(agent)


# --- 4. Ctrl-C twice, and SIGTERM -------------------------------------------------------------


def _big_source(tmp_path: Path) -> Path:
    src = tmp_path / "big"
    src.mkdir()
    for i in range(6):  # 384 MB that do not compress: a job of several seconds
        with (src / f"part{i}.bin").open("wb") as f:
            for _ in range(64):
                f.write(os.urandom(1 << 20))
    return src


def _start_backup(a: Agent, src: Path, dest: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [OPENCBS, "backup", "--set", "BIG", "--source", str(src), "--destination", str(dest)],
        env=a.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while not _pending(a):  # the job has started (its report spool): the signals are ours
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    time.sleep(0.5)  # reading and storing
    return proc


def test_a_second_ctrl_c_aborts_at_once_without_a_traceback(agent: Agent, tmp_path: Path) -> None:
    src, dest = _big_source(tmp_path), tmp_path / "D"
    proc = _start_backup(agent, src, dest)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    while "stopping the job" not in first:
        first = proc.stderr.readline()
        assert first, "no line for the first Ctrl-C"
    assert first.strip() == "opencbs: stopping the job cleanly (Ctrl-C again to abort)"
    proc.send_signal(signal.SIGINT)
    _out, rest = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest and "Exception ignored" not in rest, rest
    assert rest.strip().splitlines()[-1] == (
        "opencbs: aborted; the repository is left consistent, the next backup reuses what was "
        "stored (this job's report is closed as not finished at the next delivery)"
    ), rest

    # what it says is true: the repository verifies, the next backup completes
    verified = run(agent.env, "verify", "--destination", str(dest))
    assert verified.returncode in (0, 7), verified.stderr  # 7: aborted before the repository
    shutil.rmtree(src)
    src.mkdir()
    (src / "small.txt").write_bytes(b"small")
    done = run(agent.env, "backup", "--set", "BIG", "--json")
    assert done.returncode == 0, done.stderr
    after = json.loads(done.stdout)
    assert after["status"] == "BS_STOP_SUCCESS"
    # the aborted job's report: delivered first, closed as not finished, and said so
    [aborted] = re.findall(
        r"opencbs: warning: the previous job (\S+) of this backup set did not finish: its "
        r"agent stopped before the job ended \(killed, or its machine stopped\); the server "
        r"has it as BS_BACKUP_NOT_FINISHED\n",
        done.stderr,
    )
    report = _report(agent, aborted, after["backup_set_id"])
    assert report["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED"
    ok(agent.env, "verify", "--destination", str(dest))


def test_sigterm_stops_the_job_and_says_sigterm(agent: Agent, tmp_path: Path) -> None:
    src, dest = _big_source(tmp_path), tmp_path / "D"
    proc = _start_backup(agent, src, dest)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "opencbs: stopping the job cleanly (SIGTERM)\n" in err, err
    assert "Ctrl-C" not in err and "Traceback" not in err, err


# --- 6. verify's hint after damage ------------------------------------------------------------


def _packs(dest: Path) -> list[Path]:
    return sorted(p for p in (dest / "data").rglob("*") if p.is_file())


def test_verify_after_damage_does_not_promise_a_backup_repairs_it(
    agent: Agent, tmp_path: Path
) -> None:
    src, dest = _source(tmp_path), tmp_path / "D"
    _backup(agent, "--set", "EX", "--source", str(src), "--destination", str(dest))
    for pack in _packs(dest):  # 8 bytes written into each pack
        with pack.open("r+b") as f:
            f.seek(16)
            f.write(b"XXXXXXXX")

    res = run(agent.env, "verify", "--destination", str(dest), "--read-data")
    assert res.returncode == 8, (res.stdout, res.stderr)
    hint = res.stderr.strip().splitlines()[-1]
    assert hint.startswith("hint: restore what you can"), res.stderr
    assert "a backup does not store damaged data again (there is no repair yet)" in hint
    assert "back up again" not in res.stderr


def test_verify_of_a_missing_pack_says_what_a_backup_stores_again(
    agent: Agent, tmp_path: Path
) -> None:
    src, dest = _source(tmp_path), tmp_path / "D"
    _backup(agent, "--set", "EX", "--source", str(src), "--destination", str(dest))
    _packs(dest)[0].unlink()

    res = run(agent.env, "verify", "--destination", str(dest))
    assert res.returncode == 8, (res.stdout, res.stderr)
    assert res.stderr.strip().splitlines()[-1] == (
        "hint: the next backup stores the data of the missing packs again from the sources, as "
        "far as they still hold it; every snapshot whose data is then stored again is whole "
        "(run verify after it): restore what you need before the sources change"
    ), res.stderr
    # as said: after the next backup every snapshot is whole; the missing pack is a note
    first = json.loads(ok(agent.env, "snapshots", "--destination", str(dest), "--json"))[0]
    job = _backup(agent, "--set", "EX")
    assert job["status"] == "BS_STOP_SUCCESS_WITH_WARNING", job
    again = run(agent.env, "verify", "--destination", str(dest))
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "indexed pack is missing" in again.stderr and "nothing is lost" in again.stderr
    older = tmp_path / "older"
    ok(agent.env, "restore", first["id"], "--set", "EX", "--target", str(older))
    assert (older / src.relative_to("/") / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    restored = tmp_path / "restored"
    ok(agent.env, "restore", job["snapshot_id"], "--set", "EX", "--target", str(restored))
    assert sorted(p.name for p in (restored / src.relative_to("/")).iterdir()) == [
        "a.txt",
        "b.txt",
    ]
