"""Hostile-load suite (issue 11): a real ``opencbs serve`` under what an attacker with nothing
but the URL can send, every request to 127.0.0.1, every case bounded in count and time.

Run from the project root::

    .venv/bin/python bench/hostile.py                     # all cases, SQLite, the working tree
    .venv/bin/python bench/hostile.py --cases 1,4         # some cases
    .venv/bin/python bench/hostile.py --rev main          # before = main, after = working tree
    .venv/bin/python bench/hostile.py --database postgres # PostgreSQL at 127.0.0.1:5432
    .venv/bin/python bench/hostile.py --json              # machine-readable figures

Cases (each ends within about a minute; a case that wedges the server is cut off, recorded as
failed, and the server killed; every case gets a fresh copy of the database and a fresh server):

1. Unauthenticated 60 MB batch PUTs, without and with wrong Basic credentials → server RSS
   growth (< 64 MiB; with credentials, beyond the one password check a 2 KB request costs).
2. A 300 MB chunked CBS body (no Content-Length) → server RSS growth (< 64 MiB).
3. An authenticated batch of the most entries with long paths (~60 MB) → RSS growth (reported).
4. 50 stalled GetBackupJobReport readers (200k entries) + 20 wrong-password clients: the
   Summary with valid credentials, p99 < 250 ms; after the attackers stop, free within 10 s.
5. 50 parallel guessers against one system user: at most the configured limit (5) of wrong
   guesses checked per period (the right password sent as guess #10, #25, #50 must be refused,
   and after 100 wrong guesses); 40 parallel wrong backup-user logins: RSS and latency.
6. Slowloris: 200 connections sending headers one byte a second for 15 s.
7. Secrets in the log: ``SysPwd`` percent-encoded in a query string.
8. Deep nesting: destination settings nested 320 deep, then the set listing.

Every case also counts its answers by status: zero 5xx is a goal of each. The table lists each
figure with its goal and whether it is met; with ``--rev`` the same suite runs first against
that revision (``git archive`` of ``src/`` first on PYTHONPATH), then against the working tree,
and the table shows both and their ratio. Logs: ``bench/.work/hostile/<target>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile_bodies import (  # noqa: E402
    Ctx,
    case_auth_max_batch,
    case_chunked_cbs,
    case_deep_nesting,
    case_secret_in_log,
    case_unauth_batch,
)
from _hostile_env import (  # noqa: E402
    REPORT_ENTRIES,
    WORK,
    Databases,
    Figure,
    Fixture,
    Recorder,
    RssSampler,
    Server,
    Target,
    export_revision,
    git_rev,
    prepare_template,
)
from _hostile_load import case_guessers, case_slowloris, case_stalled_readers  # noqa: E402

CASES: dict[int, tuple[str, Callable[[Ctx], None]]] = {
    1: ("unauthenticated 60 MB batch PUT", case_unauth_batch),
    2: ("300 MB chunked CBS body", case_chunked_cbs),
    3: ("authenticated max-size batch", case_auth_max_batch),
    4: ("50 stalled readers + 20 wrong passwords", case_stalled_readers),
    5: ("50 parallel guessers; 40 backup-user", case_guessers),
    6: ("slowloris, 200 connections", case_slowloris),
    7: ("secret in the log", case_secret_in_log),
    8: ("settings nested 320 deep", case_deep_nesting),
}
CASE_LIMIT_S = {5: 170.0}  # seconds before a case is cut off; default 100


def _guarded(fn: Callable[[Ctx], None], ctx: Ctx) -> None:
    try:
        fn(ctx)
    except Exception as exc:  # noqa: BLE001 - a failing case is a result, not a crash
        ctx.rec.add("case error", repr(exc)[:200], repr(exc)[:120], goal="none", passed=False)


def _statuses(rec: Recorder) -> None:
    shown = ", ".join(f"{code}×{n}" for code, n in sorted(rec.statuses.items()))
    rec.add("answers by status", shown or "none", shown or "none")
    fives = rec.fives()
    rec.add("5xx answers", fives, str(fives), goal="0", passed=fives == 0)
    lost = rec.statuses["timeout"] + rec.statuses["closed"]
    rec.add("requests not answered (timeout, closed)", lost, str(lost))


def run_case(number: int, dbs: Databases, env: dict[str, str], fx: Fixture) -> Recorder:
    """Case ``number`` against a fresh copy of the template and a fresh server; its figures.
    The case runs in a thread cut off after ``CASE_LIMIT_S`` (the server is then killed)."""
    title, fn = CASES[number]
    rec = Recorder(f"{number} {title}")
    url = dbs.copy(str(number))
    # case 5 counts the server's password checks in its DEBUG log ("password check: …")
    case_env = {**env, "OPENCBS_LOG_LEVEL": "DEBUG"} if number == 5 else env
    server = Server(case_env, url, dbs.root / f"case-{number}-serve.log")
    try:
        server.start()
    except SystemExit as exc:
        rec.add("server", None, f"did not start: {exc}", goal="starts", passed=False)
        return rec
    ctx = Ctx(server, fx, rec, url)
    t0 = time.monotonic()
    worker = threading.Thread(target=_guarded, args=(fn, ctx), daemon=True)
    limit = CASE_LIMIT_S.get(number, 100.0)
    with RssSampler(server.pid) as rss:  # the whole case, for cases measuring no part of it
        worker.start()
        worker.join(limit)
    if worker.is_alive():
        rec.add("case", None, f"cut off after {limit:.0f} s", goal="ends", passed=False)
    alive = server.alive()
    server.stop()
    if not any(f.name.startswith("server RSS before") for f in rec.figures):
        rss.record(rec)
    worker.join(15)
    if not alive:
        rec.add("server process", "exited", "exited during the case", goal="runs", passed=False)
    _statuses(rec)
    rec.add("case seconds", round(time.monotonic() - t0, 1), f"{time.monotonic() - t0:.1f}")
    return rec


def run_suite(
    target: Target,
    cases: list[int],
    *,
    entries: int = REPORT_ENTRIES,
    quiet: bool = False,
    work: Path = WORK,
) -> list[Figure]:
    """Every case of ``cases`` against ``target`` (a report job of ``entries`` entries; files
    and logs under ``work``); the figures in case order."""
    root = work / f"{target.label.split()[0]}-{target.database}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    dbs = Databases(target, root)
    figures: list[Figure] = []
    try:
        t0 = time.monotonic()
        fx, env = prepare_template(target, dbs, entries)
        if not quiet:
            print(f"[{target.label}] template ready in {time.monotonic() - t0:.0f} s", flush=True)
        for number in cases:
            rec = run_case(number, dbs, env, fx)
            figures += rec.figures
            if not quiet:
                missed = [f.name for f in rec.figures if f.passed is False]
                print(
                    f"[{target.label}] case {rec.case}: "
                    + ("all goals met" if not missed else "missed: " + "; ".join(missed)),
                    flush=True,
                )
    finally:
        dbs.drop_all()
    return figures


# --- the table ----------------------------------------------------------------------------------


def _mark(passed: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[passed]


_QUANTITIES = ("MiB", " ms", ", s", "seconds", "worst s")


def _ratio(before: Figure | None, after: Figure) -> str:
    """after / before for figures that are quantities (sizes, times), else empty."""
    if not after.name.endswith(_QUANTITIES):
        return ""
    if before is None or not isinstance(before.value, int | float):
        return ""
    if not isinstance(after.value, int | float) or isinstance(after.value, bool):
        return ""
    if before.value == 0:
        return ""
    return f"{after.value / before.value:.2f}"


def print_table(runs: list[tuple[Target, list[Figure]]], header: str) -> None:
    """One table: case, figure, goal, the value per target (before, after), ratio, pass."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header, show_lines=False)
    for col in ("case", "figure", "goal"):
        table.add_column(col)
    for target, _ in runs:
        table.add_column(target.label)
    if len(runs) == 2:
        table.add_column("after/before", justify="right")
    table.add_column("pass")
    before = {(f.case, f.name): f for f in runs[0][1]} if len(runs) == 2 else {}
    last_case = ""
    for f in runs[-1][1]:
        cells = [f.case if f.case != last_case else "", f.name, f.goal]
        if len(runs) == 2:
            b = before.get((f.case, f.name))
            cells += [b.shown if b else "", f.shown, _ratio(b, f)]
        else:
            cells.append(f.shown)
        cells.append(_mark(f.passed))
        table.add_row(*cells, end_section=False)
        last_case = f.case
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--cases", default=",".join(str(n) for n in CASES), help="e.g. 1,4")
    ap.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--rev", default="", help="also run against COMMIT first (before)")
    ap.add_argument("--entries", type=int, default=REPORT_ENTRIES, help="entries of the report")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    cases = [int(c) for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in CASES]:
        ap.error(f"unknown cases {unknown}; known: {sorted(CASES)}")
    targets = []
    if args.rev:
        src, commit = export_revision(args.rev)
        targets.append(Target(f"before {commit}", src, args.database))
    label = f"after {git_rev()}" if args.rev else f"value ({git_rev()})"
    targets.append(Target(label, None, args.database))
    t0 = time.monotonic()
    runs = [(t, run_suite(t, cases, entries=args.entries, quiet=args.json)) for t in targets]
    took = time.monotonic() - t0
    if args.json:
        doc = {t.label: [f.__dict__ for f in figs] for t, figs in runs}
        print(json.dumps({"seconds": round(took, 1), "runs": doc}, indent=2, default=str))
    else:
        load = os.getloadavg()[0]
        print_table(
            runs,
            f"opencbs hostile load ({args.database}; {took:.0f} s; load average {load:.1f} "
            f"on {os.cpu_count()} CPUs)",
        )
    missed = any(f.passed is False for f in runs[-1][1])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
