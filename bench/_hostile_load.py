"""Hostile-load cases about concurrency: stalled report readers with wrong passwords, parallel
guessers, slowloris (cases 4, 5, 6 of ``bench/hostile.py``; not a public entry). Every request
goes to 127.0.0.1; every loop is bounded in count and time."""

from __future__ import annotations

import json
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from _hostile_bodies import Ctx, _head
from _hostile_env import (
    GUESSEE,
    MIB,
    TARGET,
    VICTIM_PWD,
    VICTIMS,
    Recorder,
    RssSampler,
    attacker_address,
    client,
    percentile,
    pg_idle_in_transaction,
    raw_connect,
)

SUMMARY = "/obs/api/json/GetBackupJobReportSummary.do"
REPORT = "/obs/api/json/GetBackupJobReport.do"
GOAL_P99_MS = 250.0
GOAL_FREE_S = 10.0
STALLED_READERS = 50
WRONG_PASSWORD_CLIENTS = 20
MONITOR_REQUESTS = 200
MONITOR_WINDOW_S = 30.0
GUESSERS = 50
CANARIES = (10, 25, 50)
CANARY_GUESSES = 80
LOCK_GUESSES = 100
BURST_BUDGET_S = 20.0
GUESS_TIMEOUT_S = 30.0
LOCK_LIMIT = 5
BACKUP_GUESSERS = 40
SLOW_CONNECTIONS = 200
SLOW_SECONDS = 15


# --- the legitimate client ----------------------------------------------------------------------


@dataclass
class Monitor:
    """GetBackupJobReportSummary with valid credentials from 127.0.0.1: latencies (s) of the
    answers, timeouts (counted at the timeout) and answers that were not ``Status: OK``."""

    ctx: Ctx
    timeout: float = 5.0
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    not_ok: int = 0

    def once(self, c: httpx.Client) -> float | None:
        """One request; its latency when answered OK, else None."""
        t0 = time.perf_counter()
        try:
            r = c.post(self.ctx.server.base + SUMMARY, json=self.ctx.fx.cbs_params())
        except httpx.TimeoutException:
            self.timeouts += 1
            self.latencies.append(self.timeout)
            self.ctx.rec.status("timeout")
            return None
        except httpx.TransportError:
            self.not_ok += 1
            self.ctx.rec.status("closed")
            return None
        took = time.perf_counter() - t0
        self.latencies.append(took)
        self.ctx.rec.status(r.status_code)
        if r.status_code != 200 or not r.content.startswith(b'{"Status":"OK"'):
            self.not_ok += 1
            return None
        return took

    def run(self, count: int, window_s: float, *, stop: threading.Event | None = None) -> None:
        """Up to ``count`` requests within ``window_s`` seconds (or until ``stop``)."""
        end = time.monotonic() + window_s
        with client(timeout=self.timeout) as c:
            for _ in range(count):
                if time.monotonic() > end or (stop is not None and stop.is_set()):
                    break
                self.once(c)
                time.sleep(0.02)

    def record(self, rec: Recorder, label: str, *, goal: bool) -> None:
        p50 = percentile(self.latencies, 0.5) * 1000
        p99 = percentile(self.latencies, 0.99) * 1000
        n = len(self.latencies)
        rec.add(
            f"{label}: Summary p50 / p99 ms",
            round(p99, 1),
            f"{p50:.0f} / {p99:.0f} ({n} sent, {self.timeouts} timed out at "
            f"{self.timeout:.0f} s, {self.not_ok} not OK)",
            goal=f"p99 < {GOAL_P99_MS:.0f}" if goal else "",
            passed=(p99 < GOAL_P99_MS and self.not_ok == 0 and n > 0) if goal else None,
        )


# --- 4. stalled readers and wrong passwords -----------------------------------------------------


def _stalled_readers(ctx: Ctx, count: int) -> list[socket.socket]:
    body = json.dumps(ctx.fx.cbs_params()).encode()
    req = (
        _head(
            "POST",
            REPORT,
            ctx.server.port,
            {"Content-Type": "application/json", "Content-Length": str(len(body))},
        )
        + body
    )
    socks = []
    for i in range(count):
        sock = raw_connect(ctx.server.port, attacker_address(10 + i), rcvbuf=4096)
        sock.sendall(req)
        socks.append(sock)
    return socks


def _wrong_passwords(ctx: Ctx, i: int, stop: threading.Event) -> None:
    """Wrong passwords until ``stop`` (at most 90 s): for the target system user, and for
    unknown names, in turn."""
    end = time.monotonic() + 90
    with client(attacker_address(100 + i), timeout=5) as c:
        n = 0
        while not stop.is_set() and time.monotonic() < end:
            user = TARGET if n % 2 == 0 else f"nobody-{secrets.token_hex(4)}"
            params = ctx.fx.cbs_params(user, f"wrong-{i}-{n}")
            n += 1
            try:
                r = c.post(ctx.server.base + SUMMARY, json=params)
                ctx.rec.status(r.status_code)
            except httpx.TimeoutException:
                ctx.rec.status("timeout")
            except httpx.TransportError:
                ctx.rec.status("closed")
                time.sleep(0.1)


def _until_free(ctx: Ctx, limit_s: float) -> float | None:
    """Seconds until the Summary answers OK in < 250 ms three times in a row (and, on
    PostgreSQL, no connection of the database is idle in a transaction); None if not within
    ``limit_s``."""
    t0 = time.monotonic()
    mon = Monitor(ctx, timeout=2.0)
    first: float | None = None
    streak = 0
    with client(timeout=2.0) as c:
        while time.monotonic() - t0 < limit_s:
            at = time.monotonic() - t0
            took = mon.once(c)
            fast = took is not None and took < GOAL_P99_MS / 1000
            if fast and ctx.url.startswith("postgresql"):
                fast = pg_idle_in_transaction(ctx.url) == 0
            if fast:
                first = at if streak == 0 else first
                streak += 1
                if streak == 3:
                    return first
            else:
                streak, first = 0, None
            time.sleep(0.1)
    return None


def case_stalled_readers(ctx: Ctx) -> None:
    """4. 50 connections request a 200k-entry GetBackupJobReport and never read, 20 clients
    send wrong passwords; meanwhile 200 Summary requests with valid credentials (p99 goal
    < 250 ms). Then the attackers stop: seconds until the server is free (goal ≤ 10 s)."""
    stop = threading.Event()
    with RssSampler(ctx.server.pid) as rss:
        socks = _stalled_readers(ctx, STALLED_READERS)
        time.sleep(1.0)
        threads = [
            threading.Thread(target=_wrong_passwords, args=(ctx, i, stop), daemon=True)
            for i in range(WRONG_PASSWORD_CLIENTS)
        ]
        for t in threads:
            t.start()
        mon = Monitor(ctx)
        mon.run(MONITOR_REQUESTS, MONITOR_WINDOW_S)
        stop.set()
        for s in socks:
            s.close()
        for t in threads:
            t.join(timeout=10)
        free_s = _until_free(ctx, 30.0)
        rss_end = rss.last
    mon.record(ctx.rec, "under attack", goal=True)
    ctx.rec.add(
        "free after the attackers stop, s",
        free_s,
        f"{free_s:.1f}" if free_s is not None else "> 30 (not free)",
        goal=f"≤ {GOAL_FREE_S:.0f}",
        passed=free_s is not None and free_s <= GOAL_FREE_S,
    )
    if ctx.url.startswith("postgresql"):
        idle = pg_idle_in_transaction(ctx.url)
        ctx.rec.add(
            "connections idle in transaction at the end",
            idle,
            str(idle),
            goal="0",
            passed=idle == 0,
        )
    rss.record(ctx.rec)
    ctx.rec.add(
        "server RSS at the end - before, MiB",
        round((rss_end - rss.before) / MIB, 1),
        f"{(rss_end - rss.before) / MIB:+.0f}",
    )


# --- 5. parallel guessers -------------------------------------------------------------------------


def _guess_burst(
    ctx: Ctx, user: str, total: int, password_at: Callable[[int], str]
) -> dict[int, bool]:
    """``total`` guesses at ``user``'s password from ``GUESSERS`` threads (one source address
    each), numbered 1.. in the order they are sent; guess n sends ``password_at(n)``. No guess
    starts after ``BURST_BUDGET_S`` seconds; each waits at most ``GUESS_TIMEOUT_S``. Returns
    whether each right-password guess was accepted (by number; missing: not sent/answered)."""
    lock, counter = threading.Lock(), [0]
    end = time.monotonic() + BURST_BUDGET_S
    accepted: dict[int, bool] = {}
    barrier = threading.Barrier(GUESSERS)

    def guesser(k: int) -> None:
        with client(attacker_address(200 + k), timeout=GUESS_TIMEOUT_S) as c:
            barrier.wait(timeout=30)
            while time.monotonic() < end:
                with lock:
                    counter[0] += 1
                    n = counter[0]
                if n > total:
                    return
                pwd = password_at(n)
                try:
                    r = c.post(ctx.server.base + SUMMARY, json=ctx.fx.cbs_params(user, pwd))
                except httpx.TransportError as exc:
                    ctx.rec.status("timeout" if isinstance(exc, httpx.TimeoutException) else "x")
                    continue
                ctx.rec.status(r.status_code)
                if pwd == VICTIM_PWD:
                    accepted[n] = r.content.startswith(b'{"Status":"OK"')

    threads = [threading.Thread(target=guesser, args=(k,), daemon=True) for k in range(GUESSERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, end + GUESS_TIMEOUT_S + 2 - time.monotonic()))
    sent = min(counter[0], total)
    ctx.rec.add(f"guesses at {user} sent in {BURST_BUDGET_S:.0f} s", sent, str(sent))
    return accepted


def _right_password_ok(ctx: Ctx, user: str) -> bool | None:
    """Whether ``user``'s right password is accepted (None: no answer within 30 s)."""
    try:
        with client(timeout=GUESS_TIMEOUT_S) as c:
            r = c.post(ctx.server.base + SUMMARY, json=ctx.fx.cbs_params(user, VICTIM_PWD))
    except httpx.TransportError:
        ctx.rec.status("timeout")
        return None
    ctx.rec.status(r.status_code)
    return r.content.startswith(b'{"Status":"OK"')


def _system_guessers(ctx: Ctx) -> None:
    canary = _guess_burst(
        ctx,
        VICTIMS[0],
        CANARY_GUESSES,
        lambda n: VICTIM_PWD if n in CANARIES else f"wrong-{n}",
    )
    names = {True: "in", False: "refused", None: "not answered"}
    shown = ", ".join(f"#{n} {names[canary.get(n)]}" for n in CANARIES)
    got_in = [n for n in CANARIES if canary.get(n)]
    # Parallel guesses are checked in the order the server takes them, not the order sent:
    # a right password among the first checked gets in on any server. What tells a bounded
    # server from an unbounded one is the count of checks below; this figure has no goal.
    ctx.rec.add(
        f"right password among {CANARY_GUESSES} parallel guesses",
        max(got_in, default=0),
        shown,
    )
    _guess_burst(ctx, VICTIMS[1], LOCK_GUESSES, lambda n: f"wrong-{n}")
    time.sleep(0.5)
    _record_checks(ctx, VICTIMS[1])
    ok = _right_password_ok(ctx, VICTIMS[1])
    shown = {True: "accepted (not locked)", False: "refused (locked)", None: "not answered"}[ok]
    ctx.rec.add(
        f"right password after {LOCK_GUESSES} parallel wrong",
        shown.split()[0],
        shown,
        goal="refused",
        passed=None if ok is None else not ok,
    )
    lines = [
        ln for ln in ctx.server.log_text().splitlines() if "lock" in ln.lower() and "WARN" in ln
    ]
    ctx.rec.add("lockout WARNING lines in the log", len(lines), str(len(lines)))


def _record_checks(ctx: Ctx, user: str) -> None:
    """How many of the burst's wrong passwords for ``user`` the server checked against the
    account's hash, from its DEBUG log (``password check: sysuser 'NAME' (client …): wrong``;
    a revision that does not log them: not counted)."""
    text = ctx.server.log_text()
    if "password check: " not in text:
        ctx.rec.add(f"wrong passwords checked of {LOCK_GUESSES}", None, "not logged")
        return
    mark = f"password check: sysuser {user!r} "
    checked = sum(1 for ln in text.splitlines() if mark in ln and ln.endswith(": wrong"))
    ctx.rec.add(
        f"wrong passwords checked of {LOCK_GUESSES}",
        checked,
        str(checked),
        goal=f"<= {LOCK_LIMIT}",
        passed=checked <= LOCK_LIMIT,
    )


def _backup_guessers(ctx: Ctx) -> None:
    """40 parallel wrong backup-user logins (agent API, one each) → RSS peak and the Summary's
    latency meanwhile (at most 25 s)."""
    url = ctx.server.base + "/api/agent/v1/backup-sets"

    def guesser(k: int) -> None:
        with client(attacker_address(300 + k), timeout=20) as c:
            for j in range(1):
                try:
                    r = c.get(url, auth=(GUESSEE, f"wrong-{k}-{j}"))
                    ctx.rec.status(r.status_code)
                except httpx.TransportError:
                    ctx.rec.status("timeout")

    stop = threading.Event()
    mon = Monitor(ctx)
    watcher = threading.Thread(target=mon.run, args=(400, 25.0), kwargs={"stop": stop})
    with RssSampler(ctx.server.pid) as rss:
        threads = [threading.Thread(target=guesser, args=(k,)) for k in range(BACKUP_GUESSERS)]
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=25)
        stop.set()
        watcher.join(timeout=10)
    growth = rss.growth_mib()
    ctx.rec.add(
        f"{BACKUP_GUESSERS} parallel wrong backup-user logins: RSS growth MiB",
        round(growth, 1),
        f"{growth:+.0f} (peak {rss.peak / MIB:.0f})",
    )
    mon.record(ctx.rec, "meanwhile", goal=False)


def case_guessers(ctx: Ctx) -> None:
    """5. 50 parallel guessers against one system user: is the right password accepted at
    guess #10, #25, #50 of 80 (goal: refused, the limit being 5 per period)? Is it refused
    after 100 wrong ones? Then 40 parallel wrong backup-user logins: RSS and latency."""
    _system_guessers(ctx)
    _backup_guessers(ctx)


# --- 6. slowloris ---------------------------------------------------------------------------------


def _drip(socks: dict[int, socket.socket], header: bytes, pos: int) -> int:
    """Send byte ``pos`` of ``header`` on every open connection; drop (and count) those the
    server closed or answered."""
    dropped = 0
    for k, sock in list(socks.items()):
        readable, _, _ = select.select([sock], [], [], 0)
        try:
            if readable and not sock.recv(4096):
                raise ConnectionResetError
            if readable:
                raise ConnectionAbortedError  # answered (e.g. 408): dropped by the server
            sock.send(header[pos : pos + 1])
        except OSError:
            sock.close()
            del socks[k]
            dropped += 1
    return dropped


def case_slowloris(ctx: Ctx) -> None:
    """6. 200 connections send a request's headers one byte a second for 15 s → how many are
    still open at the end (goal 0: a header timeout drops them), and does a normal request
    answer meanwhile (goal < 1 s)."""
    header = b"GET " + SUMMARY.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64
    socks: dict[int, socket.socket] = {}
    for k in range(SLOW_CONNECTIONS):
        try:
            socks[k] = raw_connect(ctx.server.port, attacker_address(400 + k))
        except OSError:
            ctx.rec.status("refused")
    opened = len(socks)
    mon = Monitor(ctx, timeout=5.0)
    t0 = time.monotonic()
    with client(timeout=5.0) as c:
        for second in range(SLOW_SECONDS):
            _drip(socks, header, second)
            if second in (5, SLOW_SECONDS - 2):
                mon.once(c)
            time.sleep(max(0.0, t0 + second + 1 - time.monotonic()))
    _drip(socks, header, SLOW_SECONDS)
    still = len(socks)
    for sock in socks.values():
        sock.close()
    ctx.rec.add(
        f"still open after {SLOW_SECONDS} s (of {opened})",
        still,
        str(still),
        goal="0",
        passed=still == 0,
    )
    worst = max(mon.latencies, default=float("nan"))
    ctx.rec.add(
        "normal request meanwhile, worst s",
        round(worst, 3),
        f"{worst:.2f} ({mon.not_ok + mon.timeouts} failed)",
        goal="< 1",
        passed=worst < 1.0 and mon.not_ok + mon.timeouts == 0,
    )
