"""Unattended agents over HTTP (cbs-api.md §14), on SQLite and PostgreSQL: ``RunBackup.do``
(who may call it, its errors, JSON, form and query), the agent's poll (sets and schedules,
the generation, run requests, the long-poll woken by a request made here or found by the
watcher in the database, the ``max_long_polls`` bound, the server stopping), taking a request,
and ``Online`` in GetUser / ListUsers."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from opencbs import security
from opencbs.api.app import create_app
from opencbs.api.poll_hub import PollHub
from opencbs.api.state import ServerState
from opencbs.model.schedules import Schedule, ScheduleType
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import run_requests, schedules, sets, users
from opencbs.store.schema import backup_sets, backup_users
from opencbs.store.schema import run_requests as run_table
from opencbs.store.util import now_ms
from tests.conftest import ADMIN

API = "/obs/api/json"
POLL = "/api/agent/v1/poll"
RES1 = ("res1", "res1-password")
ROBOT = ("robot", "robot-password")
VIEWER = ("viewer", "viewer-password")
SCRIPT = ("script", "script-password")
ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")
DBS = "com.ahsay.obs.core.dbs.DbsException"
UTC = ZoneInfo("UTC")
NIGHTLY = Schedule(name="Nightly", type=ScheduleType.DAILY, hour=22, minute=30)


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@dataclass(frozen=True)
class World:
    alice_id: int
    docs_id: str
    mail_id: str
    bob_id: int
    main_id: str


@pytest.fixture
def world(state: ServerState) -> World:
    """System users of every role; alice (the administrators') with sets Docs (a schedule,
    zone Europe/Berlin) and Mail; bob (res1's) with set Main."""
    with state.db.write() as conn:
        users.add_system_user(conn, *RES1, SystemRole.RESELLER)
        users.add_system_user(conn, *ROBOT, SystemRole.READ_ONLY_API)
        users.add_system_user(conn, *VIEWER, SystemRole.READ_ONLY_ADMIN)
        users.add_system_user(conn, *SCRIPT, SystemRole.API_ONLY)
        alice = users.add_backup_user(conn, *ALICE)
        bob = users.add_backup_user(conn, *BOB, owner="res1")
        docs = sets.add_set(conn, alice.id, "Docs", {"time_zone": "Europe/Berlin"})
        schedules.add_schedule(conn, docs, NIGHTLY, zone=ZoneInfo("Europe/Berlin"), at_ms=now_ms())
        mail = sets.add_set(conn, alice.id, "Mail")
        main_set = sets.add_set(conn, bob.id, "Main")
    return World(alice.id, str(docs.id), str(mail.id), bob.id, str(main_set.id))


def call(client: TestClient, name: str, *, as_: tuple[str, str] = ADMIN, **params: Any) -> Any:
    r = client.post(f"{API}/{name}.do", json={"SysUser": as_[0], "SysPwd": as_[1], **params})
    assert r.status_code == 200, r.text
    return r.json()


def run_backup(client: TestClient, world: World, **params: Any) -> Any:
    return call(client, "RunBackup", LoginName="alice", BackupSetID=world.docs_id, **params)


def statuses(state: ServerState, set_id: str) -> list[str]:
    with state.db.read() as conn:
        rows = conn.execute(
            select(run_table.c.status)
            .where(run_table.c.set_id == int(set_id))
            .order_by(run_table.c.id)
        )
        return [r[0] for r in rows]


def poll(client: TestClient, auth: tuple[str, str] = ALICE, **query: Any) -> dict[str, Any]:
    r = client.get(POLL, params=query, auth=auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def error(body: dict[str, Any]) -> tuple[str, str]:
    assert body["Status"] == "Error", body
    return body["Message"], body["ExptType"]


# --- RunBackup.do ----------------------------------------------------------------------------


def test_run_backup_makes_one_pending_request(
    client: TestClient, state: ServerState, world: World
) -> None:
    assert run_backup(client, world) == {"Status": "OK", "Data": []}
    assert run_backup(client, world, BackupType="", CancelBackup=False) == {
        "Status": "OK",
        "Data": [],
    }
    assert statuses(state, world.docs_id) == ["PENDING"]
    with state.db.read() as conn:
        (pending,) = run_requests.pending_for_user(conn, world.alice_id)
    assert pending.requested_by == ADMIN[0]
    # cancelled, then cancelling again is nothing to do
    assert run_backup(client, world, CancelBackup=True) == {"Status": "OK", "Data": []}
    assert run_backup(client, world, CancelBackup="Y") == {"Status": "OK", "Data": []}
    assert statuses(state, world.docs_id) == ["CANCELLED"]


def test_run_backup_as_a_form_and_a_query(
    client: TestClient, state: ServerState, world: World
) -> None:
    form = {"SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": "alice"}
    r = client.post(f"{API}/RunBackup.do", data={**form, "BackupSetID": world.docs_id})
    assert r.json() == {"Status": "OK", "Data": []}
    r = client.get(f"{API}/RunBackup.do", params={**form, "BackupSetID": world.mail_id})
    assert r.json() == {"Status": "OK", "Data": []}
    r = client.post(
        f"{API}/RunBackup.do",
        data={**form, "BackupSetID": world.mail_id, "CancelBackup": "true"},
    )
    assert r.json() == {"Status": "OK", "Data": []}
    assert statuses(state, world.docs_id) == ["PENDING"]
    assert statuses(state, world.mail_id) == ["CANCELLED"]


def test_who_may_run_a_backup(client: TestClient, state: ServerState, world: World) -> None:
    assert error(run_backup(client, world, as_=ROBOT)) == (
        "[Error] System user \u2018robot\u2019 (role READ_ONLY_API) may not call RunBackup: "
        "it changes settings",
        DBS,
    )
    assert error(run_backup(client, world, as_=VIEWER))[0] == "Incorrect system username/password"
    assert statuses(state, world.docs_id) == []
    assert run_backup(client, world, as_=SCRIPT)["Status"] == "OK"
    # a reseller reaches its own users only
    body = run_backup(client, world, as_=RES1)
    assert error(body)[1] == "com.ahsay.obs.core.dbs.ai"  # no such user, for res1
    body = call(client, "RunBackup", as_=RES1, LoginName="bob", BackupSetID=world.main_id)
    assert body == {"Status": "OK", "Data": []}
    assert statuses(state, world.main_id) == ["PENDING"]


def test_run_backup_errors(client: TestClient, state: ServerState, world: World) -> None:
    assert error(run_backup(client, world, BackupType="DATABASE")) == (
        "[Error] Parameter BackupType is invalid: \u2018DATABASE\u2019 (must be empty for a "
        "FILE backup set)",
        DBS,
    )
    assert error(call(client, "RunBackup", LoginName="nobody", BackupSetID=world.docs_id))[
        0
    ].startswith("[UserCacheManager.NoSuchUserExpt]")
    message, _ = error(call(client, "RunBackup", LoginName="alice", BackupSetID="12345"))
    assert message == "Backup set \u201812345\u2019 not found."
    message, _ = error(call(client, "RunBackup", LoginName="alice", BackupSetID=world.main_id))
    assert "not found" in message  # bob's set, asked for alice
    assert error(call(client, "RunBackup", LoginName="alice"))[0] == (
        "[Error] Parameter BackupSetID is null / empty!"
    )
    assert error(run_backup(client, world, CancelBackup="maybe"))[0] == (
        "[Error] Parameter CancelBackup is invalid: \u2018maybe\u2019"
    )
    with state.db.write() as conn:
        conn.execute(
            update(backup_sets).where(backup_sets.c.id == int(world.docs_id)).values(removed=True)
        )
    message, _ = error(run_backup(client, world))
    assert message == f"[Error] Backup set {world.docs_id} is removed"
    assert statuses(state, world.docs_id) == []


# --- the poll and taking a request -----------------------------------------------------------


def test_poll_answers_sets_schedules_then_only_changes(
    client: TestClient, state: ServerState, world: World
) -> None:
    first = poll(client)
    assert first["poll_interval"] == 60
    assert first["waited"] is False and first["run_requests"] == []
    assert abs(first["server_time"] - now_ms()) < 60_000
    docs, mail = first["sets"]
    assert (docs["id"], docs["name"], docs["time_zone"]) == (world.docs_id, "Docs", "Europe/Berlin")
    assert (mail["id"], mail["name"], mail["time_zone"], mail["schedules"]) == (
        world.mail_id,
        "Mail",
        "UTC",  # the server's zone
        [],
    )
    (nightly,) = docs["schedules"]
    assert Schedule.parse({k: v for k, v in nightly.items() if k != "id"}) == NIGHTLY
    assert nightly["id"].isdigit()
    generation = first["generation"]

    again = poll(client, generation=generation)
    assert again["sets"] is None and again["generation"] == generation
    assert poll(client, generation="something-else")["sets"] == first["sets"]

    # a schedule added changes the generation; the new answer shows it
    with state.db.write() as conn:
        bset = sets.get_set(conn, world.alice_id, world.mail_id)
        weekly = Schedule(name="Weekly", type=ScheduleType.WEEKLY, weekdays=("SUNDAY",))
        schedules.add_schedule(conn, bset, weekly, zone=UTC, at_ms=now_ms())
    changed = poll(client, generation=generation)
    assert changed["generation"] != generation
    assert [s["name"] for s in changed["sets"][1]["schedules"]] == ["Weekly"]
    # bob sees his own set only
    assert [s["id"] for s in poll(client, BOB)["sets"]] == [world.main_id]


def test_run_request_polled_and_taken_once(
    client: TestClient, state: ServerState, world: World
) -> None:
    generation = poll(client)["generation"]
    run_backup(client, world)
    body = poll(client, generation=generation, wait=20)
    assert body["waited"] is False and body["sets"] is None  # answered at once
    (req,) = body["run_requests"]
    assert req["set_id"] == world.docs_id and req["requested_by"] == ADMIN[0]
    assert poll(client, BOB)["run_requests"] == []
    path = f"/api/agent/v1/run-requests/{req['id']}/take"
    r = client.post(path, auth=BOB)
    assert r.status_code == 404 and r.json()["error"] == "run_request_not_found"
    r = client.post(path, auth=ALICE)
    assert r.status_code == 200
    assert r.json() == {"id": req["id"], "set_id": world.docs_id, "status": "TAKEN"}
    r = client.post(path, auth=ALICE)
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert "TAKEN" in r.json()["message"]
    assert poll(client)["run_requests"] == []
    assert client.post("/api/agent/v1/run-requests/999999/take", auth=ALICE).status_code == 404
    assert client.post(path, auth=("alice", "wrong")).status_code == 401


def _poll_in_thread(client: TestClient, out: list[Any], **query: Any) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        out.append(poll(client, **query))
        out.append(time.monotonic() - started)

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_for_waiters(state: ServerState, n: int) -> None:
    deadline = time.monotonic() + 10
    while state.polls.waiting < n:
        assert time.monotonic() < deadline, "the poll did not wait"
        time.sleep(0.02)


def test_long_poll_waits_then_answers_unchanged(
    client: TestClient, state: ServerState, world: World
) -> None:
    generation = poll(client)["generation"]
    started = time.monotonic()
    body = poll(client, generation=generation, wait=1.5)
    assert time.monotonic() - started >= 1.4
    assert body["waited"] is True and body["sets"] is None and body["run_requests"] == []
    assert state.polls.waiting == 0


def test_run_backup_wakes_a_long_poll(client: TestClient, state: ServerState, world: World) -> None:
    generation = poll(client)["generation"]
    out: list[Any] = []
    t = _poll_in_thread(client, out, generation=generation, wait=20)
    _wait_for_waiters(state, 1)
    run_backup(client, world)
    t.join(timeout=25)
    body, took = out
    assert took < 5, took
    assert body["waited"] is True and [r["set_id"] for r in body["run_requests"]] == [world.docs_id]


def test_the_watcher_finds_a_change_made_elsewhere(
    client: TestClient, state: ServerState, world: World
) -> None:
    """A change written to the database by another process (here: directly, with no nudge of
    this process) wakes the waiting poll at the watcher's next look."""
    generation = poll(client)["generation"]
    out: list[Any] = []
    t = _poll_in_thread(client, out, generation=generation, wait=20)
    _wait_for_waiters(state, 1)
    with state.db.write() as conn:
        bset = sets.get_set(conn, world.alice_id, world.docs_id)
        schedules.remove_schedule(conn, bset, schedules.list_schedules(conn, bset.id)[0].id)
    t.join(timeout=25)
    body, took = out
    assert took < 5, took
    assert body["waited"] is True and body["generation"] != generation
    assert body["sets"][0]["schedules"] == []


def test_max_long_polls_answers_at_once(state: ServerState, world: World) -> None:
    state.polls = PollHub(limit=0)
    with TestClient(create_app(state)) as client:
        generation = poll(client)["generation"]
        started = time.monotonic()
        body = poll(client, generation=generation, wait=20)
    assert time.monotonic() - started < 5
    assert body["waited"] is False and body["sets"] is None


def test_closing_the_hub_answers_waiting_polls(
    client: TestClient, state: ServerState, world: World
) -> None:
    generation = poll(client)["generation"]
    out: list[Any] = []
    t = _poll_in_thread(client, out, generation=generation, wait=20)
    _wait_for_waiters(state, 1)
    client.portal.call(state.polls.close)  # type: ignore[union-attr]  # as the server stops
    t.join(timeout=25)
    body, took = out
    assert took < 5 and body["waited"] is True
    assert poll(client, generation=generation, wait=20)["waited"] is False  # none waits now


def test_poll_input_checked(client: TestClient, world: World) -> None:
    assert client.get(POLL, params={"wait": 56}, auth=ALICE).status_code == 422
    assert client.get(POLL, params={"wait": -1}, auth=ALICE).status_code == 422
    assert client.get(POLL, params={"generation": "x" * 65}, auth=ALICE).status_code == 422
    assert client.get(POLL).status_code == 401


# --- Online ---------------------------------------------------------------------------------


def _online(client: TestClient, login: str = "alice") -> bool:
    """``Online`` of ``login`` as GetUser and ListUsers show it (both must agree)."""
    body = call(client, "GetUser", LoginName=login)
    listed = {u["LoginName"]: u["Online"] for u in call(client, "ListUsers")["User"]}
    assert listed[login] == body["Data"]["Online"]
    return bool(body["Data"]["Online"])


def _get_user_online(client: TestClient, login: str = "alice") -> bool:
    return bool(call(client, "GetUser", LoginName=login)["Data"]["Online"])


def _set_seen(state: ServerState, user_id: int, at_ms: int | None) -> None:
    with state.db.write() as conn:
        conn.execute(
            update(backup_users).where(backup_users.c.id == user_id).values(last_seen_ms=at_ms)
        )


def test_online_after_a_poll(client: TestClient, state: ServerState, world: World) -> None:
    assert _online(client) is False
    poll(client)
    deadline = time.monotonic() + 5  # written by the watcher within a second
    while not _get_user_online(client):
        assert time.monotonic() < deadline, "not online after its poll"
        time.sleep(0.1)
    assert _online(client) is True
    assert _online(client, "bob") is False


def test_online_window(client: TestClient, state: ServerState, world: World) -> None:
    """Online while the last poll is within 2 x agent_poll_interval + 30 s (60 s: 150 s)."""
    now = now_ms()
    _set_seen(state, world.alice_id, now - 140_000)
    assert _online(client) is True
    _set_seen(state, world.alice_id, now - 160_000)
    assert _online(client) is False
    state.agent_poll_interval = 120  # the window follows the setting: 270 s
    assert _online(client) is True
    _set_seen(state, world.alice_id, None)
    assert _online(client) is False
