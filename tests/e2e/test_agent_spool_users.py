"""The report spool with real processes: one spool per server and backup user (bob never sees,
uses or drops alice's spooled report or remembered sets), reports of the earlier layout go to
their own user, and an agent data_dir that cannot hold the spool is a clear error (exit 7)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.serving import Serve, add_sysuser, add_user, free_port, isolated_env, ok, run
from tests.e2e.test_lost_server import LOGIN, MONITOR, PASSWORD, _agent_env, _jobs

BOB, BOB_PASSWORD = "bob", "bob-secret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Serve]:
    env = isolated_env(tmp_path / "root")
    for login, password in ((LOGIN, PASSWORD), (BOB, BOB_PASSWORD)):
        add_user(env, login, password)
    add_sysuser(env, MONITOR["SysUser"], MONITOR["SysPwd"], "--role", "API_ONLY")
    running = Serve(env, free_port())
    running.start()
    try:
        yield running
    finally:
        running.kill()


def _bob_env(serve: Serve) -> dict[str, str]:
    return {
        **_agent_env(serve, serve.url),
        "OPENCBS_LOGIN_NAME": BOB,
        "OPENCBS_PASSWORD": BOB_PASSWORD,
    }


def test_spooled_reports_and_remembered_sets_are_per_user(server: Serve, tmp_path: Path) -> None:
    serve = server
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    alice = _agent_env(serve, serve.url)
    bob = _bob_env(serve)
    first = json.loads(
        ok(
            alice,
            "backup",
            "--set",
            "S1",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--json",
        )
    )
    set_id = first["backup_set_id"]
    ok(
        bob,
        "backup",
        "--set",
        "B1",
        "--source",
        str(src),
        "--destination",
        str(tmp_path / "bobdest"),
        "--json",
    )  # bob's sets are remembered too

    serve.kill()
    (src / "b.txt").write_bytes(b"beta")
    res = run(alice, "backup", "--set", "S1", "--json")
    assert res.returncode == 0, res.stderr
    spool = Path(json.loads(res.stdout)["report_spool"])
    assert spool.parent.name.startswith(f"{LOGIN}-")
    # bob cannot back up alice's set from remembered sets: he never saw it
    refused = run(bob, "backup", "--set", set_id, "--json")
    assert refused.returncode == 4, refused.stderr  # not found among bob's sets: only B1
    assert "'B1'" in refused.stderr and "'S1'" not in refused.stderr

    serve.start()
    done = run(bob, "agent", "flush")
    assert (done.returncode, done.stdout.strip()) == (0, "nothing to deliver"), done.stderr
    assert spool.is_dir()  # alice's report: untouched by bob

    # the earlier layout: alice's folder directly under <data_dir>/agent-spool
    legacy = spool.parent.parent / spool.name
    shutil.move(spool, legacy)
    kept = run(bob, "agent", "flush")
    assert kept.returncode == 0, kept.stderr
    assert "1 report spooled by an earlier opencbs" in kept.stderr and legacy.is_dir()
    delivered = run(alice, "agent", "flush", "--json")
    assert delivered.returncode == 0, delivered.stderr
    rows = json.loads(delivered.stdout)
    assert [r["state"] for r in rows] == ["delivered"] and not legacy.exists()
    assert sorted(_jobs(serve.url, set_id)) == sorted([first["job_id"], rows[0]["job_id"]])


def test_a_data_dir_that_cannot_hold_the_spool_is_a_clear_error(
    server: Serve, tmp_path: Path
) -> None:
    serve = server
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {**_agent_env(serve, serve.url), "OPENCBS_DATA_DIR": str(blocker / "data")}
    res = run(
        env, "backup", "--set", "S1", "--source", str(src), "--destination", str(tmp_path / "dest")
    )
    assert res.returncode == 7, res.stdout + res.stderr
    assert "opencbs: error: cannot create the report spool" in res.stderr
    assert "internal error" not in res.stderr and "this is a bug" not in res.stderr
    assert "OPENCBS_DATA_DIR" in res.stderr and "data_dir" in res.stderr
