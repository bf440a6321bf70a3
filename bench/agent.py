"""Benchmark of the backup agent against restic and borg, as real processes.

Run from the project root::

    .venv/bin/python bench/agent.py                 # (a) 1 GiB mixed, (b)-(d) 100,000 files
    .venv/bin/python bench/agent.py --quick         # (a) 100 MiB, (b)-(d) 10,000 files
    .venv/bin/python bench/agent.py --only b,c,d --keep
    .venv/bin/python bench/agent.py --s3              # only the S3 sets (a-s3, b-s3, c-s3)

Data sets (``bench/_datasets.py``, seeded, built once under ``bench/.work/agent/sets/`` and
reused): (a) about 1 GiB of mixed files (text, synthetic binaries, gzip/zstd output, random);
(b) 100,000 small files (0.1-8 KiB) in ~3,000 directories; (c) the unchanged re-run of (b);
(d) the re-run of (b) after rewriting 1 % of its files (content and mtime). ``restore``: the
restore of (a)'s backup, opencbs against ``restic restore``, both checked against the source's
SHA-256 manifest. (a-s3), (b-s3), (c-s3): (a), (b) and (c) again, opencbs against restic, each
into a new repository under its own prefix of one bucket of a SeaweedFS S3 server (``weed mini``
on 127.0.0.1, ``bench/_s3.py``) started for the run.

Each tool backs up into a new repository on local disk with encryption on and its default
compression: ``opencbs backup`` (the real CLI, reporting to a real ``opencbs serve`` with a
temporary SQLite data directory; passwords from a config file), ``restic backup`` (repository
version 2, compression ``auto``), ``borg create`` (``repokey-blake2``, default compression
``lz4``). Per run: wall time, user+system CPU time and peak RSS of the tool's process tree
(``os.wait4`` rusage, and the sum of the tree's VmRSS sampled every 20 ms, whichever is larger).
For opencbs the figures are the agent process's; the server's CPU seconds during the run are
shown apart. The page cache is dropped (``echo 3 > /proc/sys/vm/drop_caches``, root only) before
every run of (a), (b) and the restores when the machine allows it.

Prints one table with the ratios opencbs/restic and opencbs/borg and the issue's goals (opencbs
faster than both on (a)-(d); peak memory below both on (b) and (c); on S3 faster than restic
and peak memory below restic), and writes the figures to
``bench/.work/agent/last_run.json``. restic and borg must be on PATH (Debian: ``apt-get install
restic borgbackup``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "agent"
sys.path.insert(0, str(HERE))

import _revisions  # noqa: E402
from _datasets import SmallTree, build_mixed, tree_hashes  # noqa: E402
from _s3 import GOMEMLIMIT, S3Repo, SeaweedServer  # noqa: E402

OPENCBS = str(Path(sys.executable).with_name("opencbs"))
GNU_TIME = "/usr/bin/time"
TOOLS = ("opencbs", "restic", "borg")
S3_SETS = ("a-s3", "b-s3", "c-s3")
SETS = ("a", "b", "c", "d", "restore", *S3_SETS)
S3_BUCKET = "bench"
LOGIN, LOGIN_PWD, REPO_PWD = "bench-agent", "bench-agent-password", "bench-repo-password"
SEED = 1
TOUCH_FRACTION = 0.01
SIZES = {"full": (1024 * 1024 * 1024, 100_000), "quick": (100 * 1024 * 1024, 10_000)}
GOAL_FASTER = ("a", "b", "c", "d", *S3_SETS)
GOAL_MEMORY = ("b", "c", *S3_SETS)


# --- measuring a process tree ------------------------------------------------------------------


@dataclass
class Run:
    """One timed run of one tool on one data set."""

    set: str
    tool: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    peak_rss_mib: float = 0.0
    rc: int = 0
    ok: bool = True
    note: str = ""
    repo_mib: float | None = None
    server_cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_rss_kib(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_kib(p)
        todo += _children(p)
    return total


def _cpu_ticks(pid: int) -> float:
    """User+system CPU seconds of a live process (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def measure(
    set_name: str,
    tool: str,
    cmd: Sequence[str],
    env: dict[str, str],
    *,
    log: Path,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> tuple[Run, str]:
    """Run ``cmd`` to completion under GNU ``time``; its wall time, CPU time (rusage of ``time``
    and its waited children: the tool's tree) and peak RSS: the larger of ``time``'s ``%M`` (the
    ``ru_maxrss`` of the tool's largest process) and the sampled sum of the VmRSS of the tool's
    process tree. (``ru_maxrss`` of a child forked by this Python process would count this
    process's own RSS at the fork; ``time`` is small.) Returns the run and its stdout; stderr
    goes to ``log``."""
    out_path = log.with_suffix(".out")
    time_path = log.with_suffix(".time")
    cmd = [GNU_TIME, "-f", "%M", "-o", str(time_path), "--", *cmd]
    with open(out_path, "wb") as out, open(log, "ab") as err:
        err.write(f"\n$ {' '.join(cmd)}\n".encode())
        err.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=err,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], sum(_tree_rss_kib(c) for c in _children(proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        maxrss_kib = int(time_path.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        maxrss_kib = 0
    run = Run(
        set_name,
        tool,
        wall_s=wall,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        cpu_s=ru.ru_utime + ru.ru_stime,
        peak_rss_mib=max(maxrss_kib, peak[0]) / 1024,
        rc=proc.returncode,
        ok=proc.returncode == 0,
    )
    if not run.ok:
        run.note = f"FAILED (exit {proc.returncode}, see {log.relative_to(ROOT)})"
    return run, out_path.read_text(errors="replace")


def drop_caches() -> bool:
    """Write back and drop the page cache; False when not allowed (not root, a container)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def du_mib(path: Path) -> float:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(dirpath) / name).lstat().st_size
            except OSError:
                pass
    return total / (1024 * 1024)


def _version(cmd: Sequence[str]) -> str:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr) else "?"


# --- the tools ---------------------------------------------------------------------------------


def _base_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENCBS_", "RESTIC_", "BORG_"))
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Opencbs:
    """A real ``opencbs serve`` (SQLite in ``root``) and the agent CLI reporting to it."""

    name = "opencbs"

    def __init__(self, root: Path, logs: Path, pythonpath: Path | None = None) -> None:
        self.root, self.logs, self.pythonpath = root, logs, pythonpath
        self.server_env = _base_env(root / "server-home")
        if pythonpath is not None:  # another revision's src/ before the editable install's
            self.server_env["PYTHONPATH"] = str(pythonpath)
        self.server_env.update(
            OPENCBS_DATA_DIR=str(root / "server-data"),
            OPENCBS_TIMEZONE="UTC",
            OPENCBS_LOG_LEVEL="WARNING",
        )
        self.jobs: dict[str, str] = {}  # set name -> last job ID
        self.dests: dict[str, Path | S3Repo] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        res = subprocess.run(
            [OPENCBS, "user", "add", LOGIN, "--password-stdin"],
            input=LOGIN_PWD + "\n",
            env=self.server_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise SystemExit(f"opencbs user add failed: {res.stderr.strip()}")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server_log = open(self.logs / "opencbs-serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [OPENCBS, "serve", "--port", str(port)],
            env=self.server_env,
            stdout=self.server_log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    "opencbs serve exited; see "
                    f"{(self.logs / 'opencbs-serve.log').relative_to(ROOT)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("opencbs serve did not start within 60 s")
        config = self.root / "agent-config.toml"
        config.write_text(
            f'[agent]\nserver_url = "{self.url}"\nlogin_name = "{LOGIN}"\n'
            f'password = "{LOGIN_PWD}"\nencryption_password = "{REPO_PWD}"\n'
        )
        config.chmod(0o600)
        self.env = _base_env(self.root / "agent-home")
        self.env["OPENCBS_CONFIG"] = str(config)
        if self.pythonpath is not None:
            self.env["PYTHONPATH"] = str(self.pythonpath)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.server_log.close()

    def backup(self, set_name: str, series: str, source: Path, repo: Path | S3Repo) -> Run:
        assert self.proc is not None
        cmd = [OPENCBS, "backup", "--set", series, "--json"]
        env = self.env
        if isinstance(repo, S3Repo):  # the set's S3 endpoint is stored; the keys are not
            env = {**self.env, **repo.env()}
        if series not in self.dests:
            if isinstance(repo, S3Repo):
                cmd += ["--source", str(source), "--destination", repo.url]
                cmd += ["--s3-endpoint", repo.endpoint]
            else:
                cmd += ["--source", str(source), "--destination", str(repo)]
            self.dests[series] = repo
        before = _cpu_ticks(self.proc.pid)
        run, out = measure(set_name, self.name, cmd, env, log=self.logs / f"opencbs-{set_name}.log")
        run.server_cpu_s = _cpu_ticks(self.proc.pid) - before
        if run.ok:
            try:
                doc = json.loads(out)
            except ValueError:
                run.ok, run.note = False, "FAILED (no JSON outcome)"
                return run
            self.jobs[series] = doc["job_id"]
            counts = {k: v for k, v in doc["counts"].items() if v}
            run.extra = {"status": doc["status"], "counts": counts}
            if doc["status"] != "BS_STOP_SUCCESS":
                run.note = doc["status"]
                run.ok = doc["status"].startswith("BS_STOP_SUCCESS")
            run.note = (run.note + " " + " ".join(f"{k} {v}" for k, v in counts.items())).strip()
        return run

    def restore(self, series: str, target: Path) -> Run:
        cmd = [
            OPENCBS,
            "restore",
            self.jobs[series],
            "--destination",
            str(self.dests[series]),
            "--target",
            str(target),
            "--json",
        ]
        run, _ = measure("restore", self.name, cmd, self.env, log=self.logs / "opencbs-restore.log")
        return run


class Restic:
    """``restic`` with repository version 2 (compression ``auto``), password from the env."""

    name = "restic"

    def __init__(self, root: Path, logs: Path) -> None:
        self.root, self.logs = root, logs
        self.env = _base_env(root / "restic-home")
        self.env.update(RESTIC_PASSWORD=REPO_PWD, RESTIC_CACHE_DIR=str(root / "restic-cache"))
        self.repos: dict[str, Path | S3Repo] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def _env(self, repo: Path | S3Repo) -> dict[str, str]:
        if isinstance(repo, S3Repo):
            return {**self.env, **repo.env(), "RESTIC_REPOSITORY": repo.restic_url}
        return {**self.env, "RESTIC_REPOSITORY": str(repo)}

    def backup(self, set_name: str, series: str, source: Path, repo: Path | S3Repo) -> Run:
        env = self._env(self.repos.get(series, repo))
        if series not in self.repos:
            res = subprocess.run(
                ["restic", "init", "--repository-version", "2"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode != 0:
                raise SystemExit(f"restic init failed: {res.stderr.strip()}")
            self.repos[series] = repo
        run, _ = measure(
            set_name,
            self.name,
            ["restic", "backup", "--quiet", "--host", "bench", str(source)],
            env,
            log=self.logs / f"restic-{set_name}.log",
        )
        return run

    def restore(self, series: str, target: Path) -> Run:
        env = self._env(self.repos[series])
        run, _ = measure(
            "restore",
            self.name,
            ["restic", "restore", "latest", "--quiet", "--target", str(target)],
            env,
            log=self.logs / "restic-restore.log",
        )
        return run


class Borg:
    """``borg`` 1.x, ``repokey-blake2``, default compression (lz4), passphrase from the env."""

    name = "borg"

    def __init__(self, root: Path, logs: Path) -> None:
        self.root, self.logs = root, logs
        self.env = _base_env(root / "borg-home")
        self.env.update(
            BORG_PASSPHRASE=REPO_PWD,
            BORG_BASE_DIR=str(root / "borg-home"),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        )
        self.repos: dict[str, Path] = {}
        self.archives: dict[str, int] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def backup(self, set_name: str, series: str, source: Path, repo: Path | S3Repo) -> Run:
        assert isinstance(repo, Path), "borg has no S3 repositories"
        if series not in self.repos:
            res = subprocess.run(
                ["borg", "init", "--encryption=repokey-blake2", str(repo)],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode != 0:
                raise SystemExit(f"borg init failed: {res.stderr.strip()}")
            self.repos[series] = repo
        n = self.archives[series] = self.archives.get(series, 0) + 1
        run, _ = measure(
            set_name,
            self.name,
            ["borg", "create", f"{self.repos[series]}::{series}-{n}", str(source)],
            self.env,
            log=self.logs / f"borg-{set_name}.log",
        )
        return run

    def restore(self, series: str, target: Path) -> Run:
        raise NotImplementedError


# --- the benchmark -----------------------------------------------------------------------------


def check_peers() -> None:
    missing = [t for t in ("restic", "borg") if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"bench/agent.py: {' and '.join(missing)} not on PATH\n"
            "hint: install the peers, e.g. on Debian/Ubuntu: "
            "sudo apt-get install restic borgbackup"
        )
    if not Path(GNU_TIME).exists():
        raise SystemExit(
            f"bench/agent.py: {GNU_TIME} (GNU time) not found\n"
            "hint: install it, e.g. on Debian/Ubuntu: sudo apt-get install time"
        )
    if not Path(OPENCBS).exists():
        raise SystemExit(
            f"bench/agent.py: {OPENCBS} not found\n"
            "hint: run with the project's venv: .venv/bin/python bench/agent.py"
        )


def compare_restore(expected: dict[str, str], restored_root: Path) -> str:
    got = tree_hashes(restored_root)
    if got == expected:
        return f"identical ({len(got)} files)"
    missing = len(expected.keys() - got.keys())
    extra = len(got.keys() - expected.keys())
    differ = sum(1 for k in expected.keys() & got.keys() if expected[k] != got[k])
    return f"DIFFERS: {missing} missing, {extra} extra, {differ} different"


def chosen_sets(args: argparse.Namespace) -> set[str]:
    """The data sets ``--only`` and ``--s3`` name (all without either), with those they
    imply."""
    only = set(args.only.split(",")) if args.only else set()
    if args.s3:
        only |= set(S3_SETS)
    only = only or set(SETS)
    unknown = only - set(SETS)
    if unknown:
        raise SystemExit(
            f"bench/agent.py: unknown data set {sorted(unknown)}; choose from {','.join(SETS)}"
        )
    if only & {"c", "d"}:
        only.add("b")  # (c) and (d) are re-runs of (b)'s series
    if "c-s3" in only:
        only.add("b-s3")
    if "restore" in only:
        only.add("a")
    return only


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    only = chosen_sets(args)
    mode = "quick" if args.quick else "full"
    pythonpath, revision = export_revision(args.rev) if args.rev else (None, _git_rev())
    mixed_bytes, small_files = SIZES[mode]
    sets_dir = WORK / "sets" / mode
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = WORK / "runs" / stamp
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    load_before = os.getloadavg()
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f} ({os.cpu_count()} CPUs); work dir "
        f"{run_dir.relative_to(ROOT)}",
        flush=True,
    )

    t0 = time.perf_counter()
    manifest: dict[str, str] = {}
    mixed_src = sets_dir / "a"
    small: SmallTree | None = None
    if only & {"a", "a-s3"}:
        manifest, reused = build_mixed(mixed_src, mixed_bytes, SEED)
        print(
            f"(a) {len(manifest)} files, {du_mib(mixed_src):.0f} MiB "
            f"({'reused' if reused else 'built'})",
            flush=True,
        )
    if only & {"b", "b-s3"}:
        small = SmallTree(sets_dir / "b", small_files, SEED)
        reused = small.build()
        print(
            f"(b) {small.files} files in {small.dirs} leaf directories, "
            f"{du_mib(small.root):.0f} MiB ({'reused' if reused else 'built'})",
            flush=True,
        )
    print(f"data sets ready in {time.perf_counter() - t0:.0f} s", flush=True)

    can_drop = drop_caches()
    print(
        "page cache: "
        + (
            "dropped before each run of (a), (b) and the restores"
            if can_drop
            else "NOT dropped (no permission): runs after the first read warm"
        ),
        flush=True,
    )
    opencbs = Opencbs(run_dir, logs, pythonpath)
    tools: list[Opencbs | Restic | Borg] = [opencbs, Restic(run_dir, logs), Borg(run_dir, logs)]
    runs: list[Run] = []
    s3: SeaweedServer | None = None

    def step(set_name: str, series: str, source: Path, cold: bool) -> None:
        for tool in tools if s3 is None else tools[:2]:  # borg has no S3 repositories
            if cold:
                drop_caches()
            repo: Path | S3Repo = run_dir / "repos" / f"{tool.name}-{series}"
            if s3 is not None:
                repo = s3.repo(S3_BUCKET, f"{tool.name}-{series}")
            s3_cpu = s3.cpu_s() if s3 is not None else 0.0
            r = tool.backup(set_name, series, source, repo)
            if s3 is not None:
                r.extra["s3_server_cpu_s"] = s3.cpu_s() - s3_cpu
            where = opencbs.dests[series] if tool is opencbs else repo
            if set_name in ("a", "b"):
                r.repo_mib = du_mib(where) if isinstance(where, Path) else None
            elif set_name in ("a-s3", "b-s3") and isinstance(where, S3Repo):
                r.repo_mib, r.extra["s3_objects"] = where.usage()
            runs.append(r)
            _progress(r)

    try:
        for tool in tools:
            tool.start()
        if "a" in only:
            step("a", "a", mixed_src, cold=True)
        if "restore" in only:
            for tool in (opencbs, tools[1]):
                if not any(r.set == "a" and r.tool == tool.name and r.ok for r in runs):
                    continue
                target = run_dir / "restored" / tool.name
                drop_caches()
                r = tool.restore("a", target)
                if r.ok:
                    r.note = compare_restore(manifest, target / mixed_src.relative_to("/"))
                    r.ok = r.note.startswith("identical")
                runs.append(r)
                _progress(r)
                if not args.keep:
                    shutil.rmtree(target, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(run_dir / "repos", ignore_errors=True)
        if small is not None and "b" in only:
            step("b", "b", small.root, cold=True)
            if "c" in only:
                step("c", "b", small.root, cold=False)
            if "d" in only:
                touched = small.touch(TOUCH_FRACTION)
                print(f"(d) rewrote {touched} files", flush=True)
                try:
                    step("d", "b", small.root, cold=False)
                finally:
                    small.untouch()
        if only & set(S3_SETS):
            s3 = SeaweedServer(run_dir / "s3", logs / "weed.log", args.s3_memlimit)
            s3.start()
            s3.make_bucket(S3_BUCKET)
            print(f"S3: {s3.version()} at {s3.endpoint}, bucket {S3_BUCKET}", flush=True)
            if "a-s3" in only:
                step("a-s3", "a-s3", mixed_src, cold=True)
            if small is not None and "b-s3" in only:
                step("b-s3", "b-s3", small.root, cold=True)
                if "c-s3" in only:
                    step("c-s3", "b-s3", small.root, cold=False)
    finally:
        for tool in tools:
            tool.stop()
        s3_info = _s3_info(s3, args.s3_memlimit)
        if s3 is not None:
            s3.stop()
    load_after = os.getloadavg()
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "only": sorted(only),
        "command": " ".join([".venv/bin/python", "bench/agent.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "page_cache_dropped": can_drop,
        "sizes": {
            "a_bytes": mixed_bytes,
            "a_files": len(manifest),
            "b_files": small_files,
            "touched_fraction": TOUCH_FRACTION,
        },
        "versions": {
            "opencbs": revision,
            "restic": _version(["restic", "version"]),
            "borg": _version(["borg", "--version"]),
        },
        "settings": {
            "opencbs": "default (encrypted repository, default compression)",
            "restic": "repository version 2, compression auto",
            "borg": "repokey-blake2, compression lz4 (default)",
        },
        "s3": s3_info,
        "runs": [asdict(r) for r in runs],
        "work_dir": str(run_dir),
    }
    if not args.keep:
        shutil.rmtree(run_dir / "repos", ignore_errors=True)
        for name in ("agent-home", "restic-cache", "borg-home", "restic-home", "s3"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    return doc


def _s3_info(s3: SeaweedServer | None, memlimit: str) -> dict[str, Any] | None:
    """What the table says of the S3 server of the run (None without one)."""
    if s3 is None:
        return None
    return {
        "server": s3.version(),
        "command": "weed mini (127.0.0.1, path-style, SigV4 keys, http)",
        "gomemlimit": memlimit,
        "peak_rss_mib": s3.peak_rss_mib(),
        "cpu_s": s3.cpu_s(),
    }


def export_revision(rev: str) -> tuple[Path, str]:
    """``rev``'s ``src`` under ``bench/.work/agent/src/<commit>/`` (``_revisions``); that
    folder and its label."""
    src, commit = _revisions.export_revision(rev, WORK, "bench/agent.py")
    return src, f"{commit} (git archive, not the working tree)"


def _git_rev() -> str:
    head, dirty = _revisions.git_rev()
    return head + (" + uncommitted changes in src/" if dirty else "")


def _progress(r: Run) -> None:
    extra = f", server CPU {r.server_cpu_s:.1f} s" if r.server_cpu_s is not None else ""
    if "s3_server_cpu_s" in r.extra:
        extra += f", S3 server CPU {r.extra['s3_server_cpu_s']:.1f} s"
    print(
        f"  ({r.set}) {r.tool:8} wall {r.wall_s:7.2f} s  CPU {r.cpu_s:7.2f} s  "
        f"peak {r.peak_rss_mib:7.1f} MiB{extra}  {r.note}",
        flush=True,
    )


# --- the table ---------------------------------------------------------------------------------


def goals(runs: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(goal, met, detail) for each goal the runs can decide."""
    by = {(r["set"], r["tool"]): r for r in runs}
    out: list[tuple[str, bool, str]] = []
    for s in GOAL_FASTER:
        o = by.get((s, "opencbs"))
        for peer in ("restic", "borg"):
            p = by.get((s, peer))
            if o and p and o["ok"] and p["ok"]:
                ratio = o["wall_s"] / p["wall_s"]
                out.append(
                    (
                        f"({s}) faster than {peer}",
                        ratio < 1,
                        f"wall {o['wall_s']:.2f} s vs {p['wall_s']:.2f} s = {ratio:.2f}x",
                    )
                )
    for s in GOAL_MEMORY:
        o = by.get((s, "opencbs"))
        for peer in ("restic", "borg"):
            p = by.get((s, peer))
            if o and p and o["ok"] and p["ok"]:
                ratio = o["peak_rss_mib"] / p["peak_rss_mib"]
                out.append(
                    (
                        f"({s}) less memory than {peer}",
                        ratio < 1,
                        f"peak {o['peak_rss_mib']:.0f} MiB vs {p['peak_rss_mib']:.0f} MiB "
                        f"= {ratio:.2f}x",
                    )
                )
    return out


def render(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    runs = doc["runs"]
    by = {(r["set"], r["tool"]): r for r in runs}
    titles = {
        "a": "(a) mixed",
        "b": "(b) small files",
        "c": "(c) unchanged",
        "d": "(d) 1% touched",
        "restore": "restore (a)",
        "a-s3": "(a) mixed → S3",
        "b-s3": "(b) small → S3",
        "c-s3": "(c) unch. → S3",
    }
    table = Table(
        title=f"opencbs agent vs restic and borg ({doc['mode']}, {doc['date']}, load "
        f"average {doc['load_before'][0]:.2f} before / "
        f"{doc['load_after'][0]:.2f} after, {doc['cpus']} CPUs)"
    )
    for col, just in (
        ("set", "left"),
        ("tool", "left"),
        ("wall s", "right"),
        ("CPU s", "right"),
        ("peak RSS MiB", "right"),
        ("repo MiB", "right"),
        ("note", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    goal_sets = {"wall": set(GOAL_FASTER), "mem": set(GOAL_MEMORY)}
    for s in SETS:
        present = [t for t in TOOLS if (s, t) in by]
        if not present:
            continue
        for i, t in enumerate(present):
            r = by[(s, t)]
            parts = [r["note"]]
            if r["server_cpu_s"] is not None:
                parts.insert(0, f"server CPU {r['server_cpu_s']:.1f} s")
            if "s3_objects" in r["extra"]:
                parts.insert(0, f"{r['extra']['s3_objects']} objects")
            if "s3_server_cpu_s" in r["extra"]:
                parts.insert(0, f"S3 CPU {r['extra']['s3_server_cpu_s']:.1f} s")
            note = "; ".join(p for p in parts if p)
            table.add_row(
                titles[s] if i == 0 else "",
                t,
                f"{r['wall_s']:.2f}",
                f"{r['cpu_s']:.2f}",
                f"{r['peak_rss_mib']:.0f}",
                "" if r["repo_mib"] is None else f"{r['repo_mib']:.0f}",
                note,
            )
        o = by.get((s, "opencbs"))
        for peer in ("restic", "borg"):
            p = by.get((s, peer))
            if not (o and p and o["ok"] and p["ok"]):
                continue

            def mark(ratio: float, kind: str, s: str = s) -> str:
                text = f"{ratio:.2f}"
                if s in goal_sets[kind]:
                    text += " ✓" if ratio < 1 else " ✗"
                return text

            table.add_row(
                "",
                f"opencbs/{peer}",
                mark(o["wall_s"] / p["wall_s"], "wall"),
                f"{o['cpu_s'] / p['cpu_s']:.2f}" if p["cpu_s"] else "",
                mark(o["peak_rss_mib"] / p["peak_rss_mib"], "mem"),
                f"{o['repo_mib'] / p['repo_mib']:.2f}" if o["repo_mib"] and p["repo_mib"] else "",
                "",
                style="dim",
            )
        table.add_section()
    console.print(table)
    settings = doc["settings"]
    dropped = "dropped before (a), (b) and restores" if doc["page_cache_dropped"] else "not dropped"
    console.print(
        f"settings: opencbs {settings['opencbs']}; restic {settings['restic']}; borg "
        f"{settings['borg']}. Versions: opencbs {doc['versions']['opencbs']}, "
        f"{doc['versions']['restic']}, {doc['versions']['borg']}. Page cache "
        f"{dropped}."
    )
    if doc.get("s3"):
        s3 = doc["s3"]
        console.print(
            f"S3 sets: one bucket of {s3['server']}, {s3['command']}, GOMEMLIMIT "
            f"{s3['gomemlimit']}; the server's peak RSS {s3['peak_rss_mib']:.0f} MiB, CPU "
            f"{s3['cpu_s']:.1f} s over the run (not in the tools' figures; per run in the "
            "note). Page cache dropped before (a-s3) and (b-s3)."
        )
    met = goals(runs)
    if met:
        console.print("goals (the issue):")
        for g, ok, d in met:
            console.print(f"  {g:32} {'met   ' if ok else 'MISSED'}  {d}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data sets: (a) 100 MiB, (b) 10,000 files"
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="a,b,c,d,restore,a-s3,b-s3,c-s3",
        help="only these data sets ((c), (d) imply (b); restore implies (a); c-s3 implies b-s3)",
    )
    parser.add_argument(
        "--s3",
        action="store_true",
        help="only the S3 sets a-s3,b-s3,c-s3 (besides those of --only): opencbs vs restic "
        "into a SeaweedFS S3 server (weed mini) started for the run",
    )
    parser.add_argument(
        "--s3-memlimit",
        default=GOMEMLIMIT,
        metavar="SIZE",
        help=f"GOMEMLIMIT of the SeaweedFS server (default {GOMEMLIMIT})",
    )
    parser.add_argument(
        "--rev",
        default="",
        metavar="COMMIT",
        help="benchmark opencbs as committed at COMMIT (git archive of src/ on "
        "PYTHONPATH) instead of the working tree",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the repositories, restored trees and caches of the run",
    )
    args = parser.parse_args(argv)
    check_peers()
    doc = run_benchmark(args)
    (WORK / "last_run.json").write_text(json.dumps(doc, indent=2))
    render(doc)
    print(f"figures: {(WORK / 'last_run.json').relative_to(ROOT)}")
    return 0 if all(r["ok"] for r in doc["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
