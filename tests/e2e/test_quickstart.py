"""``opencbs quickstart`` as a real process: it backs up a real tree, and the curl it prints,
sent to a real ``opencbs serve`` of the same data directory, returns that job's report; a rerun
after changing one file is an incremental job with one update, even while the port is taken."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.e2e.serving import OPENCBS, TIMEOUT, free_port, isolated_env, run, serving


def _env(root: Path) -> dict[str, str]:
    """HOME and the XDG directories in ``root``: the default data directory is used."""
    env = isolated_env(root)
    del env["OPENCBS_DATA_DIR"]
    return env


def _quickstart(env: dict[str, str], tree: Path, port: int) -> str:
    res = run(env, "quickstart", str(tree), "--no-serve", "--port", str(port))
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
    files = {
        "a.txt": b"alpha\n",
        "b.bin": os.urandom(70_000),
        "docs/c.md": b"# c\n" * 50,
        "docs/deep/d.txt": b"",
        "docs/deep/e.txt": b"echo " * 1000,
    }
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

    with serving(env, port=port):
        data = _report(url, body)
        assert data["ID"] == body["BackupJobID"]
        assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
        assert data["NumOfNewFiles"] == n_files
        assert data["NumOfUpdatedFiles"] == 0

        # a rerun while `opencbs serve` of this data directory holds the port: it is used
        (tree / "docs" / "c.md").write_bytes(b"# c, changed\n")
        second = _quickstart(env, tree, port)
        assert "already answers on" in second
        assert "temporary port" not in second
        assert "system user 'admin' exists" in second
        url2, body2 = _curl(second)
        assert body2["SysPwd"] == "<password of admin>"
        assert body2["BackupJobID"] != body["BackupJobID"]
        assert (body2["BackupSetID"], body2["DestinationID"]) == (
            body["BackupSetID"],
            body["DestinationID"],
        )
        data2 = _report(url, {**body2, "SysPwd": admin_password})
        assert data2["BackupJobStatus"] == "BS_STOP_SUCCESS"
        assert (data2["NumOfUpdatedFiles"], data2["NumOfNewFiles"]) == (1, 0)
        assert [e["Name"] for e in data2["upd"]] == [str(tree / "docs" / "c.md")]
        assert url2 == url  # the server that holds the port serves the report
        assert f'server_url = "http://127.0.0.1:{port}"' in agent_toml.read_text()


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of ``stream`` as they come (``None`` at its end), read by a thread."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _until(q: queue.Queue[str | None], prefix: str, seen: list[str]) -> str:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line is not None, "".join(seen)
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError("no line " + prefix + " in " + "".join(seen))


def _serve_quickstart(
    env: dict[str, str], tree: Path, port: int, sig: signal.Signals, admin_password: str = ""
) -> tuple[str, int, str]:
    """Quickstart WITHOUT --no-serve: wait for "serving on", fetch the printed curl's report
    while it serves, then send ``sig``; returns (stdout, exit code, stderr)."""
    proc = subprocess.Popen(
        [OPENCBS, "quickstart", str(tree), "--port", str(port)],
        env={**env, "PYTHONUNBUFFERED": "1"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        q = _lines(proc.stdout)
        seen: list[str] = []
        _until(q, "curl ", seen)
        serving = _until(q, "serving on ", seen)
        url, body = _curl("".join(seen))
        assert serving.split()[2] in url
        assert proc.poll() is None  # still serving
        if body["SysPwd"].startswith("<"):
            body["SysPwd"] = admin_password
        data = _report(url, body)
        assert data["ID"] == body["BackupJobID"]
        assert data["BackupJobStatus"] == "BS_STOP_SUCCESS"
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        return "".join(seen) + proc.stdout.read(), code, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_quickstart_serves_after_the_backup_until_a_signal(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tree = tmp_path / "tree"
    _tree(tree)
    port = free_port()
    out, code, err = _serve_quickstart(env, tree, port, signal.SIGINT)
    assert code == 130, (out, err)  # Ctrl-C: interrupted (README, exit codes)
    assert "opencbs: error" not in err  # a stop, not an error
    assert f"serving on http://127.0.0.1:{port}" in out
    assert "Traceback" not in err
    (tree / "a.txt").write_bytes(b"alpha, changed\n")
    out, code, err = _serve_quickstart(env, tree, port, signal.SIGTERM, _curl(out)[1]["SysPwd"])
    assert code == 0, (out, err)  # SIGTERM: how a service manager stops a server
    assert "Traceback" not in err
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)


def test_quickstart_port_held_by_another_program_is_temporary(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tree = tmp_path / "tree"
    _tree(tree)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out, code, err = _serve_quickstart(env, tree, port, signal.SIGTERM)
    assert code == 0, (out, err)
    assert f"port {port} is in use by another program" in err
    assert "temporary port" in err
    url, _ = _curl(out)
    assert f":{port}/" not in url  # the curl names the port it served on, while it served
    agent_toml = tmp_path / "home" / ".local" / "share" / "opencbs" / "agent.toml"
    assert f'server_url = "http://127.0.0.1:{port}"' in agent_toml.read_text()
