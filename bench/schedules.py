"""Scale figures of issue 16: the missed-backup sweep over 10,000 sets × 4 schedules, and
10,000 simulated agents polling one real ``opencbs serve`` for their schedules.

Run from the project root::

    .venv/bin/python bench/schedules.py                        # both parts, SQLite
    .venv/bin/python bench/schedules.py --database postgres    # PostgreSQL at 127.0.0.1:5432
    .venv/bin/python bench/schedules.py --only sweep           # or --only poll
    .venv/bin/python bench/schedules.py --sets 2000 --seconds 60 --agents 2000   # quicker
    .venv/bin/python bench/schedules.py --json

(a) **Sweep.** A fresh database (SQLite under ``bench/.work/schedules/``, or a new PostgreSQL
database, dropped at the end) gets the fleet of ``bench/_fleet.py`` in bulk: ``--sets`` users,
sets and destinations, four schedules per set, every schedule with one slot due at once,
``--answered`` (90 %) of them answered by a job. Then ``store.missed.sweep_missed`` runs in
this process as the server's sweeper calls it (bounded sweeps of 1,000 slots, back to back,
until none is due): the first bounded sweep's time, the whole drain's time, slots per second,
the missed jobs recorded. Then a **steady-state** sweep: one minute later (the slots that fell
due in that minute: a sixtieth of the sets' daily slots, as their minutes are spread), and five
sweeps with nothing due (the indexed query alone); the median of each.

(b) **Polls.** A real ``opencbs serve`` on the same database, and ``--agents`` simulated agents
(``bench/_poll_load.py``) polling ``GET /api/agent/v1/poll`` for ``--seconds`` (default 100)
as the agent's poller does: default interval 60 s + 0–10 % jitter, long poll of ``--wait``
(25 s, the agent's default) — the server holds at most ``max_long_polls`` (500) per process
and answers the others at once. Every request is a new connection, from 50 loopback source
addresses (the server allows 100 connections per address). Figures: requests/s, the server
process's CPU (psutil, user + system, % of one core) and RSS, latency p50/p99 of the polls
answered at once (the first poll of each agent, with its sets, apart from the later ones with
nothing new), the held polls, the answers by status; for the whole run and for the steady
part after the first poll interval (when every agent has had its first answer).

Authentication: all agents share one password and its one argon2 hash (hashing 10,000
passwords would take longer than the run), so the server's verification cache
(``api.auth.VerifiedCache``) answers every poll after the first from one entry. A fleet with
10,000 distinct passwords needs one entry per agent kept longer than the poll interval: the
cache holds 32,768 for 10 minutes. A cache miss costs one argon2 verification (tens of ms of
CPU; ``bench/auth_timing.py``).

The machine's load average is printed: the 2 cores are shared, and the simulated agents (one
process, asyncio) run beside the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import psutil  # noqa: E402
from _fleet import PASSWORD, login, make_fleet  # noqa: E402
from _hostile_env import Databases, Server, Target, percentile, server_env  # noqa: E402
from _revisions import git_rev  # noqa: E402

from opencbs.store.db import Database  # noqa: E402
from opencbs.store.migrate import upgrade  # noqa: E402
from opencbs.store.missed import sweep_missed  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work" / "schedules"
GRACE_MS = 3_600_000
MINUTE_MS = 60_000
POLL_INTERVAL = 60.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _evening() -> int:
    """The last 23:30:30 UTC before now (epoch ms): the sweep runs then, so the grace ends at
    22:30:30 and each following minute one sixtieth of the nightly 22:mm slots falls due."""
    day = 24 * 3_600_000
    now = int(time.time() * 1000)
    evening = now // day * day + (23 * 60 + 30) * MINUTE_MS + 30_000
    return evening if evening <= now else evening - day


def sweep_figures(url: str, sets: int, answered: float) -> list[tuple[str, str]]:
    """Part (a): the fleet made in ``url``'s database, then the sweeps (module docstring)."""
    db = Database(url)
    upgrade(db)
    now = _evening()
    fleet = make_fleet(db, sets, now_ms=now, grace_ms=GRACE_MS, zone=UTC, answered=answered)
    rows = [
        ("fleet", f"{fleet.users:,} users, sets, destinations; {fleet.schedules:,} schedules"),
        ("fleet made in", f"{fleet.seconds:.1f} s (one argon2 hash: {fleet.hash_seconds:.2f} s)"),
        ("slots answered by a job", f"{fleet.answered:,} of {fleet.schedules:,}"),
    ]
    times: list[float] = []
    judged = recorded = jobs = 0
    while True:
        t0 = time.perf_counter()
        out = sweep_missed(db, now_ms=now, grace_ms=GRACE_MS, tz=UTC)
        times.append(time.perf_counter() - t0)
        judged += out.judged
        recorded += len(out.recorded)
        jobs += sum(len(r.job_pks) for r in out.recorded)
        if not out.more:
            break
    total = sum(times)
    rows += [
        ("all due at once: first sweep (≤ 1,000 slots)", _ms(times[0])),
        (
            "all due at once: every slot",
            f"{total:.1f} s in {len(times)} sweeps; {judged:,} slots, {judged / total:,.0f}/s",
        ),
        ("missed slots recorded (jobs)", f"{recorded:,} ({jobs:,})"),
    ]
    t0 = time.perf_counter()
    minute = sweep_missed(db, now_ms=now + MINUTE_MS, grace_ms=GRACE_MS, tz=UTC)
    rows.append(
        (
            "steady: the next minute's due slots",
            f"{_ms(time.perf_counter() - t0)} ({minute.judged} slots, "
            f"{len(minute.recorded)} missed)",
        )
    )
    idle = []
    for _ in range(5):
        t0 = time.perf_counter()
        nothing = sweep_missed(db, now_ms=now + MINUTE_MS, grace_ms=GRACE_MS, tz=UTC)
        idle.append(time.perf_counter() - t0)
        assert nothing.judged == 0
    rows.append(("steady: nothing due (median of 5)", _ms(statistics.median(idle))))
    db.dispose()
    return rows


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _lat(pairs: list[tuple[float, float]], since: float = 0.0) -> str:
    values = [took for took, done in pairs if done >= since]
    if not values:
        return "none"
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    return f"{len(values):,}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


def poll_figures(
    url: str, env: dict[str, str], root: Path, args: argparse.Namespace
) -> list[tuple[str, str]]:
    """Part (b): a real server on ``url`` and the simulated agents (module docstring)."""
    from _poll_load import POLL_PATH, run_agents

    server = Server(env, url, root / "serve.log").start()
    try:
        probe = httpx.get(server.base + POLL_PATH, auth=(login(0), PASSWORD), timeout=30)
        if probe.status_code == 404 and "poll" not in probe.text:
            return [("polls", "skipped: this server has no GET /api/agent/v1/poll")]
        proc = psutil.Process(server.pid)
        logins = [(login(i), PASSWORD) for i in range(args.agents)]
        me = psutil.Process()
        cpu0, mine0, t0 = _cpu(proc), _cpu(me), time.monotonic()
        marks: dict[str, tuple[float, float]] = {}

        def mark() -> None:
            time.sleep(min(POLL_INTERVAL, args.seconds))
            marks["steady"] = (_cpu(proc), time.monotonic())

        marker = threading.Thread(target=mark, daemon=True)
        marker.start()
        stats = run_agents(
            server.base, logins, seconds=args.seconds, wait=args.wait, sources=args.sources
        )
        cpu1, mine1, t1 = _cpu(proc), _cpu(me), time.monotonic()
        rss = proc.memory_info().rss / 2**20
        log_tail = server.log_text()[-2000:]
    finally:
        server.stop()
    steady_cpu, steady_t = marks.get("steady", (cpu0, t0))
    every = stats.first + stats.prompt + stats.held
    steady_n = sum(1 for _, done in every if done >= steady_t)
    rows = [
        ("agents, run", f"{args.agents:,} for {t1 - t0:.0f} s; long poll {args.wait} s"),
        ("answers by status", ", ".join(f"{k}×{v:,}" for k, v in sorted(stats.statuses.items()))),
        ("requests/s, whole run", f"{len(every) / (t1 - t0):,.1f}"),
        ("server CPU, whole run", f"{(cpu1 - cpu0) / (t1 - t0) * 100:.0f} % of a core"),
        ("the agents' own CPU (this process)", f"{(mine1 - mine0) / (t1 - t0) * 100:.0f} %"),
        ("first polls (with sets)", _lat(stats.first)),
    ]
    if t1 - steady_t > 5:
        rows += [
            (
                "steady (after the first interval): requests/s",
                f"{steady_n / (t1 - steady_t):,.1f} over {t1 - steady_t:.0f} s",
            ),
            (
                "steady: server CPU",
                f"{(cpu1 - steady_cpu) / (t1 - steady_t) * 100:.0f} % of a core",
            ),
            ("steady: polls answered at once", _lat(stats.prompt, steady_t)),
            ("steady: polls held (long poll)", _lat(stats.held, steady_t)),
        ]
    rows += [
        ("polls answered at once, whole run", _lat(stats.prompt)),
        ("server RSS at the end", f"{rss:.0f} MiB"),
    ]
    if stats.errors:
        rows.append(("first errors", " | ".join(stats.errors)[:300]))
    if "Traceback" in log_tail:
        rows.append(("server log tail", log_tail[-300:]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--only", choices=["sweep", "poll"], default=None)
    ap.add_argument("--sets", type=int, default=10_000, help="users, sets (4 schedules each)")
    ap.add_argument("--answered", type=float, default=0.9, help="share of slots with a job")
    ap.add_argument("--agents", type=int, default=10_000, help="simulated polling agents")
    ap.add_argument("--seconds", type=float, default=100.0, help="length of the polling run")
    ap.add_argument("--wait", type=int, default=25, help="long poll of each agent, seconds")
    ap.add_argument("--sources", type=int, default=50, help="loopback source addresses")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.agents > args.sets and args.only != "sweep":
        ap.error("--agents must not exceed --sets (each agent is a user of the fleet)")
    root = WORK / args.database
    root.mkdir(parents=True, exist_ok=True)
    target = Target("value", None, args.database)
    dbs = Databases(target, root)
    url = dbs.new_template()
    figures: list[tuple[str, str, str]] = []
    t0 = time.monotonic()
    try:
        if args.only in (None, "sweep"):
            figures += [("sweep", k, v) for k, v in sweep_figures(url, args.sets, args.answered)]
        elif args.only == "poll":
            db = Database(url)
            upgrade(db)
            now = int(time.time() * 1000)
            make_fleet(db, args.sets, now_ms=now, grace_ms=GRACE_MS, zone=UTC, answered=0.0)
            db.dispose()
        if args.only in (None, "poll"):
            env = server_env(target, root)
            figures += [("poll", k, v) for k, v in poll_figures(url, env, root, args)]
    finally:
        dbs.drop_all()
    took = time.monotonic() - t0
    head, dirty = git_rev()
    title = (
        f"opencbs schedules at scale ({args.database}; {head}{'+dirty' if dirty else ''}; "
        f"{took:.0f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    if args.json:
        doc: dict[str, Any] = {"title": title, "figures": [list(f) for f in figures]}
        print(json.dumps(doc, indent=2))
        return 0
    print(title)
    width = max(len(k) for _, k, _ in figures)
    for part, key, value in figures:
        print(f"  {part:<5}  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
