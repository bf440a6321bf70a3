"""The client side of the unattended agent's poll (``AgentClient.poll``, ``take_run_request``;
``agent.poll``): the query it sends, the answer parsed into frozen values, and every failure
translated like the client's other calls. The server is an in-process ``httpx.MockTransport``
here (unit level); the real endpoint is exercised end to end in tests/e2e/test_agent_run.py."""

from __future__ import annotations

import json

import httpx
import pytest

from opencbs.agent.client import AgentApiError, AgentClient, ServerUnreachable
from opencbs.model.schedules import ScheduleType

ANSWER = {
    "generation": "g-2",
    "poll_interval": 60,
    "server_time": 1_800_000_000_000,
    "sets": [
        {
            "id": "17",
            "name": "docs",
            "time_zone": "Europe/Berlin",
            "schedules": [
                {"id": "5", "name": "Nightly", "type": "DAILY", "hour": 22, "minute": 0,
                 "interval_minutes": None, "stop_after_hours": 4, "weekdays": [],
                 "day_of_month": None, "week_of_month": None, "date": None,
                 "retention_after": False, "skip_backup": False, "enabled": True},
            ],
        }
    ],
    "run_requests": [{"id": 3, "set_id": "17", "requested_at": 5, "requested_by": "admin"}],
    "waited": True,
}  # fmt: skip


def _client(handler: httpx.MockTransport) -> AgentClient:
    return AgentClient("http://backup.invalid", "alice", "pw", transport=handler)


def test_poll_sends_wait_and_generation_and_parses_the_answer() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    with _client(httpx.MockTransport(answer)) as client:
        got = client.poll(25, "g-1")
        assert client.poll(90).generation == "g-2"  # wait capped at 55
    assert seen[0].url.path == "/api/agent/v1/poll"
    assert dict(seen[0].url.params) == {"wait": "25", "generation": "g-1"}
    assert dict(seen[1].url.params) == {"wait": "55"}
    assert seen[0].extensions["timeout"]["read"] == 25 + 30.0  # the wait plus the client's
    assert (got.generation, got.poll_interval, got.waited) == ("g-2", 60.0, True)
    assert got.sets is not None and got.raw_sets is not None
    [bset] = got.sets
    assert (bset.id, bset.name, str(bset.zone)) == ("17", "docs", "Europe/Berlin")
    [schedule] = bset.schedules
    assert schedule.id == "5" and schedule.schedule.type is ScheduleType.DAILY
    assert schedule.schedule.stop_after_hours == 4 and not schedule.schedule.retention_after
    [request] = got.run_requests
    assert (request.id, request.set_id, request.requested_by) == (3, "17", "admin")
    assert json.loads(json.dumps(list(got.raw_sets))) == ANSWER["sets"]


def test_poll_without_changes_has_no_sets() -> None:
    body = {**ANSWER, "sets": None, "run_requests": [], "waited": False}
    with _client(httpx.MockTransport(lambda r: httpx.Response(200, json=body))) as client:
        got = client.poll(0, "g-2")
    assert got.sets is None and got.raw_sets is None and got.run_requests == ()


def test_take_run_request() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == (
            "POST",
            "/api/agent/v1/run-requests/3/take",
        )
        return httpx.Response(200, json={"id": 3, "set_id": "17", "status": "TAKEN"})

    with _client(httpx.MockTransport(answer)) as client:
        taken = client.take_run_request(3)
    assert (taken.id, taken.set_id, taken.status) == (3, "17", "TAKEN")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (409, {"error": "conflict", "message": "run request 3 is TAKEN"}, "conflict"),
        (404, {"error": "not_found", "message": "no run request 3"}, "not_found"),
        (404, None, "http"),  # a server without the poll
        (200, {"unexpected": True}, "bad_answer"),
    ],
)
def test_failures_are_translated(status: int, body: object, error: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="Not Found")
        return httpx.Response(status, json=body)

    with _client(httpx.MockTransport(answer)) as client:
        with pytest.raises(AgentApiError) as poll_failed:
            client.poll(0)
        with pytest.raises(AgentApiError) as take_failed:
            client.take_run_request(3)
    assert poll_failed.value.error == take_failed.value.error == error
    if status != 200:
        assert poll_failed.value.status == status


def test_an_unreachable_server_is_said_so() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(httpx.MockTransport(refuse)) as client:
        with pytest.raises(ServerUnreachable):
            client.poll(25, "g")
        with pytest.raises(ServerUnreachable):
            client.take_run_request(1)
