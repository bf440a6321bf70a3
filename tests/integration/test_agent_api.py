"""The agent API (/api/agent/v1): sets, destinations and the life of a job, checked through the
CBS calls that monitoring tools use (cbs-api.md §4, §5, §7), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.agent import AgentApiError, AgentClient, Entry, JobRef, NewDestination
from opencbs.agent.client import job_path
from opencbs.api.app import sweep_once
from opencbs.api.state import ServerState
from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS
from opencbs.reports.vocabulary import JobMode, JobStatus, ReportList
from opencbs.store import job_queries, jobs, sets, users
from tests.conftest import ADMIN

API = "/api/agent/v1"
ALICE = ("alice", "alice-secret-ü")
BOB = ("bob", "bob-secret")


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts get argon2id hashes of the lowest cost: the API is under test here, not the
    hash (every hash carries its parameters, so verification is unchanged)."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def backup_users(state: ServerState) -> None:
    with state.db.write() as conn:
        users.add_backup_user(conn, *ALICE)
        users.add_backup_user(conn, *BOB)


@pytest.fixture
def alice(client: TestClient, backup_users: None) -> Iterator[AgentClient]:
    with AgentClient("http://testserver", *ALICE, transport=client._transport) as c:
        yield c


@pytest.fixture
def bob(client: TestClient, backup_users: None) -> Iterator[AgentClient]:
    with AgentClient("http://testserver", *BOB, transport=client._transport) as c:
        yield c


def _new_set(c: AgentClient, name: str = "Documents") -> tuple[str, str]:
    bset = c.create_set(
        name,
        settings={"sources": ["/home/alice"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/srv/b"})],
    )
    return bset.id, bset.destinations[0].id


def _cbs(client: TestClient, call: str, ref: JobRef) -> dict[str, Any]:
    r = client.post(
        f"/obs/api/json/{call}.do",
        json={
            "SysUser": ADMIN[0],
            "SysPwd": ADMIN[1],
            "LoginName": ALICE[0],
            "BackupSetID": ref.set_id,
            "DestinationID": ref.destination_id,
            "BackupJobID": ref.job_id,
        },
    )
    body = r.json()
    assert body["Status"] == "OK", body
    data: dict[str, Any] = body["Data"]
    return data


def _file(lst: ReportList, etype: str, path: str, size: int, unzip: int, **kw: Any) -> Entry:
    return Entry(
        lst, etype, path=path, size=size, unzip_size=unzip, last_modified=1_719_400_000_000, **kw
    )


T0 = 1_719_408_275_000  # 2024-06-26 13:24:35 UTC

BATCH_0 = [
    Entry.log("start", 'Start running backup on "Documents" (opencbs agent 0.1)', T0),
    _file(ReportList.NEW, "F", "/home/alice/a.txt", 60, 100),
    _file(ReportList.NEW, "F", "/home/alice/b.bin", 500, 500),
    _file(ReportList.NEW, "D", "/home/alice/sub", 0, 0),
    _file(ReportList.NEW, "L", "/home/alice/link-to-file", 0, 0),
    _file(ReportList.NEW, "L", "/home/alice/link-to-dir", 0, 0, link_to_dir=True),
    Entry.log("info", "Scanning completed", T0 + 1000),
]
BATCH_1 = [
    _file(ReportList.UPD, "F", "/home/alice/c.txt", 30, 90),
    _file(ReportList.PMT, "F", "/home/alice/d.txt", 0, 0),
    _file(ReportList.PMT, "D", "/home/alice/sub2", 0, 0),
    _file(ReportList.DEL, "F", "/home/alice/old.txt", 7, 20),
    _file(ReportList.DEL, "D", "/home/alice/olddir", 0, 0),
    _file(ReportList.DEL, "L", "/home/alice/oldlink", 0, 0),
    _file(
        ReportList.MOV,
        "F",
        "/home/alice/new-name.txt",
        40,
        80,
        from_path="/home/alice/old-name.txt",
    ),
    _file(ReportList.CPY, "F", "/home/alice/copy.bin", 0, 500, from_path="/home/alice/b.bin"),
    Entry.log("warn", "Cannot read /home/alice/locked", T0 + 2000),
    Entry.log("warn", "Cannot read /home/alice/locked2", T0 + 2100),
    Entry.log("error", "I/O error on /home/alice/bad", T0 + 2200),
    Entry.log("end", "Backup completed with warnings", T0 + 3000),
]

# list key → (count keys by entry type, or one count key), stored-size key, original-size key
_COUNTS: dict[str, tuple[dict[str, str] | str, str, str]] = {
    "new": (
        {"F": "NumOfNewFiles", "D": "NumOfNewDirCount"},
        "TotalNewFilesSize",
        "TotalUnzipNewFilesSize",
    ),
    "upd": ("NumOfUpdatedFiles", "TotalUpdatedFilesSize", "TotalUnzipUpdatedFilesSize"),
    "pmt": (
        "NumOfUpdatedPermissionFiles",
        "TotalUpdatedPermissionFilesSize",
        "TotalUnzipUpdatedPermissionFilesSize",
    ),
    "del": (
        {"F": "NumOfDeletedFiles", "D": "NumOfDeletedDirCount", "L": "NumOfDeletedLinkFileCount"},
        "TotalDeletedFilesSize",
        "TotalUnzipDeletedFilesSize",
    ),
    "mov": ("NumOfMovedFiles", "TotalMovedFilesSize", "TotalUnzipMovedFilesSize"),
    "cpy": ("NumOfCopiedFiles", "TotalCopiedSize", "TotalUnzipCopiedFilesSize"),
}


def _assert_counters_equal_lists(data: dict[str, Any]) -> None:
    for key, (count, size_key, unzip_key) in _COUNTS.items():
        items = data[key]
        if isinstance(count, str):
            assert data[count] == len(items), count
        else:
            for etype, name in count.items():
                assert data[name] == sum(1 for e in items if e["Type"] == etype), name
        assert data[size_key] == sum(e["FileSize"] for e in items), size_key
        assert data[unzip_key] == sum(e["UnzipFilesSize"] for e in items), unzip_key
    assert data["NumOfWarnEntries"] == sum(1 for e in data["Logs"] if e["Type"] == "warn")
    assert data["NumOfErrorEntries"] == sum(1 for e in data["Logs"] if e["Type"] == "error")


# --- authentication ---------------------------------------------------------------------------


def test_every_credential_failure_is_the_same_401(client: TestClient, backup_users: None) -> None:
    def basic(text: bytes) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(text).decode()}

    answers = [
        client.get(f"{API}/backup-sets", auth=(ALICE[0], "wrong")),
        client.get(f"{API}/backup-sets", auth=("nobody", ALICE[1])),
        client.get(f"{API}/backup-sets"),
        client.get(f"{API}/backup-sets", headers={"Authorization": "Basic !!!"}),
        client.get(f"{API}/backup-sets", headers=basic(b"no-colon")),
        client.get(f"{API}/backup-sets", headers=basic(b"alice:\xff\xfe")),
        client.get(f"{API}/backup-sets", headers={"Authorization": "Bearer abc"}),
    ]
    assert {r.status_code for r in answers} == {401}
    assert {r.text for r in answers} == {answers[0].text}
    assert answers[0].json()["error"] == "user_credentials"
    ok = client.get(f"{API}/backup-sets", auth=ALICE)  # a non-ASCII password works
    assert ok.status_code == 200 and ok.json() == []


def test_client_raises_agent_api_error_on_401(client: TestClient, backup_users: None) -> None:
    with AgentClient("http://testserver", ALICE[0], "wrong", transport=client._transport) as c:
        with pytest.raises(AgentApiError) as exc:
            c.list_sets()
    assert exc.value.status == 401 and exc.value.error == "user_credentials"
    assert not exc.value.retryable


# --- sets and destinations --------------------------------------------------------------------


def test_sets_and_destinations(alice: AgentClient) -> None:
    created = alice.create_set(
        "Documents",
        settings={"sources": ["/home/alice"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/b"})],
    )
    assert created.id.isdigit() and created.type == "FILE"
    assert created.settings.sources == ("/home/alice",)
    assert created.settings.deduplication is True  # a default
    assert [(d.name, d.position) for d in created.destinations] == [("Local", 0)]

    second = alice.add_destination(created.id, NewDestination("NAS", "LOCAL", {"path": "/n"}))
    assert second.position == 1 and second.id.lstrip("-").isdigit()
    changed = alice.update_destination(
        created.id, second.id, name="NAS-2", settings={"path": "/n2"}
    )
    assert (changed.name, changed.settings) == ("NAS-2", {"path": "/n2"})

    renamed = alice.update_set(
        created.id, name="Docs", settings={"compression": {"type": "ZSTD", "level": 9}}
    )
    assert renamed.name == "Docs" and renamed.settings.compression.level == 9
    assert renamed.settings.sources == ("/home/alice",)  # kept
    assert alice.get_set(created.id) == renamed
    assert [s.id for s in alice.list_sets()] == [created.id]

    with pytest.raises(AgentApiError) as exc:
        alice.create_set("Docs")
    assert exc.value.status == 409


def test_set_settings_in_requests(client: TestClient, alice: AgentClient) -> None:
    set_id, _ = _new_set(alice)
    url = f"{API}/backup-sets/{set_id}"
    r = client.patch(url, auth=ALICE, json={"settings": {"sources": None, "deduplication": False}})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["sources"] == ["/home/alice"]  # null: not given, kept
    assert r.json()["settings"]["deduplication"] is False
    for bad in ({"nope": 1}, {"compression": {"level": 23}}, {"filters": {"include": [""]}}):
        assert client.patch(url, auth=ALICE, json={"settings": bad}).status_code == 422, bad
    r = client.patch(url, auth=ALICE, json={"settings": {"filters": {"exclude": ["a\x00"]}}})
    assert r.status_code == 400
    assert r.json()["message"] == "exclude pattern a\\x00 holds a NUL character"


def test_set_answer_ids_are_strings(client: TestClient, alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    body = client.get(f"{API}/backup-sets/{set_id}", auth=ALICE).json()
    assert body["id"] == set_id and isinstance(body["id"], str)
    assert body["destinations"][0]["id"] == dest_id


def test_another_users_set_is_not_found(
    client: TestClient, alice: AgentClient, bob: AgentClient
) -> None:
    set_id, dest_id = _new_set(alice)
    job = alice.start_job(set_id, dest_id)
    base = f"{API}/backup-sets/{set_id}"
    jpath = f"{base}/destinations/{dest_id}/jobs/{job.ref.job_id}"
    answers = [
        client.get(base, auth=BOB),
        client.patch(base, auth=BOB, json={"name": "mine"}),
        client.post(f"{base}/destinations", auth=BOB, json={"name": "x", "type": "LOCAL"}),
        client.patch(f"{base}/destinations/{dest_id}", auth=BOB, json={"name": "x"}),
        client.post(f"{base}/destinations/{dest_id}/jobs", auth=BOB, json={}),
        client.get(jpath, auth=BOB),
        client.put(f"{jpath}/batches/5", auth=BOB, json={"entries": []}),
        client.post(f"{jpath}/progress", auth=BOB, json={}),
        client.post(f"{jpath}/finish", auth=BOB, json={"status": "BS_STOP_SUCCESS"}),
    ]
    assert [r.status_code for r in answers] == [404] * len(answers)
    assert {r.json()["error"] for r in answers} == {"set_not_found"}
    assert bob.list_sets() == []
    assert alice.get_job(job.ref).batches_received == 0  # nothing of bob's got in


# --- a job's life -----------------------------------------------------------------------------


def test_job_life_counters_equal_lists(client: TestClient, alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    job = alice.start_job(
        set_id, dest_id, mode=JobMode.SCHEDULED, run_version="0.1.0", start_time=T0
    )
    ref = job.ref
    assert ref.job_id == "2024-06-26-13-24-35"  # the start time in the server's zone (UTC)
    assert job.running and job.end_time is None and job.from_ip == "testclient"

    running = _cbs(client, "GetBackupJobReport", ref)
    assert running["BackupJobStatus"] == "BS_STILL_RUNNING" and running["EndTime"] == ""

    assert alice.send_batch(ref, 0, BATCH_0) is True
    assert alice.send_batch(ref, 0, BATCH_0) is False  # a retry is not stored twice
    progress = alice.send_progress(
        ref,
        current_file_name="/home/alice/c.txt",
        current_file_count=5,
        total_file_count=12,
        uploaded_file_size=560,
        total_file_size=4096,
    )
    assert progress.progress.current_file_count == 5
    live = _cbs(client, "GetBackupJobProgress", ref)
    assert (
        live["CurrentFileName"],
        live["CurrentFileCount"],
        live["TotalFileCount"],
        live["UploadedFileSize"],
        live["TotalFileSize"],
        live["EndTime"],
    ) == ("/home/alice/c.txt", "5", "12", "560", "4096", "")
    assert _cbs(client, "GetBackupJobReportSummary", ref)["NumOfNewFiles"] == 2

    assert alice.send_batch(ref, 1, BATCH_1) is True
    assert alice.send_batch(ref, 1, BATCH_1) is False
    resumed = alice.get_job(ref)
    assert (resumed.batches_received, resumed.last_batch_no) == (2, 1)

    done = alice.finish_job(
        ref, JobStatus.STOP_SUCCESS_WITH_WARNING, dedupe_original_size=1190, dedupe_saving=500
    )
    assert done.status == "BS_STOP_SUCCESS_WITH_WARNING" and done.end_time is not None

    data = _cbs(client, "GetBackupJobReport", ref)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    assert data["EndTime"] != "" and data["StartTime"] == "2024-06-26 13:24:35"
    assert data["FromIp"] == "testclient"
    assert (data["DedupeEnabled"], data["DedupeOriginalSize"], data["DedupeSaving"]) == (
        True,
        1190,
        500,
    )
    _assert_counters_equal_lists(data)
    # every entry sent arrived once, in order
    sent = BATCH_0 + BATCH_1
    for lst in ReportList:
        mine = [e for e in sent if e.lst is lst]
        key = "Logs" if lst is ReportList.LOG else lst.key
        assert len(data[key]) == len(mine), key
    assert data["Logs"] == data["info"]
    assert [e["Type"] for e in data["Logs"]] == ["start", "info", "warn", "warn", "error", "end"]
    assert data["Logs"][0]["Timestamp"] == "2024/06/26 13:24:35"
    # the figures, spelled out for this input
    assert (
        data["NumOfNewFiles"],
        data["NumOfNewDirCount"],
        data["NumOfNewLinkFileCount"],
        data["NumOfNewLinkDirCount"],
    ) == (2, 1, 1, 1)
    assert (data["TotalNewFilesSize"], data["TotalUnzipNewFilesSize"]) == (560, 600)
    assert data["NewFilesZipRatio"] == "6%"
    assert (
        data["NumOfDeletedFiles"],
        data["NumOfDeletedDirCount"],
        data["NumOfDeletedLinkFileCount"],
    ) == (1, 1, 1)
    assert (data["NumOfWarnEntries"], data["NumOfErrorEntries"]) == (2, 1)
    assert data["mov"] == [
        {
            "Type": "F",
            "LastModified": "2024/06/26 11:06:40",
            "FromFile": "/home/alice/old-name.txt",
            "ToFile": "/home/alice/new-name.txt",
            "FileSize": 40,
            "UnzipFilesSize": 80,
            "Ratio": "50%",
        }
    ]
    assert data["cpy"][0]["Name"] == "/home/alice/copy.bin"
    assert data["cpy"][0]["FromFile"] == "/home/alice/b.bin"
    # the agent's own view agrees with the report
    final = alice.get_job(ref)
    for key, value in final.counters.items():
        assert data[key] == value, key


def test_finish_twice(alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    first = alice.finish_job(ref, JobStatus.STOP_SUCCESS, dedupe_original_size=10, dedupe_saving=4)
    again = alice.finish_job(ref, JobStatus.STOP_SUCCESS, dedupe_original_size=10, dedupe_saving=4)
    assert again == first  # a retried finish answers the job, unchanged
    for status, saving in ((JobStatus.STOP_BY_USER, 4), (JobStatus.STOP_SUCCESS, 5)):
        with pytest.raises(AgentApiError) as exc:
            alice.finish_job(ref, status, dedupe_original_size=10, dedupe_saving=saving)
        assert exc.value.status == 409
    with pytest.raises(AgentApiError) as exc:
        alice.send_batch(ref, 0, BATCH_0)  # a batch on a finished job
    assert exc.value.status == 409
    with pytest.raises(AgentApiError) as exc:
        alice.send_progress(ref, current_file_count=1)
    assert exc.value.status == 409
    assert alice.get_job(ref).counters["NumOfNewFiles"] == 0


def test_finish_refuses_still_running(client: TestClient, alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    with pytest.raises(AgentApiError) as exc:
        alice.finish_job(ref, JobStatus.STILL_RUNNING)
    assert exc.value.status == 400
    with pytest.raises(AgentApiError) as exc:
        alice.finish_job(ref, JobStatus.STOP_SUCCESS, dedupe_original_size=1, dedupe_saving=2)
    assert exc.value.status == 400
    assert alice.get_job(ref).running


def test_duplicate_job_start_is_refused(alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    alice.start_job(set_id, dest_id, start_time=T0)
    with pytest.raises(AgentApiError) as exc:
        alice.start_job(set_id, dest_id, start_time=T0 + 999)  # the same second
    assert exc.value.status == 409
    cdp = alice.start_job(set_id, dest_id, start_time=T0, cdp=True)  # a CDP job is another
    assert cdp.ref.cdp and cdp.ref.job_id == "2024-06-26-13-24-35"
    assert alice.send_batch(cdp.ref, 0, BATCH_0)
    plain = JobRef(set_id, dest_id, cdp.ref.job_id)
    assert alice.get_job(plain).batches_received == 0


def test_job_start_times_lie_in_the_one_window(client: TestClient, alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    url = f"{API}/backup-sets/{set_id}/destinations/{dest_id}/jobs"
    for bad in (MIN_TIME_MS - 1, MAX_TIME_MS + 1):
        assert client.post(url, auth=ALICE, json={"start_time": bad}).status_code == 422
    first = client.post(url, auth=ALICE, json={"start_time": MIN_TIME_MS})
    assert first.status_code == 201 and first.json()["job_id"] == "1601-01-02-00-00-00"


def test_retried_batch_with_other_entries_is_a_conflict(alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    assert alice.send_batch(ref, 3, BATCH_0)
    with pytest.raises(AgentApiError) as exc:
        alice.send_batch(ref, 3, BATCH_0[:2])
    assert exc.value.status == 409
    assert alice.get_job(ref).counters["NumOfNewFiles"] == 2


def test_concurrent_batches_all_arrive_once(alice: AgentClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref

    def send(n: int) -> bool:
        batch = [_file(ReportList.NEW, "F", f"/home/alice/{n}/{i}", 1, 2) for i in range(50)]
        return alice.send_batch(ref, n, batch)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]))
    assert results.count(True) == 8
    job = alice.get_job(ref)
    assert (job.counters["NumOfNewFiles"], job.counters["TotalNewFilesSize"]) == (400, 400)
    assert job.batches_received == 8


def test_bad_batches_are_refused_whole(client: TestClient, alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    url = f"{API}{job_path(ref, 'batches', '0')}"
    good = {"list": "new", "type": "F", "path": "/a", "size": 1, "unzip_size": 2}
    bad_entries = [
        {"list": "mov", "type": "F", "path": "/b"},  # a move without from_path
        {"list": "new", "type": "X", "path": "/b"},
        {"list": "info", "type": "F", "message": "x"},
        {"list": "new", "type": "F", "path": ""},
        {"list": "new", "type": "F", "path": "/a\x00b"},
        {"list": "new", "type": "F", "path": "/b", "size": -1},
        {"list": "new", "type": "F", "path": "/b", "last_modified": 10**16},
        {"list": "upd", "type": "F", "path": "/b", "from_path": "/c"},
        {"list": "nope", "type": "F", "path": "/b"},
        {"list": "new", "type": "F", "path": "/b", "unknown": 1},
    ]
    for bad in bad_entries:
        r = client.put(url, auth=ALICE, json={"entries": [good, bad]})
        assert r.status_code == 422, bad
        assert r.json()["error"] == "invalid_input"
    too_many = client.put(url, auth=ALICE, json={"entries": [good] * 10_001})
    assert too_many.status_code == 422
    assert (
        client.put(
            f"{API}{job_path(ref, 'batches', '-1')}", auth=ALICE, json={"entries": []}
        ).status_code
        == 422
    )
    assert alice.get_job(ref).batches_received == 0
    assert alice.send_batch(ref, 0, [Entry(ReportList.NEW, "F", path="/a")])


def test_body_over_the_limit_is_413(client: TestClient, backup_users: None) -> None:
    big = {"name": "x", "settings": {"sources": ["/" + "a" * 30_000] * 40}}
    r = client.post(f"{API}/backup-sets", auth=ALICE, json=big)
    assert r.status_code == 413


def test_batch_bodies_may_exceed_the_general_limit(alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    long_paths = [Entry(ReportList.NEW, "F", path=f"/{'x' * 30_000}/{i}") for i in range(40)]
    assert alice.send_batch(ref, 0, long_paths)  # 1.2 MB, over the 1 MiB of other calls


def test_transport_errors_become_server_unreachable() -> None:
    import httpx

    from opencbs.agent import ServerUnreachable

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with AgentClient("http://backup.invalid", *ALICE, transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(ServerUnreachable):
            c.list_sets()
    with AgentClient("http://backup.invalid", *ALICE, transport=httpx.MockTransport(gateway)) as c:
        with pytest.raises(AgentApiError) as exc:
            c.list_sets()
    assert exc.value.status == 502 and exc.value.retryable


# --- idle jobs --------------------------------------------------------------------------------


def test_idle_job_is_closed_as_not_finished_and_runs_again_when_its_agent_speaks(
    client: TestClient, state: ServerState, alice: AgentClient
) -> None:
    """A job closed for silence (an agent asleep, or off the network) goes on when its agent
    speaks again, and its report ends whole; a job its agent finished takes nothing more."""
    set_id, dest_id = _new_set(alice)
    idle = alice.start_job(set_id, dest_id).ref
    assert sweep_once(state) == []  # the fixture's timeout is an hour
    state.job_idle_timeout = 0.001
    time.sleep(0.02)
    assert sweep_once(state) == [idle.job_id]
    data = _cbs(client, "GetBackupJobReport", idle)
    assert data["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED" and data["EndTime"] != ""
    state.job_idle_timeout = 3600.0
    assert alice.send_batch(idle, 0, BATCH_0)  # the agent woke up: the job runs again
    data = _cbs(client, "GetBackupJobReport", idle)
    assert data["BackupJobStatus"] == "BS_STILL_RUNNING", data["BackupJobStatus"]
    alice.finish_job(idle, JobStatus.STOP_SUCCESS)
    data = _cbs(client, "GetBackupJobReport", idle)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS" and data["NumOfNewFiles"] == 2, data
    with pytest.raises(AgentApiError) as exc:
        alice.send_batch(idle, 1, BATCH_0)
    assert exc.value.status == 409
    with pytest.raises(AgentApiError) as exc:
        alice.finish_job(idle, JobStatus.STOP_BY_USER)
    assert exc.value.status == 409


def test_every_call_on_a_job_is_a_sign_of_life(state: ServerState, alice: AgentClient) -> None:
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    assert alice.send_batch(ref, 0, BATCH_0)

    uid = _user_id(state)

    def last_activity() -> int:
        with state.db.read() as conn:
            bset = sets.get_set(conn, uid, set_id)
            return job_queries.find_job(conn, bset, dest_id, ref.job_id, cdp=False).last_activity

    for call in (
        lambda: alice.send_batch(ref, 0, BATCH_0),  # a retried batch
        lambda: alice.get_job(ref),
        lambda: alice.send_progress(ref, current_file_count=1),
    ):
        before = last_activity()
        time.sleep(0.005)
        call()
        after = last_activity()
        assert after > before
        with state.db.write() as conn:  # a fake clock: just inside, then just past the limit
            assert jobs.close_stale_jobs(conn, 1000, at_ms=after + 1000) == []
    with state.db.write() as conn:
        assert jobs.close_stale_jobs(conn, 1000, at_ms=after + 1001) == [ref.job_id]


def _user_id(state: ServerState) -> int:
    with state.db.read() as conn:
        user = users.find_backup_user(conn, ALICE[0])
    assert user is not None
    return user.id


# --- the schema -------------------------------------------------------------------------------


def test_openapi_documents_the_agent_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = [p for p in schema["paths"] if p.startswith(API)]
    assert (
        f"{API}/backup-sets/{{set_id}}/destinations/{{destination_id}}/jobs/{{job_id}}"
        "/batches/{batch_no}" in paths
    )
    models = schema["components"]["schemas"]
    assert models["BatchIn"]["properties"]["entries"]["maxItems"] == 10_000
    assert set(models["EntryIn"]["properties"]["list"]["enum"]) == {
        "info",
        "new",
        "upd",
        "pmt",
        "del",
        "mov",
        "cpy",
    }
    assert "BackupUserBasic" in schema["components"]["securitySchemes"]
