"""Restore jobs over HTTP on SQLite and PostgreSQL (issue 15, point 10; cbs-api.md §12): the
agent API's restore-job calls (start, progress, finish, their errors and retries), the
server's sweep of a silent restore, and the CBS calls GetRestoreJobReport,
ListRestoreJobStatus and ListRestoreJobs with the backup-job calls' envelope, errors and
scoping (a reseller sees its own users' restores only)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.api.app import sweep_once
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import sets, users
from tests.conftest import ADMIN, UTC

AGENT = "/api/agent/v1"
CBS = "/obs/api/json"
ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")
RES1 = ("res1", "res1-password")
RES2 = ("res2", "res2-password")
AT = int(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp() * 1000)
JOB = "2026-03-04-05-06-07"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts get argon2id hashes of the lowest cost: the API is under test, not the hash."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@dataclass(frozen=True)
class World:
    """alice's set Docs (destination a); bob's (owned by reseller res1) set Main (m)."""

    docs: str
    a: str
    main: str
    m: str


@pytest.fixture
def world(state: ServerState) -> World:
    with state.db.write() as conn:
        users.add_system_user(conn, *RES1, SystemRole.RESELLER)
        users.add_system_user(conn, *RES2, SystemRole.RESELLER)
        alice = users.add_backup_user(conn, *ALICE)
        bob = users.add_backup_user(conn, *BOB, owner="res1")
        docs = sets.add_set(conn, alice.id, "Docs", {"sources": ["/src"]})
        a = sets.add_destination(conn, alice.id, docs.id, name="A", dest_type="LOCAL")
        main = sets.add_set(conn, bob.id, "Main", {"sources": ["/src"]})
        m = sets.add_destination(conn, bob.id, main.id, name="M", dest_type="LOCAL")
    return World(str(docs.id), str(a.id), str(main.id), str(m.id))


def auth(who: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(who).encode()).decode()}


def start(
    client: TestClient,
    set_id: str,
    dest_id: str,
    who: tuple[str, str] = ALICE,
    **more: Any,
) -> Any:
    body = {
        "destination_id": dest_id,
        "backup_job_id": "2026-03-01-00-00-00",
        "snapshot_id": "ab" * 32,
        "target": "/restore/here",
        "overwrite": "never",
        "start_time": AT,
        **more,
    }
    return client.post(f"{AGENT}/backup-sets/{set_id}/restore-jobs", json=body, headers=auth(who))


def finish_body(**more: Any) -> dict[str, Any]:
    return {
        "status": "RESTORE_STOP_SUCCESS_WITH_WARNING",
        "file_count": 3,
        "file_size": 12345,
        "dir_count": 2,
        "link_count": 1,
        "kept_count": 4,
        "failed_count": 1,
        "damaged_count": 0,
        "logs": [
            {"type": "start", "message": "Restore of backup job …", "time": AT},
            {"type": "warn", "message": "cannot restore /src/x: permission denied", "time": AT},
            {"type": "end", "message": "Restore ended", "time": AT + 1000},
        ],
        "end_time": AT + 2000,
        **more,
    }


def cbs(client: TestClient, call: str, who: tuple[str, str] = ADMIN, **params: str) -> Any:
    r = client.post(f"{CBS}/{call}.do", json={"SysUser": who[0], "SysPwd": who[1], **params})
    assert r.status_code == 200, r.text
    return r.json()


def _job_path(set_id: str, job_id: str, *more: str) -> str:
    return "/".join((f"{AGENT}/backup-sets/{set_id}/restore-jobs/{job_id}", *more))


def test_a_restore_jobs_life_and_its_report(client: TestClient, world: World) -> None:
    r = start(client, world.docs, world.a)
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["job_id"] == JOB and record["status"] == "RESTORE_STILL_RUNNING"
    assert record["backup_set_id"] == world.docs and record["destination_id"] == world.a
    assert record["mode"] == "M" and record["overwrite"] == "never"

    # the same second again: a conflict (the agent starts it a second later)
    assert start(client, world.docs, world.a).status_code == 409

    progress = {"current_file_name": "/src/a", "restored_file_count": 2, "restored_size": 100}
    r = client.post(_job_path(world.docs, JOB, "progress"), json=progress, headers=auth(ALICE))
    assert r.status_code == 200, r.text
    running = cbs(
        client, "GetRestoreJobReport", LoginName="alice", BackupSetID=world.docs, JobID=JOB
    )
    assert running["Status"] == "OK", running
    data = running["Data"]
    assert data["Status"] == "RESTORE_STILL_RUNNING" and data["EndTime"] == 0
    assert (data["TotalFileCount"], data["TotalFileSize"]) == (2, 100)
    assert data["CurrentFileName"] == "/src/a"

    r = client.post(_job_path(world.docs, JOB, "finish"), json=finish_body(), headers=auth(ALICE))
    assert r.status_code == 200, r.text
    assert r.json()["warn_count"] == 1
    # a retried finish answers the job; another status is a conflict
    again = client.post(
        _job_path(world.docs, JOB, "finish"), json=finish_body(), headers=auth(ALICE)
    )
    assert again.status_code == 200 and again.json() == r.json()
    other = finish_body(status="RESTORE_STOP_SUCCESS")
    assert (
        client.post(
            _job_path(world.docs, JOB, "finish"), json=other, headers=auth(ALICE)
        ).status_code
        == 409
    )
    late = {"current_file_name": "/src/b"}
    assert (
        client.post(
            _job_path(world.docs, JOB, "progress"), json=late, headers=auth(ALICE)
        ).status_code
        == 409
    )

    data = cbs(client, "GetRestoreJobReport", LoginName="alice", BackupSetID=world.docs, JobID=JOB)[
        "Data"
    ]
    assert data["ID"] == JOB and data["BackupSetName"] == "Docs"
    assert data["Status"] == "RESTORE_STOP_SUCCESS_WITH_WARNING"
    assert (data["StartTime"], data["EndTime"]) == (AT, AT + 2000)
    assert (data["TotalFileCount"], data["TotalFileSize"]) == (3, 12345)
    assert data["BackupJobID"] == "2026-03-01-00-00-00" and data["SnapshotID"] == "ab" * 32
    assert data["RestoreTo"] == "/restore/here" and data["Overwrite"] == "never"
    assert (data["NumOfRestoredDirs"], data["NumOfRestoredLinks"]) == (2, 1)
    assert (data["NumOfKeptFiles"], data["NumOfFailedFiles"], data["NumOfDamagedFiles"]) == (
        4,
        1,
        0,
    )
    assert (data["NumOfWarnEntries"], data["NumOfErrorEntries"]) == (1, 0)
    assert data["FromIp"]  # the test client's address
    assert [(e["Type"], e["LogType"], e["Timestamp"]) for e in data["Logs"]] == [
        ("start", "start", AT),
        ("warn", "warn", AT),
        ("end", "end", AT + 1000),
    ]


def test_the_agent_calls_refuse_what_is_not_theirs(client: TestClient, world: World) -> None:
    assert start(client, world.main, world.m).status_code == 404  # bob's set, asked by alice
    assert start(client, world.docs, world.m).status_code == 404  # not a destination of Docs
    assert start(client, world.docs, world.a, who=("alice", "wrong")).status_code == 401
    assert start(client, world.docs, world.a, overwrite="sometimes").status_code == 422
    assert (
        client.post(
            _job_path(world.docs, JOB, "finish"), json=finish_body(), headers=auth(ALICE)
        ).status_code
        == 404
    )
    assert start(client, world.docs, world.a).status_code == 201
    running = finish_body(status="RESTORE_STILL_RUNNING")
    r = client.post(_job_path(world.docs, JOB, "finish"), json=running, headers=auth(ALICE))
    assert r.status_code == 400 and "RESTORE_STOP_SUCCESS" in r.json()["hint"]
    early = finish_body(end_time=AT - 1)
    assert (
        client.post(
            _job_path(world.docs, JOB, "finish"), json=early, headers=auth(ALICE)
        ).status_code
        == 400
    )
    many = finish_body(logs=[{"type": "info", "message": "x", "time": AT}] * 1001)
    assert (
        client.post(
            _job_path(world.docs, JOB, "finish"), json=many, headers=auth(ALICE)
        ).status_code
        == 422
    )


def test_a_silent_restore_is_closed_not_finished(
    client: TestClient, world: World, state: ServerState
) -> None:
    assert start(client, world.docs, world.a).status_code == 201
    silent = ServerState(db=state.db, tz=UTC, job_idle_timeout=0, sweep_interval=3600)
    assert JOB in sweep_once(silent)
    record = client.get(_job_path(world.docs, JOB), headers=auth(ALICE)).json()
    assert record["status"] == "RESTORE_NOT_FINISHED" and record["end_time"] is not None
    r = client.post(_job_path(world.docs, JOB, "finish"), json=finish_body(), headers=auth(ALICE))
    assert r.status_code == 409


def test_listings_and_their_scope(client: TestClient, world: World) -> None:
    assert start(client, world.docs, world.a).status_code == 201
    assert start(client, world.docs, world.a, start_time=AT + 60_000).status_code == 201
    assert start(client, world.main, world.m, who=BOB).status_code == 201

    everyone = cbs(client, "ListRestoreJobStatus", RestoreDate="2026-03-04")
    assert everyone["Status"] == "OK", everyone
    rows = [(d["LoginName"], d["ID"], d["BackupSetName"]) for d in everyone["Data"]]
    assert rows == [
        ("alice", JOB, "Docs"),
        ("bob", JOB, "Main"),
        ("alice", "2026-03-04-05-07-07", "Docs"),
    ]
    first = everyone["Data"][0]
    assert first["RestoreJobStatus"] == "RESTORE_STILL_RUNNING" and first["EndTime"] == ""
    assert first["StartTime"] == "2026-03-04 05:06:07" and first["UserId"].isdigit()
    assert first["RestoreSize"] == "0" and first["BackupJobID"] == "2026-03-01-00-00-00"

    # a job-ID-shaped date is read as its day; alice alone; a reseller sees bob only
    alice = cbs(client, "ListRestoreJobStatus", LoginName="alice", RestoreDate=JOB)["Data"]
    assert [d["ID"] for d in alice] == [JOB, "2026-03-04-05-07-07"]
    mine = cbs(client, "ListRestoreJobStatus", who=RES1, RestoreDate="2026-03-04")["Data"]
    assert [d["LoginName"] for d in mine] == ["bob"]
    hidden = cbs(
        client, "ListRestoreJobStatus", who=RES2, LoginName="bob", RestoreDate="2026-03-04"
    )
    assert hidden["Message"] == "[UserCacheManager.NoSuchUserExpt] User ‘bob’ not found."
    none = cbs(client, "ListRestoreJobStatus", who=RES2, RestoreDate="2026-03-04")
    assert (none["Status"], none["Message"]) == ("Error", "[Error] No Restore Job on that day")
    bad = cbs(client, "ListRestoreJobStatus", RestoreDate="2026-13-01")
    assert bad["Message"] == "[Error] Parameter RestoreDate is invalid: ‘2026-13-01’"
    assert bad["ExptType"] == "com.ahsay.obs.core.dbs.DbsException"

    ids = cbs(client, "ListRestoreJobs", LoginName="alice")["Data"]
    assert ids == [
        {"BackupSetID": world.docs, "Removed": False, "RestoreJob": [JOB, "2026-03-04-05-07-07"]}
    ]
    one = cbs(client, "ListRestoreJobs", LoginName="bob", Owner="res1", BackupSetID=world.main)
    assert one["Data"] == [{"BackupSetID": world.main, "Removed": False, "RestoreJob": [JOB]}]


def test_report_errors_are_the_backup_calls(client: TestClient, world: World) -> None:
    assert start(client, world.docs, world.a).status_code == 201
    missing = cbs(
        client,
        "GetRestoreJobReport",
        LoginName="alice",
        BackupSetID=world.docs,
        JobID="2026-01-01-00-00-00",
    )
    assert missing["Message"] == "Restore job ‘2026-01-01-00-00-00’ not found."
    assert missing["ExptType"] == "com.ahsay.obs.core.dbs.DbsException"
    no_id = cbs(client, "GetRestoreJobReport", LoginName="alice", BackupSetID=world.docs)
    assert no_id["Message"] == "[Error] Parameter JobID is null / empty!"
    other_set = cbs(
        client, "GetRestoreJobReport", LoginName="alice", BackupSetID=world.main, JobID=JOB
    )
    assert other_set["Message"] == f"Backup set ‘{world.main}’ not found."
    wrong = cbs(
        client,
        "GetRestoreJobReport",
        who=("system", "nope"),
        LoginName="alice",
        BackupSetID=world.docs,
        JobID=JOB,
    )
    assert wrong["Message"] == "Incorrect system username/password"
    scoped = cbs(
        client,
        "GetRestoreJobReport",
        who=RES1,
        LoginName="alice",
        BackupSetID=world.docs,
        JobID=JOB,
    )
    assert scoped["Message"] == "[UserCacheManager.NoSuchUserExpt] User ‘alice’ not found."
    owner = cbs(
        client,
        "GetRestoreJobReport",
        LoginName="alice",
        Owner="res1",
        BackupSetID=world.docs,
        JobID=JOB,
    )
    assert owner["Message"] == "[UserCacheManager.NoSuchUserExpt] User ‘alice’ not found."
