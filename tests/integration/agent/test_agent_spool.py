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
from opencbs.agent.delivery import DeliveryState, deliver_pending
from opencbs.agent.job import JobOptions, JobOutcome, run_backup
from opencbs.agent.spool import (
    JobSpool,
    SpoolError,
    adopt_legacy,
    legacy_spools,
    pending_spools,
    save_sets,
    user_spool_root,
)
from opencbs.destinations.local import LocalStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import Repository
from opencbs.model.jobs import JobRef
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

    def __init__(
        self,
        inner: httpx.BaseTransport,
        calls_left: int | None = None,
        answered_then_lost: bool = False,
    ) -> None:
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


def _setup(
    transport: httpx.BaseTransport, src: Path, tmp_path: Path
) -> tuple[str, str, LocalStorage]:
    dest = tmp_path / "dest"
    storage = LocalStorage(dest, fsync=False)
    Repository.init(storage, PASSWORD, kdf=KdfParams(1, 8 * 1024, 1))
    with _agent(transport) as agent:
        bset = agent.create_set(
            "Docs",
            settings={"sources": [str(src)]},
            destinations=[NewDestination("Local", "LOCAL", {"path": str(dest)})],
        )
        # a run that reaches the server remembers the set for runs that do not
        save_sets(tmp_path / "spool", [bset])
    return bset.id, bset.destinations[0].id, storage


def _backup(
    transport: httpx.BaseTransport,
    ids: tuple[str, str],
    storage: LocalStorage,
    spool: Path,
    start_ms: int,
) -> JobOutcome:
    with _agent(transport) as agent:
        return run_backup(
            JobOptions(
                client=agent,
                set_id=ids[0],
                destination_id=ids[1],
                storage=storage,
                password=PASSWORD,
                start_time_ms=start_ms,
                batch_size=20,
                retry_delays=(),
                spool_dir=spool,
                zone=UTC,
            )
        )


def _report(client: TestClient, set_id: str, dest_id: str, job_id: str) -> dict[str, Any]:
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


def _deliver_the_one(
    client: TestClient, transport: httpx.BaseTransport, spool: Path, set_id: str, dest_id: str
) -> dict[str, Any]:
    """Deliver what is spooled under ``spool``: exactly one job, delivered; its report."""
    with _agent(transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    job_id = results[0].job_id
    assert job_id is not None
    return _report(client, set_id, dest_id, job_id)


def _job_ids(client: TestClient, set_id: str) -> list[str]:
    r = client.post(
        "/obs/api/json/ListBackupJobs.do",
        json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": USER[0]},
    )
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
    client: TestClient,
    app_transport: httpx.BaseTransport,
    src: Path,
    tmp_path: Path,
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
    assert [(d.job_id, d.state) for d in second.flushed] == [(first_id, DeliveryState.DELIVERED)]
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
    client: TestClient,
    app_transport: httpx.BaseTransport,
    src: Path,
    tmp_path: Path,
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
    assert pending_spools(spool) == []  # the caller says it was dropped (the CLI: a warning)


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
    data = _deliver_the_one(client, app_transport, spool, set_id, dest_id)
    assert data["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED"
    _check_counters(data)
    assert data["Logs"][-1]["Type"] == "end"


def test_offline_job_in_the_second_of_a_job_it_cannot_know_is_delivered_a_second_later(
    client: TestClient,
    app_transport: httpx.BaseTransport,
    src: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Job IDs are start times to the second: a job run while the server is away, in the same
    second as a job the agent cannot know of (started elsewhere, no snapshot), cannot know its
    ID is taken. Delivery moves it one second later (recorded in the spool) instead of dropping
    its report."""
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    with _agent(app_transport) as agent:  # a job with no snapshot and no spool on this agent
        other = agent.start_job(set_id, dest_id, start_time=T0)
        agent.finish_job(other.ref, JobStatus.STOP_BY_SYSTEM_ERROR)
    assert other.ref.job_id == job_id_at(T0, UTC)
    second = _backup(
        Flaky(app_transport, calls_left=0), (set_id, dest_id), storage, spool, T0 + 400
    )  # the same second as the other job
    assert second.snapshot_id is not None and second.report_spool
    assert second.ref.job_id == other.ref.job_id  # the ID the agent gave it offline
    with _agent(app_transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    moved = results[0].job_id
    assert moved == job_id_at(T0 + 1400, UTC)
    assert sorted(_job_ids(client, set_id)) == sorted([other.ref.job_id, moved])
    assert any("one second later" in r.getMessage() for r in caplog.records)
    # the other job untouched; this one complete
    assert _report(client, set_id, dest_id, other.ref.job_id)["BackupJobStatus"] == (
        "BS_STOP_BY_SYSTEM_ERROR"
    )
    _assert_complete(_report(client, set_id, dest_id, moved), FILES)
    with _agent(app_transport) as agent:  # delivered once: nothing left, nothing more sent
        assert deliver_pending(agent, spool, retry_delays=()) == []


def test_offline_jobs_in_one_second_get_free_job_ids_that_the_server_keeps(
    client: TestClient,
    app_transport: httpx.BaseTransport,
    src: Path,
    tmp_path: Path,
) -> None:
    """A job started while the server is away takes the first whole second whose job ID no
    snapshot of the set and destination and no spooled job of the set has: two offline jobs in
    the second of an online one get the next two seconds, and after delivery the server's job
    IDs are the snapshots' (so a restore by the server's job ID finds the right snapshot)."""
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    first = _backup(app_transport, (set_id, dest_id), storage, spool, T0)
    assert first.report_delivered and first.ref.job_id == job_id_at(T0, UTC)
    (src / "d0" / "late.txt").write_bytes(b"written between the jobs\n")
    down = Flaky(app_transport, calls_left=0)
    second = _backup(down, (set_id, dest_id), storage, spool, T0 + 400)  # snapshot's second
    (src / "d0" / "later.txt").write_bytes(b"and between the offline ones\n")
    third = _backup(down, (set_id, dest_id), storage, spool, T0 + 700)  # spooled job's too
    ids = [first.ref.job_id, second.ref.job_id, third.ref.job_id]
    assert ids == [job_id_at(T0 + n * 1000, UTC) for n in range(3)]
    assert second.report_spool and third.report_spool
    snapshots = Repository.open(storage, PASSWORD).list_snapshots()
    by_id = {i.id: i.meta.job_id for i in snapshots}
    assert [by_id[o.snapshot_id] for o in (first, second, third) if o.snapshot_id] == ids
    records = [JobSpool.open(p).record for p in pending_spools(spool)]
    whole = T0 // 1000 * 1000
    assert [r.start_ms for r in records] == [whole + 1000, whole + 2000]  # whole seconds

    with _agent(app_transport) as agent:
        results = deliver_pending(agent, spool, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED] * 2
    assert [r.job_id for r in results] == ids[1:]  # not moved again at delivery
    assert sorted(_job_ids(client, set_id)) == sorted(ids)
    assert sorted(i.meta.job_id for i in snapshots) == sorted(ids)
    assert [e["Name"] for e in _report(client, set_id, dest_id, ids[2])["new"]] == [
        str(src / "d0" / "later.txt")
    ]


@pytest.mark.parametrize("disk_refuses_again", [False, True])
def test_spool_refused_while_the_server_is_away_loses_the_rest_and_says_so(
    client: TestClient,
    app_transport: httpx.BaseTransport,
    src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    disk_refuses_again: bool,
) -> None:
    """The agent's disk refuses batch 2 (full) with the server away: the outcome says the
    report is lost from batch 2 on, the two batches before stay spooled; closed with an error
    entry and the real status when the disk takes one more batch, else closed by delivery as
    BS_BACKUP_NOT_FINISHED. Never "spooled" for what is not."""
    spool = tmp_path / "spool"
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    write_batch = JobSpool.write_batch
    refused: list[int] = []

    def full_disk(self: JobSpool, batch_no: int, entries: Any) -> None:
        if batch_no == 2 and (disk_refuses_again or not refused):
            refused.append(batch_no)
            raise SpoolError(f"cannot write {self.path}/batch-2: No space left on device")
        write_batch(self, batch_no, entries)

    monkeypatch.setattr(JobSpool, "write_batch", full_disk)
    outcome = _backup(Flaky(app_transport, calls_left=0), (set_id, dest_id), storage, spool, T0)
    monkeypatch.setattr(JobSpool, "write_batch", write_batch)
    assert outcome.status is JobStatus.STOP_SUCCESS and outcome.snapshot_id is not None
    assert outcome.report_lost and not outcome.report_delivered
    assert "No space left on device" in outcome.report_error
    assert "from batch 2 on is lost" in outcome.report_error
    assert "spooled in" not in outcome.report_error
    folder = Path(outcome.report_spool)
    assert pending_spools(spool) == [folder]
    kept = JobSpool.open(folder)
    assert kept.batch_count() == (2 if disk_refuses_again else 3)
    assert (kept.finish() is None) is disk_refuses_again

    data = _deliver_the_one(client, app_transport, spool, set_id, dest_id)
    _check_counters(data)
    assert data["Logs"][-1]["Type"] == "end"
    if disk_refuses_again:
        assert data["BackupJobStatus"] == "BS_BACKUP_NOT_FINISHED"
    else:
        assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
        assert any(
            "Report incomplete" in e["Message"] for e in data["Logs"] if e["Type"] == "error"
        ), data["Logs"]


def test_spools_are_per_user_and_old_layout_reports_go_to_their_user_only(
    client: TestClient,
    app_transport: httpx.BaseTransport,
    src: Path,
    tmp_path: Path,
) -> None:
    """Each backup user of each server has a spool root of its own; a report spooled in the
    earlier layout (directly under the base) moves only into the root of the user whose server
    lists its set and destination, and is delivered from there; another user's delivery never
    sees (or drops) it."""
    with client.app.state.opencbs.db.write() as conn:  # type: ignore[attr-defined]
        users.add_backup_user(conn, "bob", "bob-secret")
    base = tmp_path / "agent-spool"
    url = "http://testserver"
    alice_root = user_spool_root(base, url, USER[0])
    bob_root = user_spool_root(base, url, "bob")
    assert alice_root != bob_root and alice_root.parent == bob_root.parent == base
    set_id, dest_id, storage = _setup(app_transport, src, tmp_path)
    # alice's offline job, spooled in the earlier layout (directly under the base)
    with _agent(app_transport) as alice:
        save_sets(base, alice.list_sets())
    _backup(Flaky(app_transport, calls_left=0), (set_id, dest_id), storage, base, T0)
    assert len(legacy_spools(base)) == 1

    with AgentClient(url, "bob", "bob-secret", transport=app_transport) as bob:
        bob.create_set(
            "Bob's",
            settings={"sources": [str(src)]},
            destinations=[NewDestination("Local", "LOCAL", {"path": str(tmp_path / "bobdest")})],
        )
        assert adopt_legacy(base, bob_root, bob.list_sets()) == []
        assert deliver_pending(bob, bob_root, retry_delays=()) == []
    assert len(legacy_spools(base)) == 1  # not bob's: kept where it is
    assert _job_ids(client, set_id) == []

    with _agent(app_transport) as alice:
        moved = adopt_legacy(base, alice_root, alice.list_sets())
        assert [p.parent for p in moved] == [alice_root] and legacy_spools(base) == []
        results = deliver_pending(alice, alice_root, retry_delays=())
    assert [r.state for r in results] == [DeliveryState.DELIVERED]
    assert _job_ids(client, set_id) == [results[0].job_id]
