"""``opencbs quickstart`` as a real process: it backs up a real tree, and the curl it prints,
sent to a real ``opencbs serve`` of the same data directory, returns that job's report; a rerun
after changing one file is an incremental job with one update, even while the port is taken."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_cli_server import OPENCBS, TIMEOUT, _wait_until_up, free_port


def _env(root: Path) -> dict[str, str]:
    """HOME and the XDG directories in ``root``: the default data directory is used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBS_")}
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), OPENCBS_TIMEZONE="UTC")
    return env


def _quickstart(env: dict[str, str], tree: Path, port: int) -> str:
    res = subprocess.run([OPENCBS, "quickstart", str(tree), "--no-serve", "--port", str(port)],
                         capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    return res.stdout + "\n" + res.stderr


def _curl(output: str) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body of the printed curl command."""
    (line,) = [x for x in output.splitlines() if x.startswith("curl ")]
    argv = shlex.split(line)
    url = next(a for a in argv if a.startswith("http://"))
    body = argv[argv.index("-d") + 1]
    doc: dict[str, Any] = json.loads(body)
    return url, doc


def _report(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == 200
    answer: dict[str, Any] = r.json()
    assert answer["Status"] == "OK", answer
    data: dict[str, Any] = answer["Data"]
    return data


def _tree(root: Path) -> int:
    """A small tree; returns its number of regular files."""
    (root / "docs" / "deep").mkdir(parents=True)
    files = {"a.txt": b"alpha\n", "b.bin": os.urandom(70_000), "docs/c.md": b"# c\n" * 50,
             "docs/deep/d.txt": b"", "docs/deep/e.txt": b"echo " * 1000}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return len(files)


def test_quickstart_backs_up_and_its_curl_returns_the_report(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tree = tmp_path / "tree"
    n_files = _tree(tree)
    port = free_port()

    first = _quickstart(env, tree, port)
    url, body = _curl(first)
    assert url == f"http://127.0.0.1:{port}/obs/api/json/GetBackupJobReport.do"
    assert body["SysUser"] == "admin" and not body["SysPwd"].startswith("<")
    admin_password = body["SysPwd"]
    agent_toml = tmp_path / "home" / ".local" / "share" / "opencbs" / "agent.toml"
    assert stat.S_IMODE(agent_toml.stat().st_mode) == 0o600

    server = subprocess.Popen([OPENCBS, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", server)
        data = _report(url, body)
        assert data["ID"] == body["BackupJobID"]
        assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
        assert data["NumOfNewFiles"] == n_files
        assert data["NumOfUpdatedFiles"] == 0

        # a rerun while our server holds the port: a free port is used, said so
        (tree / "docs" / "c.md").write_bytes(b"# c, changed\n")
        second = _quickstart(env, tree, port)
        assert f"port {port} is in use" in second
        assert "system user 'admin' exists" in second
        url2, body2 = _curl(second)
        assert body2["SysPwd"] == "<password of admin>"
        assert body2["BackupJobID"] != body["BackupJobID"]
        assert (body2["BackupSetID"], body2["DestinationID"]) == (
            body["BackupSetID"], body["DestinationID"])
        data2 = _report(url, {**body2, "SysPwd": admin_password})
        assert data2["BackupJobStatus"] == "BS_STOP_SUCCESS"
        assert (data2["NumOfUpdatedFiles"], data2["NumOfNewFiles"]) == (1, 0)
        assert [e["Name"] for e in data2["upd"]] == [str(tree / "docs" / "c.md")]
        assert url2 != url  # it printed the port it served on
    finally:
        server.kill()
        server.wait(timeout=10)
        assert server.stderr is not None
        server.stderr.close()
