"""The companion calls of cbs-api.md §7 over HTTP, on SQLite and PostgreSQL: every documented key
with its JSON type, the §3 errors, the reseller scope of §2, v1 and 2/ paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import update

from opencbs import security
from opencbs.api.state import ServerState
from opencbs.reports.timefmt import parse_report_time
from opencbs.reports.vocabulary import JobMode, JobStatus, ReportList, SystemRole
from opencbs.store import jobs, sets, users
from opencbs.store.jobs import EntryIn
from opencbs.store.schema import backup_sets
from tests.conftest import ADMIN, UTC

API = "/obs/api/json"
RES1 = ("res1", "res1-password")
RES2 = ("res2", "res2-password")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DBS = "com.ahsay.obs.core.dbs.DbsException"
NOT_FOUND_TYPE = "com.ahsay.obs.core.dbs.ai"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts of these tests get argon2id hashes of the lowest cost: the calls are under test
    here, not the hash (every hash carries its own parameters, so verification is unchanged)."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def ms(text: str) -> int:
    return parse_report_time(text, UTC)


@dataclass(frozen=True)
class World:
    """IDs of what ``world`` stored (strings, as the API shows them)."""

    alice_id: str
    docs_id: str
    empty_id: str
    old_id: str
    dest_id: str
    done_job: str
    running_job: str
    running_pk: int
    bob_job: str


@pytest.fixture
def world(state: ServerState) -> World:
    """alice (owner ""): set Docs with a finished job (new 100 B, upd 50 B, pmt 7 B stored) and
    a running scheduled job on 2024-06-26, an empty set, a removed set with a job on 2024-06-27.
    bob (owner res1) and carol (owner res2): one job each on 2024-06-26."""
    with state.db.write() as conn:
        users.add_system_user(conn, *RES1, SystemRole.RESELLER)
        users.add_system_user(conn, *RES2, SystemRole.RESELLER)
        alice = users.add_backup_user(
            conn, "alice", "alice-pw", alias="Alice", email="a@example.org", quota=1000
        )
        bob = users.add_backup_user(conn, "bob", "bob-secret", owner="res1")
        carol = users.add_backup_user(conn, "carol", "carol-pw", owner="res2")
        docs = sets.add_set(
            conn,
            alice.id,
            "Docs",
            {
                "sources": ["/home/alice"],
                "filters": {"include": ["*.txt"], "exclude": ["*.tmp"]},
            },
        )
        dest = sets.add_destination(
            conn,
            alice.id,
            docs.id,
            name="Local",
            dest_type="LOCAL",
            settings={"path": "/srv/secret-location"},
        )
        docs = sets.get_set(conn, alice.id, docs.id)
        empty = sets.add_set(conn, alice.id, "Empty")
        done = jobs.start_job(
            conn, docs, dest.id, tz=UTC, start_ms=ms("2024-06-26 10:00:00"), run_version="1.2.3"
        )
        jobs.append_batch(
            conn,
            done.pk,
            0,
            [
                EntryIn(
                    ReportList.LOG, "start", "Start backup", mtime_ms=ms("2024-06-26 10:00:00")
                ),
                EntryIn(ReportList.NEW, "F", "/home/alice/a.txt", size=100, unzip_size=300),
                EntryIn(ReportList.UPD, "F", "/home/alice/b.txt", size=50, unzip_size=80),
                EntryIn(ReportList.PMT, "F", "/home/alice/c.txt", size=7, unzip_size=9),
            ],
        )
        jobs.finish_job(conn, done.pk, JobStatus.STOP_SUCCESS, end_ms=ms("2024-06-26 10:05:00"))
        running = jobs.start_job(
            conn, docs, dest.id, tz=UTC, start_ms=ms("2024-06-26 12:00:00"), mode=JobMode.SCHEDULED
        )
        jobs.update_progress(
            conn,
            running.pk,
            current_file_name="/home/alice/big.iso",
            current_file_count=3,
            total_file_count=10,
            uploaded_file_size=4096,
            total_file_size=1 << 33,
        )
        old = sets.add_set(conn, alice.id, "Old")
        old_dest = sets.add_destination(
            conn, alice.id, old.id, name="Local", dest_type="LOCAL", settings={}
        )
        old = sets.get_set(conn, alice.id, old.id)
        old_job = jobs.start_job(conn, old, old_dest.id, tz=UTC, start_ms=ms("2024-06-27 08:00:00"))
        jobs.finish_job(conn, old_job.pk, JobStatus.STOP_SUCCESS, end_ms=ms("2024-06-27 08:01:00"))
        conn.execute(update(backup_sets).where(backup_sets.c.id == old.id).values(removed=True))
        bob_job = _one_job(conn, bob.id, "2024-06-26 09:00:00")
        _one_job(conn, carol.id, "2024-06-26 11:00:00")
    return World(
        alice_id=str(alice.id),
        docs_id=str(docs.id),
        empty_id=str(empty.id),
        old_id=str(old.id),
        dest_id=str(dest.id),
        done_job=done.job_id,
        running_job=running.job_id,
        running_pk=running.pk,
        bob_job=bob_job,
    )


def _one_job(conn: Any, user_id: int, start: str) -> str:
    bset = sets.add_set(conn, user_id, "Main")
    dest = sets.add_destination(conn, user_id, bset.id, name="Local", dest_type="LOCAL")
    bset = sets.get_set(conn, user_id, bset.id)
    job = jobs.start_job(conn, bset, dest.id, tz=UTC, start_ms=ms(start))
    jobs.finish_job(conn, job.pk, JobStatus.STOP_SUCCESS, end_ms=ms(start) + 1000)
    return job.job_id


def call(
    client: TestClient, name: str, *, as_: tuple[str, str] = ADMIN, v2: bool = False, **params: Any
) -> dict[str, Any]:
    path = f"{API}/2/{name}.do" if v2 else f"{API}/{name}.do"
    r = client.post(path, json={"SysUser": as_[0], "SysPwd": as_[1], **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def data(body: dict[str, Any], key: str = "Data") -> Any:
    assert body["Status"] == "OK", body
    return body[key]


def assert_error(body: dict[str, Any], message: str, expt: str = DBS) -> None:
    assert body == {"Status": "Error", "Message": message, "ExptType": expt}


def assert_user_not_found(body: dict[str, Any], login: str) -> None:
    assert_error(
        body,
        f"[UserCacheManager.NoSuchUserExpt] User \u2018{login}\u2019 not found.",
        NOT_FOUND_TYPE,
    )


# --- ListBackupJobs ---------------------------------------------------------------------------


def test_list_backup_jobs(client: TestClient, world: World) -> None:
    listed = data(call(client, "ListBackupJobs", LoginName="alice"))
    assert listed == [
        {
            "BackupSetID": world.docs_id,
            "Removed": False,
            "BackupJob": [world.done_job, world.running_job],
        },
        {"BackupSetID": world.old_id, "Removed": True, "BackupJob": ["2024-06-27-08-00-00"]},
    ]
    assert world.done_job < world.running_job
    every = data(call(client, "ListBackupJobs", LoginName="alice", SkipEmpty="false"))
    assert [r["BackupSetID"] for r in every] == sorted(
        [world.docs_id, world.empty_id, world.old_id], key=int
    )
    assert {"BackupSetID": world.empty_id, "Removed": False, "BackupJob": []} in every


# --- ListBackupJobStatus ----------------------------------------------------------------------

STATUS_KEYS = [
    "ID",
    "LoginName",
    "Owner",
    "UserId",
    "StartTime",
    "EndTime",
    "BackupJobStatus",
    "BackupSetID",
    "BackupSetName",
    "DestinationID",
    "UploadSize",
    "RunVersion",
    "SuccessDatabase",
    "MissedDatabase",
    "SuccessVirtualMachine",
    "MissedVirtualMachine",
    "SuccessPublicFolder",
    "MissedPublicFolder",
]


def test_list_backup_job_status(client: TestClient, world: World) -> None:
    records = data(call(client, "ListBackupJobStatus", LoginName="alice", BackupDate="2024-06-26"))
    assert [r["ID"] for r in records] == [world.done_job, world.running_job]
    for r in records:
        assert list(r) == STATUS_KEYS
        assert all(isinstance(v, str) for v in r.values()), r
        assert r["LoginName"] == "alice" and r["Owner"] == "" and r["UserId"] == world.alice_id
        assert r["BackupSetID"] == world.docs_id and r["BackupSetName"] == "Docs"
        assert r["DestinationID"] == world.dest_id
    done, running = records
    assert done["StartTime"] == "2024-06-26 10:00:00"
    assert done["EndTime"] == "2024-06-26 10:05:00"
    assert done["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert done["UploadSize"] == "150"  # new 100 + updated 50 stored bytes; pmt not uploaded
    assert done["RunVersion"] == "1.2.3"
    assert running["EndTime"] == ""
    assert running["BackupJobStatus"] == "BS_STILL_RUNNING"
    # a job-ID-shaped BackupDate lists the same day
    again = data(call(client, "ListBackupJobStatus", LoginName="alice", BackupDate=world.done_job))
    assert again == records


def test_list_backup_job_status_of_every_user_in_scope(client: TestClient, world: World) -> None:
    everyone = data(call(client, "ListBackupJobStatus", BackupDate="2024-06-26"))
    assert [r["LoginName"] for r in everyone] == ["bob", "alice", "carol", "alice"]
    mine = data(call(client, "ListBackupJobStatus", as_=RES1, BackupDate="2024-06-26"))
    assert [(r["LoginName"], r["Owner"], r["ID"]) for r in mine] == [("bob", "res1", world.bob_job)]
    by_owner = data(call(client, "ListBackupJobStatus", Owner="res2", BackupDate="2024-06-26"))
    assert [r["LoginName"] for r in by_owner] == ["carol"]
    assert_error(
        call(client, "ListBackupJobStatus", as_=RES1, Owner="res2", BackupDate="2024-06-26"),
        "[Error] No Backup Job on that day",
    )


def test_list_backup_job_status_day_without_jobs(client: TestClient, world: World) -> None:
    body = call(client, "ListBackupJobStatus", LoginName="alice", BackupDate="2024-06-25")
    assert_error(body, "[Error] No Backup Job on that day")


def test_bad_backup_date(client: TestClient, world: World) -> None:
    for bad in ("2024-13-01", "yesterday", "2024-02-30", "26/06/2024", "2024-06-26 10:00:00"):
        for name in ("ListBackupJobStatus", "ListBackupJobMode"):
            body = call(client, name, LoginName="alice", BackupDate=bad)
            assert_error(body, f"[Error] Parameter BackupDate is invalid: \u2018{bad}\u2019")


# --- ListBackupJobMode ------------------------------------------------------------------------

MODE_KEYS = [
    "ID",
    "LoginName",
    "Owner",
    "UserId",
    "StartTime",
    "EndTime",
    "BackupSetID",
    "BackupSetName",
    "BackupJobMode",
]


def test_list_backup_job_mode(client: TestClient, world: World) -> None:
    records = data(
        call(
            client,
            "ListBackupJobMode",
            LoginName="alice",
            BackupSetID=world.docs_id,
            BackupDate="2024-06-26",
        )
    )
    for r in records:
        assert list(r) == MODE_KEYS
        assert all(isinstance(v, str) for v in r.values()), r
    assert [(r["ID"], r["BackupJobMode"], r["EndTime"]) for r in records] == [
        (world.done_job, "M", "2024-06-26 10:05:00"),
        (world.running_job, "S", ""),
    ]
    assert records[0]["UserId"] == world.alice_id and records[0]["BackupSetID"] == world.docs_id
    assert (
        data(
            call(
                client,
                "ListBackupJobMode",
                LoginName="alice",
                BackupSetID=world.empty_id,
                BackupDate="2024-06-26",
            )
        )
        == []
    )
    assert_error(
        call(
            client,
            "ListBackupJobMode",
            LoginName="alice",
            BackupSetID="42",
            BackupDate="2024-06-26",
        ),
        "Backup set \u201842\u2019 not found.",
    )


# --- GetBackupJobProgress ---------------------------------------------------------------------

PROGRESS_KEYS = [
    "ID",
    "LoginName",
    "Owner",
    "UserID",
    "StartTime",
    "EndTime",
    "BackupSetID",
    "BackupSetName",
    "CurrentFileName",
    "FileUploadTime",
    "CurrentFileCount",
    "TotalFileCount",
    "UploadedFileSize",
    "TotalFileSize",
]


def test_progress_of_a_running_job(client: TestClient, state: ServerState, world: World) -> None:
    params: dict[str, Any] = dict(
        LoginName="alice",
        BackupSetID=world.docs_id,
        DestinationID=world.dest_id,
        BackupJobID=world.running_job,
    )
    progress = data(call(client, "GetBackupJobProgress", **params))
    assert list(progress) == PROGRESS_KEYS
    assert all(isinstance(v, str) for v in progress.values()), progress
    assert progress["ID"] == world.running_job
    assert progress["UserID"] == world.alice_id and progress["BackupSetName"] == "Docs"
    assert progress["StartTime"] == "2024-06-26 12:00:00" and progress["EndTime"] == ""
    assert progress["CurrentFileName"] == "/home/alice/big.iso"
    assert TIME_RE.match(progress["FileUploadTime"])
    assert (progress["CurrentFileCount"], progress["TotalFileCount"]) == ("3", "10")
    assert (progress["UploadedFileSize"], progress["TotalFileSize"]) == ("4096", str(1 << 33))
    with state.db.write() as conn:
        jobs.update_progress(
            conn,
            world.running_pk,
            current_file_name="/home/alice/next",
            current_file_count=4,
            total_file_count=10,
            uploaded_file_size=8192,
            total_file_size=1 << 33,
        )
    # live: the next call sees the new progress; DestinationID "" resolves as in §5
    later = data(call(client, "GetBackupJobProgress", **{**params, "DestinationID": ""}))
    assert (later["CurrentFileName"], later["CurrentFileCount"], later["UploadedFileSize"]) == (
        "/home/alice/next",
        "4",
        "8192",
    )
    unknown = {**params, "BackupJobID": "2020-01-01-00-00-00"}
    assert_error(
        call(client, "GetBackupJobProgress", **unknown),
        "Backup job \u20182020-01-01-00-00-00\u2019 not found.",
    )


# --- ListBackupSets, GetBackupSet -------------------------------------------------------------


def test_list_backup_sets(client: TestClient, world: World) -> None:
    listed = data(call(client, "ListBackupSets", LoginName="alice"))
    assert listed == [
        {"ID": world.docs_id, "Name": "Docs", "Type": "FILE"},
        {"ID": world.empty_id, "Name": "Empty", "Type": "FILE"},
    ]
    every = data(call(client, "ListBackupSets", LoginName="alice", ListAll=True))
    assert [s["ID"] for s in every] == [world.docs_id, world.empty_id, world.old_id]
    assert_error(
        call(client, "ListBackupSets", LoginName="alice", ListAll="maybe"),
        "[Error] Parameter ListAll is invalid: \u2018maybe\u2019",
    )


def test_get_backup_set(client: TestClient, world: World) -> None:
    for v2 in (False, True):
        got = data(
            call(client, "GetBackupSet", v2=v2, LoginName="alice", BackupSetID=world.docs_id)
        )
        assert got == {
            "ID": world.docs_id,
            "Name": "Docs",
            "Type": "FILE",
            "Owner": "",
            "Removed": False,
            "CompressType": "ZSTD",
            "CompressLevel": 3,
            "Deduplication": True,
            "SelectedSource": ["/home/alice"],
            "Filter": {"Include": ["*.txt"], "Exclude": ["*.tmp"]},
            "DestinationList": [{"Id": world.dest_id, "Name": "Local", "Type": "LOCAL"}],
            "RetentionPolicy": {
                "Type": "SIMPLE",
                "RetentionDays": 7,
                "SpaceFreeUpEnabled": True,
            },
            "ScheduleList": [],
            "TimeZone": "UTC",
        }
        assert "secret-location" not in str(got)
        assert_error(
            call(client, "GetBackupSet", v2=v2, LoginName="alice", BackupSetID="nope"),
            "Backup set \u2018nope\u2019 not found.",
        )


# --- ListUsers, GetUser -----------------------------------------------------------------------

USER_TYPES: dict[str, type | tuple[type, ...]] = {
    "LoginName": str,
    "Owner": str,
    "Alias": str,
    "Email": str,
    "ClientType": str,
    "Status": str,
    "DataSize": int,
    "Quota": int,
    "QuotaList": list,
    "LastBackupDate": int,
    "Online": bool,
    "BackupSetIdList": list,
}


def _check_user_object(obj: dict[str, Any]) -> None:
    assert list(obj) == list(USER_TYPES)
    for key, kind in USER_TYPES.items():
        assert isinstance(obj[key], kind), key
    assert not isinstance(obj["DataSize"], bool) and not isinstance(obj["Quota"], bool)
    assert all(isinstance(i, str) for i in obj["BackupSetIdList"])


def test_list_users(client: TestClient, world: World) -> None:
    for v2 in (False, True):
        body = call(client, "ListUsers", v2=v2)
        assert "Data" not in body
        listed = data(body, "User")
        assert [u["LoginName"] for u in listed] == ["alice", "bob", "carol"]
        for obj in listed:
            _check_user_object(obj)
        alice = listed[0]
        assert (alice["Alias"], alice["Email"], alice["Quota"], alice["Status"]) == (
            "Alice",
            "a@example.org",
            1000,
            "ENABLE",
        )
        assert alice["Online"] is True and listed[1]["Online"] is False
        assert alice["LastBackupDate"] == ms("2024-06-27 08:00:00")
        assert alice["BackupSetIdList"] == [world.docs_id, world.empty_id]
        # DataSize: what her jobs stored, as their reports count it (new + updated, zipped)
        stored = 0
        for rec in data(call(client, "ListBackupJobs", LoginName="alice")):
            for job_id in rec["BackupJob"]:
                summary = data(
                    call(
                        client,
                        "GetBackupJobReportSummary",
                        LoginName="alice",
                        BackupSetID=rec["BackupSetID"],
                        BackupJobID=job_id,
                    )
                )
                stored += summary["TotalNewFilesSize"] + summary["TotalUpdatedFilesSize"]
        assert alice["DataSize"] == stored > 0
        assert [
            u["LoginName"] for u in data(call(client, "ListUsers", v2=v2, searchStr="aro"), "User")
        ] == ["carol"]
        assert [
            u["LoginName"] for u in data(call(client, "ListUsers", v2=v2, reseller="res1"), "User")
        ] == ["bob"]
        # a reseller lists only its own users, whatever it asks for
        mine = data(call(client, "ListUsers", v2=v2, as_=RES1), "User")
        assert [u["LoginName"] for u in mine] == ["bob"]
        assert data(call(client, "ListUsers", v2=v2, as_=RES1, reseller="res2"), "User") == []


def test_get_user(client: TestClient, world: World) -> None:
    for v2 in (False, True):
        listed = data(call(client, "ListUsers"), "User")
        for login, obj in (("alice", listed[0]), ("bob", listed[1])):
            got = data(call(client, "GetUser", v2=v2, LoginName=login))
            _check_user_object(got)
            assert got == obj
        assert data(call(client, "GetUser", v2=v2, as_=RES1, LoginName="bob"))["Owner"] == "res1"


# --- scope (§2) -------------------------------------------------------------------------------


def test_reseller_sees_only_its_own_users(client: TestClient, world: World) -> None:
    asks: list[tuple[str, dict[str, Any]]] = [
        ("GetUser", {}),
        ("ListBackupJobs", {}),
        ("ListBackupJobStatus", {"BackupDate": "2024-06-26"}),
        ("ListBackupJobMode", {"BackupDate": "2024-06-26"}),
        ("ListBackupSets", {}),
    ]
    for name, extra in asks:
        assert_user_not_found(call(client, name, as_=RES1, LoginName="carol", **extra), "carol")
        assert_user_not_found(call(client, name, as_=RES1, LoginName="alice", **extra), "alice")
        assert data(call(client, name, as_=RES1, LoginName="bob", **extra)) is not None
    assert_user_not_found(
        call(
            client, "GetBackupSet", v2=True, as_=RES2, LoginName="alice", BackupSetID=world.docs_id
        ),
        "alice",
    )
    assert_user_not_found(
        call(
            client,
            "GetBackupJobProgress",
            as_=RES2,
            LoginName="alice",
            BackupSetID=world.docs_id,
            BackupJobID=world.running_job,
        ),
        "alice",
    )


def test_owner_must_match(client: TestClient, world: World) -> None:
    assert_user_not_found(call(client, "GetUser", LoginName="bob", Owner="res2"), "bob")
    assert_user_not_found(
        call(client, "ListBackupJobStatus", LoginName="bob", Owner="res2", BackupDate="2024-06-26"),
        "bob",
    )
    assert data(call(client, "GetUser", LoginName="bob", Owner="res1"))["LoginName"] == "bob"
    assert_user_not_found(call(client, "GetUser", LoginName="nobody"), "nobody")
    assert_error(call(client, "GetUser"), "[Error] Parameter LoginName is null / empty!")


# --- AuthUser, AuthSystemUser -----------------------------------------------------------------


def test_auth_user(client: TestClient, world: World) -> None:
    assert call(client, "AuthUser", LoginName="alice", Password="alice-pw") == {"Status": "OK"}
    assert call(
        client, "AuthUser", LoginName="bob", Owner="res1", Password="bob-secret", as_=RES1
    ) == {"Status": "OK"}
    rejected = [
        call(client, "AuthUser", LoginName="alice", Password="wrong"),
        call(client, "AuthUser", LoginName="nobody", Password="alice-pw"),
        call(client, "AuthUser", LoginName="bob", Owner="res2", Password="bob-secret"),
        call(client, "AuthUser", LoginName="alice", Password="alice-pw", as_=RES1),
    ]
    for body in rejected:  # one answer for every failure: nothing tells which part was wrong
        assert_error(body, "Incorrect username/password")
    assert_error(
        call(client, "AuthUser", LoginName="alice"), "[Error] Parameter Password is null / empty!"
    )


def test_auth_system_user(client: TestClient, world: World) -> None:
    assert call(client, "AuthSystemUser") == {"Status": "OK"}
    assert call(client, "AuthSystemUser", as_=RES1) == {"Status": "OK"}
    assert_error(
        call(client, "AuthSystemUser", as_=(ADMIN[0], "wrong")),
        "Incorrect system username/password",
        "com.ahsay.obs.core.dbs.c",
    )


# --- transport --------------------------------------------------------------------------------


def test_v1_and_v2_paths_and_get(client: TestClient, world: World) -> None:
    creds = {"SysUser": ADMIN[0], "SysPwd": ADMIN[1]}
    for name in ("GetBackupSet", "ListUsers", "GetUser"):
        for prefix in (API, f"{API}/2"):
            r = client.post(
                f"{prefix}/{name}.do",
                json={**creds, "LoginName": "alice", "BackupSetID": world.docs_id},
            )
            assert r.status_code == 200 and r.json()["Status"] == "OK", (prefix, name)
    for name in (
        "ListBackupJobs",
        "ListBackupJobStatus",
        "ListBackupJobMode",
        "GetBackupJobProgress",
        "ListBackupSets",
        "AuthUser",
        "AuthSystemUser",
    ):
        r = client.get(f"{API}/{name}.do", params={**creds, "LoginName": "alice"})
        assert r.status_code == 200, name
        assert client.post(f"{API}/2/{name}.do", json=creds).status_code == 404, name
    r = client.get(f"{API}/ListBackupSets.do", params={**creds, "LoginName": "alice"})
    assert [s["Name"] for s in r.json()["Data"]] == ["Docs", "Empty"]
    schema = client.get("/openapi.json").json()
    ok_answer = schema["paths"][f"{API}/2/ListUsers.do"]["post"]["responses"]["200"]["content"][
        "application/json; charset=utf-8"
    ]["schema"]["oneOf"][0]
    assert "User" in ok_answer["properties"]
