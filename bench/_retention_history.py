"""The history of the retention benchmark (``bench/retention.py``): one source tree changed day
by day and backed up after each day by opencbs, restic and borg, each snapshot dated one day
after the one before.

- ``ChurningTree``: ``bench/_datasets.py``'s ``SmallTree`` (built fresh) on day 1; before each
  later day, seeded by the day: 1-5 % of the live files rewritten (new content and size from
  the tree's pools, an mtime an hour before that day's snapshot), 0.05-0.2 % new files and
  0.05-0.2 % deleted (drawn apart).
- ``snapshot_times``: the planned snapshot times (03:00:00 UTC of each day, the last day fixed)
  so that a rebuilt history has the same dates.
- ``keep_restic`` / ``keep_borg``: which snapshot dates ``--keep-daily D --keep-weekly W`` keeps
  under each tool's documented rule (pure functions over dates), to check what each tool left.
- ``OpencbsServer``: a real ``opencbs serve`` (SQLite) over a state folder, started afresh on
  the copied state of each measured run, and the agent's environment (passwords from a config
  file, as ``bench/agent.py`` does); ``retention_off`` keeps the set's own retention policy
  from running after each backup.
- ``faketime_env``: the environment that runs a process with its clocks moved to a given time
  (libfaketime through ``LD_PRELOAD``, a relative offset in seconds).
"""

from __future__ import annotations

import base64
import glob
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _datasets import KIB, SmallTree, _log_uniform
from agent import LOGIN, LOGIN_PWD, OPENCBS, REPO_PWD, _base_env, _free_port

LAST_DAY = date(2026, 11, 30)  # the newest snapshot's day (fixed: a rebuild has the same dates)
SNAPSHOT_HOUR = 3  # 03:00:00 UTC
LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


# --- dates and the retention rules -------------------------------------------------------------


def snapshot_times(days: int) -> list[datetime]:
    """The ``days`` snapshot times (UTC, oldest first), one a day, the last on ``LAST_DAY``."""
    first = LAST_DAY - timedelta(days=days - 1)
    return [
        datetime(d.year, d.month, d.day, SNAPSHOT_HOUR, tzinfo=UTC)
        for d in (first + timedelta(days=i) for i in range(days))
    ]


def _day(d: date) -> object:
    return d


def _week(d: date) -> object:
    iso = d.isocalendar()
    return iso.year, iso.week


def keep_restic(dates: list[date], daily: int, weekly: int) -> list[date]:
    """The dates restic's ``forget --keep-daily --keep-weekly`` keeps (restic's
    ``ApplyPolicy``): newest first, each rule on its own keeps a snapshot whose day (ISO week)
    differs from the last one it kept, until its count is spent; a snapshot kept by both
    counts for both (so "7 daily + 4 weekly" keeps fewer than 11 when they overlap)."""
    periods = (_day, _week)
    left = [daily, weekly]
    last: list[object] = [None, None]
    kept: list[date] = []
    for d in sorted(dates, reverse=True):
        keep = False
        for i, period in enumerate(periods):
            if left[i] > 0 and period(d) != last[i]:
                keep, last[i] = True, period(d)
                left[i] -= 1
        if keep:
            kept.append(d)
    return sorted(kept)


def keep_borg(dates: list[date], daily: int, weekly: int) -> list[date]:
    """The dates borg 1.2's ``prune --keep-daily --keep-weekly`` keeps (``prune_split``): the
    daily rule first, then the weekly one over the newest archive of each ISO week, a week whose
    newest archive is kept already counting for nothing; a rule that cannot fill its count
    keeps the oldest archive as well. So "7 daily + 4 weekly" keeps 11 (or 12)."""
    kept: set[date] = set()
    for count, period in ((daily, _day), (weekly, _week)):
        taken, last, oldest = 0, None, None
        for d in sorted(dates, reverse=True):
            oldest = d
            if period(d) != last:
                last = period(d)
                if d not in kept:
                    kept.add(d)
                    taken += 1
                    if taken == count:
                        break
        if oldest is not None and taken < count and oldest not in kept:
            kept.add(oldest)
    return sorted(kept)


# --- the source tree ---------------------------------------------------------------------------


class ChurningTree:
    """``SmallTree`` on day 1, then seeded daily changes (module docstring)."""

    def __init__(self, root: Path, files: int, seed: int) -> None:
        self.tree = SmallTree(root, files, seed)
        self.root, self.seed = root, seed
        self.live: list[str] = []  # relative paths of the files there now, sorted

    def build(self) -> None:
        """Write day 1's tree afresh (a tree left changed by an earlier build is not reused)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.tree.manifest.unlink(missing_ok=True)
        self.tree.state.unlink(missing_ok=True)
        self.tree.build()
        self.live = sorted(
            self.tree.path(i).relative_to(self.root).as_posix() for i in range(self.tree.files)
        )

    def _content(self, rng: random.Random, text: bool) -> bytes:
        pool = self.tree.text_pool if text else self.tree.random_pool
        size = _log_uniform(rng, 100, 8 * KIB)
        offset = rng.randrange(len(pool) - size)
        return pool[offset : offset + size]

    def churn(self, day: int, when: datetime) -> dict[str, int]:
        """Change the tree for ``day`` (2, 3, …) whose snapshot is at ``when``: rewrite 1-5 %
        of the live files, add and delete a few. Returns ``{"rewritten", "new", "deleted"}``."""
        rng = random.Random(f"retention:{self.seed}:{day}")
        n = len(self.live)
        rewritten = rng.sample(self.live, max(1, round(n * rng.uniform(0.01, 0.05))))
        mtime = int(when.timestamp()) - 3600
        for k, rel in enumerate(rewritten):
            self._write(rel, self._content(rng, rel.endswith(".txt")), mtime + k % 3600)
        others = sorted(set(self.live) - set(rewritten))
        deleted = rng.sample(others, rng.randint(max(1, n // 2000), max(1, n // 500)))
        for rel in deleted:
            (self.root / rel).unlink()
        new: list[str] = []
        for k in range(rng.randint(max(1, n // 2000), max(1, n // 500))):
            d = rng.randrange(self.tree.dirs)
            text = rng.random() < 0.7
            rel = (
                f"t{d % 15:02d}/m{d // 15 % 10:02d}/l{d:04d}/"
                f"n{day:03d}-{k:05d}.{'txt' if text else 'bin'}"
            )
            self._write(rel, self._content(rng, text), mtime + k % 3600)
            new.append(rel)
        self.live = sorted((set(self.live) - set(deleted)) | set(new))
        return {"rewritten": len(rewritten), "new": len(new), "deleted": len(deleted)}

    def _write(self, rel: str, data: bytes, mtime: int) -> None:
        path = self.root / rel
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (mtime, mtime))


# --- opencbs -----------------------------------------------------------------------------------


def libfaketime() -> Path | None:
    """The path of libfaketime's shared object (Debian: the ``libfaketime`` package, pulled
    in by ``faketime``), or None."""
    for pattern in LIBFAKETIME_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


def faketime_env(env: dict[str, str], lib: Path, when: datetime) -> dict[str, str]:
    """``env`` plus libfaketime set to move the clocks of the process and its children to
    ``when`` (a relative offset in whole seconds, taken now and rounded up: the clocks start
    at ``when`` or within a second after it and run on from there).

    Both clocks are moved (libfaketime's default), and file times are left alone
    (``NO_FAKE_STAT``: the mtimes are the tree's). With libfaketime 0.9.10 (Debian's) the
    monotonic clock cannot be left real: Python 3.11's ``time.sleep`` sleeps with
    ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``, whose deadline 0.9.10 shifts by the
    offset even then, so it fails with EINVAL (fixed in libfaketime 0.9.11). With both clocks
    moved, a timed wait on a Python lock or event (``sem_clockwait``, which 0.9.10 does not
    intercept) never times out: it returns only when set. The agent's backup does not rely on
    that (its off-terminal progress ticker stays silent; a retry after a server error would
    wait for good), so the caller runs it with a time limit."""
    offset = math.ceil(when.timestamp() - time.time())  # at launch: ``when`` or just after
    return {
        **env,
        "LD_PRELOAD": str(lib),
        "FAKETIME": f"{offset:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "0",
        "NO_FAKE_STAT": "1",
    }


class OpencbsServer:
    """A real ``opencbs serve`` over ``root/server-data`` (SQLite, times in UTC) and the agent's
    environment: ``root/agent-home`` as its home, passwords in the 0600 config file
    ``root/agent-config.toml`` (rewritten with the server's address on each start). With
    ``pythonpath``, both run another revision's ``src`` (``bench/_revisions.py``)."""

    def __init__(self, root: Path, log: Path, pythonpath: Path | None = None) -> None:
        self.root, self.log_path = root, log
        self.server_env = _base_env(root / "server-home")
        self.server_env.update(
            OPENCBS_DATA_DIR=str(root / "server-data"),
            OPENCBS_TIMEZONE="UTC",
            OPENCBS_LOG_LEVEL="WARNING",
            TZ="UTC",
        )
        self.config = root / "agent-config.toml"
        self.env = _base_env(root / "agent-home")
        self.env.update(OPENCBS_CONFIG=str(self.config), TZ="UTC")
        if pythonpath is not None:
            self.server_env["PYTHONPATH"] = self.env["PYTHONPATH"] = str(pythonpath)
        self.proc: subprocess.Popen[bytes] | None = None

    def add_user(self) -> None:
        """Create the backup user (a new server's data only)."""
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

    def start(self) -> None:
        """Start the server on a free port and wait until it accepts connections (60 s)."""
        port = _free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [OPENCBS, "serve", "--port", str(port)],
                env=self.server_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"opencbs serve exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("opencbs serve did not start within 60 s") from None
                time.sleep(0.2)
        self.url = f"http://127.0.0.1:{port}"
        self.config.write_text(
            f'[agent]\nserver_url = "{self.url}"\nlogin_name = "{LOGIN}"\n'
            f'password = "{LOGIN_PWD}"\nencryption_password = "{REPO_PWD}"\n'
        )
        self.config.chmod(0o600)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call of the agent API (``/api/agent/v1``) as the backup user; the answer's JSON.
        Raises ``urllib.error.HTTPError`` for an answer that is not 2xx."""
        token = base64.b64encode(f"{LOGIN}:{LOGIN_PWD}".encode()).decode()
        req = urllib.request.Request(
            f"{self.url}/api/agent/v1{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as answer:
            return json.loads(answer.read())

    def retention_off(self, set_id: str) -> str:
        """Stop the set's retention policy from running after each backup (``after_backup``
        false; a new set keeps 7 days, which would remove the history's older snapshots), when
        this revision has one. Returns what was done, for the history's notes."""
        settings = self.api("GET", f"/backup-sets/{set_id}")["settings"]
        if "retention" not in settings:
            return "this revision has no retention policy"
        policy = {**settings["retention"], "after_backup": False}
        self.api("PATCH", f"/backup-sets/{set_id}", {"settings": {"retention": policy}})
        return f"the set's policy {json.dumps(policy)} (off after backups)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
