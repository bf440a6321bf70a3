"""The unattended agent's loop (``agent.daemon.Daemon``) with injected clocks, its schedules
from its cache on disk, and each job a real child process (a tiny Python script standing in
for ``opencbs backup``): a sleep seen as a wall-clock jump runs the missed slot once, a slot
coming while the set's job runs is skipped, a failed job is tried again before the next slot,
and the newest slot run is remembered across a restart."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from opencbs.agent.child_jobs import JobRequest
from opencbs.agent.client import AgentClient
from opencbs.agent.daemon import Daemon, DaemonConfig
from opencbs.agent.daemon_state import load_marks, save_cache
from opencbs.agent.scheduler import Timing

HOURLY = {
    "id": "h",
    "name": "Hourly",
    "type": "DAILY",
    "hour": 0,
    "minute": 0,
    "interval_minutes": 60,
}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class FakeClock:
    def __init__(self, wall: str) -> None:
        self.wall = ms(wall)
        self.mono = 1000.0

    def now_ms(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float, *, asleep: bool = False) -> None:
        self.wall += int(seconds * 1000)
        if not asleep:
            self.mono += seconds


def _daemon(
    root: Path,
    clock: FakeClock,
    exit_code: int = 0,
    delays: tuple[int, ...] = (60_000,),
) -> tuple[Daemon, list[JobRequest]]:
    started: list[JobRequest] = []
    script = (
        "import json, sys; print(json.dumps({'status': 'BS_STOP_SUCCESS'})); "
        f"sys.exit({exit_code})"
    )

    def argv(job: JobRequest) -> list[str]:
        started.append(job)
        return [sys.executable, "-c", script]

    config = DaemonConfig(
        state_dir=root,
        timing=Timing(jitter_ms=0, retry_delays_ms=delays),
        poll_wait=0,
        finish_on_stop=False,
        make_client=lambda: AgentClient("http://127.0.0.1:1", "alice", "pw"),
        job_argv=argv,
    )
    daemon = Daemon(config, clock=clock)
    daemon._load()
    return daemon, started


def _until_idle(daemon: Daemon) -> None:
    deadline = time.monotonic() + 30
    while daemon.running or daemon._events.qsize():
        assert time.monotonic() < deadline, "the job did not end"
        daemon._nap(0.1)
        daemon._tick()


def _cache(root: Path) -> None:
    sets = [{"id": "1", "name": "docs", "time_zone": "UTC", "schedules": [HOURLY]}]
    save_cache(root, "g1", ms("2026-03-10 08:00"), sets)


def test_a_sleep_catches_up_once_and_a_restart_does_not_run_a_slot_again(tmp_path: Path) -> None:
    _cache(tmp_path)
    clock = FakeClock("2026-03-10 08:30")
    daemon, started = _daemon(tmp_path, clock)
    daemon._tick()
    clock.advance(30 * 60)  # 09:00: on time
    daemon._tick()
    _until_idle(daemon)
    assert [(j.slot_ms, j.catch_up) for j in started] == [(ms("2026-03-10 09:00"), False)]
    clock.advance(30 * 60)  # 09:30, then asleep until 14:10
    daemon._tick()
    clock.advance(4 * 3600 + 40 * 60, asleep=True)
    daemon._tick()
    assert daemon.awake_since == clock.wall
    _until_idle(daemon)
    clock.advance(30)
    daemon._tick()
    assert [(j.slot_ms, j.catch_up) for j in started[1:]] == [(ms("2026-03-10 14:00"), True)]
    assert load_marks(tmp_path)["h"].last_slot == ms("2026-03-10 14:00")
    # a restart: the slot run is remembered
    again, started_again = _daemon(tmp_path, FakeClock("2026-03-10 14:20"))
    again._tick()
    assert started_again == [] and not again.pending


def test_a_failed_job_is_tried_again_before_the_next_slot(tmp_path: Path) -> None:
    _cache(tmp_path)
    clock = FakeClock("2026-03-10 08:59:59")
    delays = (60_000, 300_000, 3_600_000)
    daemon, started = _daemon(tmp_path, clock, exit_code=9, delays=delays)
    daemon._tick()
    clock.advance(2)  # 09:00:01
    daemon._tick()
    _until_idle(daemon)
    waits = []
    while "1" in daemon.pending:
        at, retry = daemon.pending["1"]
        waits.append(at - clock.wall)
        clock.advance((at - clock.wall) / 1000)
        daemon._tick()
        _until_idle(daemon)
    assert waits == [60_000, 300_000]  # the third (1 h) would pass the 10:00 slot
    assert [(j.attempt, j.slot_ms) for j in started] == [
        (n, ms("2026-03-10 09:00")) for n in range(3)
    ]


def test_a_slot_while_the_sets_job_runs_is_skipped(tmp_path: Path) -> None:
    _cache(tmp_path)
    clock = FakeClock("2026-03-10 08:59:59")
    daemon, started = _daemon(tmp_path, clock)
    daemon._tick()
    daemon.running["1"] = object()  # type: ignore[assignment] # a job of the set runs
    clock.advance(2)
    daemon._tick()
    assert started == [] and not daemon.pending
    assert load_marks(tmp_path)["h"].last_slot == ms("2026-03-10 09:00")
    assert json.loads((tmp_path / "scheduler-state.json").read_text())["schedules"]["h"]
