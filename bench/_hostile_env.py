"""The hostile-load suite's environment (used by ``bench/hostile.py``; not a public entry).

A *target* is the opencbs code under test: the working tree, or another revision exported with
``git archive`` and put first on ``PYTHONPATH`` (as ``bench/agent.py --rev`` does). For each
target a *template* database is built once through public interfaces only (the ``opencbs`` CLI
for accounts and the set, the agent API for a large job), so the same suite runs against any
revision. Every case then gets its own copy of the template (a failed-login counter or a wedged
database of one case never leaks into the next) and its own ``opencbs serve`` on a free port of
127.0.0.1, stopped (killed if need be) when the case ends.

Attackers connect from other loopback source addresses (127.0.x.y, x ≥ 1) than the legitimate
client (127.0.0.1): a server that throttles per client address must still serve the others. All
traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _revisions
import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "hostile"
OPENCBS = str(Path(sys.executable).with_name("opencbs"))
HOST = "127.0.0.1"
MIB = 1024 * 1024
POSTGRES_ADMIN_URL = os.environ.get(
    "OPENCBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

MONITOR, MONITOR_PWD = "hostile-monitor", "monitor-password-1"
TARGET, TARGET_PWD = "hostile-target", "target-password-1"
VICTIMS = ("hostile-victim1", "hostile-victim2")
VICTIM_PWD = "victim-password-1"
OWNER, OWNER_PWD = "hostile-owner", "owner-password-1"
GUESSEE, GUESSEE_PWD = "hostile-guessee", "guessee-password-1"
REPORT_ENTRIES = 200_000
LOAD_BATCH = 2_000
JOB_START_MS = 1_704_067_200_000  # 2024-01-01 00:00:00 UTC


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One measured figure of a case: ``value`` for the JSON output, ``shown`` for the table,
    ``passed`` None when the figure has no goal (reported only)."""

    case: str
    name: str
    goal: str
    value: float | str | None
    shown: str
    passed: bool | None = None


@dataclass
class Recorder:
    """Collects a case's figures and HTTP status counts (thread-safe)."""

    case: str
    figures: list[Figure] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, code: int | str) -> None:
        with self._lock:
            self.statuses[str(code)] += 1

    def add(
        self,
        name: str,
        value: float | str | None,
        shown: str,
        *,
        goal: str = "",
        passed: bool | None = None,
    ) -> None:
        self.figures.append(Figure(self.case, name, goal, value, shown, passed))

    def fives(self) -> int:
        return sum(n for code, n in self.statuses.items() if code.startswith("5"))


# --- targets and databases --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The code under test: ``pythonpath`` None for the working tree (the editable install)."""

    label: str
    pythonpath: Path | None
    database: str  # "sqlite" or "postgres"


def export_revision(rev: str) -> tuple[Path, str]:
    """``rev``'s ``src`` under ``bench/.work/hostile/src/<commit>/`` (``_revisions``): that
    folder and the short commit."""
    return _revisions.export_revision(rev, WORK, "bench/hostile.py")


def git_rev() -> str:
    """The working tree's short commit, ``+dirty`` when ``src/`` has uncommitted changes."""
    head, dirty = _revisions.git_rev()
    return head + ("+dirty" if dirty else "")


def _pg_admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.execute(text(sql))
    finally:
        eng.dispose()


def _pg_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def pg_idle_in_transaction(url: str) -> int:
    """Connections of ``url``'s database idle in a transaction (PostgreSQL only)."""
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    eng = create_engine(POSTGRES_ADMIN_URL)
    try:
        with eng.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "select count(*) from pg_stat_activity where datname = :d "
                        "and state like 'idle in transaction%'"
                    ),
                    {"d": name},
                ).scalar_one()
            )
    finally:
        eng.dispose()


@dataclass
class Databases:
    """The template database of a target and the per-case copies made from it."""

    target: Target
    root: Path
    template_url: str = ""
    copies: list[str] = field(default_factory=list)

    def new_template(self) -> str:
        if self.target.database == "postgres":
            name = f"hostile_tmpl_{secrets.token_hex(5)}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            self.template_url = _pg_url(name)
        else:
            path = self.root / "template.db"
            path.unlink(missing_ok=True)
            self.template_url = f"sqlite:///{path}"
        return self.template_url

    def copy(self, case: str) -> str:
        """A fresh copy of the template for one case; its URL."""
        if self.target.database == "postgres":
            name = f"hostile_{secrets.token_hex(5)}"
            tmpl = self.template_url.rsplit("/", 1)[1]
            _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{tmpl}"')
            url = _pg_url(name)
        else:
            dst = self.root / f"case-{case}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{dst}{suffix}").unlink(missing_ok=True)
            with (
                sqlite3.connect(self.template_url.split(":///", 1)[1]) as src,
                sqlite3.connect(dst) as out,
            ):
                src.backup(out)
            url = f"sqlite:///{dst}"
        self.copies.append(url)
        return url

    def drop_all(self) -> None:
        """Drop every PostgreSQL database made (SQLite files stay under bench/.work/)."""
        if self.target.database != "postgres":
            return
        for url in [*self.copies, self.template_url]:
            if url:
                _pg_admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        self.copies.clear()


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def server_env(target: Target, root: Path) -> dict[str, str]:
    """An environment isolated in ``root`` (home, data directory), times in UTC, the target's
    ``src`` first on PYTHONPATH when it is not the working tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBS_")}
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        OPENCBS_DATA_DIR=str(root / "data"),
        OPENCBS_TIMEZONE="UTC",
        PYTHONUNBUFFERED="1",
    )
    if target.pythonpath is not None:
        env["PYTHONPATH"] = str(target.pythonpath)
    return env


def cli(env: dict[str, str], url: str, *args: str, stdin: str = "") -> str:
    """Run ``opencbs ARGS --database-url URL``; its stdout. Raises ``SystemExit`` on failure."""
    res = subprocess.run(
        [OPENCBS, *args, "--database-url", url],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"opencbs {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


class Server:
    """``opencbs serve`` on a free port of 127.0.0.1 over ``url``; stderr and stdout go to
    ``log``. ``stop()`` terminates it (kills it after 5 s)."""

    def __init__(self, env: dict[str, str], url: str, log: Path) -> None:
        self.env, self.url, self.log = env, url, log
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [OPENCBS, "serve", "--port", str(self.port), "--database-url", self.url],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"opencbs serve exited; see {self.log}")
            try:
                httpx.get(self.base + "/openapi.json", timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"opencbs serve did not answer within 60 s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class RssSampler:
    """The RSS of process ``pid`` (psutil) every ``interval`` s in a thread: ``before`` at
    start, ``peak`` while running, ``last`` the latest sample (bytes)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._proc = psutil.Process(pid)
        self.interval = interval
        self.before = self.peak = self.last = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            return int(self._proc.memory_info().rss)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last = self._rss() or self.last
            self.peak = max(self.peak, self.last)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mib(self) -> float:
        return (self.peak - self.before) / MIB

    def record(self, rec: Recorder, *, goal_mib: float | None = None) -> None:
        """Add the figures RSS before/peak/after (MiB) and the growth peak - before."""
        rec.add(
            "server RSS before/peak/now MiB",
            self.peak / MIB,
            f"{self.before / MIB:.0f} / {self.peak / MIB:.0f} / {self.last / MIB:.0f}",
        )
        growth = self.growth_mib()
        rec.add(
            "server RSS growth MiB",
            round(growth, 1),
            f"{growth:+.0f}",
            goal=f"< {goal_mib:.0f}" if goal_mib is not None else "",
            passed=growth < goal_mib if goal_mib is not None else None,
        )


# --- clients ----------------------------------------------------------------------------------


def attacker_address(i: int) -> str:
    """Loopback source address number ``i`` of an attacker (never 127.0.0.1)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def client(source: str = HOST, timeout: float = 10.0) -> httpx.Client:
    """An httpx client connecting from loopback address ``source``."""
    return httpx.Client(
        timeout=timeout, transport=httpx.HTTPTransport(local_address=source, retries=0)
    )


def raw_connect(port: int, source: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` from ``source``; a small receive buffer (set
    before connecting) makes an unread answer back up quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((HOST, port))
    return sock


@dataclass(frozen=True)
class Sent:
    """What a streamed request achieved: the answer's status (None: none), bytes of body sent,
    seconds, and why sending stopped."""

    status: int | None
    sent: int
    seconds: float
    stopped: str
    excerpt: str = ""


def _status_of(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds an answer's head and (by its Content-Length) its whole body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            value = line.split(b":", 1)[1].strip()
            return not value.isdigit() or len(body) >= int(value)
    return True


def _read_answer(sock: socket.socket, until: float) -> bytes:
    """Whatever the server answered within ``until`` (monotonic), at most 64 KiB."""
    data = b""
    while time.monotonic() < until and len(data) < 65536:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
        if _complete(data):
            break
    return data


def stream_request(
    port: int,
    head: bytes,
    chunks: Iterator[bytes],
    *,
    limit_s: float,
    source: str = HOST,
) -> Sent:
    """Send ``head`` then ``chunks`` (already framed: chunked or not) over a raw connection,
    stopping as soon as the server answers or closes, or after ``limit_s`` seconds; then read
    the answer's status line (up to 10 s)."""
    import select

    t0 = time.monotonic()
    sent, stopped = 0, "body sent"
    sock = raw_connect(port, source)
    try:
        sock.sendall(head)
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                stopped = "server answered early"
                break
            if time.monotonic() - t0 > limit_s:
                stopped = f"stopped after {limit_s:.0f} s"
                break
            try:
                sock.sendall(chunk)
            except OSError as exc:
                stopped = f"server closed ({exc.__class__.__name__})"
                break
            sent += len(chunk)
        answer = _read_answer(sock, time.monotonic() + 10)
    finally:
        sock.close()
    body = answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""
    excerpt = body[:90].decode(errors="replace")
    return Sent(_status_of(answer), sent, time.monotonic() - t0, stopped, excerpt)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- the template -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """What the cases address: the owner's set and destination, the large job's ID."""

    set_id: str
    dest_id: str
    job_id: str

    def cbs_params(self, user: str = MONITOR, pwd: str = MONITOR_PWD) -> dict[str, str]:
        return {
            "SysUser": user,
            "SysPwd": pwd,
            "LoginName": OWNER,
            "BackupSetID": self.set_id,
            "DestinationID": self.dest_id,
            "BackupJobID": self.job_id,
        }

    @property
    def jobs_path(self) -> str:
        return f"/api/agent/v1/backup-sets/{self.set_id}/destinations/{self.dest_id}/jobs"


def report_entries(count: int, seed: int, path_len: int = 120) -> Iterator[dict[str, Any]]:
    """``count`` agent-API report entries (new regular files) with paths of about
    ``path_len`` characters."""
    rng = random.Random(seed)
    pad = "x" * max(0, path_len - 60)
    for i in range(count):
        yield {
            "list": "new",
            "type": "F",
            "path": f"/srv/share/{pad}/project-{i % 977:04d}/doc_{i:08d}_{rng.randrange(10)}.pdf",
            "last_modified": JOB_START_MS - rng.randrange(365 * 86_400_000),
            "size": rng.randrange(1, 10**7),
            "unzip_size": 10**7,
        }


def _put(c: httpx.Client, url: str, batch: list[dict[str, Any]]) -> None:
    r = c.put(url, json={"entries": batch})
    if r.status_code != 200:
        raise SystemExit(f"loading the report job: {r.status_code} {r.text[:300]}")


def _load_job(base: str, fx_paths: tuple[str, str], entries: int) -> str:
    set_id, dest_id = fx_paths
    jobs = f"{base}/api/agent/v1/backup-sets/{set_id}/destinations/{dest_id}/jobs"
    with httpx.Client(auth=(OWNER, OWNER_PWD), timeout=120) as c:
        r = c.post(jobs, json={"start_time": JOB_START_MS, "run_version": "hostile"})
        r.raise_for_status()
        job_id = str(r.json()["job_id"])
        batch: list[dict[str, Any]] = []
        number = 0
        for entry in report_entries(entries, seed=1):
            batch.append(entry)
            if len(batch) == LOAD_BATCH:
                _put(c, f"{jobs}/{job_id}/batches/{number}", batch)
                batch, number = [], number + 1
        if batch:
            _put(c, f"{jobs}/{job_id}/batches/{number}", batch)
        r = c.post(f"{jobs}/{job_id}/finish", json={"status": "BS_STOP_SUCCESS"})
        r.raise_for_status()
    return job_id


def _check_code(target: Target, env: dict[str, str]) -> None:
    """Raise ``SystemExit`` unless ``opencbs`` under ``env`` imports the target's code."""
    where = subprocess.run(
        [sys.executable, "-c", "import opencbs; print(opencbs.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = target.pythonpath or ROOT / "src"
    if not Path(where).resolve().is_relative_to(expected.resolve()):
        raise SystemExit(f"opencbs imports {where}, not the code under test in {expected}")


def prepare_template(
    target: Target, dbs: Databases, entries: int = REPORT_ENTRIES
) -> tuple[Fixture, dict[str, str]]:
    """Build the target's template database: system users (monitor, target, victims, API
    role), backup users (owner, guessee), the owner's set with one local destination, and one
    finished job of ``entries`` entries loaded over the agent API. Returns the fixture and
    the environment for ``opencbs`` of that target."""
    env = server_env(target, dbs.root)
    _check_code(target, env)
    url = dbs.new_template()
    for name, pwd in ((MONITOR, MONITOR_PWD), (TARGET, TARGET_PWD)) + tuple(
        (v, VICTIM_PWD) for v in VICTIMS
    ):
        cli(env, url, "sysuser", "add", name, "--role", "api_only", "--password-stdin", stdin=pwd)
    for login, pwd in ((OWNER, OWNER_PWD), (GUESSEE, GUESSEE_PWD)):
        cli(env, url, "user", "add", login, "--password-stdin", stdin=pwd)
    dest = dbs.root / "destination"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    share = dbs.root / "share"  # a new set's sources must exist (the reports name /srv/share)
    share.mkdir(exist_ok=True)
    args = ("set", "add", OWNER, "hostile-set", "--source", str(share))
    made = json.loads(cli(env, url, *args, "--destination", str(dest), "--json"))
    set_id, dest_id = str(made["ID"]), str(made["DestinationList"][0]["Id"])
    server = Server(env, url, dbs.root / "template-serve.log").start()
    try:
        job_id = _load_job(server.base, (set_id, dest_id), entries)
    finally:
        server.stop()
    return Fixture(set_id, dest_id, job_id), env
