"""Every row of the error table of cbs-api.md §3, and the single credentials answer of §2."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencbs.api import cbs
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import AccountStatus, SystemRole
from opencbs.store import job_queries, lockouts, users
from opencbs.store.lockouts import LockKind
from opencbs.store.util import now_ms
from tests.conftest import ADMIN, VendorJob

CT = "application/json; charset=utf-8"
DBS = "com.ahsay.obs.core.dbs.DbsException"
CRED = ("Incorrect system username/password", "com.ahsay.obs.core.dbs.c")
SUMMARY = "/obs/api/json/GetBackupJobReportSummary.do"


def _req(job: VendorJob, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "SysUser": ADMIN[0],
        "SysPwd": ADMIN[1],
        "LoginName": job.login_name,
        "Owner": "",
        "BackupSetID": job.set_id,
        "DestinationID": job.destination_id,
        "BackupJobID": job.job_id,
        "Cdp": "false",
    }
    body.update(extra)
    return body


def _error(r: Any, status: int = 200) -> tuple[str, str]:
    assert r.status_code == status
    assert r.headers["content-type"] == CT
    body = r.json()
    assert body["Status"] == "Error", body
    assert set(body) == {"Status", "Message", "ExptType"}
    return body["Message"], body["ExptType"]


def test_credentials_rejected(client: TestClient, vendor_job: VendorJob) -> None:
    assert _error(client.post(SUMMARY, json=_req(vendor_job, SysPwd="wrong"))) == CRED


def test_parameter_missing(client: TestClient, vendor_job: VendorJob) -> None:
    for name in ("LoginName", "BackupSetID", "BackupJobID"):
        for how in ("absent", "empty"):
            body = _req(vendor_job)
            if how == "absent":
                del body[name]
            else:
                body[name] = ""
            assert _error(client.post(SUMMARY, json=body)) == (
                f"[Error] Parameter {name} is null / empty!",
                DBS,
            ), (name, how)


def test_parameter_invalid_boolean(client: TestClient, vendor_job: VendorJob) -> None:
    r = client.post(SUMMARY, json=_req(vendor_job, Cdp="maybe"))
    assert _error(r) == ("[Error] Parameter Cdp is invalid: \u2018maybe\u2019", DBS)


def _need(call: str) -> None:
    if call not in cbs.CALLS:
        pytest.skip(f"{call} is not registered yet (cbs-api.md §7 calls are being added)")


def test_parameter_invalid_date(client: TestClient, vendor_job: VendorJob) -> None:
    _need("ListBackupJobStatus")
    r = client.post(
        "/obs/api/json/ListBackupJobStatus.do",
        json={
            "SysUser": ADMIN[0],
            "SysPwd": ADMIN[1],
            "LoginName": vendor_job.login_name,
            "BackupDate": "2024-13-01",
        },
    )
    assert _error(r) == ("[Error] Parameter BackupDate is invalid: \u20182024-13-01\u2019", DBS)


def test_no_job_on_that_day(client: TestClient, vendor_job: VendorJob) -> None:
    _need("ListBackupJobStatus")
    r = client.post(
        "/obs/api/json/ListBackupJobStatus.do",
        json={
            "SysUser": ADMIN[0],
            "SysPwd": ADMIN[1],
            "LoginName": vendor_job.login_name,
            "BackupDate": "2020-01-01",
        },
    )
    assert _error(r) == ("[Error] No Backup Job on that day", DBS)


def test_unknown_backup_user(client: TestClient, vendor_job: VendorJob) -> None:
    r = client.post(SUMMARY, json=_req(vendor_job, LoginName="nobody"))
    assert _error(r) == (
        "[UserCacheManager.NoSuchUserExpt] User \u2018nobody\u2019 not found.",
        "com.ahsay.obs.core.dbs.ai",
    )
    # an Owner that is not the user's owner: not found too (§2)
    r = client.post(SUMMARY, json=_req(vendor_job, Owner="someone"))
    assert _error(r) == (
        f"[UserCacheManager.NoSuchUserExpt] User \u2018{vendor_job.login_name}\u2019 not found.",
        "com.ahsay.obs.core.dbs.ai",
    )


def test_unknown_backup_set(client: TestClient, vendor_job: VendorJob) -> None:
    r = client.post(SUMMARY, json=_req(vendor_job, BackupSetID="1692320086131"))
    assert _error(r) == ("Backup set \u20181692320086131\u2019 not found.", DBS)
    r = client.post(SUMMARY, json=_req(vendor_job, BackupSetID="not-a-number"))
    assert _error(r) == ("Backup set \u2018not-a-number\u2019 not found.", DBS)


def test_unknown_destination(client: TestClient, vendor_job: VendorJob) -> None:
    r = client.post(SUMMARY, json=_req(vendor_job, DestinationID="-169224967006"))
    assert _error(r) == ("Destination \u2018-169224967006\u2019 not found.", DBS)


def test_unknown_backup_job(client: TestClient, vendor_job: VendorJob) -> None:
    r = client.post(SUMMARY, json=_req(vendor_job, BackupJobID="2024-08-23-10-00-36"))
    assert _error(r) == ("Backup job \u20182024-08-23-10-00-36\u2019 not found.", DBS)
    r = client.post(
        "/obs/api/json/GetBackupJobReport.do",
        json=_req(vendor_job, BackupJobID="2024-08-23-10-00-36"),
    )
    assert _error(r) == ("Backup job \u20182024-08-23-10-00-36\u2019 not found.", DBS)


def test_body_not_an_object(client: TestClient) -> None:
    for body in (b"[1, 2]", b'{"SysUser": "system",', b'"a string"', b"42", b"null", b"{]"):
        for content_type in ("application/json", "text/plain;charset=UTF-8", None):
            headers = {"Content-Type": content_type} if content_type else {}
            r = client.post(SUMMARY, content=body, headers=headers)
            assert _error(r) == (
                "[Error] Request body is not a JSON object",
                "org.json.JSONException",
            ), (body, content_type)


def test_unknown_api(client: TestClient) -> None:
    for path, name in (
        ("/obs/api/json/Foo.do", "Foo.do"),
        ("/obs/api/json/2/Foo.do", "Foo.do"),
        ("/obs/api/json/getBackupJobReport.do", "getBackupJobReport.do"),
        ("/obs/api/json/GetBackupJobReport", "GetBackupJobReport"),
    ):
        for r in (
            client.post(path, json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1]}),
            client.get(path),
        ):
            assert _error(r, 404) == (f"[Error] Unknown API \u2018{name}\u2019", DBS), path


def test_unexpected_error_is_500_with_a_logged_reference(
    client: TestClient,
    vendor_job: VendorJob,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(job_queries, "find_job", boom)
    monkeypatch.setattr(job_queries, "find_report_job_fast", boom)
    with caplog.at_level(logging.ERROR):
        for url in (SUMMARY, "/obs/api/json/GetBackupJobReport.do"):
            r = client.post(url, json=_req(vendor_job))
            message, expt = _error(r, 500)
            assert expt == "java.lang.RuntimeException"
            m = re.fullmatch(r"\[Error\] Internal server error \(reference (\S+)\)", message)
            assert m, message
            assert "secret" not in r.text and "Traceback" not in r.text
            assert m.group(1) in caplog.text
    monkeypatch.undo()
    assert client.post(SUMMARY, json=_req(vendor_job)).json()["Status"] == "OK"


# --- §2: one answer for every credentials failure ---------------------------------------------


def _add(state: ServerState, name: str, password: str, role: SystemRole) -> None:
    with state.db.write() as conn:
        users.add_system_user(conn, name, password, role)


def test_every_credentials_failure_is_the_same_answer(
    client: TestClient, state: ServerState, vendor_job: VendorJob
) -> None:
    _add(state, "viewer", "viewer-secret", SystemRole.READ_ONLY_ADMIN)
    _add(state, "susp", "susp-secret", SystemRole.ADMIN)
    _add(state, "locky", "locky-secret", SystemRole.ADMIN)
    with state.db.write() as conn:
        users.set_system_status(conn, "susp", AccountStatus.SUSPENDED)
    for _ in range(state.auth_cache.policy.account_failures):
        r = client.post(SUMMARY, json=_req(vendor_job, SysUser="locky", SysPwd="nope"))
        assert _error(r) == CRED
    answers = {
        "wrong password": client.post(SUMMARY, json=_req(vendor_job, SysPwd="wrong")),
        "unknown user": client.post(SUMMARY, json=_req(vendor_job, SysUser="ghost")),
        "read-only admin": client.post(
            SUMMARY, json=_req(vendor_job, SysUser="viewer", SysPwd="viewer-secret")
        ),
        "suspended": client.post(
            SUMMARY, json=_req(vendor_job, SysUser="susp", SysPwd="susp-secret")
        ),
        "locked": client.post(
            SUMMARY, json=_req(vendor_job, SysUser="locky", SysPwd="locky-secret")
        ),
        "no SysUser": client.post(
            SUMMARY, json={k: v for k, v in _req(vendor_job).items() if k != "SysUser"}
        ),
    }
    reference = answers["wrong password"]
    assert _error(reference) == CRED
    for name, r in answers.items():
        assert r.status_code == reference.status_code, name
        assert r.headers["content-type"] == reference.headers["content-type"], name
        assert r.content == reference.content, name
    with state.db.read() as conn:
        locked = lockouts.list_lockouts(conn, now_ms())
    assert [(x.kind, x.key) for x in locked] == [(LockKind.SYSUSER, "locky")]
    # the suspended user's password was really right: it works once the account is enabled
    with state.db.write() as conn:
        users.set_system_status(conn, "susp", AccountStatus.ENABLE)
    r = client.post(SUMMARY, json=_req(vendor_job, SysUser="susp", SysPwd="susp-secret"))
    assert r.json()["Status"] == "OK"


def test_lock_ends_after_the_lock_time(
    client: TestClient,
    state: ServerState,
    vendor_job: VendorJob,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opencbs.api import auth
    from opencbs.store import util

    _add(state, "locky", "locky-secret", SystemRole.API_ONLY)
    right = _req(vendor_job, SysUser="locky", SysPwd="locky-secret")
    assert client.post(SUMMARY, json=right).json()["Status"] == "OK"  # now in the cache
    for _ in range(state.auth_cache.policy.account_failures):
        client.post(SUMMARY, json=_req(vendor_job, SysUser="locky", SysPwd="nope"))
    assert _error(client.post(SUMMARY, json=right)) == CRED
    real_now = util.now_ms
    lock_ms = state.auth_cache.policy.lock_ms
    monkeypatch.setattr(auth, "now_ms", lambda: real_now() + lock_ms - 60_000)
    assert _error(client.post(SUMMARY, json=right)) == CRED
    monkeypatch.setattr(auth, "now_ms", lambda: real_now() + lock_ms + 60_000)
    assert client.post(SUMMARY, json=right).json()["Status"] == "OK"
    assert client.post(SUMMARY, json=right).json()["Status"] == "OK"
    monkeypatch.undo()
    with state.db.read() as conn:
        locky = users.get_system_user(conn, "locky")
    assert locky is not None and locky.status is AccountStatus.ENABLE


def test_changed_password_fails_at_once_despite_the_cache(
    client: TestClient, state: ServerState, vendor_job: VendorJob
) -> None:
    assert client.post(SUMMARY, json=_req(vendor_job)).json()["Status"] == "OK"
    assert client.post(SUMMARY, json=_req(vendor_job)).json()["Status"] == "OK"  # cached
    with state.db.write() as conn:
        users.set_system_password(conn, ADMIN[0], "brand-new")
    assert _error(client.post(SUMMARY, json=_req(vendor_job))) == CRED
    assert client.post(SUMMARY, json=_req(vendor_job, SysPwd="brand-new")).json()["Status"] == "OK"


def test_reseller_sees_only_its_own_users(
    client: TestClient, state: ServerState, vendor_job: VendorJob
) -> None:
    _add(state, "res1", "res1-secret", SystemRole.RESELLER)
    _add(state, "res2", "res2-secret", SystemRole.RESELLER)
    with state.db.write() as conn:
        users.add_backup_user(conn, "cust2", "cust2-secret", owner="res2")
    as_res1 = {"SysUser": "res1", "SysPwd": "res1-secret"}
    not_found = "[UserCacheManager.NoSuchUserExpt] User \u2018cust2\u2019 not found."
    r = client.post(SUMMARY, json=_req(vendor_job, LoginName="cust2", **as_res1))
    assert _error(r) == (not_found, "com.ahsay.obs.core.dbs.ai")
    r = client.post(SUMMARY, json=_req(vendor_job, LoginName="cust2", Owner="res2", **as_res1))
    assert _error(r) == (not_found, "com.ahsay.obs.core.dbs.ai")
    # the administrators' user too
    r = client.post(SUMMARY, json=_req(vendor_job, **as_res1))
    assert _error(r)[0] == "[UserCacheManager.NoSuchUserExpt] User \u2018obm\u2019 not found."
    # its own reseller gets past the user (the set is not cust2's)
    r = client.post(
        SUMMARY, json=_req(vendor_job, LoginName="cust2", SysUser="res2", SysPwd="res2-secret")
    )
    assert _error(r) == (f"Backup set \u2018{vendor_job.set_id}\u2019 not found.", DBS)
