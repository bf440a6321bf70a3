"""Benchmark of the report server: GetBackupJobReport and GetBackupJobReportSummary over HTTP.

Run from the project root::

    .venv/bin/python bench/report_server.py [--sizes 1000,100000,1000000] [--database-url URL]
    .venv/bin/python bench/report_server.py --quick

For each job size it prints GetBackupJobReport's time to first body byte, total time, bytes,
entries/s and the server process's resident memory (before the request and its peak during it),
next to the peer (the ``sqlite3`` command-line tool dumping the same rows as JSON) and the ratio;
then GetBackupJobReportSummary requests/s with authentication (SysUser/SysPwd on every request)
from a load client in a separate process, next to the peer (a bare Starlette endpoint answering a
constant JSON object on the same uvicorn) and the ratio.

The jobs are built through the store's own functions (``start_job``, ``append_batch``,
``finish_job``) in a database under ``bench/.work/`` that is kept between runs: a rerun reuses the
jobs it finds complete (keyed by size). Goals (the issue): the 1M-entry report complete in under
10 s with flat memory; the summary above 500 requests/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
UTC = ZoneInfo("UTC")

SYS_USER, SYS_PWD = "bench-admin", "bench-admin-password"
LOGIN, LOGIN_PWD = "bench-user", "bench-user-password"
#: Bump when the generated data changes, so an old database is not reused as if it were new.
DATASET = "bench-set-v1"
DEST_NAME = "bench-destination"
BASE_MS = 1_704_067_200_000  # 2024-01-01 00:00:00 UTC: job of size N starts N seconds later
BATCH = 5000
GOAL_REPORT_S = 10.0
GOAL_SUMMARY_RPS = 500.0


# --- the data set -----------------------------------------------------------------------------


_ROOTS = (
    ("\\", "C:\\Users\\Administrator\\Documents\\Projects"),
    ("\\", "C:\\Users\\Administrator\\Pictures\\Camera Roll\\2023"),
    ("\\", "D:\\Shares\\Finance\\Quarterly Reports\\Archive"),
    ("/", "/home/alice/work/customer-portal/frontend/node_modules"),
    ("/", "/srv/samba/marketing/campaigns/2024-spring/assets"),
)
_DIRS = (
    "src",
    "docs",
    "build",
    "Invoices",
    "Scans",
    "exports",
    "raw",
    "thumbnails",
    "components",
    "legacy data",
    "Q3",
    "reports-final",
)
_EXTS = ("docx", "xlsx", "pdf", "jpg", "png", "js", "ts", "json", "txt", "psd", "mp4", "csv")


def _path(rng: random.Random, i: int) -> str:
    sep, root = _ROOTS[i % len(_ROOTS)]
    d1, d2 = rng.choice(_DIRS), rng.choice(_DIRS)
    return (
        f"{root}{sep}project-{i % 977:04d}{sep}{d1}{sep}{d2}{sep}"
        f"document_{i:08d}_rev{rng.randrange(10)}.{rng.choice(_EXTS)}"
    )


def generate(size: int, seed: int) -> Iterator[Any]:
    """``size`` report entries (``EntryIn``): a few log lines (the start line first, the end line
    last, some warnings), then mostly ``new`` regular files with long paths, with some
    directories, links, and upd/pmt/del/mov/cpy entries, in delivery order."""
    from opencbs.reports.vocabulary import ReportList as L
    from opencbs.store.jobs import EntryIn

    rng = random.Random(seed)
    n_logs = max(5, size // 20000)
    t0 = BASE_MS + size * 1000
    yield EntryIn(
        L.LOG, "start", "Start [ Windows 11 (bench-host), opencbs-agent 0.1.0 ]", mtime_ms=t0
    )
    for k in range(n_logs - 2):
        kind = "warn" if k % 3 == 2 else "info"
        yield EntryIn(
            L.LOG, kind, f"Bench log line {k}: scanning {_path(rng, k)}", mtime_ms=t0 + k * 1000
        )
    for i in range(size - n_logs):
        r = rng.random()
        unzip = int(rng.lognormvariate(9.5, 2.0))
        stored = int(unzip * rng.uniform(0.2, 1.0))
        mtime = BASE_MS - rng.randrange(365 * 86_400_000)
        path = _path(rng, i)
        if r < 0.85:
            t = rng.random()
            if t < 0.92:
                yield EntryIn(L.NEW, "F", path, mtime_ms=mtime, size=stored, unzip_size=unzip)
            elif t < 0.98:
                yield EntryIn(L.NEW, "D", path.rsplit(".", 1)[0], mtime_ms=mtime)
            else:
                yield EntryIn(L.NEW, "L", path, mtime_ms=mtime, link_dir=t > 0.99)
        elif r < 0.90:
            yield EntryIn(L.UPD, "F", path, mtime_ms=mtime, size=stored, unzip_size=unzip)
        elif r < 0.93:
            yield EntryIn(L.PMT, "F", path, mtime_ms=mtime)
        elif r < 0.97:
            yield EntryIn(
                L.DEL,
                "F" if r < 0.965 else "D",
                path,
                mtime_ms=mtime,
                size=stored,
                unzip_size=unzip,
            )
        elif r < 0.985:
            yield EntryIn(
                L.MOV,
                "F",
                path,
                from_path=_path(rng, i + 7),
                mtime_ms=mtime,
                size=stored,
                unzip_size=unzip,
            )
        else:
            yield EntryIn(
                L.CPY,
                "F",
                path,
                from_path=_path(rng, i + 11),
                mtime_ms=mtime,
                size=stored,
                unzip_size=unzip,
            )
    yield EntryIn(L.LOG, "end", "Backup Completed Successfully", mtime_ms=t0 + 3_600_000)


@dataclass
class Fixture:
    """What the benchmark asks for: the set, the destination and the job ID of each size."""

    set_id: str
    destination_id: str
    jobs: dict[int, str] = field(default_factory=dict)
    pks: dict[int, int] = field(default_factory=dict)


def prepare(url: str, sizes: list[int]) -> Fixture:
    """Migrate, create the accounts, the set and one finished job per size (reusing complete
    jobs already in the database)."""
    from sqlalchemy import delete, func, select

    from opencbs.errors import BackupJobNotFound
    from opencbs.reports.timefmt import job_id_at
    from opencbs.reports.vocabulary import JobStatus, SystemRole
    from opencbs.store import job_queries, sets, users
    from opencbs.store.db import Database
    from opencbs.store.migrate import upgrade
    from opencbs.store.schema import backup_jobs, job_batches, job_entries

    db = Database(url)
    upgrade(db)
    with db.write() as conn:
        if users.get_system_user(conn, SYS_USER) is None:
            users.add_system_user(conn, SYS_USER, SYS_PWD, SystemRole.ADMIN)
        user = users.find_backup_user(conn, LOGIN) or users.add_backup_user(conn, LOGIN, LOGIN_PWD)
        bset = sets.find_set_by_name(conn, user.id, DATASET) or sets.add_set(
            conn, user.id, DATASET, {"sources": ["C:\\Users\\Administrator"]}
        )
        if not bset.destinations:
            sets.add_destination(conn, user.id, bset.id, name=DEST_NAME, dest_type="LOCAL")
            bset = sets.get_set(conn, user.id, bset.id)
    dest_id = bset.destinations[0].id
    fx = Fixture(str(bset.id), str(dest_id))
    for size in sizes:
        start = BASE_MS + size * 1000
        job_id = job_id_at(start, UTC)
        with db.read() as conn:
            try:
                job = job_queries.find_job(conn, bset, str(dest_id), job_id, cdp=False)
            except BackupJobNotFound:
                job = None
            stored = 0
            if job is not None:
                stored = conn.execute(
                    select(func.count())
                    .select_from(job_entries)
                    .where(job_entries.c.job_pk == job.pk)
                ).scalar_one()
        if job is not None and job.status != JobStatus.STILL_RUNNING.value and stored == size:
            print(f"  job of {size:>9,} entries: reused ({job_id})")
            fx.jobs[size], fx.pks[size] = job_id, job.pk
            continue
        if job is not None:  # an interrupted load: drop it and load again
            with db.write() as conn:
                for table in (job_entries, job_batches):
                    conn.execute(delete(table).where(table.c.job_pk == job.pk))
                conn.execute(delete(backup_jobs).where(backup_jobs.c.pk == job.pk))
        fx.jobs[size], fx.pks[size] = job_id, _load(db, bset, dest_id, size, start)
    db.dispose()
    return fx


def _load(db: Any, bset: Any, dest_id: int, size: int, start: int) -> int:
    from opencbs.reports.vocabulary import JobStatus
    from opencbs.store import jobs

    t0 = time.perf_counter()
    with db.write() as conn:
        job = jobs.start_job(
            conn, bset, dest_id, tz=UTC, start_ms=start, from_ip="10.0.0.42", run_version="0.1.0"
        )
    batch: list[Any] = []
    batch_no = done = 0
    last_print = t0
    for entry in generate(size, seed=size):
        batch.append(entry)
        if len(batch) == BATCH:
            with db.write() as conn:
                jobs.append_batch(conn, job.pk, batch_no, batch)
            batch_no, done, batch = batch_no + 1, done + len(batch), []
            if time.perf_counter() - last_print > 5:
                last_print = time.perf_counter()
                rate = done / (last_print - t0)
                print(
                    f"    loading {size:,}: {done:>9,} entries ({rate:,.0f}/s, "
                    f"~{(size - done) / rate:.0f} s left)",
                    flush=True,
                )
    with db.write() as conn:
        if batch:
            jobs.append_batch(conn, job.pk, batch_no, batch)
        jobs.finish_job(
            conn,
            job.pk,
            JobStatus.STOP_SUCCESS,
            end_ms=start + 3_600_000,
            dedupe_original_size=10**9,
            dedupe_saving=10**8,
        )
    print(
        f"  job of {size:>9,} entries: loaded in {time.perf_counter() - t0:.1f} s ({job.job_id})",
        flush=True,
    )
    return job.pk


# --- servers ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli_has_serve() -> bool:
    exe = ROOT / ".venv" / "bin" / "opencbs"
    if not exe.exists():
        return False
    try:
        out = subprocess.run(
            [str(exe), "serve", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "--database-url" in out.stdout


class Server:
    """A server subprocess on a free local port; ``pid`` is the serving process."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.port = _free_port()
        self.log = WORK / f"{name}.log"
        self.argv = argv + ["--port", str(self.port)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}); see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise SystemExit(f"server did not listen within 60 s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def opencbs_server(url: str, launcher: str) -> tuple[Server, str]:
    use_cli = launcher == "cli" or (launcher == "auto" and _cli_has_serve())
    if use_cli:
        argv = [
            str(ROOT / ".venv" / "bin" / "opencbs"),
            "serve",
            "--database-url",
            url,
            "--timezone",
            "UTC",
            "--data-dir",
            str(WORK / "data"),
        ]
        return Server(argv, "opencbs"), "opencbs serve"
    argv = [sys.executable, str(HERE / "_serve.py"), "opencbs", "--database-url", url]
    return Server(argv, "opencbs"), "bench/_serve.py (create_app + uvicorn.run)"


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class RssWatch:
    """Polls a process's VmRSS every ``interval`` seconds in a thread; ``peak`` in KiB."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.before = _status_kib(pid, "VmRSS")
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib(self.pid, "VmRSS"))
            time.sleep(self.interval)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib(self.pid, "VmRSS"))
        self.hwm = _status_kib(self.pid, "VmHWM")


# --- GetBackupJobReport ------------------------------------------------------------------------


@dataclass
class ReportRun:
    size: int
    ttfb_s: float
    total_s: float
    nbytes: int
    rss_before_mib: float
    rss_peak_mib: float
    hwm_mib: float
    server_cpu_s: float = 0.0
    peer_s: float | None = None
    peer_bytes: int | None = None
    verified: str = ""


def _params(fx: Fixture, size: int) -> dict[str, str]:
    return {
        "SysUser": SYS_USER,
        "SysPwd": SYS_PWD,
        "LoginName": LOGIN,
        "BackupSetID": fx.set_id,
        "DestinationID": fx.destination_id,
        "BackupJobID": fx.jobs[size],
    }


def measure_report(port: int, pid: int, fx: Fixture, size: int) -> tuple[ReportRun, bytes]:
    import httpx

    url = f"http://127.0.0.1:{port}/obs/api/json/GetBackupJobReport.do"
    body = bytearray()
    with httpx.Client(timeout=120) as client, RssWatch(pid) as watch:
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        ttfb = 0.0
        with client.stream("POST", url, json=_params(fx, size)) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_raw(1 << 16):
                if not body:
                    ttfb = time.perf_counter() - t0
                body += chunk
        total = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
    mib = 1024.0
    return ReportRun(
        size, ttfb, total, len(body), watch.before / mib, watch.peak / mib, watch.hwm / mib, cpu
    ), bytes(body)


def verify_report(raw: bytes, size: int) -> str:
    """Parse the answer and check every list against the job's counters; returns a short
    note, raises ``SystemExit`` on a mismatch."""
    import orjson

    doc = orjson.loads(raw)
    if doc.get("Status") != "OK":
        raise SystemExit(f"report of {size}: not OK: {raw[:300]!r}")
    d = doc["Data"]
    expect = {
        "new": d["NumOfNewFiles"]
        + d["NumOfNewDirCount"]
        + d["NumOfNewLinkDirCount"]
        + d["NumOfNewLinkFileCount"],
        "upd": d["NumOfUpdatedFiles"],
        "pmt": d["NumOfUpdatedPermissionFiles"],
        "del": d["NumOfDeletedFiles"] + d["NumOfDeletedDirCount"] + d["NumOfDeletedLinkFileCount"],
        "mov": d["NumOfMovedFiles"],
        "cpy": d["NumOfCopiedFiles"],
    }
    got = {k: len(d[k]) for k in expect}
    warns = sum(1 for e in d["info"] if e["Type"] == "warn")
    total = sum(got.values()) + len(d["info"])
    problems = []
    if got != expect:
        problems.append(f"lists {got} != counters {expect}")
    if d["Logs"] != d["info"]:
        problems.append("Logs != info")
    if warns != d["NumOfWarnEntries"]:
        problems.append(f"{warns} warn entries != NumOfWarnEntries {d['NumOfWarnEntries']}")
    if total != size:
        problems.append(f"{total} entries returned, {size} stored")
    if problems:
        raise SystemExit(f"report of {size} entries is wrong: " + "; ".join(problems))
    return "ok"


_PEER_SQL = """
select etype as "Type",
       strftime('%Y/%m/%d %H:%M:%S', mtime_ms / 1000, 'unixepoch') as "LastModified",
       path as "Name", from_path as "FromFile", size as "FileSize",
       unzip_size as "UnzipFilesSize",
       case when unzip_size <= 0 then '0%'
            else max(0, min(100, (unzip_size - size) * 100 / unzip_size)) || '%' end as "Ratio"
from job_entries where job_pk = {pk} and list = {lst} order by seq;
"""


def measure_peer_report(url: str, pk: int) -> tuple[float, int] | None:
    """Time the ``sqlite3`` CLI dumping the job's rows as JSON, list by list, in the report's
    order and with the same fields computed (time strings, ratios) into a file."""
    sqlite3 = shutil.which("sqlite3")
    if not url.startswith("sqlite") or sqlite3 is None:
        return None
    path = url.split(":///", 1)[1]
    out = WORK / "peer-report.json"
    sql = "".join(_PEER_SQL.format(pk=pk, lst=lst) for lst in range(7))
    t0 = time.perf_counter()
    with out.open("wb") as f:
        subprocess.run([sqlite3, "-readonly", "-json", path, sql], stdout=f, check=True)
    took = time.perf_counter() - t0
    n = out.stat().st_size
    out.unlink()
    return took, n


# --- GetBackupJobReportSummary load --------------------------------------------------------------


def _load_main(argv: list[str]) -> None:
    """The load client (runs in its own process): ``conns`` keep-alive connections, each in a
    thread sending pre-encoded POST requests and reading Content-Length answers; prints JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=50)
    a = ap.parse_args(argv)
    payload = a.body.encode()
    req = (
        f"POST {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    per = [a.requests // a.conns + (1 if i < a.requests % a.conns else 0) for i in range(a.conns)]
    lat: list[list[float]] = [[] for _ in range(a.conns)]
    errors: list[str] = []
    barrier = threading.Barrier(a.conns + 1)

    def one(sock: socket.socket, buf: bytearray) -> bytes:
        sock.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        head = bytes(buf[:end]).lower()
        i = head.find(b"content-length:")
        if i < 0:
            raise ValueError("no Content-Length: " + head.decode(errors="replace"))
        n = int(head[i + 15 : head.index(b"\r\n", i) if b"\r\n" in head[i:] else None])
        while len(buf) < end + 4 + n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        answer = bytes(buf[end + 4 : end + 4 + n])
        del buf[: end + 4 + n]
        return answer

    def worker(k: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", a.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            for _ in range(a.warmup):
                answer = one(sock, buf)
                if not answer.startswith(b'{"Status":"OK"'):
                    raise ValueError(answer[:200].decode(errors="replace"))
        except Exception as exc:  # noqa: BLE001 - reported by the parent
            errors.append(repr(exc))
            barrier.abort()
            return
        barrier.wait()
        try:
            for _ in range(per[k]):
                t = time.perf_counter()
                answer = one(sock, buf)
                lat[k].append(time.perf_counter() - t)
                if not answer.startswith(b'{"Status":"OK"'):
                    raise ValueError(answer[:200].decode(errors="replace"))
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        sock.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.conns)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    flat = sorted(x for xs in lat for x in xs)
    print(
        json.dumps(
            {
                "requests": len(flat),
                "seconds": took,
                "errors": errors,
                "p50_ms": flat[len(flat) // 2] * 1000 if flat else None,
                "p99_ms": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1000 if flat else None,
            }
        )
    )


@dataclass
class LoadRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    server_cpu: float  # CPU seconds of the server process per wall second (1.0 = one core)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (every thread) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    port: int, path: str, body: dict[str, str], requests: int, conns: int, pid: int
) -> LoadRun:
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "_load",
            "--port",
            str(port),
            "--path",
            path,
            "--body",
            json.dumps(body),
            "--requests",
            str(requests),
            "--conns",
            str(conns),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
    r = json.loads(out.stdout)
    if r["errors"]:
        raise SystemExit(f"load on {path} failed: {r['errors'][:3]}")
    return LoadRun(r["requests"] / r["seconds"], r["p50_ms"], r["p99_ms"], r["requests"], cpu)


# --- the run ----------------------------------------------------------------------------------


def _table(
    runs: list[ReportRun], summary: LoadRun, peer: LoadRun, launcher: str, conns: int
) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"GetBackupJobReport (server: {launcher}; peer: sqlite3 -json, same rows and fields)",
        caption="ratio = opencbs total / sqlite3; peak-before = RSS growth during the "
        "request (MiB); server CPU = the server process's CPU seconds",
    )
    for col in (
        "entries",
        "TTFB s",
        "total s",
        "MB",
        "entries/s",
        "RSS before MiB",
        "RSS peak MiB",
        "peak-before",
        "server CPU s",
        "sqlite3 s",
        "ratio",
        "check",
    ):
        t.add_column(col, justify="right")
    for r in runs:
        ratio = f"{r.total_s / r.peer_s:.1f}x" if r.peer_s else "n/a"
        t.add_row(
            f"{r.size:,}",
            f"{r.ttfb_s:.3f}",
            f"{r.total_s:.2f}",
            f"{r.nbytes / 1e6:.1f}",
            f"{r.size / r.total_s:,.0f}",
            f"{r.rss_before_mib:.0f}",
            f"{r.rss_peak_mib:.0f}",
            f"{r.rss_peak_mib - r.rss_before_mib:+.0f}",
            f"{r.server_cpu_s:.2f}",
            f"{r.peer_s:.2f}" if r.peer_s else "n/a",
            ratio,
            r.verified,
        )
    console = Console(width=160)
    console.print(t)
    console.print(
        f"({os.cpu_count()} cores; load average at the end "
        f"{os.getloadavg()[0]:.2f}: other work on the machine skews every figure)"
    )
    console.print(
        f"GetBackupJobReportSummary, auth on every request, {summary.requests} requests over "
        f"{conns} keep-alive connections from a separate process: "
        f"[bold]{summary.rps:,.0f} req/s[/bold] (p50 {summary.p50_ms:.1f} ms, "
        f"p99 {summary.p99_ms:.1f} ms; server CPU {summary.server_cpu:.0%} of a core, "
        f"{summary.server_cpu / summary.rps * 1e6:,.0f} µs per request); "
        f"peer (bare Starlette constant JSON, same uvicorn): {peer.rps:,.0f} req/s "
        f"(p50 {peer.p50_ms:.1f} ms, {peer.server_cpu / peer.rps * 1e6:,.0f} µs per request); "
        f"ratio opencbs/peer "
        f"{summary.rps / peer.rps:.2f}"
    )
    big = max(runs, key=lambda r: r.size)
    small = min(runs, key=lambda r: r.size)
    growth = (big.rss_peak_mib - big.rss_before_mib) - (small.rss_peak_mib - small.rss_before_mib)
    console.print(
        f"Goals: {big.size:,}-entry report {big.total_s:.1f} s "
        f"({'met' if big.total_s < GOAL_REPORT_S or big.size < 1_000_000 else 'MISSED'}: "
        f"< {GOAL_REPORT_S:.0f} s for 1M); memory growth during the largest report vs the "
        f"smallest {growth:+.0f} MiB; summary {summary.rps:,.0f} req/s "
        f"({'met' if summary.rps > GOAL_SUMMARY_RPS else 'MISSED'}: > {GOAL_SUMMARY_RPS:.0f})"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        _load_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", default="1000,100000,1000000", help="job sizes in entries, comma-separated"
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes (1000,10000), fewer summary requests"
    )
    ap.add_argument("--database-url", default="", help="default: SQLite under bench/.work/")
    ap.add_argument("--summary-requests", type=int, default=3000)
    ap.add_argument(
        "--connections",
        type=int,
        default=4,
        help="keep-alive connections of the summary load client",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="request each report this many times and keep the fastest (the peak "
        "RSS is the highest seen)",
    )
    ap.add_argument(
        "--launcher",
        choices=["auto", "cli", "module"],
        default="auto",
        help="auto: `opencbs serve` when it exists, else bench/_serve.py",
    )
    args = ap.parse_args()
    sizes = [1000, 10000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    requests = min(args.summary_requests, 1000) if args.quick else args.summary_requests
    WORK.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{WORK / 'sqlite' / 'opencbs-bench.db'}"
    if url.startswith("sqlite:///"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    print(
        f"database: {url}\npreparing jobs of {', '.join(f'{s:,}' for s in sizes)} entries",
        flush=True,
    )
    fx = prepare(url, sizes)

    server, launcher = opencbs_server(url, args.launcher)
    runs: list[ReportRun] = []
    summary_params = _params(fx, sizes[-1])
    with server:
        print(f"server: {launcher}, pid {server.pid}, port {server.port}", flush=True)
        measure_report(server.port, server.pid, fx, sizes[0])  # warm-up (imports, caches)
        for size in sizes:
            tries = []
            for _ in range(args.repeat):
                run, raw = measure_report(server.port, server.pid, fx, size)
                run.verified = verify_report(raw, size)
                del raw
                tries.append(run)
            run = min(tries, key=lambda r: r.total_s)
            run.rss_peak_mib = max(r.rss_peak_mib for r in tries)
            run.rss_before_mib = tries[0].rss_before_mib
            dump = measure_peer_report(url, fx.pks[size])
            if dump:
                run.peer_s, run.peer_bytes = dump
            print(
                f"  report {size:>9,}: {run.total_s:.2f} s, peak RSS {run.rss_peak_mib:.0f} "
                f"MiB; sqlite3 {run.peer_s or float('nan'):.2f} s",
                flush=True,
            )
            runs.append(run)
        summary = run_load(
            server.port,
            "/obs/api/json/GetBackupJobReportSummary.do",
            summary_params,
            requests,
            args.connections,
            server.pid,
        )
    peer_server = Server([sys.executable, str(HERE / "_serve.py"), "peer"], "peer")
    with peer_server:
        peer = run_load(
            peer_server.port,
            "/obs/api/json/GetBackupJobReportSummary.do",
            summary_params,
            requests,
            args.connections,
            peer_server.pid,
        )
    _table(runs, summary, peer, launcher, args.connections)
    (WORK / "last_run.json").write_text(
        json.dumps(
            {
                "database": url,
                "launcher": launcher,
                "reports": [asdict(r) for r in runs],
                "summary": asdict(summary),
                "summary_peer": asdict(peer),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
