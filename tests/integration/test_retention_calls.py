"""A set's retention policy over HTTP (cbs-api.md §10), on SQLite and PostgreSQL: GetBackupSet's
``RetentionPolicy``, UpdateBackupSet (v1 and 2/; a JSON body, a form, a query), its errors in
the CBS envelope, the settings it cannot change yet, who may call it (§2), and the same policy
seen by the agent API and set by ``opencbs set retention``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.api.state import ServerState
from opencbs.cli.main import main
from opencbs.model.sets import Retention
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import sets, users
from opencbs.store.db import Database
from tests.conftest import ADMIN

API = "/obs/api/json"
RES1 = ("res1", "res1-password")
ROBOT = ("robot", "robot-password")
VIEWER = ("viewer", "viewer-password")
SCRIPT = ("script", "script-password")
DBS = "com.ahsay.obs.core.dbs.DbsException"
ALICE = ("alice", "alice-password")

ADVANCED = {
    "Type": "ADVANCED",
    "KeepLast": 3,
    "KeepHourly": 0,
    "KeepDaily": 7,
    "KeepWeekly": 4,
    "KeepMonthly": 0,
    "KeepYearly": 1,
    "KeepWithin": "30d",
    "SpaceFreeUpEnabled": False,
}


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts get argon2id hashes of the lowest cost: the calls are under test, not the hash."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


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
        alice = users.add_backup_user(conn, *ALICE)
        bob = users.add_backup_user(conn, "bob", "bob-password", owner="res1")
        docs = sets.add_set(conn, alice.id, "Docs", {"sources": ["/home/alice"]})
        sets.add_destination(conn, alice.id, docs.id, name="Local", dest_type="LOCAL")
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


def update(client: TestClient, world: World, **params: Any) -> dict[str, Any]:
    return call(client, "UpdateBackupSet", LoginName="alice", BackupSetID=world.docs_id, **params)


def policy_of(client: TestClient, world: World, *, v2: bool = False) -> dict[str, Any]:
    body = call(client, "GetBackupSet", v2=v2, LoginName="alice", BackupSetID=world.docs_id)
    assert body["Status"] == "OK", body
    policy: dict[str, Any] = body["Data"]["RetentionPolicy"]
    return policy


def stored(state: ServerState, world: World) -> Retention:
    with state.db.read() as conn:
        return sets.get_set(conn, world.alice_id, world.docs_id).settings.retention


def assert_error(body: dict[str, Any], message: str, expt: str = DBS) -> None:
    assert body == {"Status": "Error", "Message": message, "ExptType": expt}


DEFAULT = {"Type": "SIMPLE", "RetentionDays": 7, "SpaceFreeUpEnabled": True}


def test_update_then_get_on_v1_and_v2(client: TestClient, state: ServerState, world: World) -> None:
    assert policy_of(client, world) == DEFAULT == policy_of(client, world, v2=True)
    assert update(client, world, RetentionPolicy=ADVANCED) == {"Status": "OK"}
    assert policy_of(client, world) == ADVANCED == policy_of(client, world, v2=True)
    assert stored(state, world) == Retention(
        mode="ADVANCED",
        keep_last=3,
        keep_daily=7,
        keep_weekly=4,
        keep_yearly=1,
        keep_within="30d",
        after_backup=False,
    )
    jobs = {"Type": "SIMPLE", "RetentionJobs": 10, "SpaceFreeUpEnabled": True}
    body = call(
        client,
        "UpdateBackupSet",
        v2=True,
        LoginName="alice",
        BackupSetID=world.docs_id,
        RetentionPolicy=jobs,
    )
    assert body == {"Status": "OK"}
    assert policy_of(client, world) == jobs
    # the rest of the set is as it was
    with state.db.read() as conn:
        bset = sets.get_set(conn, world.alice_id, world.docs_id)
    assert bset.settings.sources == ("/home/alice",) and bset.name == "Docs"


def test_a_form_and_a_query_carry_the_policy_as_json_text(
    client: TestClient, state: ServerState, world: World
) -> None:
    form = {
        "SysUser": ADMIN[0],
        "SysPwd": ADMIN[1],
        "LoginName": "alice",
        "BackupSetID": world.docs_id,
        "RetentionPolicy": json.dumps({"Type": "SIMPLE", "RetentionDays": 30}),
    }
    r = client.post(f"{API}/UpdateBackupSet.do", data=form)
    assert r.json() == {"Status": "OK"}
    assert stored(state, world) == Retention(days=30)
    query = {**form, "RetentionPolicy": json.dumps({"Type": "ADVANCED", "KeepMonthly": "12"})}
    r = client.get(f"{API}/2/UpdateBackupSet.do", params=query)
    assert r.json() == {"Status": "OK"}
    assert stored(state, world) == Retention(mode="ADVANCED", keep_monthly=12)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {"Type": "SIMPLE", "RetentionDays": 366},
            "[Error] Parameter RetentionPolicy.RetentionDays is invalid: \u2018366\u2019 "
            "(1 to 365)",
        ),
        (
            {"Type": "ADVANCED", "KeepDaily": 0},
            '[Error] Parameter RetentionPolicy is invalid: \u2018{"Type":"ADVANCED",'
            '"KeepDaily":0}\u2019 (an ADVANCED policy needs a Keep\u2026 rule above 0 or a '
            "KeepWithin)",
        ),
        ({"RetentionDays": 3}, "[Error] Parameter RetentionPolicy.Type is null / empty!"),
        ("7", "[Error] Parameter RetentionPolicy is invalid: \u20187\u2019 (not a JSON object)"),
        ([1], "[Error] Parameter RetentionPolicy is invalid: \u2018[1]\u2019 (not a JSON object)"),
        (
            "{bad",
            "[Error] Parameter RetentionPolicy is invalid: \u2018{bad\u2019 (not a JSON object)",
        ),
    ],
)
def test_a_bad_policy_is_the_envelope_naming_the_field(
    client: TestClient, state: ServerState, world: World, policy: Any, message: str
) -> None:
    assert_error(update(client, world, RetentionPolicy=policy), message)
    assert stored(state, world) == Retention.default()  # nothing changed


def test_unknown_user_set_and_missing_parameters(client: TestClient, world: World) -> None:
    body = call(client, "UpdateBackupSet", LoginName="nobody", BackupSetID=world.docs_id)
    assert_error(
        body,
        "[UserCacheManager.NoSuchUserExpt] User \u2018nobody\u2019 not found.",
        "com.ahsay.obs.core.dbs.ai",
    )
    body = call(
        client, "UpdateBackupSet", LoginName="alice", BackupSetID="123", RetentionPolicy=ADVANCED
    )
    assert_error(body, "Backup set \u2018123\u2019 not found.")
    assert_error(
        call(client, "UpdateBackupSet", BackupSetID=world.docs_id),
        "[Error] Parameter LoginName is null / empty!",
    )
    assert_error(
        call(client, "UpdateBackupSet", LoginName="alice"),
        "[Error] Parameter BackupSetID is null / empty!",
    )
    # an Owner other than the user's: not found (§2)
    body = call(
        client, "UpdateBackupSet", LoginName="alice", Owner="res1", BackupSetID=world.docs_id
    )
    assert body["ExptType"] == "com.ahsay.obs.core.dbs.ai"


def test_a_set_read_and_sent_back_whole_changes_only_its_policy(
    client: TestClient, state: ServerState, world: World
) -> None:
    got = call(client, "GetBackupSet", LoginName="alice", BackupSetID=world.docs_id)["Data"]
    sent = {**got, "RetentionPolicy": ADVANCED, "Class": "com.ahsay.obx.cxp.obs.BackupSet"}
    assert update(client, world, **sent) == {"Status": "OK"}
    assert policy_of(client, world) == ADVANCED
    # as a form would carry them: text for booleans and numbers
    assert update(client, world, Deduplication="true", CompressLevel="3", Removed="N") == {
        "Status": "OK"
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Name", "Renamed"),
        ("CompressType", "GzipDefaultCompression"),
        ("CompressLevel", 9),
        ("Deduplication", False),
        ("SelectedSource", ["/elsewhere"]),
        ("Filter", {"Include": [], "Exclude": ["*.tmp"]}),
        ("DestinationList", []),
        ("ShadowCopyEnabled", False),
        ("LogRetentionDays", 30),
        ("RecycleBinSettings", {"Enabled": True}),
    ],
)
def test_other_settings_cannot_be_changed_yet(
    client: TestClient, state: ServerState, world: World, name: str, value: Any
) -> None:
    body = update(client, world, RetentionPolicy=ADVANCED, **{name: value})
    assert_error(
        body,
        f"[Error] Parameter {name} cannot be changed by UpdateBackupSet yet (it changes "
        "RetentionPolicy, ScheduleList and TimeZone only)",
    )
    assert stored(state, world) == Retention.default()  # not even the policy
    with state.db.read() as conn:
        assert sets.get_set(conn, world.alice_id, world.docs_id).name == "Docs"


def test_who_may_change_a_policy(client: TestClient, state: ServerState, world: World) -> None:
    simple = {"Type": "SIMPLE", "RetentionDays": 3}
    body = update(client, world, as_=ROBOT, RetentionPolicy=simple)
    assert_error(
        body,
        "[Error] System user \u2018robot\u2019 (role READ_ONLY_API) may not call "
        "UpdateBackupSet: it changes settings",
    )
    # ...though it reads the set, the policy included
    assert (
        call(client, "GetBackupSet", as_=ROBOT, LoginName="alice", BackupSetID=world.docs_id)[
            "Data"
        ]["RetentionPolicy"]
        == DEFAULT
    )
    assert_error(
        update(client, world, as_=VIEWER, RetentionPolicy=simple),
        "Incorrect system username/password",
        "com.ahsay.obs.core.dbs.c",
    )
    assert stored(state, world) == Retention.default()
    assert update(client, world, as_=SCRIPT, RetentionPolicy=simple) == {"Status": "OK"}
    assert stored(state, world) == Retention(days=3)
    # a reseller changes its own users' sets, and finds no other user
    body = update(client, world, as_=RES1, RetentionPolicy={"Type": "SIMPLE", "RetentionDays": 9})
    assert body["ExptType"] == "com.ahsay.obs.core.dbs.ai"
    assert stored(state, world) == Retention(days=3)
    body = call(
        client,
        "UpdateBackupSet",
        as_=RES1,
        LoginName="bob",
        BackupSetID=world.main_id,
        RetentionPolicy={"Type": "SIMPLE", "RetentionJobs": 5},
    )
    assert body == {"Status": "OK"}
    with state.db.read() as conn:
        assert sets.get_set(conn, world.bob_id, world.main_id).settings.retention == Retention(
            jobs=5
        )


def test_the_agent_api_serves_the_same_policy(client: TestClient, world: World) -> None:
    assert update(client, world, RetentionPolicy=ADVANCED) == {"Status": "OK"}
    auth = "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
    r = client.get(f"/api/agent/v1/backup-sets/{world.docs_id}", headers={"Authorization": auth})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["retention"] == {
        "mode": "ADVANCED",
        "days": None,
        "jobs": None,
        "keep_last": 3,
        "keep_hourly": 0,
        "keep_daily": 7,
        "keep_weekly": 4,
        "keep_monthly": 0,
        "keep_yearly": 1,
        "keep_within": "30d",
        "after_backup": False,
    }


def test_the_command_line_shows_and_sets_it(
    db: Database,
    client: TestClient,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENCBS_DATABASE_URL", db.url)
    capsys.readouterr()
    assert main(["set", "retention", "alice", "Docs"]) == 0
    assert capsys.readouterr().out == "SIMPLE: keeps 7 days; runs after each backup\n"
    assert (
        main(["set", "retention", "alice", world.docs_id, "--jobs", "12", "--no-after-backup"]) == 0
    )
    out = capsys.readouterr()
    assert out.out == "SIMPLE: keeps 12 jobs; runs only when asked\n"
    assert "retention policy of backup set 'Docs' changed" in out.err
    assert policy_of(client, world) == {
        "Type": "SIMPLE",
        "RetentionJobs": 12,
        "SpaceFreeUpEnabled": False,
    }
    args = ["set", "retention", "alice", "Docs", "--keep-daily", "7", "--keep-within", "14d"]
    assert main([*args, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mode"] == "ADVANCED" and shown["keep_daily"] == 7
    assert shown["keep_within"] == "14d" and shown["after_backup"] is False
    assert policy_of(client, world)["KeepWithin"] == "14d"
    assert main(["set", "list", "alice"]) == 0
    assert "daily 7, within 14d" in capsys.readouterr().out
    # errors: one line and a hint, the documented exit codes, nothing changed
    for argv, code, text in (
        (["set", "retention", "alice", "Nope"], 4, "Backup set \u2018Nope\u2019 not found."),
        (["set", "retention", "nobody", "Docs"], 4, "User \u2018nobody\u2019 not found."),
        (["set", "retention", "alice", "Docs", "--days", "3", "--keep-last", "2"], 2, "exclude"),
        (["set", "retention", "alice", "Docs", "--keep-last", "0"], 2, "needs a --keep-*"),
        (["set", "retention", "alice", "Docs", "--days", "400"], 2, "--days"),
    ):
        assert main(argv) == code, argv
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and text in err[0] and err[1].startswith("hint: "), err
    assert policy_of(client, world)["KeepWithin"] == "14d"
