"""Paths that are not UTF-8 as set sources, and malformed server addresses, through the real CLI
and a real ``opencbs serve``: refused where they enter (exit 2, one line and a hint), never an
internal error, and never the end of the user's other backups."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opencbs.model.sets import BackupSetSettings
from opencbs.settings import sqlite_url
from opencbs.store import users
from opencbs.store.db import Database
from opencbs.store.schema import backup_sets
from tests.e2e.serving import add_user, agent_env, isolated_env, ok, run, serving

LOGIN, PASSWORD, ENCRYPTION = "alice", "alice-pw", "repo-secret"
BAD = "\udcff"  # the byte 0xff of a command line that is not UTF-8 (surrogateescape)


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]
    data: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("set-text")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    with serving(env) as srv:
        yield Server(
            srv.url,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
            root / "data",
        )


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, text: str) -> list[str]:
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("opencbs: error: ") and text in lines[0], lines[0]
    assert lines[1].startswith("hint: ")
    return lines


def _first_set(srv: Server, tmp_path: Path, name: str) -> Path:
    """Set ``name`` of a source holding a name that is not UTF-8 (that one is fine), backed up
    once."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"ok")
    with open(os.fsencode(src) + b"/name-\xff\xfe", "wb") as f:
        f.write(b"not utf-8 inside: fine")
    job = json.loads(
        ok(
            srv.env,
            "backup",
            "--set",
            name,
            "--source",
            str(src),
            "--destination",
            str(tmp_path / "d1"),
            "--json",
        )
    )
    assert job["status"] == "BS_STOP_SUCCESS", job
    return src


def test_a_source_that_is_not_utf8_is_refused_where_it_enters(
    server: Server, tmp_path: Path
) -> None:
    _first_set(server, tmp_path, "S1")
    bad_src = str(tmp_path / f"bad{BAD}")
    os.mkdir(os.fsencode(bad_src))

    # the agent, creating a set: nothing on the server, nothing on disk
    dest6 = tmp_path / "dest6"
    lines = _one_line_error(
        run(server.env, "backup", "--set", "NB", "--source", bad_src, "--destination", str(dest6)),
        2,
        f"--source {tmp_path}/bad\\xff is not a valid UTF-8 path",
    )
    assert "rename" in lines[1] and "parent folder as --source" in lines[1]
    assert not dest6.exists()
    _one_line_error(run(server.env, "backup", "--set", "NB"), 4, "no backup set 'NB'")
    _one_line_error(
        run(
            server.env,
            "backup",
            "--set",
            "NB",
            "--source",
            str(tmp_path / "src"),
            "--destination",
            str(tmp_path / f"d{BAD}"),
        ),
        2,
        "--destination",
    )
    _one_line_error(
        run(server.env, "backup", "--set", "S1", "--add-destination", str(tmp_path / f"d{BAD}")),
        2,
        "--add-destination",
    )

    # the administrator
    lines = _one_line_error(
        run(
            server.env,
            "set",
            "add",
            LOGIN,
            "NB2",
            "--source",
            bad_src,
            "--destination",
            str(tmp_path / "dest7"),
        ),
        2,
        "is not a valid UTF-8 path",
    )
    assert "rename" in lines[1]
    listed = json.loads(ok(server.env, "set", "list", LOGIN, "--json"))
    assert "NB2" not in [s["Name"] for s in listed]

    # the user's backups go on
    job = json.loads(ok(server.env, "backup", "--set", "S1", "--json"))
    assert job["status"] == "BS_STOP_SUCCESS", job


def test_a_set_stored_with_such_a_source_breaks_nothing(server: Server, tmp_path: Path) -> None:
    _first_set(server, tmp_path, "S2")
    # as an earlier version stored it (the checks are bypassed)
    db = Database(sqlite_url(server.data / "opencbs.db"))
    try:
        with db.write() as conn:
            owner = users.find_backup_user(conn, LOGIN)
            assert owner is not None
            conn.execute(
                backup_sets.insert().values(
                    id=7,
                    user_id=owner.id,
                    name="OLD",
                    type="FILE",
                    settings={**BackupSetSettings().as_json(), "sources": [f"/tmp/old{BAD}"]},
                    removed=False,
                    created_at=7,
                )
            )
    finally:
        db.dispose()
    listed = json.loads(ok(server.env, "set", "list", LOGIN, "--json"))
    old = next(s for s in listed if s["Name"] == "OLD")
    assert old["Settings"]["sources"] == ["/tmp/old\\xff"]
    assert "/tmp/old\\xff" in ok(server.env, "set", "list", LOGIN)
    job = json.loads(ok(server.env, "backup", "--set", "S2", "--json"))  # another set
    assert job["status"] == "BS_STOP_SUCCESS", job


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "http://[::1]:0"])
def test_a_malformed_server_address_is_exit_2(server: Server, url: str) -> None:
    env = {**server.env, "OPENCBS_SERVER_URL": ""}
    for args in (("backup", "--set", "S1"), ("agent", "flush")):
        lines = _one_line_error(run(env, *args, "--server", url), 2, "invalid setting server_url")
        assert "--server" in lines[1]
    lines = _one_line_error(
        run({**server.env, "OPENCBS_SERVER_URL": url}, "agent", "flush"),
        2,
        "invalid setting server_url",
    )
    assert "OPENCBS_SERVER_URL" in lines[1]
