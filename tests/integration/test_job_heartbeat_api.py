"""The agent API's heartbeat and the sweep that closes a job after missed heartbeats (issue 15,
point 5), through the app in-process and the agent's own client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from opencbs.agent import AgentApiError, AgentClient, JobRef
from opencbs.agent.heartbeat import Heartbeat
from opencbs.api.app import sweep_once
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import JobStatus
from opencbs.store import job_queries, sets, users
from opencbs.store.util import now_ms
from tests.integration.test_agent_api import ALICE, BOB, _cheap_hashes, _new_set

__all__ = ["_cheap_hashes"]  # autouse fixture: cheap password hashes


@pytest.fixture
def alice(client: TestClient, state: ServerState) -> Iterator[AgentClient]:
    with state.db.write() as conn:
        users.add_backup_user(conn, *ALICE)
        users.add_backup_user(conn, *BOB)
    with AgentClient("http://testserver", *ALICE, transport=client._transport) as c:
        yield c


def _last_activity(state: ServerState, ref: JobRef) -> int:
    with state.db.read() as conn:
        user = users.find_backup_user(conn, ALICE[0])
        assert user is not None
        bset = sets.get_set(conn, user.id, ref.set_id)
        job = job_queries.find_job(conn, bset, ref.destination_id, ref.job_id, cdp=False)
        return job.last_activity


def test_start_says_the_interval_and_a_heartbeat_is_a_sign_of_life(
    state: ServerState, alice: AgentClient
) -> None:
    state.job_heartbeat_timeout = 8.0
    set_id, dest_id = _new_set(alice)
    started = alice.start_job(set_id, dest_id)
    assert started.heartbeat_interval == 2.0  # a quarter of the smaller timeout
    before = _last_activity(state, started.ref)
    time.sleep(0.01)
    assert alice.heartbeat(started.ref) == 2.0
    assert _last_activity(state, started.ref) > before


def test_missed_heartbeats_close_the_job_and_later_ones_are_refused(
    state: ServerState, alice: AgentClient
) -> None:
    state.job_heartbeat_timeout = 0.05
    state.started_ms = now_ms() - 1000  # the server has run longer than the timeout
    set_id, dest_id = _new_set(alice)
    kept = alice.start_job(set_id, dest_id).ref
    time.sleep(1.05 - time.time() % 1)
    lost = alice.start_job(set_id, dest_id).ref
    for _ in range(4):  # kept sends its heartbeats, lost none
        time.sleep(0.03)
        alice.heartbeat(kept)
    assert sweep_once(state) == [lost.job_id]
    assert alice.get_job(lost).status == JobStatus.BACKUP_NOT_FINISHED.value
    assert alice.get_job(kept).status == JobStatus.STILL_RUNNING.value
    assert alice.get_job(lost).status == JobStatus.BACKUP_NOT_FINISHED.value  # a GET reads
    # its agent speaks again (it slept): the job runs again, until its agent finishes it
    alice.heartbeat(lost)
    assert alice.get_job(lost).status == JobStatus.STILL_RUNNING.value
    alice.finish_job(lost, JobStatus.STOP_BY_USER)
    with pytest.raises(AgentApiError) as exc:
        alice.heartbeat(lost)
    assert exc.value.status == 409 and "is not running (BS_STOP_BY_USER)" in str(exc.value.message)
    with pytest.raises(AgentApiError) as exc:
        alice.heartbeat(JobRef(set_id, dest_id, "2001-01-01-00-00-00"))
    assert exc.value.status == 404


def test_silence_before_the_server_started_does_not_count(
    state: ServerState, alice: AgentClient
) -> None:
    state.job_heartbeat_timeout = 0.2
    set_id, dest_id = _new_set(alice)
    ref = alice.start_job(set_id, dest_id).ref
    time.sleep(0.3)
    state.started_ms = now_ms()  # a server started just now: its agents' heartbeats are due
    assert sweep_once(state) == []
    time.sleep(0.3)
    assert sweep_once(state) == [ref.job_id]


def test_heartbeat_thread_keeps_a_quiet_job_and_stops_when_refused(
    state: ServerState, alice: AgentClient
) -> None:
    state.job_heartbeat_timeout = 4.0  # a beat a second: three may be late on a busy machine
    state.started_ms = now_ms() - 5000
    set_id, dest_id = _new_set(alice)
    started = alice.start_job(set_id, dest_id)
    assert started.heartbeat_interval == 1.0
    beat = Heartbeat(alice, started.ref, started.heartbeat_interval).start()
    try:
        for _ in range(12):  # 6 s of a job that sends nothing else
            time.sleep(0.5)
            assert sweep_once(state) == [], (beat.sent, beat.refused)
        assert beat.sent >= 4 and beat.refused is None
    finally:
        beat.stop()
    time.sleep(4.5)
    assert sweep_once(state) == [started.ref.job_id]  # no heartbeat since the stop
