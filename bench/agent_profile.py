"""Profile the agent's ``run_backup`` on small versions of the speed issue's data sets.

One command measures four phases, each in its own process (so peak memory is that phase's
alone), against an in-process server (the app over Starlette's TestClient, SQLite) and a
``LocalStorage`` destination with real fsyncs::

    .venv/bin/python bench/agent_profile.py                    # 300 MB mixed, 20,000 small
    .venv/bin/python bench/agent_profile.py --mixed-mb 100 --small 5000
    .venv/bin/python bench/agent_profile.py --phases small,small-unchanged
    .venv/bin/py-spy record -o prof.svg -- .venv/bin/python bench/agent_profile.py \\
        --phases mixed --inline                                # profile one phase in-process

Phases: ``mixed`` (a new repository: text, binaries, already-compressed and random files),
``small`` (a new repository: many ~1 KiB files in a few hundred directories),
``small-unchanged`` (the same tree again), ``small-touch`` (after rewriting 1 % of the files).
Prints per phase: wall seconds, CPU seconds (user + system of the whole process, server
included) and peak RSS (MiB). The data sets are built once under ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import zlib
from datetime import UTC
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PASSWORD = "bench-password"
USER = ("bench-user", "bench-secret")
WORDS = (
    "backup restore snapshot chunk pack index server agent report job file folder data "
    "the of and to in is that for it with as was on be by this are or from at which"
).split()


# --- data ---------------------------------------------------------------------------------


def _text(rng: random.Random, size: int) -> bytes:
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + f" {rng.randint(0, 99999)}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def build_mixed(root: Path, total_mb: int) -> None:
    """About ``total_mb`` MB: a quarter each of text, binaries, gzip files and random bytes."""
    if (root / ".done").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(1)
    quarter = total_mb * 1024 * 1024 // 4
    for kind in ("text", "bin", "gz", "rand"):
        (root / kind).mkdir(parents=True)
    done = 0
    i = 0
    while done < quarter:
        size = rng.randint(64 * 1024, 8 * 1024 * 1024)
        (root / "text" / f"t{i}.txt").write_bytes(_text(rng, size))
        (root / "gz" / f"t{i}.gz").write_bytes(zlib.compress(_text(rng, size), 6))
        done += size
        i += 1
    done = 0
    i = 0
    for base in ("/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib"):
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                p = os.path.join(dirpath, name)
                if done >= quarter or not os.path.isfile(p) or os.path.islink(p):
                    continue
                try:
                    data = Path(p).read_bytes()
                except OSError:
                    continue
                (root / "bin" / f"b{i}_{name}").write_bytes(data)
                done += len(data)
                i += 1
    done = 0
    i = 0
    while done < quarter:
        size = rng.randint(4 * 1024, 16 * 1024 * 1024)
        (root / "rand" / f"r{i}.bin").write_bytes(rng.randbytes(size))
        done += size
        i += 1
    (root / ".done").write_bytes(b"")


def build_small(root: Path, count: int) -> None:
    """``count`` files of 100 B - 4 KiB (text or random) in directories of ~30 files."""
    marker = root / f".done-{count}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(2)
    for i in range(count):
        d = root / f"d{i // 900}" / f"s{(i // 30) % 30}"
        if i % 30 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(100, 4096)
        data = _text(rng, size) if i % 3 else rng.randbytes(size)
        (d / f"f{i}.dat").write_bytes(data)
    marker.write_bytes(b"")


def touch_small(root: Path, fraction: float) -> int:
    """Append a line to ``fraction`` of the small files (a new mtime and content)."""
    files = sorted(p for p in root.rglob("*.dat"))
    rng = random.Random(time.time_ns())
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    for p in chosen:
        with open(p, "ab") as f:
            f.write(f"touched {time.time_ns()}\n".encode())
    return len(chosen)


# --- one phase ----------------------------------------------------------------------------


def run_phase(work: Path, phase: str) -> dict[str, Any]:
    """Back up the phase's tree once; returns the job outcome's figures."""
    from argon2 import PasswordHasher
    from fastapi.testclient import TestClient

    from opencbs import security
    from opencbs.agent import AgentClient, NewDestination
    from opencbs.agent.job import JobOptions, run_backup
    from opencbs.api.app import create_app
    from opencbs.api.state import ServerState
    from opencbs.destinations.local import LocalStorage
    from opencbs.reports.vocabulary import SystemRole
    from opencbs.store import users
    from opencbs.store.db import Database
    from opencbs.store.migrate import upgrade

    security._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    dataset = "mixed" if phase == "mixed" else "small"
    db_path = work / f"{dataset}.db"
    fresh = phase in ("mixed", "small")
    dest = work / f"dest-{dataset}"
    ids_file = work / f"{dataset}.ids.json"
    if fresh:
        for p in (db_path, ids_file):
            p.unlink(missing_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
    db = Database(f"sqlite:///{db_path}")
    upgrade(db)
    if fresh:
        with db.write() as conn:
            users.add_system_user(conn, "bench-admin", "bench-admin1", SystemRole.ADMIN)
            users.add_backup_user(conn, *USER)
    state = ServerState(db=db, tz=UTC, job_idle_timeout=3600, sweep_interval=3600)
    with (
        TestClient(create_app(state)) as tc,
        AgentClient("http://testserver", *USER, transport=tc._transport) as agent,
    ):
        if fresh:
            bset = agent.create_set(
                dataset,
                settings={"sources": [str(work / dataset)]},
                destinations=[NewDestination("L", "LOCAL", {"path": str(dest)})],
            )
            ids_file.write_text(json.dumps([bset.id, bset.destinations[0].id]))
        set_id, dest_id = json.loads(ids_file.read_text())
        touched = touch_small(work / "small", 0.01) if phase == "small-touch" else 0
        t0 = time.perf_counter()
        c0 = os.times()
        out = run_backup(
            JobOptions(
                client=agent,
                set_id=set_id,
                destination_id=dest_id,
                storage=LocalStorage(dest),
                password=PASSWORD,
                start_time_ms=time.time_ns() // 1_000_000,
            )
        )
        c1 = os.times()
        wall = time.perf_counter() - t0
    db.dispose()
    return {
        "phase": phase,
        "status": out.status.value,
        "wall_s": round(wall, 2),
        "cpu_s": round((c1.user - c0.user) + (c1.system - c0.system), 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "counts": {k.key: v for k, v in out.counts.items() if v},
        "touched": touched,
        "original_bytes": out.dedupe_original_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "agent")
    parser.add_argument("--mixed-mb", type=int, default=300)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--phases", default="mixed,small,small-unchanged,small-touch")
    parser.add_argument("--inline", action="store_true", help="run phases in this process")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.phase:
        print(json.dumps(run_phase(work, args.phase)))
        return
    phases = args.phases.split(",")
    if "mixed" in phases:
        build_mixed(work / "mixed", args.mixed_mb)
    if any(p.startswith("small") for p in phases):
        build_small(work / "small", args.small)
    subprocess.run(["sync"], check=False)
    print(f"{'phase':<16} {'status':<28} {'wall s':>7} {'cpu s':>7} {'rss MiB':>8}")
    for phase in phases:
        if args.inline:
            row = run_phase(work, phase)
        else:
            proc = subprocess.run(
                [sys.executable, __file__, "--work", str(work), "--phase", phase],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{row['phase']:<16} {row['status']:<28} {row['wall_s']:>7} {row['cpu_s']:>7} "
            f"{row['peak_rss_mib']:>8}  {row['counts']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
