"""The login lockout over a real ``opencbs serve`` (SQLite): parallel guessers lock an account,
its right password is then refused, an administrator sees the lock (CLI) and lifts it (admin
API, then CLI from another process), and the server's log names each lockout and unlock."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.serving import add_sysuser, isolated_env, ok, serving

LIMIT = 3


def _auth(url: str, name: str, password: str) -> httpx.Response:
    return httpx.post(
        url + "/obs/api/json/AuthSystemUser.do",
        json={"SysUser": name, "SysPwd": password},
        timeout=60,
    )


def _locked(env: dict[str, str]) -> list[tuple[str, str]]:
    return [(x["kind"], x["key"]) for x in json.loads(ok(env, "lockout", "list", "--json"))]


def test_lockout_and_unlock_over_http(tmp_path: Path) -> None:
    env = isolated_env(
        tmp_path,
        OPENCBS_LOCKOUT_FAILURES=str(LIMIT),
        OPENCBS_ADDRESS_FAILURES="1000",
        OPENCBS_HASH_WAIT_SECONDS="120",  # a slow shared machine: no "try later" here
    )
    add_sysuser(env, "ops", "ops-secret")
    add_sysuser(env, "monitor", "monitor-secret", "--role", "API_ONLY")
    with serving(env, log=tmp_path / "serve.log", stop=signal.SIGTERM) as srv:
        url = srv.url
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda i: _auth(url, "monitor", f"stale-{i}"), range(20)))
        assert {(r.status_code, r.json()["Status"]) for r in answers} == {(200, "Error")}
        assert _auth(url, "monitor", "monitor-secret").json()["Status"] == "Error"  # locked
        assert _locked(env) == [("sysuser", "monitor")]

        admin = httpx.BasicAuth("ops", "ops-secret")
        listed = httpx.get(url + "/api/admin/v1/lockouts", auth=admin, timeout=60).json()
        assert [x["key"] for x in listed["lockouts"]] == ["monitor"]
        r = httpx.delete(url + "/api/admin/v1/lockouts/sysuser/monitor", auth=admin, timeout=60)
        assert r.status_code == 200
        assert _auth(url, "monitor", "monitor-secret").json() == {"Status": "OK"}

        for i in range(LIMIT):  # locked again; lifted by the command line, another process
            _auth(url, "monitor", f"again-{i}")
        assert _locked(env) == [("sysuser", "monitor")]
        ok(env, "lockout", "clear", "--sysuser", "monitor")
        assert _auth(url, "monitor", "monitor-secret").json() == {"Status": "OK"}
    log = (tmp_path / "serve.log").read_text()
    locks = [line for line in log.splitlines() if "login lockout:" in line]
    assert len(locks) == 2, log
    assert all("WARNING" in x and "'monitor'" in x and "127.0.0.1" in x for x in locks)
    assert "login lockout cleared: sysuser 'monitor', by admin 'ops' from 127.0.0.1" in log
    assert "stale-" not in log and "monitor-secret" not in log
