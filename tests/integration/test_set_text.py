"""Backup set sources, names and destination paths are JSON text (store, agent API, CBS calls).

A path that is not UTF-8 (its bytes as lone surrogates, ``surrogateescape``) cannot be a source
or a destination: the agent API answers its 400 envelope with a hint, and nothing is stored. A
string of that kind stored by an earlier version never makes an answer fail (500): it is served
in its display form (``\\xNN``), and the user's other sets keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.agent import AgentClient, NewDestination
from opencbs.api.state import ServerState
from opencbs.errors import InvalidInput
from opencbs.model.sets import BackupSetSettings
from opencbs.store import users
from opencbs.store.schema import backup_sets, destinations
from tests.conftest import ADMIN

API = "/api/agent/v1"
ALICE = ("alice", "alice-pw")
JSON = {"content-type": "application/json"}


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def alice(state: ServerState) -> int:
    with state.db.write() as conn:
        return users.add_backup_user(conn, *ALICE).id


@pytest.fixture
def agent(client: TestClient, alice: int) -> Iterator[AgentClient]:
    with AgentClient("http://testserver", *ALICE, transport=client._transport) as c:
        yield c


def _post(client: TestClient, path: str, raw: bytes, method: str = "POST") -> httpx.Response:
    """A request whose JSON body is written by hand: ``\\udcff`` escapes decode to lone
    surrogates on the server (a client cannot send them through ``json=``)."""
    return client.request(method, API + path, auth=ALICE, content=raw, headers=JSON)


def _refused(r: httpx.Response, text: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    assert text in body["message"], body
    assert body["hint"], body


def test_a_source_that_is_not_utf8_is_a_400_and_nothing_is_stored(
    client: TestClient, agent: AgentClient
) -> None:
    r = _post(
        client,
        "/backup-sets",
        b'{"name": "NB", "settings": {"sources": ["/tmp/ok", "/tmp/bad\\udcff"]}}',
    )
    _refused(r, "source /tmp/bad\\xff is not valid UTF-8 text")
    assert "rename" in r.json()["hint"] and "parent" in r.json()["hint"]
    _refused(
        _post(
            client, "/backup-sets", b'{"name": "NB", "settings": {"sources": ["/tmp/a\\u0000b"]}}'
        ),
        "holds a NUL character",
    )
    assert agent.list_sets() == []

    bset = agent.create_set("S1", settings={"sources": ["/tmp/ok"]})
    _refused(
        _post(
            client,
            f"/backup-sets/{bset.id}",
            b'{"settings": {"sources": ["/tmp/bad\\udcff"]}}',
            "PATCH",
        ),
        "is not valid UTF-8 text",
    )
    assert agent.get_set(bset.id).settings.sources == ("/tmp/ok",)


def test_a_destination_path_that_is_not_utf8_is_a_400(
    client: TestClient, agent: AgentClient
) -> None:
    dest = b'{"name": "Local", "type": "LOCAL", "settings": {"path": "/srv/d\\udcff"}}'
    _refused(
        _post(
            client,
            "/backup-sets",
            b'{"name": "NB", "settings": {"sources": ["/a"]}, "destinations": [' + dest + b"]}",
        ),
        "destination path /srv/d\\xff is not valid UTF-8 text",
    )
    assert agent.list_sets() == []  # the set was not created without its destination
    bset = agent.create_set(
        "S1",
        settings={"sources": ["/a"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/srv/d"})],
    )
    _refused(
        _post(client, f"/backup-sets/{bset.id}/destinations", dest.replace(b"Local", b"L2")),
        "destination path",
    )
    _refused(
        _post(
            client,
            f"/backup-sets/{bset.id}/destinations/{bset.destinations[0].id}",
            b'{"settings": {"path": "/srv/d\\udcff"}}',
            "PATCH",
        ),
        "destination path",
    )
    assert [d.settings for d in agent.get_set(bset.id).destinations] == [{"path": "/srv/d"}]


def test_the_agent_client_refuses_what_it_cannot_send(agent: AgentClient) -> None:
    with pytest.raises(InvalidInput, match="not valid UTF-8 text") as info:
        agent.create_set("NB", settings={"sources": ["/tmp/bad\udcff"]})
    assert info.value.hint
    assert agent.list_sets() == []
    with pytest.raises(InvalidInput, match="not a valid URL"):
        AgentClient("http://[::1", *ALICE)


def test_a_set_stored_with_such_a_string_is_served_in_display_form(
    client: TestClient,
    state: ServerState,
    agent: AgentClient,
    alice: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not state.db.is_sqlite:
        pytest.skip("PostgreSQL's JSON refuses lone surrogates: nothing of the kind is stored")
    good = agent.create_set(
        "S1",
        settings={"sources": ["/tmp/ok"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/srv/a"})],
    )
    with state.db.write() as conn:  # as an earlier version stored it, bypassing every check
        conn.execute(
            backup_sets.insert().values(
                id=1,
                user_id=alice,
                name="NB",
                type="FILE",
                settings={
                    **BackupSetSettings().as_json(),
                    "sources": ["/tmp/bad\udcff", "/tmp/a\\b"],
                },
                removed=False,
                created_at=1,
            )
        )
        conn.execute(
            destinations.insert().values(
                id=2,
                set_id=1,
                position=0,
                name="Local",
                type="LOCAL",
                settings={"path": "/srv/d\udcff"},
            )
        )

    with caplog.at_level("WARNING", logger="opencbs.store.sets"):
        r = client.get(f"{API}/backup-sets", auth=ALICE)
    assert r.status_code == 200, r.text
    assert "backup set 1 holds a name or path that is not UTF-8 text" in caplog.text
    by_name = {s["name"]: s for s in r.json()}
    assert set(by_name) == {"S1", "NB"}
    assert by_name["NB"]["settings"]["sources"] == ["/tmp/bad\\xff", "/tmp/a\\b"]
    assert by_name["NB"]["destinations"][0]["settings"] == {"path": "/srv/d\\xff"}
    assert client.get(f"{API}/backup-sets/1", auth=ALICE).status_code == 200
    assert sorted(s.id for s in agent.list_sets()) == sorted(["1", good.id])

    cbs: dict[str, Any] = {"SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": ALICE[0]}
    listed = client.post("/obs/api/json/ListBackupSets.do", json=cbs).json()
    assert listed["Status"] == "OK" and {s["Name"] for s in listed["Data"]} == {"S1", "NB"}
    one = client.post("/obs/api/json/GetBackupSet.do", json={**cbs, "BackupSetID": "1"}).json()
    assert one["Status"] == "OK", one
    assert one["Data"]["SelectedSource"] == ["/tmp/bad\\xff", "/tmp/a\\b"]

    # a new, valid source repairs it
    fixed = agent.update_set("1", settings={"sources": ["/tmp"]})
    assert fixed.settings.sources == ("/tmp",)


def test_names_inside_a_source_may_be_any_bytes(agent: AgentClient) -> None:
    # Report entries carry paths in display form (\xNN), valid text: they are not set sources.
    from opencbs.agent import Entry
    from opencbs.engine.entries import display_path
    from opencbs.reports.vocabulary import ReportList

    bset = agent.create_set(
        "S1",
        settings={"sources": ["/tmp/src"]},
        destinations=[NewDestination("Local", "LOCAL", {"path": "/srv/a"})],
    )
    job = agent.start_job(bset.id, bset.destinations[0].id)
    path = display_path(b"/tmp/src/bad\xff\xfe")
    assert agent.send_batch(
        job.ref, 0, [Entry(ReportList.NEW, "F", path=path, size=1, unzip_size=1)]
    )
    assert agent.get_job(job.ref).counters["NumOfNewFiles"] == 1
