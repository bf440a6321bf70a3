"""S3 destinations on the server (issue 13): created through the agent API, kept in their normal
form, shown by GetBackupSet as ``{"Id", "Name", "Type": "S3"}``; a credential in any
destination's settings, an S3 location that is not one, and a change that would make it one no
longer, are refused (400 ``invalid_input`` with a hint) and nothing is stored. On SQLite and on
PostgreSQL (the ``client`` fixture)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.agent import AgentClient, Entry, NewDestination
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import JobStatus, ReportList
from opencbs.store import users
from tests.conftest import ADMIN

API = "/api/agent/v1"
ALICE = ("alice", "alice-pw")
T0 = 1_719_408_275_000  # 2024-06-26 13:24:35 UTC

#: What a person might send: slashes around the prefix, a slash after the endpoint, no region.
S3_GIVEN = {"bucket": "backups", "prefix": "/alice/docs/", "endpoint": "http://minio:9000/"}
S3_STORED = {
    "bucket": "backups",
    "prefix": "alice/docs",
    "endpoint": "http://minio:9000",
    "region": "us-east-1",
}
LOCAL = {"name": "Local", "type": "LOCAL", "settings": {"path": "/srv/b"}}


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


def _refused(r: httpx.Response, text: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == "invalid_input", body
    assert text in body["message"], body
    assert body["hint"], body
    return body


def _new_set(client: TestClient, *dests: dict[str, Any], name: str = "Docs") -> httpx.Response:
    body = {"name": name, "settings": {"sources": ["/home/alice"]}, "destinations": list(dests)}
    return client.post(API + "/backup-sets", auth=ALICE, json=body)


def _cbs(client: TestClient, call: str, **params: str) -> Any:
    r = client.post(
        f"/obs/api/json/{call}.do",
        json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1], "LoginName": ALICE[0], **params},
    )
    body = r.json()
    assert body["Status"] == "OK", body
    return body["Data"]


def test_an_s3_destination_is_stored_in_normal_form_and_shown_as_s3(
    client: TestClient, agent: AgentClient
) -> None:
    r = _new_set(client, LOCAL, {"name": "Offsite", "type": "S3", "settings": S3_GIVEN})
    assert r.status_code == 201, r.text
    local, s3 = r.json()["destinations"]
    assert (s3["name"], s3["type"], s3["settings"]) == ("Offsite", "S3", S3_STORED)
    assert local["settings"] == {"path": "/srv/b"}  # LOCAL as before
    assert agent.get_set(r.json()["id"]).destinations[1].settings == S3_STORED

    for call in ("GetBackupSet", "2/GetBackupSet"):
        data = _cbs(client, call, BackupSetID=r.json()["id"])
        assert data["DestinationList"] == [
            {"Id": local["id"], "Name": "Local", "Type": "LOCAL"},
            {"Id": s3["id"], "Name": "Offsite", "Type": "S3"},
        ]
        assert "minio" not in json.dumps(data)  # the location is not shown either

    # added to an existing set: the same rule
    added = agent.add_destination(
        r.json()["id"], NewDestination("AWS", "S3", {"bucket": "b-1.x", "region": "eu-west-1"})
    )
    assert added.settings == {
        "bucket": "b-1.x",
        "prefix": "",
        "endpoint": "",
        "region": "eu-west-1",
    }


@pytest.mark.parametrize(
    "settings",
    [
        {**S3_GIVEN, "secret_access_key": "wJalrXUtnFEMI"},
        {**S3_GIVEN, "aws_access_key_id": "AKIA0000"},
        {**S3_GIVEN, "SessionToken": "FwoGZXIvYXdzEP"},
    ],
)
def test_credentials_in_s3_settings_are_refused_and_nothing_is_stored(
    client: TestClient, agent: AgentClient, settings: dict[str, Any]
) -> None:
    body = _refused(
        _new_set(client, {"name": "S3", "type": "S3", "settings": settings}),
        "must not hold credentials",
    )
    assert "agent" in body["hint"]
    assert list(settings.values())[-1] not in json.dumps(body)  # the secret is not echoed
    assert agent.list_sets() == []  # the set was not created without its destination


def test_no_destination_type_keeps_a_credential(client: TestClient, agent: AgentClient) -> None:
    for settings in (
        {"path": "/srv/b", "password": "p"},
        {"auth": {"nested": [{"api_token": "t"}]}},
    ):
        for dest_type in ("LOCAL", "OBS"):
            dest = {"name": "D", "type": dest_type, "settings": settings}
            _refused(_new_set(client, dest), "must not hold credentials")
    assert agent.list_sets() == []

    bset = agent.create_set(
        "Docs", settings={"sources": ["/a"]}, destinations=[NewDestination("Local", "LOCAL", {})]
    )
    url = f"{API}/backup-sets/{bset.id}/destinations"
    dest = {"name": "More", "type": "OBS", "settings": {"Passwd": "x"}}
    _refused(client.post(url, auth=ALICE, json=dest), "key 'Passwd'")
    d_url = f"{url}/{bset.destinations[0].id}"
    _refused(
        client.patch(d_url, auth=ALICE, json={"settings": {"path": "/x", "credentials": "c"}}),
        "key 'credentials'",
    )
    after = agent.get_set(bset.id)
    assert [(d.name, d.settings) for d in after.destinations] == [("Local", {})]

    # other types keep today's rules: any other settings are kept as given
    other = agent.add_destination(bset.id, NewDestination("Cloud", "OBS", {"host": "h", "n": 1}))
    assert (other.type, other.settings) == ("OBS", {"host": "h", "n": 1})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bucket": "x"}, "invalid S3 bucket name 'x'"),
        ({"bucket": "Bad Bucket"}, "invalid S3 bucket name"),
        ({}, "invalid S3 bucket name ''"),
        ({"bucket": "ok-bucket", "prefix": "a/../b"}, "invalid S3 prefix"),
        ({"bucket": "ok-bucket", "endpoint": "ftp://h"}, "invalid S3 endpoint"),
        ({"bucket": "ok-bucket", "endpoint": "http://u:p@h"}, "no credentials"),
        ({"bucket": "ok-bucket", "region": "EU West"}, "invalid S3 region"),
        ({"bucket": "ok-bucket", "prefix": 5}, "prefix must be text"),
        ({"bucket": "ok-bucket", "path": "/srv"}, "unknown key 'path'"),
    ],
)
def test_an_s3_location_that_is_not_one_is_refused(
    client: TestClient, agent: AgentClient, settings: dict[str, Any], message: str
) -> None:
    _refused(_new_set(client, {"name": "S3", "type": "S3", "settings": settings}), message)
    assert agent.list_sets() == []
    bset = agent.create_set("Docs", settings={"sources": ["/a"]})
    url = f"{API}/backup-sets/{bset.id}/destinations"
    _refused(
        client.post(url, auth=ALICE, json={"name": "S3", "type": "S3", "settings": settings}),
        message,
    )
    assert agent.get_set(bset.id).destinations == ()


def test_a_change_of_an_s3_destination_is_checked_merged(
    client: TestClient, agent: AgentClient
) -> None:
    r = _new_set(client, {"name": "S3", "type": "S3", "settings": S3_GIVEN})
    set_id, dest = r.json()["id"], r.json()["destinations"][0]
    url = f"{API}/backup-sets/{set_id}/destinations/{dest['id']}"

    changed = client.patch(url, auth=ALICE, json={"settings": {"prefix": "/other/"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"] == {**S3_STORED, "prefix": "other"}  # the rest kept

    for patch, message in (
        ({"bucket": "-bad"}, "invalid S3 bucket name"),
        ({"endpoint": "nonsense"}, "invalid S3 endpoint"),
        ({"storage_class": "GLACIER"}, "unknown key 'storage_class'"),
        ({"secret_access_key": "s"}, "must not hold credentials"),
    ):
        _refused(client.patch(url, auth=ALICE, json={"settings": patch}), message)
    renamed = agent.update_destination(set_id, dest["id"], name="Offsite")
    assert (renamed.name, renamed.settings) == ("Offsite", {**S3_STORED, "prefix": "other"})


def test_jobs_of_an_s3_destination_are_reported_as_any_other(
    client: TestClient, agent: AgentClient
) -> None:
    r = _new_set(client, {"name": "S3", "type": "S3", "settings": S3_GIVEN})
    set_id, dest_id = r.json()["id"], r.json()["destinations"][0]["id"]
    ref = agent.start_job(set_id, dest_id, start_time=T0).ref
    entries = [
        Entry.log("start", "Start running backup", T0),
        Entry(ReportList.NEW, "F", path="/home/alice/a", size=6, unzip_size=10, last_modified=T0),
        Entry.log("end", "Backup completed", T0 + 1000),
    ]
    assert agent.send_batch(ref, 0, entries) is True
    agent.finish_job(ref, JobStatus.STOP_SUCCESS)

    (status,) = _cbs(client, "ListBackupJobStatus", BackupDate="2024-06-26")
    assert (status["ID"], status["DestinationID"], status["BackupJobStatus"]) == (
        "2024-06-26-13-24-35",
        dest_id,
        "BS_STOP_SUCCESS",
    )
    assert status["UploadSize"] == "6"
    report = _cbs(
        client,
        "GetBackupJobReport",
        BackupSetID=set_id,
        DestinationID=dest_id,
        BackupJobID=ref.job_id,
    )
    assert report["BackupJobStatus"] == "BS_STOP_SUCCESS"
    assert [e["Name"] for e in report["new"]] == ["/home/alice/a"]
    assert "minio" not in json.dumps(report)
