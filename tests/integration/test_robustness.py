"""No input yields a traceback or an HTTP 5xx (cbs-api.md §1, §3): every registered CBS call,
with every documented parameter, fed hostile bodies, answers the envelope and the data survives.

The calls and their parameters come from the registry ``opencbs.api.cbs.CALLS``, so calls added
later are covered without touching this file."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect

import opencbs.api.app  # noqa: F401 - registers every call
from opencbs.api import envelope
from opencbs.api.cbs import CALLS
from opencbs.api.params import MAX_BODY
from opencbs.api.state import ServerState
from opencbs.errors import BackupUserNotFound
from opencbs.store import schema
from tests.conftest import ADMIN, VendorJob

CT = "application/json; charset=utf-8"
NAMES = sorted(CALLS)
SQL = ["' OR 1=1 --", '"; DROP TABLE backup_jobs; --', "obm' --", "%_\\"]
WRONG_TYPES: list[Any] = [{"a": 1}, [1, "x"], 12345, 1.5, True, False, None]


def _url(name: str) -> str:
    return f"/obs/api/json/{name}.do"


def _valid(job: VendorJob, name: str) -> dict[str, Any]:
    """A plausible request for call ``name``: the vendor job's IDs, every other documented
    parameter a harmless string."""
    known = {
        "SysUser": ADMIN[0],
        "SysPwd": ADMIN[1],
        "LoginName": job.login_name,
        "Owner": "",
        "BackupSetID": job.set_id,
        "DestinationID": job.destination_id,
        "BackupJobID": job.job_id,
        "Cdp": "false",
        "BackupDate": job.job_id[:10],
    }
    return {p.name: known.get(p.name, "") for p in CALLS[name].params}


def _check(r: Any, what: object = "") -> dict[str, Any]:
    """The answer is the CBS envelope: HTTP 200 (404 only for unknown names, 413 only for a body
    over the limit), one JSON object."""
    assert r.status_code in (200, 404, 413), (what, r.status_code, r.text[:300])
    assert r.headers["content-type"] == CT, what
    body = json.loads(r.content)
    assert isinstance(body, dict), what
    assert body.get("Status") in ("OK", "Error"), (what, body)
    if body["Status"] == "Error":
        assert isinstance(body.get("Message"), str) and body["Message"], what
        assert isinstance(body.get("ExptType"), str) and body["ExptType"], what
        assert "Traceback" not in body["Message"], what
    return body


def _survived(client: TestClient, state: ServerState, job: VendorJob) -> None:
    with state.db.read() as conn:
        tables = set(inspect(conn).get_table_names())
    assert set(schema.metadata.tables) <= tables
    r = client.post(_url("GetBackupJobReport"), json=_valid(job, "GetBackupJobReport"))
    body = _check(r)
    assert body["Status"] == "OK" and body["Data"]["ID"] == job.job_id


def test_registry_has_the_report_calls() -> None:
    assert {"GetBackupJobReport", "GetBackupJobReportSummary"} <= set(CALLS)
    for call in CALLS.values():
        assert {p.name for p in call.params} >= {"SysUser", "SysPwd"}


def test_hostile_bodies(client: TestClient, state: ServerState, vendor_job: VendorJob) -> None:
    bodies: list[tuple[bytes, str | None]] = [
        (b'{"LoginName": "obm",', "application/json"),
        (b"[1, 2, 3]", None),
        (b'"just a string"', "text/plain;charset=UTF-8"),
        (b'{"LoginName": "\xff\xfe\xc3"}', "application/json"),
        (b"\xff\xfe\x00\x01", None),
        (
            b"LoginName=%FF%FE&SysUser=system&SysPwd=system-secret",
            "application/x-www-form-urlencoded",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, None),
        (b'{"LoginName": "\\ud800", "SysUser": "system", "SysPwd": "system-secret"}', None),
        (b'{"SysUser": "\\udfff", "SysPwd": "\\ud800"}', None),
        (
            b'{"LoginName": 1e999, "BackupSetID": NaN, "SysUser": "system", '
            b'"SysPwd": "system-secret"}',
            None,
        ),
        (
            b'{"BackupSetID": 123456789012345678901234567890, "SysUser": "system", '
            b'"SysPwd": "system-secret", "LoginName": "obm"}',
            None,
        ),
        (
            json.dumps({"SysUser": ADMIN[0], "SysPwd": ADMIN[1], "Pad": "x" * (1 << 20)}).encode(),
            None,
        ),
        (b" " * 10 + b"\x00", None),
    ]
    queries = [
        "?LoginName=%FF%FE%00&SysUser=system&SysPwd=system-secret",
        "?%00=%00&SysUser=%00",
        "?LoginName=obm&LoginName=%27%20OR%201=1%20--&SysUser=system&SysPwd=system-secret",
    ]
    for name in NAMES:
        for body, ctype in bodies:
            headers = {"Content-Type": ctype} if ctype else {}
            _check(client.post(_url(name), content=body, headers=headers), (name, body[:40]))
        for query in queries:
            _check(client.get(_url(name) + query), (name, query))
            _check(client.post(_url(name) + query, content=b"{}"), (name, query))
    # a body just under the limit (1 MiB) is read as usual
    params = _valid(vendor_job, "GetBackupJobReportSummary")
    big = json.dumps({**params, "Pad": "x" * 1_000_000}).encode()
    assert 1_000_000 < len(big) < MAX_BODY
    assert _check(client.post(_url("GetBackupJobReportSummary"), content=big))["Status"] == "OK"
    _survived(client, state, vendor_job)


def test_an_unencodable_message_still_renders() -> None:
    # a lone surrogate cannot be written as UTF-8: the envelope is still valid JSON
    r = envelope.error(BackupUserNotFound("a\ud800b"))
    body = json.loads(bytes(r.body))
    assert body["Status"] == "Error" and body["Message"].startswith("[UserCacheManager")


def test_hostile_strings_in_every_parameter(
    client: TestClient, state: ServerState, vendor_job: VendorJob
) -> None:
    hostile = SQL + [
        "\u0000",
        "obm\u0000",
        "\u0000' OR 1=1 --",
        "\u202e\ufeff\U0001f600",
        "+1692320086130",
        " 1692320086130 ",
        "99999999999999999999999999",
        "2024-06-26-13-24-35\u0000",
    ]
    for name in NAMES:
        base = _valid(vendor_job, name)
        for param in base:
            if param == "SysPwd" or (param == "SysUser" and name != NAMES[0]):
                # wrong passwords would lock the administrator (see test_hostile_passwords);
                # an unknown SysUser costs a slow hash, so it is tried with one call only
                continue
            for value in hostile:
                body = {**base, param: value}
                _check(client.post(_url(name), json=body), (name, param, value[:30]))
        # GET query string and form with NUL and SQL
        for value in ("\u0000", SQL[1]):
            _check(client.get(_url(name), params={**base, "LoginName": value}), (name, value))
            _check(client.post(_url(name), data={**base, "LoginName": value}), (name, value))
        # a 100k-char LoginName and a 1 MB body
        long_login = {**base, "LoginName": "o" * 100_000}
        _check(client.post(_url(name), json=long_login), (name, "long"))
    _survived(client, state, vendor_job)


def test_nul_is_a_clean_parameter_invalid(client: TestClient, vendor_job: VendorJob) -> None:
    # PostgreSQL refuses NUL in text: it must never reach the database
    body = {**_valid(vendor_job, "GetBackupJobReportSummary"), "LoginName": "obm\u0000"}
    answer = _check(client.post(_url("GetBackupJobReportSummary"), json=body))
    assert answer == {
        "Status": "Error",
        "ExptType": "com.ahsay.obs.core.dbs.DbsException",
        "Message": "[Error] Parameter LoginName is invalid: \u2018obm\\u0000\u2019",
    }
    body = {**_valid(vendor_job, "GetBackupJobReportSummary"), "SysUser": "system\u0000"}
    answer = _check(client.post(_url("GetBackupJobReportSummary"), json=body))
    assert answer["Message"] == "Incorrect system username/password"


def test_hostile_passwords(client: TestClient, state: ServerState, vendor_job: VendorJob) -> None:
    from opencbs.reports.vocabulary import SystemRole
    from opencbs.store import users

    with state.db.write() as conn:
        users.add_system_user(conn, "victim", "victim-secret", SystemRole.ADMIN)
    for value in [*SQL, "\u0000", "victim-secret\u0000", "p" * 100_000, *WRONG_TYPES]:
        body = {
            **_valid(vendor_job, "GetBackupJobReportSummary"),
            "SysUser": "victim",
            "SysPwd": value,
        }
        body = _check(client.post(_url("GetBackupJobReportSummary"), json=body), value)
        assert body["Message"] == "Incorrect system username/password"
    _survived(client, state, vendor_job)


def test_wrong_type_for_every_parameter(
    client: TestClient, state: ServerState, vendor_job: VendorJob
) -> None:
    for name in NAMES:
        base = _valid(vendor_job, name)
        for param in base:
            for value in WRONG_TYPES:
                _check(client.post(_url(name), json={**base, param: value}), (name, param, value))
    _survived(client, state, vendor_job)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(NAMES),
    authenticated=st.booleans(),
    chosen=st.dictionaries(
        st.sampled_from(
            sorted({p.name for c in CALLS.values() for p in c.params} - {"SysUser", "SysPwd"})
        )
        | st.text(max_size=8),
        _JSON,
        max_size=8,
    ),
)
def test_any_json_object_gets_an_envelope(
    client: TestClient,
    vendor_job: VendorJob,
    name: str,
    authenticated: bool,
    chosen: dict[str, Any],
) -> None:
    body = dict(chosen)
    if authenticated:
        body.update({"SysUser": ADMIN[0], "SysPwd": ADMIN[1]})
    else:
        body.pop("SysPwd", None)
    _check(client.post(_url(name), json=body), body)
