"""``UploadSize`` is what a job wrote to its destination (cbs-api.md §7; issue 15, point 12), on
SQLite and PostgreSQL, over the app's HTTP: the agent's ``uploaded_bytes`` with a progress and
the finish (kept by the server, answered in the job record), ListBackupJobStatus,
GetUserStorageStat's upload averages and ListUsers' ``DataSize`` of a user never measured; a
job without the figure (an older agent, a job stored before migration 0005) keeps the earlier
rule, the stored size of its new and updated content."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from opencbs import security
from opencbs.agent import AgentClient, NewDestination
from opencbs.agent.client import AgentApiError, Entry
from opencbs.api.state import ServerState
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import JobStatus, ReportList
from opencbs.store import jobs, users
from opencbs.store.migrate import alembic_config, current_revision, head_revision, upgrade
from opencbs.store.schema import backup_jobs
from tests.conftest import ADMIN

ALICE = ("alice", "alice-password")
T0 = 1_719_396_000_000  # 2024-06-26 10:00:00 UTC; the jobs of a test start a minute apart
DAY = "2024-06-26"
#: The entries of every job: stored bytes 6000 new + 3000 updated (the earlier UploadSize),
#: of 10,000 + 5,000 original bytes; a permission change does not count.
ENTRIES = [
    Entry(ReportList.NEW, "F", path="/src/a", size=6000, unzip_size=10_000, last_modified=T0),
    Entry(ReportList.UPD, "F", path="/src/b", size=3000, unzip_size=5000, last_modified=T0),
    Entry(ReportList.PMT, "F", path="/src/c", size=700, unzip_size=900, last_modified=T0),
]
EARLIER_RULE = 9000


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def agent(client: TestClient, state: ServerState) -> Iterator[AgentClient]:
    with state.db.write() as conn:
        users.add_backup_user(conn, *ALICE)
    with AgentClient("http://testserver", *ALICE, transport=client._transport) as c:
        yield c


@pytest.fixture
def place(agent: AgentClient) -> tuple[str, str]:
    bset = agent.create_set(
        "Docs",
        settings={"sources": ["/src"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/backups/docs"})],
    )
    return bset.id, bset.destinations[0].id


def _job(agent: AgentClient, place: tuple[str, str], minute: int) -> JobRef:
    ref = agent.start_job(*place, start_time=T0 + minute * 60_000).ref
    assert agent.send_batch(ref, 0, ENTRIES)
    return ref


def _cbs(client: TestClient, name: str, **params: Any) -> Any:
    r = client.post(
        f"/obs/api/json/{name}.do", json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1], **params}
    )
    body = r.json()
    assert body.get("Status") != "Error", body
    return body


def _upload_sizes(client: TestClient) -> dict[str, str]:
    records = _cbs(client, "ListBackupJobStatus", LoginName="alice", BackupDate=DAY)["Data"]
    return {r["ID"]: r["UploadSize"] for r in records}


def test_upload_size_is_what_the_agent_says_it_wrote(
    client: TestClient, agent: AgentClient, place: tuple[str, str]
) -> None:
    ref = _job(agent, place, 0)
    assert _upload_sizes(client) == {ref.job_id: str(EARLIER_RULE)}  # nothing said yet
    record = agent.send_progress(ref, uploaded_file_size=15_000, uploaded_bytes=120)
    assert record.uploaded_bytes == 120
    assert record.progress.uploaded_file_size == 15_000  # the bytes read: another figure
    assert _upload_sizes(client) == {ref.job_id: "120"}  # live while the job runs
    agent.send_progress(ref, uploaded_file_size=15_000)  # an older agent's progress: kept
    assert _upload_sizes(client) == {ref.job_id: "120"}
    done = agent.finish_job(ref, JobStatus.STOP_SUCCESS, uploaded_bytes=250)
    assert done.uploaded_bytes == 250
    assert _upload_sizes(client) == {ref.job_id: "250"}
    # a retried finish (its answer lost) is the same finish; other figures are a conflict
    assert agent.finish_job(ref, JobStatus.STOP_SUCCESS, uploaded_bytes=250).uploaded_bytes == 250
    assert agent.finish_job(ref, JobStatus.STOP_SUCCESS).uploaded_bytes == 250
    with pytest.raises(AgentApiError) as refused:
        agent.finish_job(ref, JobStatus.STOP_SUCCESS, uploaded_bytes=251)
    assert refused.value.status == 409
    # GetBackupJobReport's sizes stay the entries' (the report is not about uploads)
    summary = _cbs(
        client,
        "GetBackupJobReportSummary",
        LoginName="alice",
        BackupSetID=ref.set_id,
        DestinationID=ref.destination_id,
        BackupJobID=ref.job_id,
    )["Data"]
    assert (summary["TotalNewFilesSize"], summary["TotalUpdatedFilesSize"]) == (6000, 3000)


def test_a_job_without_the_figure_keeps_the_earlier_rule(
    client: TestClient, agent: AgentClient, place: tuple[str, str]
) -> None:
    ref = _job(agent, place, 0)
    agent.send_progress(ref, uploaded_file_size=15_000, total_file_size=15_000)
    assert agent.finish_job(ref, JobStatus.STOP_SUCCESS).uploaded_bytes is None
    assert _upload_sizes(client) == {ref.job_id: str(EARLIER_RULE)}


def test_a_job_whose_agent_died_keeps_its_last_figure(
    client: TestClient, agent: AgentClient, place: tuple[str, str], state: ServerState
) -> None:
    ref = _job(agent, place, 0)
    agent.send_progress(ref, uploaded_bytes=4321)
    with state.db.write() as conn:
        assert jobs.close_stale_jobs(conn, 0, at_ms=jobs.now_ms() + 1000) == [ref.job_id]
    assert _upload_sizes(client) == {ref.job_id: "4321"}


@pytest.mark.parametrize("value", [-1, 1.5, "12", True])
def test_a_figure_off_the_schema_is_422(
    client: TestClient, agent: AgentClient, place: tuple[str, str], value: Any
) -> None:
    ref = _job(agent, place, 0)
    base = f"/api/agent/v1/backup-sets/{ref.set_id}/destinations/{ref.destination_id}/jobs/"
    for path, body in (
        ("progress", {"uploaded_bytes": value}),
        ("finish", {"status": "BS_STOP_SUCCESS", "uploaded_bytes": value}),
    ):
        r = client.post(base + f"{ref.job_id}/{path}", json=body, auth=ALICE)
        assert r.status_code == 422, (path, value, r.text)
    assert _upload_sizes(client) == {ref.job_id: str(EARLIER_RULE)}


def test_storage_stat_and_data_size_sum_upload_sizes(
    client: TestClient, agent: AgentClient, place: tuple[str, str]
) -> None:
    """Two jobs of a day: one that said it wrote 1000 bytes, one that said nothing (9000)."""
    agent.finish_job(_job(agent, place, 0), JobStatus.STOP_SUCCESS, uploaded_bytes=1000)
    agent.finish_job(_job(agent, place, 1), JobStatus.STOP_SUCCESS)
    (month,) = _cbs(
        client, "GetUserStorageStat", LoginName="alice", YearMonth="2024-06", BackupSetID="all"
    )["Data"]
    assert (month["AvgUploadRawSize"], month["AvgUploadSize"]) == ("10000", "9.8k")
    assert month["AvgUploadNo"] == "4"  # a new and an updated file per job
    (user,) = _cbs(client, "ListUsers", searchStr="alice")["User"]
    assert user["DataSize"] == 1000 + EARLIER_RULE  # never measured: what its jobs uploaded


def test_jobs_stored_before_the_column_read_by_the_earlier_rule(
    client: TestClient, agent: AgentClient, place: tuple[str, str], state: ServerState
) -> None:
    """Migration 0005 taken back and applied again: the figure is gone (NULL), as for the jobs
    stored before it; their UploadSize is the stored size of new and updated content."""
    ref = _job(agent, place, 0)
    agent.finish_job(ref, JobStatus.STOP_SUCCESS, uploaded_bytes=77)
    assert _upload_sizes(client) == {ref.job_id: "77"}
    cfg = alembic_config(state.db)
    command.downgrade(cfg, "0003")
    assert current_revision(state.db) == "0003"
    assert upgrade(state.db) == head_revision(state.db)
    with state.db.read() as conn:
        held = conn.execute(select(backup_jobs.c.uploaded_bytes)).scalars().all()
    assert held == [None]
    assert _upload_sizes(client) == {ref.job_id: str(EARLIER_RULE)}
