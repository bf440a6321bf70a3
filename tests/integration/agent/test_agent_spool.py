"""The report spool (issue 4, "Lost server"): a backup with the server away completes and
spools its report; delivery later puts it on the server complete and exactly once, also when it
breaks off mid-way and resumes, and a later backup delivers pending reports first.

SQLite only; the app is reached through the TestClient transport, wrapped in a transport that
refuses connections (server down) or fails after N requests (server lost mid-delivery).
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from opencbs.agent import AgentClient, NewDestination
from opencbs.agent.backup import JobOutcome, run_backup
from opencbs.agent.client import JobRef
from opencbs.agent.spool import (
    DeliveryState,
    JobSpool,
    deliver_pending,
    pending_spools,
    save_sets,
)
from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from opencbs.reports.timefmt import job_id_at
from opencbs.reports.vocabulary import JobStatus
from opencbs.store import users
from tests.conftest import ADMIN
from tests.integration.agent.test_agent_backup import _check_counters

USER = ("alice", "alice-secret")
PASSWORD = "repo-password"
T0 = 1_719_408_275_123  # 2024-06-26 13:24:35.123 UTC
FILES = 130  # with batches of 20 entries: 8 batches in the first job


class Flaky(httpx.BaseTransport):
    """The app's transport, refusing connections once ``calls_left`` reaches 0 (``None``:
    never). ``answered_then_lost``: the request reaches the app but its answer is lost."""

    def __init__(self, inner: httpx.BaseTransport, calls_left: int | None = None,
                 answered_then_lost: bool = False) -> None:
        self.inner = inner
        self.calls_left = calls_left
        self.answered_then_lost = answered_then_lost
        self.calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.calls_left is not None:
            if self.calls_left <= 0:
                raise httpx.ConnectError("connection refused", request=request)
            self.calls_left -= 1
        self.calls.append(f"{request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        if self.answered_then_lost and self.calls_left == 0:
            response.read()
            raise httpx.ReadError("connection reset", request=request)
        return response


@pytest.fixture
def app_transport(client: TestClient) -> httpx.BaseTransport:
    with client.app.state.opencbs.db.write() as conn:  # type: ignore[attr-defined]
        users.add_backup_user(conn, *USER)
    transport: httpx.BaseTransport = client._transport
    return transport


def _agent(transport: httpx.BaseTransport) -> AgentClient:
    return AgentClient("http://testserver", *USER, transport=transport)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for d in range(5):
        (root / f"d{d}").mkdir(parents=True)
    for i in range(FILES):
        (root / f"d{i % 5}" / f"f{i:03d}.txt").write_bytes(f"file {i}\n".encode() * (i + 1))
    return root


def _setup(transport: httpx.BaseTransport, src: Path, tmp_path: Path
           ) -> tuple[str, str, LocalStorage]:
    dest = tmp_path / "dest"
    storage = LocalStorage(dest, fsync=False)
    Repository.init(storage, PASSWORD, kdf=KdfParams(1, 8 * 1024, 1))
    with _agent(transport) as agent:
        bset = agent.create_set("Docs", settings={"sources": [str(src)]}, destinations=[
            NewDestination("Local", "LOCAL", {"path": str(dest)})])
        # a run that reaches the server remembers the set for runs that do not
        save_sets(tmp_path / "spool", [bset])
    return bset.id, bset.destinations[0].id, storage


def _backup(transport: httpx.BaseTransport, ids: tuple[str, str], storage: LocalStorage,
            spool: Path, start_ms: int) -> JobOutcome:
    with _agent(transport) as agent:
        return run_backup(agent, ids[0], ids[1], storage, PASSWORD, start_time_ms=start_ms,
                          batch_size=20, retry_delays=(), spool_dir=spool, zone=UTC)


def _report(client: TestClient, set_id: str, dest_id: str, job_id: str) -> dict[str, Any]:
    r = client.post("/obs/api/json/GetBackupJobReport.do", json={
        "SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": USER[0],
        "BackupSetID": set_id, "DestinationID": dest_id, "BackupJobID": job_id})
    body = r.json()
    assert body["Status"] == "OK", body
    data: dict[str, Any] = body["Data"]
    return data


def _job_ids(client: TestClient, set_id: str) -> list[str]:
    r = client.post("/obs/api/json/ListBackupJobs.do", json={
        "SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": USER[0]})
    body = r.json()
    assert body["Status"] == "OK", body
    ids: list[str] = []
    for item in body["Data"]:
        if str(item.get("BackupSetID")) == set_id:
            ids.extend(item["BackupJob"])
    return ids


def _assert_complete(data: dict[str, Any], new_files: int) -> None:
    """One start and one end log entry, each file once, counters equal to the lists."""
    _check_counters(data)
    types = [e["Type"] for e in data["Logs"]]
    assert types.count("start") == 1 and types.count("end") == 1
    assert types[0] == "start" and types[-1] == "end"
    names = [e["Name"] for e in data["new"]]
    assert len(names) == len(set(names))  # nothing stored twice
    assert int(data["NumOfNewFiles"]) == new_files


def test_server_down_for_the_whole_job_then_flush(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    down = Flaky(app_transport, calls_left=0)
    outcome = _backup(down, (set_id, dest_id), storage, spool, T0)
    assert outcome.status is JobStatus.STOP_SUCCESS and outcome.snapshot_id is not None
    assert not outcome.report_delivered and outcome.report_spool
    assert "agent flush" in outcome.report_error
    assert outcome.ref.job_id == job_id_at(T0, UTC)  # the zone given (UTC) names it
    folders = pending_spools(spool)
    assert len(folders) == 1 and JobSpool.open(folders[0]).record.job_id is None
    assert JobSpool.open(folders[0]).batch_count() >= 7  # 136 entries + logs, 20 a batch
    assert Repository.open(storage, PASSWORD).list_snapshots()  # the backup is committed
    with _agent(app_transport) as agent:
        assert agent.list_sets()[0].id == set_id
    assert _job_ids(client, set_id) == []  # the server knows nothing yet

    with _agent(app_transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    assert pending_spools(spool) == []
    job_id = results[0].job_id
    assert job_id is not None and _job_ids(client, set_id) == [job_id]
    data = _report(client, set_id, dest_id, job_id)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    _assert_complete(data, FILES)
    assert int(data["NumOfNewDirCount"]) == 6  # the source and its 5 folders
    with _agent(app_transport) as agent:
        job = agent.get_job(JobRef(set_id, dest_id, job_id))
    assert job.start_time == T0 and job.mode == "M"  # recorded start and mode kept

    # delivering again finds nothing: exactly once
    with _agent(app_transport) as agent:
        assert deliver_pending(agent, spool, retry_delays=()) == []


@pytest.mark.parametrize("fail_after", [1, 4, 7])
def test_delivery_broken_off_resumes_without_loss_or_duplicate(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path,
    fail_after: int,
) -> None:
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    _backup(Flaky(app_transport, calls_left=0), (set_id, dest_id), storage, spool, T0)
    # the server goes away after `fail_after` requests, the last one's answer lost
    lossy = Flaky(app_transport, calls_left=fail_after, answered_then_lost=True)
    with _agent(lossy) as agent:
        first = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in first] == [DeliveryState.PENDING]
    assert len(pending_spools(spool)) == 1
    with _agent(app_transport) as agent:
        second = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in second] == [DeliveryState.DELIVERED]
    job_id = second[0].job_id
    assert job_id is not None and _job_ids(client, set_id) == [job_id]
    data = _report(client, set_id, dest_id, job_id)
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
    _assert_complete(data, FILES)


def test_server_lost_mid_job_and_next_backup_delivers_first(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    # the server answers the set, the start and three batches, then is gone
    lost = Flaky(app_transport, calls_left=5)
    first = _backup(lost, (set_id, dest_id), storage, spool, T0)
    assert first.status is JobStatus.STOP_SUCCESS and first.snapshot_id is not None
    assert not first.report_delivered and first.report_spool
    first_id = first.ref.job_id  # started on the server: its real ID

    # job 2: one file changed; it delivers job 1's report before its own
    (src / "d0" / "f000.txt").write_bytes(b"changed")
    second = _backup(app_transport, (set_id, dest_id), storage, spool, T0 + 3_600_000)
    assert [(d.job_id, d.state) for d in second.flushed] == [(first_id,
                                                             DeliveryState.DELIVERED)]
    assert second.report_delivered and not second.report_spool
    assert pending_spools(spool) == []
    assert sorted(_job_ids(client, set_id)) == sorted([first_id, second.ref.job_id])
    data1 = _report(client, set_id, dest_id, first_id)
    assert data1["BackupJobStatus"] == "BS_STOP_SUCCESS"
    _assert_complete(data1, FILES)
    data2 = _report(client, set_id, dest_id, second.ref.job_id)
    _assert_complete(data2, 0)
    assert [e["Name"] for e in data2["upd"]] == [str(src / "d0" / "f000.txt")]


def test_lost_start_answer_is_recognised_as_ours(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    # get_set answered; the start reaches the server but its answer is lost
    lost = Flaky(app_transport, calls_left=2, answered_then_lost=True)
    outcome = _backup(lost, (set_id, dest_id), storage, spool, T0)
    assert outcome.snapshot_id is not None and outcome.report_spool
    assert len(_job_ids(client, set_id)) == 1  # started, though the agent does not know
    with _agent(app_transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    job_id = results[0].job_id
    assert job_id is not None and _job_ids(client, set_id) == [job_id]
    _assert_complete(_report(client, set_id, dest_id, job_id), FILES)


def test_job_closed_by_the_server_is_dropped_with_a_warning(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    first = _backup(Flaky(app_transport, calls_left=4), (set_id, dest_id), storage, spool, T0)
    assert first.report_spool
    with _agent(app_transport) as agent:  # as the sweeper does after the idle timeout
        agent.finish_job(first.ref, JobStatus.BACKUP_NOT_FINISHED)
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DROPPED]
    assert "BS_BACKUP_NOT_FINISHED" in results[0].message
    assert pending_spools(spool) == []
    assert any("dropp" in r.getMessage() for r in caplog.records)


def test_abandoned_spool_is_closed_not_finished(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path
) -> None:
    """A spool without a finish record (its agent was killed) is delivered and closed as
    BS_BACKUP_NOT_FINISHED with an end entry."""
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    _backup(Flaky(app_transport, calls_left=0), (set_id, dest_id), storage, spool, T0)
    folder = pending_spools(spool)[0]
    (folder / "finish.json").unlink()
    os.unlink(folder / f"batch-{JobSpool.open(folder).batch_count() - 1:08d}.json")
    with _agent(app_transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    job_id = results[0].job_id
    assert job_id is not None
    data = _report(client, set_id, dest_id, job_id)
    assert data["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED"
    _check_counters(data)
    assert data["Logs"][-1]["Type"] == "end"


def test_offline_job_in_the_previous_jobs_second_is_delivered_a_second_later(
    client: TestClient, app_transport: httpx.BaseTransport, src: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Job IDs are start times to the second: a job run while the server is away, in the same
    second as the set's previous job, cannot know its ID is taken. Delivery moves it one second
    later (recorded in the spool) instead of dropping its report."""
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    first = _backup(app_transport, (set_id, dest_id), storage, spool, T0)
    assert first.report_delivered and first.ref.job_id == job_id_at(T0, UTC)
    (src / "d0" / "late.txt").write_bytes(b"written between the jobs\n")
    second = _backup(Flaky(app_transport, calls_left=0), (set_id, dest_id), storage, spool,
                     T0 + 400)  # the same second as the first job
    assert second.snapshot_id is not None and second.report_spool
    assert second.ref.job_id == first.ref.job_id  # the ID the agent gave it offline
    with _agent(app_transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    moved = results[0].job_id
    assert moved == job_id_at(T0 + 1400, UTC)
    assert sorted(_job_ids(client, set_id)) == sorted([first.ref.job_id, moved])
    assert any("one second later" in r.getMessage() for r in caplog.records)
    # both reports whole: the first untouched, the second complete with its one new file
    _assert_complete(_report(client, set_id, dest_id, first.ref.job_id), FILES)
    data = _report(client, set_id, dest_id, moved)
    _assert_complete(data, 1)
    assert [e["Name"] for e in data["new"]] == [str(src / "d0" / "late.txt")]
    with _agent(app_transport) as agent:  # delivered once: nothing left, nothing more sent
        assert deliver_pending(agent, spool, retry_delays=()) == []
