"""The end time an agent reports with a job's finish (issue 12: a job backed up while the
server was away is reported with its own end, not the time of delivery): taken when it lies
between the job's start and the server's clock (plus a small skew), refused otherwise, and an
agent whose end time is refused finishes the job at the server's now, as before."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.agent import AgentClient, NewDestination
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import JobStatus
from opencbs.store import users
from opencbs.store.jobs import END_TIME_SKEW_MS

API = "/api/agent/v1"
CAROL = ("carol", "carol-secret")


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lowest argon2id cost: the API is under test here, not the hash."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def carol(client: TestClient, state: ServerState) -> Iterator[AgentClient]:
    with state.db.write() as conn:
        users.add_backup_user(conn, *CAROL)
    with AgentClient("http://testserver", *CAROL, transport=client._transport) as c:
        yield c


def _new_set(c: AgentClient) -> tuple[str, str]:
    bset = c.create_set(
        "Documents",
        settings={"sources": ["/home/carol"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/srv/b"})],
    )
    return bset.id, bset.destinations[0].id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_reported_end_time_is_the_jobs_end_time(carol: AgentClient) -> None:
    set_id, dest_id = _new_set(carol)
    start = _now_ms() - 3_600_000  # an hour ago, offline
    ref = carol.start_job(set_id, dest_id, start_time=start).ref
    done = carol.finish_job(ref, JobStatus.STOP_SUCCESS, end_time=start + 800)
    assert (done.start_time, done.end_time) == (start, start + 800)
    # the same finish again answers the job, unchanged
    again = carol.finish_job(ref, JobStatus.STOP_SUCCESS, end_time=start + 800)
    assert again.end_time == start + 800


def test_an_end_time_before_the_start_or_in_the_future_is_refused(
    client: TestClient, carol: AgentClient
) -> None:
    set_id, dest_id = _new_set(carol)
    start = _now_ms() - 60_000
    ref = carol.start_job(set_id, dest_id, start_time=start).ref
    url = f"{API}/backup-sets/{set_id}/destinations/{dest_id}/jobs/{ref.job_id}/finish"
    for bad in (start - 1, _now_ms() + END_TIME_SKEW_MS + 60_000):
        answer = client.post(url, auth=CAROL, json={"status": "BS_STOP_SUCCESS", "end_time": bad})
        assert answer.status_code == 400, answer.json()
        assert "end_time" in answer.json()["message"]
    assert carol.get_job(ref).running  # nothing changed
    # the agent's client leaves a refused end time out: the job ends at the server's now
    before = _now_ms()
    done = carol.finish_job(ref, JobStatus.STOP_SUCCESS, end_time=start - 5)
    assert done.end_time is not None and done.end_time >= before


def test_a_finish_without_an_end_time_ends_the_job_now(carol: AgentClient) -> None:
    set_id, dest_id = _new_set(carol)
    ref = carol.start_job(set_id, dest_id, start_time=_now_ms() - 60_000).ref
    before = _now_ms()
    done = carol.finish_job(ref, JobStatus.STOP_SUCCESS)
    assert done.end_time is not None and done.end_time >= before
