"""Storage measurements and what they drive (cbs-api.md §11), over HTTP on SQLite and
PostgreSQL: the agent API's ``POST …/storage`` (recorded once, its errors), the quota in the job
start answer, a job finished ``BS_STOP_BY_QUOTA_EXCEEDED``, ListUsers/GetUser ``DataSize``, and
GetUserStorageStat over a month."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import update

from opencbs import security
from opencbs.api.state import ServerState
from opencbs.reports.timefmt import parse_report_time
from opencbs.reports.vocabulary import JobStatus, ReportList, SystemRole
from opencbs.store import jobs, sets, users
from opencbs.store.jobs import EntryIn
from opencbs.store.schema import backup_sets
from opencbs.store.util import now_ms
from tests.conftest import ADMIN, UTC

AGENT = "/api/agent/v1"
CBS = "/obs/api/json"
ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")
RES1 = ("res1", "res1-password")
QUOTA = 10_000


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts get argon2id hashes of the lowest cost: the API is under test, not the hash."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@dataclass(frozen=True)
class World:
    """IDs (strings, as the APIs show them): alice's set Docs with destinations a and b, set
    Photos with c, removed set Old with d; bob's set Main with m."""

    docs: str
    a: str
    b: str
    photos: str
    c: str
    old: str
    d: str
    main: str
    m: str


def _set(conn: Any, user_id: int, name: str, dests: tuple[str, ...]) -> tuple[str, list[str]]:
    bset = sets.add_set(conn, user_id, name, {"sources": ["/src"]})
    ids = [
        str(sets.add_destination(conn, user_id, bset.id, name=n, dest_type="LOCAL").id)
        for n in dests
    ]
    return str(bset.id), ids


@pytest.fixture
def world(state: ServerState) -> World:
    with state.db.write() as conn:
        users.add_system_user(conn, *RES1, SystemRole.RESELLER)
        alice = users.add_backup_user(conn, *ALICE, quota=QUOTA)
        bob = users.add_backup_user(conn, *BOB, owner="res1")
        docs, (a, b) = _set(conn, alice.id, "Docs", ("A", "B"))
        photos, (c,) = _set(conn, alice.id, "Photos", ("C",))
        old, (d,) = _set(conn, alice.id, "Old", ("D",))
        main, (m,) = _set(conn, bob.id, "Main", ("M",))
    return World(docs, a, b, photos, c, old, d, main, m)


def _remove(state: ServerState, set_id: str) -> None:
    with state.db.write() as conn:
        conn.execute(
            update(backup_sets).where(backup_sets.c.id == int(set_id)).values(removed=True)
        )


def auth(who: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(who).encode()).decode()}


def figures(stored: int, **more: int) -> dict[str, int]:
    return {
        "stored_size": stored,
        "data_size": more.get("data_size", 0),
        "data_count": more.get("data_count", 0),
        "retain_size": more.get("retain_size", 0),
        "retain_count": more.get("retain_count", 0),
        "snapshot_count": more.get("snapshot_count", 1),
    }


def post(
    client: TestClient,
    set_id: str,
    dest_id: str,
    body: dict[str, Any],
    who: tuple[str, str] = ALICE,
) -> Any:
    return client.post(
        f"{AGENT}/backup-sets/{set_id}/destinations/{dest_id}/storage", json=body, headers=auth(who)
    )


def measure(
    client: TestClient, set_id: str, dest_id: str, at: str, stored: int, **more: int
) -> None:
    r = post(client, set_id, dest_id, {"measured_at": ms(at), **figures(stored, **more)})
    assert r.status_code == 201, r.text


def ms(text: str) -> int:
    return parse_report_time(text, UTC)


def cbs(client: TestClient, name: str, *, as_: tuple[str, str] = ADMIN, **params: Any) -> Any:
    r = client.post(f"{CBS}/{name}.do", json={"SysUser": as_[0], "SysPwd": as_[1], **params})
    assert r.status_code == 200, r.text
    return r.json()


# --- the agent API ----------------------------------------------------------------------------


def test_a_measurement_is_recorded_once(client: TestClient, world: World) -> None:
    body = {"measured_at": ms("2024-06-01 10:00:00"), **figures(500, data_size=400, data_count=9)}
    first = post(client, world.docs, world.a, body)
    assert first.status_code == 201, first.text
    record = first.json()
    assert record == {
        "backup_set_id": world.docs,
        "destination_id": world.a,
        "measured_at": ms("2024-06-01 10:00:00"),
        "received_at": record["received_at"],
        **figures(500, data_size=400, data_count=9),
    }
    assert abs(record["received_at"] - now_ms()) < 60_000
    again = post(client, world.docs, world.a, body)  # a retry after a lost answer
    assert again.status_code == 200 and again.json() == record
    other = post(client, world.docs, world.a, {**body, "stored_size": 501})
    assert other.status_code == 409, other.text
    assert other.json()["error"] == "conflict"
    # the same instant of another destination is another measurement
    assert post(client, world.docs, world.b, body).status_code == 201
    # without measured_at: the server's clock
    now = post(client, world.docs, world.a, figures(600))
    assert now.status_code == 201 and abs(now.json()["measured_at"] - now_ms()) < 60_000


def test_a_measurement_from_the_future_is_refused(client: TestClient, world: World) -> None:
    late = post(client, world.docs, world.a, {"measured_at": now_ms() + 600_000, **figures(1)})
    assert late.status_code == 400, late.text
    assert late.json()["error"] == "invalid_input" and "future" in late.json()["message"]
    assert (
        post(
            client, world.docs, world.a, {"measured_at": now_ms() + 60_000, **figures(1)}
        ).status_code
        == 201
    )


def test_unknown_or_foreign_places_are_404(client: TestClient, world: World) -> None:
    body = figures(10)
    foreign = post(client, world.main, world.m, body)  # bob's set, asked by alice
    assert foreign.status_code == 404 and foreign.json()["error"] == "set_not_found"
    assert post(client, "123", world.a, body).json()["error"] == "set_not_found"
    wrong = post(client, world.docs, world.c, body)  # a destination of another of her sets
    assert wrong.status_code == 404 and wrong.json()["error"] == "destination_not_found"
    assert post(client, world.docs, "x", body).json()["error"] == "destination_not_found"
    assert post(client, world.main, world.m, body, who=BOB).status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        {"stored_size": -1},
        {"data_size": "12"},
        {"data_count": True},
        {"retain_size": 1.5},
        {"retain_count": 2**53},
        {"snapshot_count": None},
        {"measured_at": "2024-06-01"},
        {"files": 3},
    ],
)
def test_a_body_off_the_schema_is_422(
    client: TestClient, world: World, change: dict[str, Any]
) -> None:
    r = post(client, world.docs, world.a, {**figures(10), **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"


def test_credentials_are_checked_first(client: TestClient, world: World) -> None:
    r = client.post(
        f"{AGENT}/backup-sets/{world.docs}/destinations/{world.a}/storage", json=figures(1)
    )
    assert r.status_code == 401 and r.json()["error"] == "user_credentials"
    r = post(client, world.docs, world.a, figures(1), who=("alice", "wrong"))
    assert r.status_code == 401


# --- the quota --------------------------------------------------------------------------------


def start(client: TestClient, set_id: str, dest_id: str, at: str) -> dict[str, Any]:
    r = client.post(
        f"{AGENT}/backup-sets/{set_id}/destinations/{dest_id}/jobs",
        json={"start_time": ms(at)},
        headers=auth(ALICE),
    )
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_the_job_start_answers_the_quota(
    client: TestClient, state: ServerState, world: World
) -> None:
    first = start(client, world.docs, world.a, "2024-06-01 09:00:00")
    assert first["quota"] == {"limit": QUOTA, "used": 0, "destination_used": 0}
    assert first["status"] == "BS_STILL_RUNNING" and first["job_id"] == "2024-06-01-09-00-00"
    measure(client, world.docs, world.a, "2024-06-01 10:00:00", 1000)
    measure(client, world.docs, world.a, "2024-06-02 10:00:00", 2000)  # the latest of a
    measure(client, world.docs, world.a, "2024-05-30 10:00:00", 9999)  # older: not the latest
    measure(client, world.docs, world.b, "2024-06-01 10:00:00", 3000)
    measure(client, world.photos, world.c, "2024-06-01 10:00:00", 500)
    measure(client, world.old, world.d, "2024-06-01 10:00:00", 700)
    _remove(state, world.old)  # a removed set's destination no longer counts
    to_a = start(client, world.docs, world.a, "2024-06-03 09:00:00")
    assert to_a["quota"] == {"limit": QUOTA, "used": 3500, "destination_used": 2000}
    to_c = start(client, world.photos, world.c, "2024-06-03 09:00:00")
    assert to_c["quota"] == {"limit": QUOTA, "used": 5000, "destination_used": 500}
    # bob has no quota; his figures are his own
    r = client.post(
        f"{AGENT}/backup-sets/{world.main}/destinations/{world.m}/jobs", json={}, headers=auth(BOB)
    )
    assert r.status_code == 201 and r.json()["quota"] == {
        "limit": 0,
        "used": 0,
        "destination_used": 0,
    }


def test_sets_sharing_one_folder_count_it_once(
    client: TestClient, state: ServerState, world: World
) -> None:
    with state.db.write() as conn:
        alice = users.get_backup_user(conn, ALICE[0])
        shared = {"path": "/srv/backup/shared"}
        one = sets.add_set(conn, alice.id, "One", {"sources": ["/one"]})
        two = sets.add_set(conn, alice.id, "Two", {"sources": ["/two"]})
        d1 = sets.add_destination(
            conn, alice.id, one.id, name="S", dest_type="LOCAL", settings=shared
        )
        d2 = sets.add_destination(
            conn, alice.id, two.id, name="S", dest_type="LOCAL", settings=shared
        )
    # one repository, measured by each set's jobs: the newest measurement of it counts
    measure(client, str(one.id), str(d1.id), "2024-06-01 10:00:00", 600)
    measure(client, str(two.id), str(d2.id), "2024-06-01 11:00:00", 750)
    measure(client, world.photos, world.c, "2024-06-01 10:00:00", 100)
    started = start(client, str(one.id), str(d1.id), "2024-06-02 09:00:00")
    assert started["quota"] == {"limit": QUOTA, "used": 100, "destination_used": 750}
    user = cbs(client, "GetUser", LoginName=ALICE[0])["Data"]
    assert user["DataSize"] == 850


def test_a_job_stopped_by_the_quota_is_reported_so(client: TestClient, world: World) -> None:
    job = start(client, world.docs, world.a, "2024-06-05 08:00:00")
    path = f"{AGENT}/backup-sets/{world.docs}/destinations/{world.a}/jobs/{job['job_id']}"
    r = client.post(
        f"{path}/finish", json={"status": "BS_STOP_BY_QUOTA_EXCEEDED"}, headers=auth(ALICE)
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == JobStatus.STOP_BY_QUOTA_EXCEEDED.value
    listed = cbs(client, "ListBackupJobStatus", LoginName="alice", BackupDate="2024-06-05")
    assert [j["BackupJobStatus"] for j in listed["Data"]] == ["BS_STOP_BY_QUOTA_EXCEEDED"]
    report = cbs(
        client,
        "GetBackupJobReportSummary",
        LoginName="alice",
        BackupSetID=world.docs,
        BackupJobID=job["job_id"],
    )
    assert report["Data"]["BackupJobStatus"] == "BS_STOP_BY_QUOTA_EXCEEDED"


# --- DataSize ---------------------------------------------------------------------------------


def _job_with_upload(
    state: ServerState, who: str, set_id: str, dest_id: str, start_at: str, sizes: tuple[int, int]
) -> None:
    """A finished job that started at ``start_at`` with one new file (``sizes[0]`` stored
    bytes) and one updated file (``sizes[1]``)."""
    with state.db.write() as conn:
        user = users.find_backup_user(conn, who)
        assert user is not None
        bset = sets.get_set(conn, user.id, set_id)
        job = jobs.start_job(conn, bset, int(dest_id), tz=UTC, start_ms=ms(start_at))
        jobs.append_batch(
            conn,
            job.pk,
            0,
            [
                EntryIn(ReportList.NEW, "F", "/src/new", size=sizes[0], unzip_size=sizes[0] * 2),
                EntryIn(ReportList.UPD, "F", "/src/upd", size=sizes[1], unzip_size=sizes[1] * 2),
                EntryIn(ReportList.PMT, "F", "/src/pmt", size=999, unzip_size=999),
            ],
        )
        jobs.finish_job(conn, job.pk, JobStatus.STOP_SUCCESS, end_ms=ms(start_at) + 1000)


def test_data_size_is_what_the_destinations_hold_once_measured(
    client: TestClient, state: ServerState, world: World
) -> None:
    _job_with_upload(state, "alice", world.docs, world.a, "2024-06-01 09:00:00", (100, 20))
    _job_with_upload(state, "bob", world.main, world.m, "2024-06-01 09:00:00", (40, 2))

    def data_size() -> dict[str, int]:
        listed = cbs(client, "ListUsers")["User"]
        return {u["LoginName"]: u["DataSize"] for u in listed}

    assert data_size() == {"alice": 120, "bob": 42}  # what their jobs stored
    measure(client, world.docs, world.a, "2024-06-01 10:00:00", 5000)
    measure(client, world.docs, world.a, "2024-06-02 10:00:00", 4000)  # after a retention run
    measure(client, world.photos, world.c, "2024-06-01 10:00:00", 300)
    assert data_size() == {"alice": 4300, "bob": 42}
    got = cbs(client, "GetUser", LoginName="alice")["Data"]
    assert got["DataSize"] == 4300 and got["Quota"] == QUOTA
    _remove(state, world.photos)
    assert data_size()["alice"] == 4000


# --- GetUserStorageStat -----------------------------------------------------------------------

FIELDS = [
    "YearMonth",
    "AvgDataSize",
    "AvgDataRawSize",
    "AvgDataNo",
    "AvgRetainSize",
    "AvgRetainRawSize",
    "AvgRetainNo",
    "AvgUploadSize",
    "AvgUploadRawSize",
    "AvgUploadNo",
    "AvgTotalStorageSize",
    "AvgTotalStorageRawSize",
]


def stat(client: TestClient, **params: Any) -> dict[str, str]:
    body = cbs(client, "GetUserStorageStat", **params)
    assert body["Status"] == "OK", body
    assert isinstance(body["Data"], list) and len(body["Data"]) == 1
    record: dict[str, str] = body["Data"][0]
    assert list(record) == FIELDS and all(isinstance(v, str) for v in record.values())
    return record


def _june(client: TestClient, state: ServerState, world: World) -> None:
    """June 2024 of alice: day 1 a (twice) and c; day 3 a and d (set Old, removed later);
    jobs on day 1 (two) and day 2; a measurement of May and one of July."""
    g = 1 << 30
    measure(client, world.docs, world.a, "2024-06-01 08:00:00", g, data_size=5, data_count=5)
    measure(
        client,
        world.docs,
        world.a,
        "2024-06-01 20:00:00",
        3 * g,
        data_size=2 * g,
        data_count=100,
        retain_size=g // 2,
        retain_count=7,
    )
    measure(client, world.photos, world.c, "2024-06-01 12:00:00", g, data_size=g, data_count=10)
    measure(
        client,
        world.docs,
        world.a,
        "2024-06-03 23:59:59",
        2 * g,
        data_size=g,
        data_count=90,
        retain_size=g,
        retain_count=4,
    )
    measure(client, world.old, world.d, "2024-06-03 01:00:00", 1024, data_size=1000, data_count=1)
    measure(client, world.docs, world.a, "2024-05-31 23:59:59", 50 * g)
    measure(client, world.docs, world.a, "2024-07-01 00:00:00", 70 * g)
    _job_with_upload(state, "alice", world.docs, world.a, "2024-06-01 07:00:00", (3000, 1000))
    _job_with_upload(state, "alice", world.photos, world.c, "2024-06-01 11:00:00", (2000, 0))
    _job_with_upload(state, "alice", world.docs, world.b, "2024-06-02 07:00:00", (500, 0))
    _job_with_upload(state, "alice", world.docs, world.a, "2024-07-01 07:00:00", (10**9, 0))
    _remove(state, world.old)


def test_a_month_of_every_set(client: TestClient, state: ServerState, world: World) -> None:
    _june(client, state, world)
    g = 1 << 30
    # day 1: a's last (3G) + c (1G) = 4G; day 3: a (2G) + d (1024 B): averaged over 2 days
    stored = (4 * g + 2 * g + 1024) // 2
    data = (2 * g + g + g + 1000) // 2
    assert stat(client, LoginName="alice", YearMonth="2024-06", BackupSetID="all") == {
        "YearMonth": "2024-06",
        "AvgDataSize": "2.0G",
        "AvgDataRawSize": str(data),
        "AvgDataNo": "101",  # 100 + 10 and 90 + 1: 201 / 2 = 100.5, halves up
        "AvgRetainSize": "768.0M",
        "AvgRetainRawSize": str((g // 2 + g) // 2),
        "AvgRetainNo": "6",  # 7 and 4: 5.5
        "AvgUploadSize": "3.2k",  # (4000 + 2000 + 500) over 2 days with jobs: 3250
        "AvgUploadRawSize": "3250",
        "AvgUploadNo": "3",  # a new and an updated file each: 6 over 2 days
        "AvgTotalStorageSize": "3.0G",
        "AvgTotalStorageRawSize": str(stored),
    }
    # BackupSetID absent or empty: every set, as "all" (any case)
    assert stat(client, LoginName="alice", YearMonth="2024-06") == stat(
        client, LoginName="alice", YearMonth="2024-06", BackupSetID="ALL"
    )


def test_a_month_of_one_set(client: TestClient, state: ServerState, world: World) -> None:
    _june(client, state, world)
    g = 1 << 30
    photos = stat(client, LoginName="alice", YearMonth="2024-06", BackupSetID=world.photos)
    assert photos["AvgTotalStorageRawSize"] == str(g) and photos["AvgDataNo"] == "10"
    assert photos["AvgUploadRawSize"] == "2000" and photos["AvgUploadNo"] == "2"
    old = stat(client, LoginName="alice", YearMonth="2024-06", BackupSetID=world.old)
    assert old["AvgTotalStorageSize"] == "1.0k"  # a removed set: what it held then
    assert old["AvgUploadRawSize"] == "0"


def test_a_month_without_data_is_zeros(
    client: TestClient, state: ServerState, world: World
) -> None:
    _june(client, state, world)
    record = stat(client, LoginName="alice", YearMonth="2023-11")
    assert record == {"YearMonth": "2023-11", **{k: "0" for k in FIELDS[1:]}}
    assert stat(client, LoginName="bob", YearMonth="2024-06")["AvgTotalStorageRawSize"] == "0"


def test_the_default_month_is_the_current_one(client: TestClient, world: World) -> None:
    assert post(client, world.docs, world.a, figures(2048)).status_code == 201
    record = stat(client, LoginName="alice")
    now = datetime.now(UTC)
    assert record["YearMonth"] == f"{now.year:04d}-{now.month:02d}"
    assert record["AvgTotalStorageRawSize"] == "2048" and record["AvgTotalStorageSize"] == "2.0k"
    assert stat(client, LoginName="alice", YearMonth="") == record


def test_storage_stat_errors(client: TestClient, world: World) -> None:
    dbs = "com.ahsay.obs.core.dbs.DbsException"
    for bad in ("2024-13", "2024-6", "June", "2024-06-01", "0000-01", "9999-12"):
        assert cbs(client, "GetUserStorageStat", LoginName="alice", YearMonth=bad) == {
            "Status": "Error",
            "Message": f"[Error] Parameter YearMonth is invalid: \u2018{bad}\u2019 (yyyy-MM)",
            "ExptType": dbs,
        }
    assert cbs(client, "GetUserStorageStat", LoginName="nobody") == {
        "Status": "Error",
        "Message": "[UserCacheManager.NoSuchUserExpt] User \u2018nobody\u2019 not found.",
        "ExptType": "com.ahsay.obs.core.dbs.ai",
    }
    assert cbs(client, "GetUserStorageStat", LoginName="alice", BackupSetID=world.main) == {
        "Status": "Error",
        "Message": f"Backup set \u2018{world.main}\u2019 not found.",  # bob's set
        "ExptType": dbs,
    }
    assert (
        cbs(client, "GetUserStorageStat")["Message"]
        == "[Error] Parameter LoginName is null / empty!"
    )
    # a reseller sees only its own users
    assert cbs(client, "GetUserStorageStat", as_=RES1, LoginName="alice")["ExptType"] == (
        "com.ahsay.obs.core.dbs.ai"
    )
    assert cbs(client, "GetUserStorageStat", as_=RES1, LoginName="bob")["Status"] == "OK"
