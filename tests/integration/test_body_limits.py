"""Bodies under hostile load, in-process (issue 11): the agent API authenticates from headers
before it reads a body, every body is bounded by streaming, the agent's batches stay under the
server's limit, deep destination settings are refused and old ones still list, and database
error text stays in the server log. Over real HTTP: ``tests/e2e/test_hostile_bodies.py``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import text

from opencbs import security
from opencbs.agent import AgentClient
from opencbs.agent.client import Entry, job_path
from opencbs.agent.report import MAX_BATCH_BYTES, ReportStream
from opencbs.api.limits import AGENT_BODY, BATCH_BODY, CBS_BODY
from opencbs.api.state import ServerState
from opencbs.errors import InvalidInput, StoreError
from opencbs.model.sets import MAX_PATH
from opencbs.reports.vocabulary import ReportList
from opencbs.store import sets, users
from opencbs.store.schema import destinations
from tests.conftest import ADMIN

API = "/api/agent/v1"
ALICE = ("alice", "alice-pw")


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def alice_set(state: ServerState, client: TestClient) -> tuple[str, str]:
    with state.db.write() as conn:
        users.add_backup_user(conn, *ALICE)
    r = client.post(
        f"{API}/backup-sets",
        auth=ALICE,
        json={"name": "Docs", "destinations": [{"name": "L", "type": "LOCAL"}]},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["destinations"][0]["id"]


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 65536):
        yield b" " * 65536


def test_agent_api_answers_401_before_it_looks_at_the_body(
    client: TestClient, alice_set: tuple[str, str]
) -> None:
    huge = {"Content-Length": str(10**9), "Content-Type": "application/json"}
    url = f"{API}/backup-sets/{alice_set[0]}/destinations/{alice_set[1]}/jobs/j/batches/0"
    for auth in (None, ("alice", "wrong"), ("nobody", "x")):
        r = client.put(url, content=b"{}", headers=huge, auth=auth)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "user_credentials"
    assert client.get(f"{API}/no-such-route").status_code == 401  # no route enumeration
    r = client.put(url, content=b"{}", headers=huge, auth=ALICE)
    assert r.status_code == 413  # authenticated: now the size counts
    assert r.json()["error"] == "body_too_large" and str(BATCH_BODY) in r.json()["message"]
    r = client.post(f"{API}/backup-sets", content=_chunks(AGENT_BODY + 65536), auth=ALICE)
    assert r.status_code == 413 and str(AGENT_BODY) in r.json()["message"]


def test_chunked_cbs_body_over_the_limit_is_413_with_the_envelope(client: TestClient) -> None:
    r = client.post("/obs/api/json/ListUsers.do", content=_chunks(CBS_BODY + 65536))
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert body["Status"] == "Error" and body["ExptType"] and str(CBS_BODY) in body["Message"]
    r = client.post(
        "/obs/api/json/ListUsers.do?SysUser=system&SysPwd=system-secret",
        content=_chunks(CBS_BODY - 65536),
    )
    assert r.json()["Status"] == "OK"  # within the limit, chunked, read as usual


class _Recording(httpx.BaseTransport):
    """The client's transport, recording the size of every batch body sent."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.batches.append(len(request.read()))
        return self.inner.handle_request(request)


def test_agent_batches_stay_under_the_servers_limit(
    client: TestClient, alice_set: tuple[str, str]
) -> None:
    assert MAX_BATCH_BYTES < BATCH_BODY
    transport = _Recording(client._transport)
    with AgentClient("http://testserver", *ALICE, transport=transport) as agent:
        ref = agent.start_job(*alice_set).ref
        stream = ReportStream(agent, ref, batch_size=10_000)
        worst = "\x01" * (MAX_PATH - 4)  # 6 bytes a character in JSON
        astral = "\U0001f600" * (MAX_PATH // 2 - 1)  # 4 bytes a character in UTF-8
        for i in range(60):
            stream.add(Entry(ReportList.MOV, "F", path=f"/{i}{worst}", from_path=f"/{astral}"))
        for i in range(10_001):
            stream.add(Entry(ReportList.NEW, "F", path=f"/{i}"))
        stream.flush()
        assert stream.delivered, stream.failure
        assert max(transport.batches) <= MAX_BATCH_BYTES
        assert agent.get_job(ref).batches_received == len(transport.batches)
        assert stream.entries_sent == 10_061
    # 60 long entries of ~260 KB: split by bytes (~10 a batch), not by count (10,000)
    assert len(transport.batches) >= 7


def test_deep_destination_settings_are_refused_and_old_ones_still_list(
    client: TestClient, state: ServerState, alice_set: tuple[str, str]
) -> None:
    set_id, dest_id = alice_set
    deep: dict[str, object] = {"path": "/srv"}
    for _ in range(320):
        deep = {"a": deep}
    url = f"{API}/backup-sets/{set_id}/destinations"
    r = client.post(url, auth=ALICE, json={"name": "deep", "type": "LOCAL", "settings": deep})
    assert r.status_code == 422
    r = client.patch(f"{url}/{dest_id}", auth=ALICE, json={"settings": deep})
    assert r.status_code == 422
    with state.db.write() as conn:
        user = users.find_backup_user(conn, ALICE[0])
        assert user is not None
        with pytest.raises(Exception, match="deeper than 8"):
            sets.add_destination(conn, user.id, int(set_id), name="d", dest_type="LOCAL",
                                 settings=deep)  # fmt: skip
        # stored by an earlier version, which did not check
        conn.execute(
            destinations.update()
            .where(destinations.c.id == int(dest_id))
            .values(settings={"path": "/srv/b", "junk": deep})
        )
    listed = client.get(f"{API}/backup-sets", auth=ALICE)
    assert listed.status_code == 200
    assert listed.json()[0]["destinations"][0]["settings"] == {"path": "/srv/b"}
    r = client.post(
        "/obs/api/json/ListBackupSets.do",
        json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": ALICE[0]},
    )
    assert r.json()["Status"] == "OK"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("NaN", "not finite"),
        ("1e400", "not finite"),
        ("-Infinity", "not finite"),
        (str(2**64), "integer beyond"),
        ("[1, 2, 99999999999999999999999]", "integer beyond"),
    ],
)
def test_destination_settings_the_databases_cannot_keep_are_refused(
    client: TestClient, state: ServerState, alice_set: tuple[str, str], raw: str, why: str
) -> None:
    """NaN and 1e400 made PostgreSQL answer 503, a huge integer made `set list --json` fail:
    both are refused on input (422 over the agent API, InvalidInput from the store), the set
    still lists."""
    set_id, dest_id = alice_set
    url = f"{API}/backup-sets/{set_id}/destinations"
    body = '{"name": "odd", "type": "LOCAL", "settings": {"path": "/srv", "x": ' + raw + "}}"
    headers = {"content-type": "application/json"}
    r = client.post(url, auth=ALICE, content=body, headers=headers)
    assert r.status_code == 422 and why in r.text, r.text
    patch = '{"settings": {"x": ' + raw + "}}"
    r = client.patch(f"{url}/{dest_id}", auth=ALICE, content=patch, headers=headers)
    assert r.status_code == 422 and why in r.text, r.text
    with state.db.write() as conn:
        user = users.find_backup_user(conn, ALICE[0])
        assert user is not None
        with pytest.raises(InvalidInput, match=why):
            sets.update_destination(
                conn, user.id, int(set_id), int(dest_id), settings={"x": json.loads(raw)}
            )
    listed = client.get(f"{API}/backup-sets", auth=ALICE)
    assert listed.status_code == 200 and "x" not in listed.json()[0]["destinations"][0]["settings"]


def test_a_body_nested_too_deep_for_the_parser_is_a_client_error(
    client: TestClient, alice_set: tuple[str, str]
) -> None:
    r = client.post(f"{API}/backup-sets", auth=ALICE, content=b"[" * 500_000,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert 400 <= r.status_code < 500
    r = client.post("/obs/api/json/ListUsers.do", content=b"[" * 500_000)
    assert r.status_code == 200 and r.json()["Status"] == "Error"


def test_database_error_text_stays_in_the_log(
    state: ServerState, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(StoreError) as caught:
        with state.db.read() as conn:
            conn.execute(text("SELECT secret_column FROM no_such_table"))
    message = caught.value.message
    assert "no_such_table" not in message and "secret_column" not in message
    ref = message.rsplit("reference ", 1)[1].rstrip(")")
    assert any(ref in r.getMessage() and "no_such_table" in r.getMessage() for r in caplog.records)


def test_job_path_is_what_the_limit_knows_as_a_batch() -> None:
    from opencbs.api.limits import body_limit
    from opencbs.model.jobs import JobRef

    path = API + job_path(JobRef("1", "2", "2024-01-01-00-00-00", cdp=False), "batches", "7")
    assert body_limit("PUT", path) == BATCH_BODY
    assert body_limit("POST", path) == AGENT_BODY
    assert body_limit("POST", "/obs/api/json/ListUsers.do") == CBS_BODY
