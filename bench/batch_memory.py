"""How much one authenticated batch of report entries makes the server grow (issue 11).

Run from the project root::

    .venv/bin/python bench/batch_memory.py

Starts ``opencbs serve`` (SQLite in a temporary data directory), one for each shape, on a
free port of 127.0.0.1, starts jobs through the agent API and sends, for each shape below, one
batch just under the batch byte limit (``opencbs.api.limits.BATCH_BODY``), then prints the
server's peak RSS growth while it parsed, validated and stored that batch (the kernel's high-water
mark ``VmHWM``, reset before each batch through ``/proc/PID/clear_refs``). The shapes are the
worst we know: 10,000 entries (the count limit) with paths as long as the byte limit lets them
be; paths of the maximum length (32,767 characters); the same with one character outside the
Basic Multilingual Plane per path (Python then holds 4 bytes per character); moves (two paths per
entry). Goal: every shape under 64 MiB.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from opencbs.api.limits import BATCH_BODY
from opencbs.model.sets import MAX_PATH

OPENCBS = str(Path(sys.executable).with_name("opencbs"))
ALICE = ("alice", "alice-pw")
MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _peak_growth(pid: int, send: Callable[[], None]) -> tuple[int, int]:
    """(RSS before, peak growth) in bytes while ``send()`` runs."""
    time.sleep(0.3)
    status = Path(f"/proc/{pid}/status")

    def field(name: str) -> int:
        (line,) = [x for x in status.read_text().splitlines() if x.startswith(name + ":")]
        return int(line.split()[1]) * 1024

    base = field("VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    send()
    time.sleep(0.3)
    return base, field("VmHWM") - base


def _entries(shape: str, limit: int) -> list[dict[str, object]]:
    """The entries of one shape, their JSON just under ``limit`` bytes."""
    if shape == "10k-entries":
        length = min(MAX_PATH, (limit - 1000) // 10_000 - 60)
        return [{"list": "new", "type": "F", "path": f"/{i:05}" + "p" * (length - 6)}
                for i in range(10_000)]  # fmt: skip
    if shape == "10k-moves":
        length = min(MAX_PATH, ((limit - 1000) // 10_000 - 80) // 2)
        return [{"list": "mov", "type": "F", "path": f"/{i:05}" + "p" * (length - 6),
                 "from_path": f"/{i:05}" + "q" * (length - 6)} for i in range(10_000)]  # fmt: skip
    astral = shape == "max-paths-astral"
    path = "/" + "p" * (MAX_PATH - 2) + ("\U0001f600" if astral else "p")
    size = len(json.dumps({"list": "new", "type": "F", "path": path}, ensure_ascii=False)) + 4
    count = (limit - 100) // (size + 8)
    return [{"list": "new", "type": "F", "path": f"/{i:05}{path[6:]}"} for i in range(count)]


SHAPES = ("10k-entries", "10k-moves", "max-paths", "max-paths-astral")


def _run(url: str, pid: int, shape: str) -> None:
    """Start a job, send one batch of ``shape``, print its row."""
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()}
    client = httpx.Client(base_url=url + "/api/agent/v1", headers=auth, timeout=120)
    (bset,) = client.get("/backup-sets").json()
    jobs = f"/backup-sets/{bset['id']}/destinations/{bset['destinations'][0]['id']}/jobs"
    job = client.post(jobs, json={}).json()["job_id"]
    entries = _entries(shape, BATCH_BODY)
    body = json.dumps({"entries": entries}, ensure_ascii=False, separators=(",", ":")).encode()
    answer: list[httpx.Response] = []

    def send() -> None:
        answer.append(client.put(f"{jobs}/{job}/batches/0", content=body,
                                 headers={"Content-Type": "application/json"}))  # fmt: skip

    base, growth = _peak_growth(pid, send)
    print(f"{shape:<18} {len(entries):>8} {len(body) / MiB:>9.2f} "
          f"{answer[0].status_code:>6} {base / MiB:>8.1f} {growth / MiB:>11.1f}")  # fmt: skip


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(f"batch limit {BATCH_BODY} bytes ({BATCH_BODY / MiB:.1f} MiB); one fresh server a shape")
    head = ("shape", "entries", "body MiB", "status", "RSS MiB", "growth MiB")
    print(f"{head[0]:<18} {head[1]:>8} {head[2]:>9} {head[3]:>6} {head[4]:>8} {head[5]:>11}")
    for shape in SHAPES:
        _one_server(shape)


def _one_server(shape: str) -> None:
    """A fresh data directory and server for one shape."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBS_")}
        env.update(HOME=str(root), OPENCBS_DATA_DIR=str(root / "data"), OPENCBS_TIMEZONE="UTC")

        def cli(*a: str, stdin: str = "") -> None:
            subprocess.run([OPENCBS, *a], env=env, input=stdin, text=True, check=True,
                           capture_output=True)  # fmt: skip

        cli("user", "add", ALICE[0], "--password-stdin", stdin=ALICE[1] + "\n")
        cli("set", "add", "alice", "Docs", "--source", tmp, "--destination", str(root / "r"))
        port = _free_port()
        proc = subprocess.Popen([OPENCBS, "serve", "--port", str(port)],
                                env=env, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(url + "/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            _run(url, proc.pid, shape)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
