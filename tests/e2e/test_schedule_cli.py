"""The schedule commands as processes against a real database, and the same schedules seen
through a real ``opencbs serve`` (cbs-api.md §13): ``opencbs schedule add|list|remove`` and
``opencbs set timezone``, their errors (one line, a hint, the exit code of ``ExitCode``), and
what AddSchedule / GetBackupSet show of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from opencbs.errors import ExitCode
from tests.e2e.serving import add_sysuser, add_user, isolated_env, ok, run, serving

ADMIN = {"SysUser": "admin", "SysPwd": "admin-password"}


def _cbs(url: str, name: str, **params: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/obs/api/json/{name}.do", json={**ADMIN, **params}, timeout=30)
    body: dict[str, Any] = r.json()
    assert body["Status"] == "OK", body
    return body


def _listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(env, "schedule", "list", *args, "--json"))
    return rows


def test_schedule_commands(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    add_user(env, "alice", "alice-password")
    add_sysuser(env, ADMIN["SysUser"], ADMIN["SysPwd"])
    set_id = ok(
        env, "set", "add", "alice", "Docs", "--source", str(tmp_path), "--destination",
        str(tmp_path / "dest"),
    ).split()[0]  # fmt: skip

    nightly_id = ok(env, "schedule", "add", "alice", "Docs", "--type", "daily", "--at", "22:00")
    office = json.loads(
        ok(
            env, "schedule", "add", "alice", set_id, "--type", "weekly", "--at", "08:00",
            "--days", "mon,fri", "--every", "60", "--stop-after", "10", "--name", "Office",
            "--no-retention-after", "--json",
        )
    )  # fmt: skip
    assert office["Schedule"]["weekdays"] == ["MONDAY", "FRIDAY"]
    assert office["Schedule"]["retention_after"] is False
    assert office["Description"] == "MONDAY, FRIDAY at 08:00, every 60 min for 10 h"
    ok(
        env, "schedule", "add", "alice", "Docs", "--type", "monthly", "--at", "23:30",
        "--week-of-month", "last", "--days", "fri", "--name", "Last Friday", "--disabled",
    )  # fmt: skip

    # errors: one line and a hint, each with its exit code
    for args, code, said in (
        (["--type", "weekly", "--at", "08:00"], ExitCode.INVALID, "a WEEKLY schedule needs --days"),
        (["--type", "daily", "--at", "24:00"], ExitCode.INVALID, "not a time of day"),
        (["--type", "daily", "--at", "22:00"], ExitCode.CONFLICT, "named 'daily 22:00' already"),
    ):
        res = run(env, "schedule", "add", "alice", "Docs", *args)
        assert res.returncode == code, res.stderr
        lines = res.stderr.splitlines()
        assert said in lines[0] and lines[1].startswith("hint: "), res.stderr
    res = run(env, "schedule", "add", "alice", "Nope", "--type", "daily", "--at", "01:00")
    assert res.returncode == ExitCode.NOT_FOUND and "Nope" in res.stderr
    res = run(env, "set", "timezone", "alice", "Docs", "Mars/Olympus")
    assert res.returncode == ExitCode.INVALID and "unknown time zone" in res.stderr

    rows = _listed(env, "alice")
    assert [r["Schedule"]["name"] for r in rows] == ["daily 22:00", "Office", "Last Friday"]
    assert rows[0]["ID"] == nightly_id.strip() and rows[0]["TimeZone"] == "UTC"
    assert rows[0]["NextRun"] % 86_400_000 == 22 * 3_600_000  # 22:00 UTC
    assert rows[2]["NextRun"] is None  # disabled
    assert "every day at 22:00" in ok(env, "schedule", "list", "alice", "Docs")

    assert ok(env, "set", "timezone", "alice", "Docs").strip() == "UTC (the server's)"
    assert ok(env, "set", "timezone", "alice", "Docs", "Asia/Tokyo").strip() == "Asia/Tokyo"
    rows = _listed(env, "alice", "Docs")
    assert rows[0]["TimeZone"] == "Asia/Tokyo"
    assert rows[0]["NextRun"] % 86_400_000 == 13 * 3_600_000  # 22:00 in Tokyo

    with serving(env) as srv:
        got = _cbs(srv.url, "GetBackupSet", LoginName="alice", BackupSetID=set_id)["Data"]
        assert got["TimeZone"] == "Asia/Tokyo"
        assert [s["Name"] for s in got["ScheduleList"]] == ["daily 22:00", "Office", "Last Friday"]
        assert got["ScheduleList"][2]["WeekOfMonth"] == "LAST"
        assert got["ScheduleList"][1]["Time"] == {"Hour": 8, "Minute": 0, "Duration": 10}
        added = _cbs(
            srv.url,
            "AddSchedule",
            LoginName="alice",
            BackupSetID=set_id,
            Name="From the API",
            Type="CUSTOM",
            Date="2031-01-01",
            Time={"Hour": 3, "Minute": 15},
        )["Data"]
    assert _listed(env, "alice")[-1]["ID"] == added["ID"]

    ok(env, "schedule", "remove", "alice", "Docs", "Office")
    ok(env, "schedule", "remove", "alice", set_id, added["ID"])
    res = run(env, "schedule", "remove", "alice", "Docs", "Office")
    assert res.returncode == ExitCode.NOT_FOUND
    assert "hint: see `opencbs schedule list alice Docs`" in res.stderr
    assert [r["Schedule"]["name"] for r in _listed(env, "alice")] == ["daily 22:00", "Last Friday"]
    ok(env, "set", "timezone", "alice", "Docs", "server")
    assert _listed(env, "alice")[0]["TimeZone"] == "UTC"
