"""Benchmark of retention: opencbs ``forget`` + ``prune`` against restic ``forget --prune`` and
borg ``prune`` + ``compact`` on the same 30-day history.

Run from the project root::

    .venv/bin/python bench/retention.py              # 100,000 files, 30 daily snapshots
    .venv/bin/python bench/retention.py --quick      # 10,000 files
    .venv/bin/python bench/retention.py --days 14 --rebuild
    .venv/bin/python bench/retention.py --rev HEAD   # opencbs as committed (src/ on PYTHONPATH)

History (``bench/_retention_history.py``, built once and cached under
``bench/.work/retention/<mode>-<days>d/``; ``--rebuild`` builds it again): ``bench/_datasets.py``'s
seeded 100,000-file tree (10,000 with ``--quick``) on day 1, then before each later day 1-5 %
of its files rewritten (content, size, mtime) and a few added and deleted, all seeded by the day;
after each day each tool backs the tree up into its own repository, every snapshot at 03:00 UTC
of its day (the last on 2026-11-30): ``restic backup --time``, ``borg create --timestamp``,
``opencbs backup`` with its clock moved by libfaketime (``LD_PRELOAD``, a relative offset) and
reporting to a real ``opencbs serve`` (the set's own retention policy turned off after
backups, so that it keeps every snapshot). Nothing is measured while building (the output says how
long it took). The tools' state (repositories, caches, the agent's home and the server's data)
is then frozen; each measured run starts from a copy of it at the same paths, so runs repeat.

Measured on the copy, the page cache dropped first (root only): restic ``forget --keep-daily 7
--keep-weekly 4 --prune`` (one process); borg ``prune --keep-daily 7 --keep-weekly 4`` then
``compact`` (two: wall and CPU summed, peak RSS the larger); opencbs ``forget --destination REPO
--keep-daily 7 --keep-weekly 4`` then ``prune --destination REPO --grace 0`` (the same; "not
available" while the CLI has no such commands). Wall time, CPU (user+system of the process tree),
peak RSS (``bench/agent.py``'s ``measure``), the repository's size before and after (apparent
bytes, as ``du --apparent-size``) and the snapshots left, checked against each tool's rule.
Prints one table with the ratios opencbs/restic and opencbs/borg and the issue's goals, and
writes the figures to ``bench/.work/retention/last_run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "retention"
sys.path.insert(0, str(HERE))

import _revisions  # noqa: E402
from _retention_history import (  # noqa: E402
    ChurningTree,
    OpencbsServer,
    faketime_env,
    keep_borg,
    keep_restic,
    libfaketime,
    snapshot_times,
)
from agent import (  # noqa: E402
    GNU_TIME,
    OPENCBS,
    Borg,
    Restic,
    _cpu_ticks,
    _git_rev,
    _version,
    drop_caches,
    measure,
)

HISTORY_VERSION = 1
SEED = 1
FILES = {"full": 100_000, "quick": 10_000}
KEEP_DAILY, KEEP_WEEKLY = 7, 4
SET_NAME = "retention"
TOOLS = ("opencbs", "restic", "borg")
MIB = 1024 * 1024
SIZE_GOAL = 1.05  # repository size after: at most 5 % above restic's
GOALS = ("prune faster than both", "peak RSS below both", "size after within 5 % of restic's")
BACKUP_TIMEOUT = 1800.0  # seconds: an opencbs backup under libfaketime that hangs (see there)


# --- the tools ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Which opencbs runs: libfaketime's path, another revision's ``src`` for PYTHONPATH (None:
    the working tree, through the venv's editable install) and its label."""

    lib: Path
    pythonpath: Path | None
    revision: str


def _run(cmd: Sequence[str], env: dict[str, str], log: Path, timeout: float | None = None) -> str:
    """Run ``cmd`` (not measured); its stdout. stderr goes to ``log``; a failure or a run
    longer than ``timeout`` seconds ends the benchmark naming the log."""
    with open(log, "ab") as err:
        err.write(f"\n$ {' '.join(cmd)}\n".encode())
        err.flush()
        try:
            res = subprocess.run(
                list(cmd), env=env, stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"{cmd[0]} {cmd[1]} still running after {timeout:.0f} s; see {log}"
            ) from None
    if res.returncode != 0:
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed (exit {res.returncode}); see {log}")
    return res.stdout.decode(errors="replace")


class _Peer:
    """What a peer tool does not need: it is always there, runs no server of its own."""

    def missing(self) -> str:
        return ""

    def start(self) -> None:
        pass

    def server_cpu(self) -> float | None:
        return None

    def stop(self) -> None:
        pass


class OpencbsTool:
    """opencbs: ``backup`` under libfaketime; ``forget`` + ``prune`` measured."""

    name = "opencbs"
    parts = ("repos/opencbs", "server-data", "server-home", "agent-home", "agent-config.toml")

    def __init__(self, root: Path, logs: Path, setup: Setup) -> None:
        self.repo, self.logs, self.lib = root / "repos" / "opencbs", logs, setup.lib
        self.server = OpencbsServer(root, logs / "opencbs-serve.log", setup.pythonpath)
        self.env = self.server.env
        self.retention = ""  # what became of the set's own retention policy (history notes)

    def init(self) -> None:
        self.server.add_user()
        self.server.start()

    def start(self) -> None:
        """Start the server on the copied state (forget and prune may ask it of the set)."""
        self.server.start()

    def server_cpu(self) -> float | None:
        """The server's CPU seconds so far."""
        return _cpu_ticks(self.server.proc.pid) if self.server.proc is not None else None

    def backup(self, day: int, when: datetime, source: Path) -> None:
        cmd = [OPENCBS, "backup", "--set", SET_NAME, "--json"]
        if day == 1:
            cmd += ["--source", str(source), "--destination", str(self.repo)]
        env = faketime_env(self.env, self.lib, when)
        out = _run(cmd, env, self.logs / "opencbs.log", timeout=BACKUP_TIMEOUT)
        doc = json.loads(out)
        if not doc["status"].startswith("BS_STOP_SUCCESS"):
            raise SystemExit(f"opencbs backup of day {day}: {doc['status']}; see {self.logs}")
        if day == 1:
            self.retention = self.server.retention_off(doc["backup_set_id"])

    def snapshot_times(self) -> list[datetime]:
        out = _run(
            [OPENCBS, "snapshots", "--destination", str(self.repo), "--json"],
            self.env,
            self.logs / "opencbs.log",
        )
        return [datetime.fromtimestamp(s["time_ns"] / 1e9, UTC) for s in json.loads(out)]

    def missing(self) -> str:
        """Why the measured commands cannot run ("" when they can)."""
        absent = [
            c
            for c in ("forget", "prune")
            if subprocess.run(
                [OPENCBS, c, "--help"], env=self.env, capture_output=True, check=False
            ).returncode
            != 0
        ]
        return f"no `opencbs {'`/`'.join(absent)}` in this revision" if absent else ""

    def commands(self) -> list[list[str]]:
        repo = str(self.repo)
        return [
            [OPENCBS, "forget", "--destination", repo, "--keep-daily", str(KEEP_DAILY)]
            + ["--keep-weekly", str(KEEP_WEEKLY)],
            [OPENCBS, "prune", "--destination", repo, "--grace", "0"],
        ]

    def stop(self) -> None:
        self.server.stop()


class ResticTool(_Peer):
    """restic: repository version 2 (compression ``auto``), password from the environment."""

    name = "restic"
    parts = ("repos/restic", "restic-cache", "restic-home")

    def __init__(self, root: Path, logs: Path) -> None:
        self.repo, self.logs = root / "repos" / "restic", logs
        self.env = {**Restic(root, logs).env, "RESTIC_REPOSITORY": str(self.repo), "TZ": "UTC"}

    def init(self) -> None:
        _run(["restic", "init", "--repository-version", "2"], self.env, self.logs / "restic.log")

    def backup(self, day: int, when: datetime, source: Path) -> None:
        stamp = when.strftime("%Y-%m-%d %H:%M:%S")  # local time: TZ=UTC
        cmd = ["restic", "backup", "--quiet", "--host", "bench", "--time", stamp, str(source)]
        _run(cmd, self.env, self.logs / "restic.log")

    def snapshot_times(self) -> list[datetime]:
        out = _run(["restic", "snapshots", "--json"], self.env, self.logs / "restic.log")
        return [datetime.fromisoformat(s["time"]).astimezone(UTC) for s in json.loads(out)]

    def commands(self) -> list[list[str]]:
        return [
            ["restic", "forget", "--keep-daily", str(KEEP_DAILY)]
            + ["--keep-weekly", str(KEEP_WEEKLY), "--prune"]
        ]


class BorgTool(_Peer):
    """borg 1.x: ``repokey-blake2``, default compression (lz4), passphrase from the env."""

    name = "borg"
    parts = ("repos/borg", "borg-home")

    def __init__(self, root: Path, logs: Path) -> None:
        self.repo, self.logs = root / "repos" / "borg", logs
        self.env = {**Borg(root, logs).env, "TZ": "UTC"}

    def init(self) -> None:
        cmd = ["borg", "init", "--encryption=repokey-blake2", str(self.repo)]
        _run(cmd, self.env, self.logs / "borg.log")

    def backup(self, day: int, when: datetime, source: Path) -> None:
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S")  # borg: UTC
        cmd = ["borg", "create", "--timestamp", stamp, f"{self.repo}::day-{day:03d}", str(source)]
        _run(cmd, self.env, self.logs / "borg.log")

    def snapshot_times(self) -> list[datetime]:
        out = _run(["borg", "list", "--json", str(self.repo)], self.env, self.logs / "borg.log")
        return [
            datetime.fromisoformat(a["time"]).replace(tzinfo=UTC)  # local time: TZ=UTC
            for a in json.loads(out)["archives"]
        ]

    def commands(self) -> list[list[str]]:
        return [
            ["borg", "prune", "--keep-daily", str(KEEP_DAILY)]
            + ["--keep-weekly", str(KEEP_WEEKLY), str(self.repo)],
            ["borg", "compact", str(self.repo)],
        ]


Tool = OpencbsTool | ResticTool | BorgTool


def make_tools(root: Path, logs: Path, setup: Setup) -> list[Tool]:
    """The three tools over the state folder ``root`` (``live``), logging into ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    return [OpencbsTool(root, logs, setup), ResticTool(root, logs), BorgTool(root, logs)]


# --- the history -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The folders of one history: ``source`` (the tree), ``live`` (the tools' state at the
    paths they used: built there, copied back there for each measured run), ``cache`` (that
    state frozen), ``history`` (its description, written last)."""

    base: Path

    @property
    def source(self) -> Path:
        return self.base / "source" / "tree"

    @property
    def live(self) -> Path:
        return self.base / "live"

    @property
    def cache(self) -> Path:
        return self.base / "cache"

    @property
    def history(self) -> Path:
        return self.base / "history.json"


def history_params(files: int, days: int) -> dict[str, Any]:
    """What a cached history must match to be reused."""
    return {"version": HISTORY_VERSION, "files": files, "days": days, "seed": SEED}


def load_history(layout: Layout, params: dict[str, Any]) -> dict[str, Any] | None:
    """The cached history's description when it matches ``params`` and its state is there."""
    try:
        doc: dict[str, Any] = json.loads(layout.history.read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("params") == params and layout.cache.is_dir() else None


def build_history(layout: Layout, params: dict[str, Any], setup: Setup) -> dict[str, Any]:
    """Build the history afresh (module docstring; nothing measured), check every tool holds a
    snapshot at each planned time, freeze the state into ``cache``. Returns its description."""
    layout.history.unlink(missing_ok=True)
    for path in (layout.live, layout.cache, layout.source.parent):
        shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    tree = ChurningTree(layout.source, params["files"], SEED)
    tree.build()
    logs = layout.base / "build-logs"
    shutil.rmtree(logs, ignore_errors=True)
    tools = make_tools(layout.live, logs, setup)
    times = snapshot_times(params["days"])
    spent = dict.fromkeys(TOOLS, 0.0)
    churn: list[dict[str, int]] = []
    print(f"building the history: {params['files']:,} files, {len(times)} days", flush=True)
    try:
        for tool in tools:
            tool.init()
        for day, when in enumerate(times, 1):
            if day > 1:
                churn.append(tree.churn(day, when))
            for tool in tools:
                t = time.perf_counter()
                tool.backup(day, when, layout.source)
                spent[tool.name] += time.perf_counter() - t
            changed = f" ({', '.join(f'{k} {v}' for k, v in churn[-1].items())})" if churn else ""
            print(f"  day {day:2}/{len(times)} {when:%Y-%m-%d}{changed}", flush=True)
        for tool in tools:
            _check_times(tool, times)
    finally:
        for tool in tools:
            tool.stop()
    doc = {
        "params": params,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_s": time.perf_counter() - t0,
        "backup_s": spent,
        "snapshot_times": [t.isoformat() for t in times],
        "churn": churn,
        "files_last_day": len(tree.live),
        "opencbs": setup.revision,
        "opencbs_set_retention": next(t for t in tools if isinstance(t, OpencbsTool)).retention,
        "repo_mib": {t.name: du(t.repo)[0] / MIB for t in tools},
    }
    layout.live.rename(layout.cache)
    layout.history.write_text(json.dumps(doc, indent=2))
    return doc


def _check_times(tool: Tool, planned: list[datetime]) -> None:
    """Each planned snapshot there, to the minute (opencbs starts at the second asked for)."""
    got = sorted(t.replace(second=0, microsecond=0) for t in tool.snapshot_times())
    if got != planned:
        raise SystemExit(
            f"{tool.name}: the snapshots are not at the planned times: got "
            f"{[t.isoformat() for t in got]}, planned {[t.isoformat() for t in planned]}"
        )


# --- one measured run --------------------------------------------------------------------------


@dataclass
class Result:
    """One tool's retention run (the sums and maximum over its commands) and what it left."""

    tool: str
    available: bool = True
    ok: bool = True
    note: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    repo_before_mib: float = 0.0
    repo_after_mib: float | None = None
    repo_after_allocated_mib: float | None = None
    snapshots_before: int = 0
    snapshots_left: int | None = None
    kept: list[str] = field(default_factory=list)
    rule: str = ""
    server_cpu_s: float | None = None


def du(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``path`` (``du --apparent-size -b``
    and ``du -B1``; hard links counted once)."""
    apparent = allocated = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                st = (Path(dirpath) / name).lstat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def restore_state(layout: Layout, tool: Tool) -> None:
    """Put the tool's frozen state back at the paths it was built at (``live``)."""
    for part in tool.parts:
        src, dst = layout.cache / part, layout.live / part
        if dst.is_dir():
            shutil.rmtree(dst)
        else:
            dst.unlink(missing_ok=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dst)


def measure_tool(layout: Layout, tool: Tool, history: dict[str, Any], logs: Path) -> Result:
    """Copy the state, drop the page cache, run the tool's retention commands measured, then
    size the repository and list what is left."""
    result = Result(tool.name, snapshots_before=history["params"]["days"])
    result.repo_before_mib = du(layout.cache / tool.repo.relative_to(layout.live))[0] / MIB
    restore_state(layout, tool)
    tool.start()
    try:
        why = tool.missing()
        if why:
            result.available, result.ok, result.note = False, False, f"not available ({why})"
            return result
        server_cpu = tool.server_cpu()
        drop_caches()
        for cmd in tool.commands():
            log = logs / f"{tool.name}-{cmd[1]}.log"
            run, _ = measure("retention", tool.name, cmd, tool.env, log=log)
            result.steps.append({"command": " ".join(cmd[:2]), **asdict(run)})
            result.wall_s += run.wall_s
            result.cpu_s += run.cpu_s
            result.peak_rss_mib = max(result.peak_rss_mib, run.peak_rss_mib)
            if not run.ok:
                result.ok, result.note = False, f"{cmd[0]} {cmd[1]} {run.note}"
                return result
        server_cpu_after = tool.server_cpu()
        if server_cpu is not None and server_cpu_after is not None:
            result.server_cpu_s = server_cpu_after - server_cpu
        apparent, allocated = du(tool.repo)
        result.repo_after_mib, result.repo_after_allocated_mib = apparent / MIB, allocated / MIB
        kept = sorted(t.date() for t in tool.snapshot_times())
        result.snapshots_left, result.kept = len(kept), [d.isoformat() for d in kept]
        result.rule = kept_rule(tool.name, kept, history)
        result.ok = result.rule.startswith("as ")
    finally:
        tool.stop()
    return result


def expected(history: dict[str, Any]) -> dict[str, list[date]]:
    """The dates each tool's rule keeps of the history's snapshots."""
    dates = [datetime.fromisoformat(t).date() for t in history["snapshot_times"]]
    return {
        "restic": keep_restic(dates, KEEP_DAILY, KEEP_WEEKLY),
        "borg": keep_borg(dates, KEEP_DAILY, KEEP_WEEKLY),
    }


def kept_rule(tool: str, kept: list[date], history: dict[str, Any]) -> str:
    """Which rule the kept dates follow: ``as restic's rule`` (the reference, for restic and
    opencbs), ``as borg's rule`` (for borg), or what differs from the tool's own."""
    rules = expected(history)
    own = "borg" if tool == "borg" else "restic"
    if kept == rules[own]:
        return f"as {own}'s rule"
    other = "restic" if own == "borg" else "borg"
    if kept == rules[other]:
        return f"NOT as {own}'s rule: as {other}'s"
    extra = sorted(set(kept) - set(rules[own]))
    missing = sorted(set(rules[own]) - set(kept))
    return (
        f"NOT as {own}'s rule: extra {[d.isoformat() for d in extra]}, "
        f"missing {[d.isoformat() for d in missing]}"
    )


# --- the table ---------------------------------------------------------------------------------


def goals(by: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(goal, "met" / "MISSED" / "not decided", detail) for the issue's three goals."""
    o = by.get("opencbs")
    peers = [by[p] for p in ("restic", "borg") if p in by and by[p]["ok"]]
    if not (o and o["ok"]):
        why = o["note"] if o else "not run"
        return [(g, "not decided", why) for g in GOALS]
    out: list[tuple[str, str, str]] = []
    for goal, k in zip(GOALS[:2], ("wall_s", "peak_rss_mib"), strict=True):
        ratios = {p["tool"]: o[k] / p[k] for p in peers if p[k]}
        met = len(ratios) == 2 and all(r < 1 for r in ratios.values())
        detail = ", ".join(f"{t} {r:.2f}x" for t, r in ratios.items())
        out.append((goal, "met" if met else "MISSED", detail))
    r = by.get("restic")
    if r and r["ok"] and r["repo_after_mib"]:
        ratio = o["repo_after_mib"] / r["repo_after_mib"]
        detail = f"{o['repo_after_mib']:.1f} MiB vs restic {r['repo_after_mib']:.1f} MiB"
        out.append(
            (
                GOALS[2],
                "met" if ratio <= SIZE_GOAL else "MISSED",
                f"{detail} = {ratio:.3f}x",
            )
        )
    return out


def _step(step: dict[str, Any]) -> str:
    """``prune 1.23 s / 85 MiB``: one command's wall time and peak RSS."""
    name = step["command"].split()[-1]
    return f"{name} {step['wall_s']:.2f} s / {step['peak_rss_mib']:.0f} MiB"


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def render(doc: dict[str, Any]) -> None:
    """Print the table, its notes and the goals."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    by = {r["tool"]: r for r in doc["results"]}
    h = doc["history"]
    table = Table(
        title=f"retention: keep {KEEP_DAILY} daily + {KEEP_WEEKLY} weekly of {h['params']['days']} "
        f"daily snapshots of {h['params']['files']:,} files ({doc['mode']}, {doc['date']}, load "
        f"average {doc['load_before'][0]:.2f} before / {doc['load_after'][0]:.2f} after, "
        f"{doc['cpus']} CPUs)"
    )
    for col in ("tool", "wall s", "CPU s", "peak RSS MiB", "repo before MiB", "repo after MiB"):
        table.add_column(col, justify="left" if col == "tool" else "right")
    table.add_column("snapshots left", justify="right")
    table.add_column("note")
    for name in TOOLS:
        r = by.get(name)
        if r is None:
            continue
        if not r["available"] or not r["steps"]:
            table.add_row(name, "", "", "", f"{r['repo_before_mib']:.1f}", "", "", r["note"])
            continue
        note = [r["rule"] or r["note"]]
        if len(r["steps"]) > 1:
            note.append(" + ".join(_step(s) for s in r["steps"]))
        if r["server_cpu_s"] is not None:
            note.append(f"server CPU {r['server_cpu_s']:.1f} s")
        table.add_row(
            name,
            f"{r['wall_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['repo_before_mib']:.1f}",
            _num(r["repo_after_mib"], ".1f"),
            _num(r["snapshots_left"], "d"),
            "; ".join(n for n in note if n),
        )
    o = by.get("opencbs")
    for peer in ("restic", "borg"):
        p = by.get(peer)
        if o and p and o["ok"] and p["ok"]:
            table.add_row(*_ratio_row(o, p), style="dim")
    console.print(table)
    for line in notes(doc):
        console.print(line)
    console.print("goals (issue 14):")
    for goal, verdict, detail in goals(by):
        console.print(f"  {goal:36} {verdict:12} {detail}")


def _ratio_row(o: dict[str, Any], p: dict[str, Any]) -> list[str]:
    def mark(ratio: float, limit: float, *, strict: bool) -> str:
        ok = ratio < limit if strict else ratio <= limit
        return f"{ratio:.2f} {'✓' if ok else '✗'}"

    size = ""
    if o["repo_after_mib"] and p["repo_after_mib"]:
        ratio = o["repo_after_mib"] / p["repo_after_mib"]
        size = mark(ratio, SIZE_GOAL, strict=False) if p["tool"] == "restic" else f"{ratio:.2f}"
    return [
        f"opencbs/{p['tool']}",
        mark(o["wall_s"] / p["wall_s"], 1, strict=True),
        f"{o['cpu_s'] / p['cpu_s']:.2f}" if p["cpu_s"] else "",
        mark(o["peak_rss_mib"] / p["peak_rss_mib"], 1, strict=True),
        "",
        size,
        "",
        "",
    ]


def notes(doc: dict[str, Any]) -> list[str]:
    """The lines under the table: commands, how figures are taken, the history, versions."""
    h, v = doc["history"], doc["versions"]
    rules = doc["expected"]
    spent = ", ".join(f"{t} {s / 60:.1f} min" for t, s in h["backup_s"].items())
    return [
        "commands: opencbs `forget --keep-daily 7 --keep-weekly 4` + `prune --grace 0` (grace 0: "
        "no backup runs meanwhile); restic `forget --keep-daily 7 --keep-weekly 4 --prune`; borg "
        "`prune --keep-daily 7 --keep-weekly 4` + `compact`. Two commands: wall and CPU summed, "
        "peak RSS the larger. Default settings, no tuning.",
        "sizes: apparent bytes of the repository folder (du --apparent-size), MiB. Each run starts "
        "from a copy of the same frozen state (repository, cache, agent home) at the paths it was "
        "built at; page cache "
        + ("dropped before each run." if doc["page_cache_dropped"] else "NOT dropped (not root)."),
        f"kept by rule: restic's rule {len(rules['restic'])} ({', '.join(rules['restic'])}); "
        f"borg's rule {len(rules['borg'])} (+ "
        f"{', '.join(sorted(set(rules['borg']) - set(rules['restic']))) or 'nothing'}): borg "
        "counts no week whose newest archive the daily rule kept already, and keeps the oldest "
        "archive when a rule cannot fill its count. opencbs is checked against restic's rule.",
        f"history: built {h['built']} in {h['build_s'] / 60:.1f} min (backups: {spent}; not "
        f"measured), opencbs {h['opencbs']}; {h['files_last_day']:,} files on the last day; "
        f"opencbs backups under libfaketime; {h['opencbs_set_retention']}.",
        f"versions: opencbs {v['opencbs']}; {v['restic']}; {v['borg']}; libfaketime "
        f"{v['libfaketime']}.",
    ]


# --- main --------------------------------------------------------------------------------------


def check_tools() -> Path:
    """restic, borg, GNU time, libfaketime and the venv's opencbs are there; libfaketime's
    path. Exits with a hint otherwise."""
    missing = [t for t in ("restic", "borg") if shutil.which(t) is None]
    missing += [GNU_TIME] if not Path(GNU_TIME).exists() else []
    lib = libfaketime()
    missing += ["libfaketime"] if lib is None else []
    if missing:
        raise SystemExit(
            f"bench/retention.py: {', '.join(missing)} not found\n"
            "hint: on Debian/Ubuntu: sudo apt-get install restic borgbackup time faketime"
        )
    if not Path(OPENCBS).exists():
        raise SystemExit(
            f"bench/retention.py: {OPENCBS} not found\n"
            "hint: run with the project's venv: .venv/bin/python bench/retention.py"
        )
    assert lib is not None
    return lib


def run(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """Build or reuse the history, measure each tool; the document of the run."""
    mode = "quick" if args.quick else "full"
    params = history_params(FILES[mode], args.days)
    layout = Layout(WORK / f"{mode}-{args.days}d")
    history = None if args.rebuild else load_history(layout, params)
    if history is None:
        history = build_history(layout, params, setup)
    else:
        print(
            f"history: reused {layout.base.relative_to(ROOT)} (built {history['built']} in "
            f"{history['build_s'] / 60:.1f} min; --rebuild builds it again)",
            flush=True,
        )
        if history["opencbs"] != setup.revision:
            print(
                f"  note: built with opencbs {history['opencbs']}, measuring {setup.revision} "
                "(--rebuild if the repository format changed in between)",
                flush=True,
            )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = WORK / "runs" / stamp / "logs"
    tools = make_tools(layout.live, logs, setup)
    load_before = os.getloadavg()
    results: list[Result] = []
    for tool in tools:
        r = measure_tool(layout, tool, history, logs)
        results.append(r)
        print(
            f"  {r.tool:8} wall {r.wall_s:7.2f} s  CPU {r.cpu_s:7.2f} s  peak "
            f"{r.peak_rss_mib:6.0f} MiB  left {r.snapshots_left}  {r.rule or r.note}",
            flush=True,
        )
    if not args.keep:
        shutil.rmtree(layout.live, ignore_errors=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "command": " ".join([".venv/bin/python", "bench/retention.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "page_cache_dropped": drop_caches(),
        "keep": {"daily": KEEP_DAILY, "weekly": KEEP_WEEKLY},
        "expected": {k: [d.isoformat() for d in v] for k, v in expected(history).items()},
        "versions": {
            "opencbs": setup.revision,
            "restic": _version(["restic", "version"]),
            "borg": _version(["borg", "--version"]),
            "libfaketime": _version(["faketime", "--version"]) + f" ({setup.lib})",
        },
        "history": history,
        "results": [asdict(r) for r in results],
        "logs": str(logs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 files instead of 100,000")
    parser.add_argument(
        "--days", type=int, default=30, help="daily snapshots in the history (default 30)"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="build the history again even if cached"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the pruned copies (bench/.work/retention/*/live)"
    )
    parser.add_argument(
        "--rev",
        default="",
        metavar="COMMIT",
        help="opencbs as committed at COMMIT (git archive of src/ on PYTHONPATH) instead of the "
        "working tree, to build the history and to measure",
    )
    args = parser.parse_args(argv)
    if args.days < 2:
        parser.error("--days must be at least 2")
    lib = check_tools()
    if args.rev:
        src, commit = _revisions.export_revision(args.rev, WORK, "bench/retention.py")
        setup = Setup(lib, src, f"{commit} (git archive, not the working tree)")
    else:
        setup = Setup(lib, None, _git_rev())
    doc = run(args, setup)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "last_run.json").write_text(json.dumps(doc, indent=2))
    render(doc)
    print(f"figures: {(WORK / 'last_run.json').relative_to(ROOT)}")
    peers_ok = all(r["ok"] for r in doc["results"] if r["tool"] != "opencbs")
    opencbs = next(r for r in doc["results"] if r["tool"] == "opencbs")
    return 0 if peers_ok and (opencbs["ok"] or not opencbs["available"]) else 1


if __name__ == "__main__":
    sys.exit(main())
