"""The real command line and the real server, as processes (SQLite in a temp data directory).

Every subprocess is the venv's ``opencbs`` script and is killed in a ``finally``.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.serving import OPENCBS, TIMEOUT, add_sysuser, isolated_env, ok, run, serving


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    env: dict[str, str]
    demo: dict[str, Any]
    auth: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``opencbs demo --no-serve`` (twice: it is idempotent), a system user of our own, then
    ``opencbs serve`` on a free port."""
    env = isolated_env(tmp_path_factory.mktemp("e2e-server"))
    demo = json.loads(ok(env, "demo", "--no-serve", "--json"))
    again = json.loads(ok(env, "demo", "--no-serve", "--json"))
    assert again["created"] == [] and again["sysuser_password"] is None
    assert again["backup_set_id"] == demo["backup_set_id"]
    add_sysuser(env, "monitor", "monitor-pw", "--role", "API_ONLY")
    with serving(env) as srv:
        yield Server(srv.url, srv.port, env, demo, {"SysUser": "monitor", "SysPwd": "monitor-pw"})


def _report_request(srv: Server, job_id: str) -> dict[str, str]:
    return {
        **srv.auth,
        "LoginName": srv.demo["login_name"],
        "BackupSetID": srv.demo["backup_set_id"],
        "DestinationID": srv.demo["destination_id"],
        "BackupJobID": job_id,
    }


# --- the server --------------------------------------------------------------------------


def test_auth_system_user_over_http(server: Server) -> None:
    good = httpx.post(server.url + "/obs/api/json/AuthSystemUser.do", json=server.auth)
    assert good.status_code == 200
    assert good.json() == {"Status": "OK"}
    bad = httpx.post(
        server.url + "/obs/api/json/AuthSystemUser.do",
        json={"SysUser": "monitor", "SysPwd": "wrong"},
    )
    assert bad.status_code == 200
    assert bad.json()["Status"] == "Error"
    assert bad.json()["Message"] == "Incorrect system username/password"


def test_example_report_over_http_is_the_vendors(server: Server) -> None:
    vendor = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "vendor_example_report.json").read_text()
    )["Data"]
    r = httpx.post(
        server.url + "/obs/api/json/GetBackupJobReport.do",
        json=_report_request(server, server.demo["example_job_id"]),
    )
    assert r.status_code == 200
    data = r.json()["Data"]
    assert data["ID"] == vendor["ID"] == server.demo["example_job_id"]
    for key in ("StartTime", "EndTime", "TotalNewFilesSize", "NumOfNewFiles", "Logs"):
        assert data[key] == vendor[key], key


@pytest.mark.parametrize("job_key", ["example_job_id", "second_job_id"])
def test_cli_report_json_equals_the_api(server: Server, job_key: str) -> None:
    job_id = server.demo[job_key]
    api = httpx.post(
        server.url + "/obs/api/json/GetBackupJobReport.do", json=_report_request(server, job_id)
    )
    cli = ok(server.env, "report", job_id, "--user", server.demo["login_name"], "--json")
    assert cli.rstrip("\n").encode() == api.content
    assert json.loads(cli) == api.json()
    assert api.json()["Status"] == "OK"


def test_second_job_was_delivered_with_every_list(server: Server) -> None:
    r = httpx.post(
        server.url + "/obs/api/json/GetBackupJobReport.do",
        json=_report_request(server, server.demo["second_job_id"]),
    )
    data = r.json()["Data"]
    assert data["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    assert data["NumOfWarnEntries"] == 1
    for key in ("new", "upd", "pmt", "del", "mov", "cpy"):
        assert data[key], key
    assert data["NumOfNewFiles"] == 1 and data["NumOfNewDirCount"] == 1


def test_absolute_form_request_target(server: Server) -> None:
    body = json.dumps(_report_request(server, server.demo["example_job_id"])).encode()
    head = (
        f"POST http://127.0.0.1:{server.port}/obs/api/json/GetBackupJobReportSummary.do "
        f"HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200"), raw[:300]
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["Status"] == "OK"
    assert answer["Data"]["ID"] == server.demo["example_job_id"]


def test_demo_prints_a_curl_for_the_example(server: Server) -> None:
    curl = server.demo["curl"]
    assert curl.startswith("curl ") and "GetBackupJobReport.do" in curl
    assert server.demo["example_job_id"] in curl and server.demo["backup_set_id"] in curl


# --- the administration commands ---------------------------------------------------------


def test_users_and_sets_from_the_command_line(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    ok(env, "sysuser", "add", "ops", "--role", "ADMIN", "--password-stdin", stdin="s3cret-ops-pw\n")
    generated = run(env, "sysuser", "add", "robot", "--role", "READ_ONLY_API")
    assert generated.returncode == 0, generated.stderr
    assert len(generated.stdout.strip()) >= 16  # the generated password, printed once
    assert generated.stdout.strip() not in generated.stderr
    listed = json.loads(ok(env, "sysuser", "list", "--json"))
    assert [(u["Name"], u["Role"]) for u in listed] == [
        ("ops", "ADMIN"),
        ("robot", "READ_ONLY_API"),
    ]
    ok(env, "sysuser", "passwd", "ops", "--password-stdin", stdin="n3w-ops-password\n")

    ok(
        env,
        "user",
        "add",
        "alice",
        "--alias",
        "Alice",
        "--email",
        "a@example.org",
        "--quota",
        "1048576",
        "--password-stdin",
        stdin="alice-pw\n",
    )
    (row,) = json.loads(ok(env, "user", "list", "--json"))
    assert (row["LoginName"], row["Alias"], row["Quota"]) == ("alice", "Alice", 1048576)
    assert isinstance(row["UserId"], str)

    src, dest = tmp_path / "src", tmp_path / "repo"
    src.mkdir()  # a new set's sources must exist
    added = json.loads(
        ok(
            env,
            "set",
            "add",
            "alice",
            "Docs",
            "--source",
            str(src),
            "--destination",
            str(dest),
            "--exclude",
            "*.tmp",
            "--json",
        )
    )
    (listed_set,) = json.loads(ok(env, "set", "list", "alice", "--json"))
    assert listed_set == added
    assert added["Type"] == "FILE"
    assert added["Settings"]["sources"] == [str(src)]
    assert added["Settings"]["filters"]["exclude"] == ["*.tmp"]
    (d,) = added["DestinationList"]
    assert d["Type"] == "LOCAL" and d["Settings"] == {"path": str(dest)}
    assert (tmp_path / "data" / "opencbs.db").is_file()


def test_version() -> None:
    res = subprocess.run(
        [OPENCBS, "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert res.returncode == 0 and "opencbs" in res.stdout


# --- errors ------------------------------------------------------------------------------


def _assert_one_line_error(res: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("opencbs: error: ") and message in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    _assert_one_line_error(
        run(env, "report", "2024-01-01-00-00-00", "--user", "nobody"),
        4,
        "User \u2018nobody\u2019 not found.",
    )
    _assert_one_line_error(
        run(env, "user", "add", "bob", "--password-stdin", stdin=""), 2, "no password"
    )
    _assert_one_line_error(
        run(env, "--config", str(tmp_path / "missing.toml"), "user", "list"), 2, "does not exist"
    )
    _assert_one_line_error(
        run({**env, "OPENCBS_PORT": "eighty"}, "serve"), 2, "invalid setting port"
    )
    _assert_one_line_error(run(env, "sysuser", "add", "x", "--bogus"), 2, "--bogus")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = run(
        isolated_env(tmp_path), "--debug", "report", "2024-01-01-00-00-00", "--user", "nobody"
    )
    assert res.returncode == 4
    assert "Traceback" in res.stderr
    assert "opencbs: error: " in res.stderr


def test_serve_on_a_busy_or_foreign_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        res = run(env, "serve", "--port", str(port))
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines()[0] == (
        f"opencbs: error: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert res.stderr.splitlines()[1].startswith("hint: ") and "--port" in res.stderr
    assert len(res.stderr.splitlines()) == 2, res.stderr
    # an address that is not this machine's (TEST-NET-1, RFC 5737)
    res = run(env, "serve", "--host", "192.0.2.1", "--port", str(port))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"opencbs: error: cannot listen on 192.0.2.1:{port}: ")
    assert len(res.stderr.splitlines()) == 2 and "--host" in res.stderr, res.stderr


def test_user_names_are_checked_and_owners_must_be_resellers(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    for bad, why in [
        ("a\nb", "control character"),
        ("a/b", "'/'"),
        (" alice", "space"),
        ("evil\x1b]0;x\x07", "control character"),
    ]:
        res = run(env, "user", "add", bad, "--password-stdin", stdin="long-enough-pw\n")
        assert res.returncode == 2, (bad, res.stderr)
        assert why in res.stderr and "\x1b" not in res.stderr, res.stderr
        res = run(
            env,
            "sysuser",
            "add",
            bad,
            "--role",
            "ADMIN",
            "--password-stdin",
            stdin="long-enough-pw\n",
        )
        assert res.returncode == 2 and why in res.stderr, (bad, res.stderr)
    ok(
        env,
        "sysuser",
        "add",
        "ops",
        "--role",
        "ADMIN",
        "--password-stdin",
        stdin="long-enough-pw\n",
    )
    for owner in ("nosuch", "ops"):
        res = run(
            env,
            "user",
            "add",
            "bob",
            "--owner",
            owner,
            "--password-stdin",
            stdin="long-enough-pw\n",
        )
        assert res.returncode == 2, res.stderr
        assert f"owner {owner!r} is not a reseller" in res.stderr
    ok(
        env,
        "sysuser",
        "add",
        "res1",
        "--role",
        "RESELLER",
        "--password-stdin",
        stdin="long-enough-pw\n",
    )
    ok(env, "user", "add", "bob", "--owner", "res1", "--password-stdin", stdin="long-enough-pw\n")
    assert json.loads(ok(env, "user", "list", "--json"))[0]["Owner"] == "res1"
