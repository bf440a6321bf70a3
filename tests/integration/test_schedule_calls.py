"""A backup set's schedules over HTTP (cbs-api.md §13), on SQLite and PostgreSQL: AddSchedule,
UpdateSchedule, RemoveSchedule (v1 and 2/; JSON, form and query), GetBackupSet's
``ScheduleList`` and ``TimeZone``, UpdateBackupSet's whole-list ``ScheduleList`` and
``TimeZone``, the errors in the CBS envelope, who may call them (§2), and each schedule's next
checked slot computed from the moment of the call (an injected clock)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.api import cbs_schedules
from opencbs.api.state import ServerState
from opencbs.model.schedules import Schedule, ScheduleType, next_slot
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import schedules, sets, users
from opencbs.store.schedules import ScheduleRow
from tests.conftest import ADMIN

API = "/obs/api/json"
RES1 = ("res1", "res1-password")
ROBOT = ("robot", "robot-password")
VIEWER = ("viewer", "viewer-password")
SCRIPT = ("script", "script-password")
DBS = "com.ahsay.obs.core.dbs.DbsException"

NIGHTLY = {"Name": "Nightly", "Type": "DAILY", "Time": {"Hour": 22, "Minute": 30}}
WEEKLY = {
    "Name": "Office",
    "Type": "WEEKLY",
    "Time": {"Hour": 8, "Minute": 0, "Duration": 10},
    "Days": ["MONDAY", "FRIDAY"],
    "BackupInterval": 60,
}
NIGHTLY_FORM = {
    "Name": "Nightly",
    "Type": "DAILY",
    "BackupInterval": -1,
    "Time": {"Hour": 22, "Minute": 30, "Duration": -1},
    "FullBackup": True,
    "Days": [],
    "DayOfMonth": 0,
    "WeekOfMonth": "",
    "Date": "",
    "SpaceFreeUpEnabled": True,
    "SkipBackupEnabled": False,
    "Enabled": True,
    "BackupType": "",
}
#: 2030-01-07 12:00 UTC, a Monday: the injected "now"
NOW = 1_894_017_600_000


@pytest.fixture(autouse=True)
def _cheap_hashes_and_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheapest argon2id (the calls are under test), and the calls' clock fixed at ``NOW``."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    monkeypatch.setattr(cbs_schedules, "now_ms", lambda: NOW)


@dataclass(frozen=True)
class World:
    alice_id: int
    docs_id: str
    bob_id: int
    main_id: str


@pytest.fixture
def world(state: ServerState) -> World:
    """System users of every role; alice (administrators') with set Docs, bob (res1's) with
    set Main."""
    with state.db.write() as conn:
        users.add_system_user(conn, *RES1, SystemRole.RESELLER)
        users.add_system_user(conn, *ROBOT, SystemRole.READ_ONLY_API)
        users.add_system_user(conn, *VIEWER, SystemRole.READ_ONLY_ADMIN)
        users.add_system_user(conn, *SCRIPT, SystemRole.API_ONLY)
        alice = users.add_backup_user(conn, "alice", "alice-password")
        bob = users.add_backup_user(conn, "bob", "bob-password", owner="res1")
        docs = sets.add_set(conn, alice.id, "Docs", {"sources": ["/home/alice"]})
        main_set = sets.add_set(conn, bob.id, "Main")
    return World(alice.id, str(docs.id), bob.id, str(main_set.id))


def call(
    client: TestClient, name: str, *, as_: tuple[str, str] = ADMIN, v2: bool = False, **params: Any
) -> dict[str, Any]:
    path = f"{API}/2/{name}.do" if v2 else f"{API}/{name}.do"
    r = client.post(path, json={"SysUser": as_[0], "SysPwd": as_[1], **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def form_call(client: TestClient, name: str, *, v2: bool = False, **params: Any) -> dict[str, Any]:
    """The call with a form body: objects and arrays as their JSON text, as curl -d sends."""
    path = f"{API}/2/{name}.do" if v2 else f"{API}/{name}.do"
    data = {"SysUser": ADMIN[0], "SysPwd": ADMIN[1]}
    for k, v in params.items():
        data[k] = json.dumps(v) if isinstance(v, (dict, list, bool)) else str(v)
    r = client.post(path, data=data)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def on_docs(client: TestClient, world: World, name: str, **params: Any) -> dict[str, Any]:
    return call(client, name, LoginName="alice", BackupSetID=world.docs_id, **params)


def shown(client: TestClient, world: World, *, v2: bool = False) -> dict[str, Any]:
    body = call(client, "GetBackupSet", v2=v2, LoginName="alice", BackupSetID=world.docs_id)
    assert body["Status"] == "OK", body
    data: dict[str, Any] = body["Data"]
    return data


def stored(state: ServerState, world: World) -> list[ScheduleRow]:
    with state.db.read() as conn:
        return schedules.list_schedules(conn, int(world.docs_id))


def assert_error(body: dict[str, Any], message: str, expt: str = DBS) -> None:
    assert body == {"Status": "Error", "Message": message, "ExptType": expt}


def test_add_get_update_remove(client: TestClient, state: ServerState, world: World) -> None:
    assert shown(client, world)["ScheduleList"] == []
    assert shown(client, world)["TimeZone"] == "UTC"
    added = on_docs(client, world, "AddSchedule", **NIGHTLY)
    assert added["Status"] == "OK"
    sid = added["Data"]["ID"]
    assert isinstance(sid, str) and sid.isdigit()
    assert added["Data"] == {"ID": sid, **NIGHTLY_FORM}
    assert shown(client, world)["ScheduleList"] == [added["Data"]]
    assert shown(client, world, v2=True)["ScheduleList"] == [added["Data"]]
    [row] = stored(state, world)
    assert row.id == int(sid)
    assert row.schedule == Schedule(name="Nightly", type=ScheduleType.DAILY, hour=22, minute=30)
    # the first checked slot: today's 22:30 after the call's "now" (12:00 UTC)
    assert row.next_check_ms == NOW + 10 * 3_600_000 + 30 * 60_000
    assert row.created_at == NOW

    # UpdateSchedule (2/): only Time.Hour and Enabled given; the rest is kept
    body = call(
        client,
        "UpdateSchedule",
        v2=True,
        LoginName="alice",
        BackupSetID=world.docs_id,
        ID=int(sid),
        Time={"Hour": 23},
        Enabled=False,
    )
    assert body["Data"] == {
        **NIGHTLY_FORM,
        "ID": sid,
        "Time": {"Hour": 23, "Minute": 30, "Duration": -1},
        "Enabled": False,
    }
    [row] = stored(state, world)
    assert (row.schedule.hour, row.schedule.enabled, row.next_check_ms) == (23, False, None)

    removed = on_docs(client, world, "RemoveSchedule", ID=sid)
    assert removed == {"Status": "OK", "Data": body["Data"]}
    assert stored(state, world) == []
    assert_error(on_docs(client, world, "RemoveSchedule", ID=sid), f"Schedule '{sid}' not found.")


def test_form_and_query_bodies(client: TestClient, state: ServerState, world: World) -> None:
    body = form_call(
        client, "AddSchedule", v2=True, LoginName="alice", BackupSetID=world.docs_id, **WEEKLY
    )
    assert body["Status"] == "OK", body
    assert body["Data"]["Days"] == ["MONDAY", "FRIDAY"]
    assert body["Data"]["Time"] == {"Hour": 8, "Minute": 0, "Duration": 10}
    assert body["Data"]["FullBackup"] is False
    sid = body["Data"]["ID"]
    # a form with plain-text values: Days as MON,FRI
    body = form_call(
        client,
        "UpdateSchedule",
        LoginName="alice",
        BackupSetID=world.docs_id,
        ID=sid,
        Days="tue,thu",
        BackupInterval="30",
        SpaceFreeUpEnabled="N",
    )
    assert body["Status"] == "OK", body
    [row] = stored(state, world)
    assert row.schedule.weekdays == ("TUESDAY", "THURSDAY")
    assert (row.schedule.interval_minutes, row.schedule.retention_after) == (30, False)
    # the query string
    query = {
        "SysUser": ADMIN[0],
        "SysPwd": ADMIN[1],
        "LoginName": "alice",
        "BackupSetID": world.docs_id,
        "Name": "Month end",
        "Type": "MONTHLY",
        "DayOfMonth": "-1",
        "Time": '{"Hour":23,"Minute":0}',
    }
    r = client.get(f"{API}/AddSchedule.do", params=query)
    assert r.json()["Status"] == "OK", r.text
    assert [row.schedule.name for row in stored(state, world)] == ["Office", "Month end"]
    assert stored(state, world)[1].schedule.day_of_month == -1


def test_errors_in_the_envelope(client: TestClient, state: ServerState, world: World) -> None:
    assert_error(
        on_docs(client, world, "AddSchedule", **{**NIGHTLY, "Time": {"Hour": 24, "Minute": 0}}),
        "[Error] Parameter Time.Hour is invalid: \u201824\u2019 (0 to 23)",
    )
    assert_error(
        on_docs(client, world, "AddSchedule", **{**NIGHTLY, "Type": "WEEKLY"}),
        "[Error] Parameter Days is null / empty!",
    )
    body = on_docs(client, world, "AddSchedule", **NIGHTLY, BackupType="DATABASE")
    assert "Parameter BackupType is invalid" in body["Message"]
    assert "must be empty for a FILE backup set" in body["Message"]
    body = form_call(
        client, "AddSchedule", LoginName="alice", BackupSetID=world.docs_id, **NIGHTLY, Days="{"
    )
    assert body["Status"] == "Error" and "Parameter Days is invalid" in body["Message"]
    assert_error(
        call(client, "AddSchedule", LoginName="nobody", BackupSetID=world.docs_id, **NIGHTLY),
        "[UserCacheManager.NoSuchUserExpt] User \u2018nobody\u2019 not found.",
        "com.ahsay.obs.core.dbs.ai",
    )
    assert_error(
        call(client, "AddSchedule", LoginName="alice", BackupSetID="42", **NIGHTLY),
        "Backup set \u201842\u2019 not found.",
    )
    assert_error(
        call(client, "AddSchedule", LoginName="alice", **NIGHTLY),
        "[Error] Parameter BackupSetID is null / empty!",
    )
    assert on_docs(client, world, "AddSchedule", **NIGHTLY)["Status"] == "OK"
    body = on_docs(client, world, "AddSchedule", **NIGHTLY)
    assert body["Status"] == "Error" and "schedule named 'Nightly' already" in body["Message"]
    assert_error(
        on_docs(client, world, "UpdateSchedule", Name="x"),
        "[Error] Parameter ID is null / empty!",
    )
    for unknown in ("123", "abc"):
        assert_error(
            on_docs(client, world, "UpdateSchedule", ID=unknown, Name="x"),
            f"Schedule '{unknown}' not found.",
        )
    # a schedule of another set is not found through this one
    [row] = stored(state, world)
    assert_error(
        call(
            client,
            "RemoveSchedule",
            LoginName="bob",
            BackupSetID=world.main_id,
            ID=str(row.id),
        ),
        f"Schedule '{row.id}' not found.",
    )
    assert len(stored(state, world)) == 1


def test_who_may_change_schedules(client: TestClient, state: ServerState, world: World) -> None:
    body = call(
        client, "AddSchedule", as_=ROBOT, LoginName="alice", BackupSetID=world.docs_id, **NIGHTLY
    )
    assert_error(
        body,
        "[Error] System user \u2018robot\u2019 (role READ_ONLY_API) may not call AddSchedule: "
        "it changes settings",
    )
    assert_error(
        call(
            client,
            "AddSchedule",
            as_=VIEWER,
            LoginName="alice",
            BackupSetID=world.docs_id,
            **NIGHTLY,
        ),
        "Incorrect system username/password",
        "com.ahsay.obs.core.dbs.c",
    )
    assert stored(state, world) == []
    ok = call(
        client, "AddSchedule", as_=SCRIPT, LoginName="alice", BackupSetID=world.docs_id, **NIGHTLY
    )
    assert ok["Status"] == "OK"
    sid = ok["Data"]["ID"]
    for name, extra in (("UpdateSchedule", {"Name": "x"}), ("RemoveSchedule", {})):
        body = call(
            client, name, as_=ROBOT, LoginName="alice", BackupSetID=world.docs_id, ID=sid, **extra
        )
        assert "may not call " + name in body["Message"]
    # the read-only API user reads them
    body = call(client, "GetBackupSet", as_=ROBOT, LoginName="alice", BackupSetID=world.docs_id)
    assert [s["ID"] for s in body["Data"]["ScheduleList"]] == [sid]
    # a reseller reaches its own users only
    body = call(
        client, "RemoveSchedule", as_=RES1, LoginName="alice", BackupSetID=world.docs_id, ID=sid
    )
    assert body["ExptType"] == "com.ahsay.obs.core.dbs.ai"
    assert len(stored(state, world)) == 1
    body = call(
        client, "AddSchedule", as_=RES1, LoginName="bob", BackupSetID=world.main_id, **NIGHTLY
    )
    assert body["Status"] == "OK"


def test_update_backup_set_replaces_the_list(
    client: TestClient, state: ServerState, world: World
) -> None:
    first = on_docs(client, world, "AddSchedule", **NIGHTLY)["Data"]
    second = on_docs(client, world, "AddSchedule", **WEEKLY)["Data"]
    # the whole set sent back as read: nothing changes
    whole = shown(client, world)
    before = stored(state, world)
    body = on_docs(client, world, "UpdateBackupSet", **{k: v for k, v in whole.items()})
    assert body == {"Status": "OK"}, body
    assert stored(state, world) == before
    # reorder, change one (keys left out kept), drop none, add one
    wanted = [
        {"ID": second["ID"], "Enabled": False},
        {"ID": int(first["ID"])},
        {"Name": "Once", "Type": "CUSTOM", "Date": "2030-02-01", "Time": {"Hour": 1, "Minute": 0}},
    ]
    assert on_docs(client, world, "UpdateBackupSet", ScheduleList=wanted) == {"Status": "OK"}
    rows = stored(state, world)
    assert [str(r.id) for r in rows[:2]] == [second["ID"], first["ID"]]
    assert [r.position for r in rows] == [0, 1, 2]
    assert rows[0].schedule.enabled is False and rows[0].schedule.weekdays == ("MONDAY", "FRIDAY")
    assert rows[2].schedule.type is ScheduleType.CUSTOM
    assert rows[2].next_check_ms == 1_896_138_000_000  # 2030-02-01 01:00 UTC
    listed = shown(client, world, v2=True)["ScheduleList"]
    assert [s["Name"] for s in listed] == ["Office", "Nightly", "Once"]
    # a form body: the list as JSON text; schedules not listed are removed
    body = form_call(
        client,
        "UpdateBackupSet",
        v2=True,
        LoginName="alice",
        BackupSetID=world.docs_id,
        ScheduleList=[{"ID": first["ID"]}],
    )
    assert body == {"Status": "OK"}
    assert [str(r.id) for r in stored(state, world)] == [first["ID"]]
    # an unknown ID, a duplicate name, a bad item: an error, and nothing changed
    kept = stored(state, world)
    for bad, message in (
        ([{"ID": "999"}], "Schedule '999' not found."),
        ([NIGHTLY, {"ID": first["ID"]}], "two schedules are named 'Nightly'"),
        ([{"ID": first["ID"]}, {"Name": "x"}], "Parameter ScheduleList[1].Type is null"),
        ([{"ID": first["ID"], "Colour": 1}], "Parameter ScheduleList[0].Colour is invalid"),
        ([{"ID": first["ID"]}, {"ID": first["ID"]}], "ScheduleList[1].ID is invalid"),
        ("[", "Parameter ScheduleList is invalid"),
        ({"ID": 1}, "Parameter ScheduleList is invalid"),
    ):
        body = on_docs(client, world, "UpdateBackupSet", ScheduleList=bad)
        assert body["Status"] == "Error" and message in body["Message"], (bad, body)
        assert stored(state, world) == kept
    # [] removes them all
    assert on_docs(client, world, "UpdateBackupSet", ScheduleList=[]) == {"Status": "OK"}
    assert stored(state, world) == []


def test_time_zone(client: TestClient, state: ServerState, world: World) -> None:
    added = on_docs(client, world, "AddSchedule", **NIGHTLY)["Data"]
    assert stored(state, world)[0].next_check_ms == NOW + (10 * 60 + 30) * 60_000
    body = on_docs(client, world, "UpdateBackupSet", TimeZone="Asia/Tokyo")
    assert body == {"Status": "OK"}, body
    assert shown(client, world)["TimeZone"] == "Asia/Tokyo"
    with state.db.read() as conn:
        bset = sets.get_set(conn, world.alice_id, world.docs_id)
    assert bset.settings.time_zone == "Asia/Tokyo"
    # 12:00 UTC is 21:00 in Tokyo: the next 22:30 there is 13:30 UTC
    [row] = stored(state, world)
    tokyo = ZoneInfo("Asia/Tokyo")
    assert row.next_check_ms == next_slot(row.schedule, tokyo, NOW) == NOW + 90 * 60_000
    # a new schedule runs in the set's zone
    weekly = on_docs(client, world, "AddSchedule", **WEEKLY)["Data"]
    assert stored(state, world)[1].next_check_ms == next_slot(
        stored(state, world)[1].schedule, tokyo, NOW
    )
    # both at once: the zone first, then the list in it
    body = on_docs(
        client,
        world,
        "UpdateBackupSet",
        TimeZone="America/New_York",
        ScheduleList=[{"ID": added["ID"], "Time": {"Hour": 6}}, {"ID": weekly["ID"]}],
    )
    assert body == {"Status": "OK"}, body
    new_york = ZoneInfo("America/New_York")
    rows = stored(state, world)
    assert rows[0].next_check_ms == next_slot(rows[0].schedule, new_york, NOW)
    assert rows[1].next_check_ms == next_slot(rows[1].schedule, new_york, NOW)
    for bad in ("Mars/Olympus", "../etc/passwd", "x" * 80):
        body = on_docs(client, world, "UpdateBackupSet", TimeZone=bad)
        assert body["Status"] == "Error" and "Parameter TimeZone is invalid" in body["Message"]
    assert shown(client, world)["TimeZone"] == "America/New_York"


def test_get_backup_set_of_each_call_version_lists_the_same(
    client: TestClient, world: World
) -> None:
    on_docs(client, world, "AddSchedule", **NIGHTLY)
    on_docs(client, world, "AddSchedule", **WEEKLY)
    assert shown(client, world) == shown(client, world, v2=True)
    names = [s["Name"] for s in shown(client, world)["ScheduleList"]]
    assert names == ["Nightly", "Office"]
