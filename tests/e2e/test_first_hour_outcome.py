"""The first hour of a new user (issue 12), what a backup tells: the real CLI as processes
against a real ``opencbs serve``.

- A source that does not exist when a set is created is refused (exit 2, nothing created), by
  ``opencbs backup --set NEW`` and ``opencbs set add``.
- A job that can read none of its sources fails (``BS_STOP_BY_SYSTEM_ERROR`` on the server, with
  the reason in its log entries; exit 9; no snapshot); one that misses some ends with a warning
  said on stderr and carried in ``--json`` (``messages``, ``message``).
- Each thing is said once: the server unreachable, another job of the set running.
- ``--verbose`` says permission bits in octal; counts are singular or plural as they should be.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serving import OPENCBS, Serve, add_user, agent_env, free_port, isolated_env, ok, run

LOGIN, PASSWORD, ENCRYPTION = "bob", "pw12345678", "repo-secret"


@dataclass(frozen=True)
class Agent:
    """A running server and the environment of an agent of backup user ``bob`` on it."""

    serve: Serve
    env: dict[str, str]
    data: Path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    env = isolated_env(tmp_path / "root")
    add_user(env, LOGIN, PASSWORD)
    serve = Serve(env, free_port())
    serve.start()
    try:
        yield Agent(
            serve,
            agent_env(env, serve.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
            tmp_path / "root" / "data",
        )
    finally:
        serve.kill()


def _sets(a: Agent) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(ok(a.env, "set", "list", LOGIN, "--json"))
    return found


def _report(a: Agent, job: dict[str, Any]) -> dict[str, Any]:
    """The server's report of ``job`` (GetBackupJobReport, through ``opencbs report``)."""
    answer = json.loads(
        ok(a.env, "report", job["job_id"], "--user", LOGIN, "--set", job["backup_set_id"], "--json")
    )
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


def _snapshots(a: Agent, dest: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        ok(a.env, "snapshots", "--destination", str(dest), "--json")
    )
    return found


def _first_backup(a: Agent, name: str, sources: list[Path], dest: Path) -> dict[str, Any]:
    args = [x for s in sources for x in ("--source", str(s))]
    job: dict[str, Any] = json.loads(
        ok(a.env, "backup", "--set", name, *args, "--destination", str(dest), "--json")
    )
    assert job["status"] == "BS_STOP_SUCCESS", job
    return job


def _docs_backed_up(a: Agent, tmp_path: Path) -> tuple[Path, Path]:
    """Set "Docs" of ``tmp_path/src`` (one file, ``a.txt``) backed up once to ``tmp_path/dest``;
    returns (source, destination)."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    _first_backup(a, "Docs", [src], dest)
    return src, dest


def test_a_missing_source_creates_no_set_and_no_repository(agent: Agent, tmp_path: Path) -> None:
    dest = tmp_path / "x" / "D"
    res = run(
        agent.env,
        "backup",
        "--set",
        "Ghost",
        "--source",
        "/no/such/folder",
        "--destination",
        str(dest),
        "--json",
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines[-2] == (
        "opencbs: error: source not found: /no/such/folder (No such file or directory); "
        "no backup set was created"
    ), res.stderr
    assert lines[-1].startswith("hint: ")
    assert res.stdout == ""
    assert not dest.exists() and not dest.parent.exists()
    assert _sets(agent) == []

    # the admin's command too, naming only the missing one of two
    res = run(
        agent.env,
        "set",
        "add",
        LOGIN,
        "G2",
        "--source",
        str(tmp_path),
        "--source",
        str(tmp_path / "missing"),
        "--destination",
        str(dest),
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    first = res.stderr.strip().splitlines()[0]
    assert first.startswith("opencbs: error: source not found: ") and "missing" in first
    assert f"{tmp_path} (" not in first
    assert _sets(agent) == []

    # a set whose agent runs on another machine: its sources are that machine's paths
    ok(agent.env, "set", "add", LOGIN, "Remote", "--source", "/srv/share", "--sources-elsewhere",
       "--destination", str(dest))  # fmt: skip
    assert [s["Name"] for s in _sets(agent)] == ["Remote"]


def test_every_source_missing_fails_the_job_on_the_server(agent: Agent, tmp_path: Path) -> None:
    src, dest = _docs_backed_up(agent, tmp_path)
    src.rename(tmp_path / "moved")
    before = _snapshots(agent, dest)

    res = run(agent.env, "backup", "--set", "Docs", "--json")
    assert res.returncode == 9, (res.stdout, res.stderr)
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_BY_SYSTEM_ERROR" and job["snapshot_id"] is None
    assert (job["warnings"], job["errors"]) == (1, 1)
    warn = (
        f"{src}: source not found or unreadable (No such file or directory); "
        "not reported deleted: its entries of an earlier backup, if any, stay in the snapshot"
    )
    assert job["messages"] == [
        {"type": "warn", "text": warn},
        {"type": "error", "text": job["message"]},
    ]
    assert job["message"].startswith(f"Nothing backed up: the source {src} is missing")
    # said once each on stderr: the warning inline, the failure with its hint
    assert res.stderr.count(warn) == 1, res.stderr
    assert f"opencbs: warning: {warn}" in res.stderr
    assert res.stderr.count("Nothing backed up") == 1, res.stderr
    assert "\nhint: " in res.stderr
    assert _snapshots(agent, dest) == before  # no snapshot of nothing

    report = _report(agent, job)
    assert report["BackupJobStatus"] == "BS_STOP_BY_SYSTEM_ERROR"
    logs = [(e["Type"], e["Message"]) for e in report["Logs"]]
    assert ("warn", warn) in logs and ("error", job["message"]) in logs

    # text output: the same, and a rerun fails the same way (never "succeeds")
    again = run(agent.env, "backup", "--set", "Docs")
    assert again.returncode == 9
    assert again.stderr.count(warn) == 1 and "BS_STOP_BY_SYSTEM_ERROR" in again.stdout
    assert "note:" not in again.stdout


def test_some_sources_missing_is_a_warning_said_where_the_user_looks(
    agent: Agent, tmp_path: Path
) -> None:
    keep, lose, dest = tmp_path / "keep", tmp_path / "lose", tmp_path / "dest"
    for folder in (keep, lose):
        folder.mkdir()
        (folder / "f.txt").write_bytes(folder.name.encode())
    _first_backup(agent, "Two", [keep, lose], dest)
    lose.rename(tmp_path / "gone")
    (keep / "g.txt").write_bytes(b"new")
    warn = (
        f"{lose}: source not found or unreadable (No such file or directory); "
        "not reported deleted: its entries of an earlier backup, if any, stay in the snapshot"
    )

    res = run(agent.env, "backup", "--set", "Two", "--json")
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_SUCCESS_WITH_WARNING" and job["snapshot_id"]
    assert job["messages"] == [{"type": "warn", "text": warn}]
    assert job["message"] == f"completed with 1 warning: {warn}"
    assert res.stderr.count(warn) == 1 and f"opencbs: warning: {warn}" in res.stderr

    text = run(agent.env, "backup", "--set", "Two")
    assert text.returncode == 0
    assert text.stderr.count(warn) == 1 and f"opencbs: warning: {warn}" in text.stderr
    assert warn not in text.stdout  # said once, on stderr


def test_an_offline_backup_says_the_server_is_unreachable_once(
    agent: Agent, tmp_path: Path
) -> None:
    src, dest = _docs_backed_up(agent, tmp_path)
    agent.serve.kill()
    (src / "b.txt").write_bytes(b"beta")

    res = run(agent.env, "backup", "--set", "Docs")
    assert res.returncode == 0, res.stderr
    said = re.findall(r"cannot reach|could not be reached|unreachable", res.stderr)
    assert len(said) == 1, res.stderr
    assert "report spooled, not delivered" in res.stderr
    assert "WARNING" not in res.stderr and "ERROR" not in res.stderr

    # a second one, with the first report still spooled: said once too
    (src / "c.txt").write_bytes(b"gamma")
    res = run(agent.env, "backup", "--set", "Docs")
    assert res.returncode == 0, res.stderr
    said = re.findall(r"cannot reach|could not be reached|unreachable", res.stderr)
    assert len(said) == 1, res.stderr
    assert "earlier report of the offline job of " in res.stderr and ": pending\n" in res.stderr

    # a flush while the server is away names each report that stays spooled, with --json too
    away = run(agent.env, "agent", "flush")
    assert away.returncode == 7, away.stderr
    assert [line.split(":")[0] for line in away.stdout.splitlines()] == ["pending"] * 2
    assert "2 reports stay spooled" in away.stderr, away.stderr
    rows = json.loads(run(agent.env, "agent", "flush", "--json").stdout)
    assert [r["state"] for r in rows] == ["pending", "pending"], rows

    # delivered later, said with its singular or plural
    agent.serve.start()
    flushed = run(agent.env, "agent", "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.startswith("delivered: "), flushed.stdout
    assert "batch" not in flushed.stdout  # the spool's word, not the user's


def _job_spools(data: Path) -> list[Path]:
    """The job folders of the report spool whose job record is written (the job holds the
    folder's lock by then: ``agent.spool.JobSpool.create``)."""
    return [p for p in data.glob("agent-spool/*/*-*-*") if (p / "job.json").exists()]


def test_another_running_job_of_the_set_is_refused_not_an_earlier_report(
    agent: Agent, tmp_path: Path
) -> None:
    """A second backup of a set while one runs is refused at once, naming the running
    process (issue 15, point 11: one job of a set at a time), never told as an earlier
    report; the first one completes."""
    src, dest = _docs_backed_up(agent, tmp_path)
    for i in range(40):
        (src / f"big{i}").write_bytes(bytes([i]) * 1_000_000 + i.to_bytes(4, "big"))

    first = subprocess.Popen(
        [OPENCBS, "backup", "--set", "Docs", "--json"],
        env=agent.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _job_spools(agent.data) and first.poll() is None:
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.005)
        assert first.poll() is None, "the first job ended before it could be caught running"
        first.send_signal(signal.SIGSTOP)  # it holds its set (and its report's folder)
        try:
            res = run(agent.env, "backup", "--set", "Docs")
        finally:
            first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert json.loads(out)["status"] == "BS_STOP_SUCCESS"
    assert res.returncode == 5, res.stderr
    assert "earlier report" not in res.stderr and "busy" not in res.stderr, res.stderr
    assert res.stderr.startswith("opencbs: error: a job of backup set 'Docs' ("), res.stderr
    assert f") is running (pid {first.pid}); not starting another\nhint: " in res.stderr


def test_verbose_says_permission_bits_in_octal(agent: Agent, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    target = src / "a.txt"
    target.write_bytes(b"alpha")
    target.chmod(0o644)
    _first_backup(agent, "Docs", [src], dest)
    target.chmod(0o600)

    res = run(agent.env, "backup", "--set", "Docs", "--verbose")
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith(f"pmt {target}:"))
    assert "mode 0644→0600" in line and "33188" not in line, line
