"""The unattended agent (``opencbs agent run``; issue 16): runs each backup set's schedules,
and the jobs the server asks for, until it is told to stop.

- **Schedules from the server, kept on disk.** A :class:`~opencbs.agent.poller.Poller` thread
  long-polls the server; the sets and schedules it brings are cached (``agent.daemon_state``)
  and run from the cache while the server cannot be reached, and after a restart without it.
- **Decisions** are ``agent.scheduler``'s (pure): which slot is due, catch-up after the agent
  was off or the machine asleep (a wall clock jump against the monotonic clock,
  :func:`~opencbs.agent.scheduler.clock_jumped`), no two jobs of one set, a random start delay,
  bounded retries. The newest slot handled per schedule is remembered on disk before its job
  starts (a restart does not run it again; one that comes during its job's start delay is
  then lost, not doubled).
- **Jobs** run as child processes (``agent.child_jobs``): mode ``S`` with the schedule's stop
  time (``--stop-at``), mode ``R`` for a run request (RunBackup.do) taken from the poll, at
  once (no delay) or, when a job of the set runs, as soon as it ends (one queued per set).
  Only scheduled jobs are tried again after a failure (``Timing.retry_delays_ms``).
- **Signals** (main thread): SIGHUP reloads the configuration (``reload``: the settings read
  again; the poll starts again without a generation, so the sets come whole); SIGTERM and
  SIGINT stop: jobs waiting to start are dropped; running ones are stopped cleanly (SIGTERM
  to each: ``BS_STOP_BY_USER``) or, with ``finish_on_stop``, let finish (a second SIGTERM then
  stops them); once none runs, :meth:`Daemon.run` returns 0.

Signal handlers only set a flag and write a byte to a pipe the loop waits on (no lock is
taken in a handler); the poller's answers and the jobs' ends come through a queue and wake
the loop the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import queue
import random
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from opencbs.agent.child_jobs import ChildJob, JobEnd, JobRequest, deliver_spooled, retryable
from opencbs.agent.client import AgentClient
from opencbs.agent.daemon_state import load_cache, load_marks, save_cache, save_marks
from opencbs.agent.poll import PollAnswer, PolledSet, RunRequest
from opencbs.agent.poller import Poller
from opencbs.agent.scheduler import (
    Action,
    Decision,
    ScheduleMark,
    Timing,
    clock_jumped,
    decide,
    next_slot_of,
    next_wake,
    reconcile,
    retry_at,
    start_at,
)
from opencbs.agent.spool import pending_spools
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.reports.vocabulary import JobMode

__all__ = ["Clock", "Daemon", "DaemonConfig", "SystemClock"]

log = logging.getLogger(__name__)

#: Longest nap of the loop (seconds): it looks at the clocks at least this often.
MAX_NAP = 10.0


class Clock(Protocol):
    """The wall clock (epoch ms) and the monotonic clock (seconds)."""

    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's clocks."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class DaemonConfig:
    """What the daemon runs with: ``state_dir`` (the report spool of the server and backup
        user: cache and state files), ``timing`` (``agent.scheduler.Timing``), ``poll_wait``
        (seconds of long poll), ``finish_on_stop`` (setting ``on_stop`` ``finish``),
        ``make_client`` (a new ``AgentClient`` for the poller), ``job_argv`` (the command line of
        a job's process), ``job_stdin`` (what its stdin gets: the password line) and ``job_env``
        (its environment; ``None``: the agent's); ``flush_argv``: the command line that delivers
    the reports spooled while the server was away (``opencbs agent flush``; empty: none)."""

    state_dir: Path
    timing: Timing
    poll_wait: float
    finish_on_stop: bool
    make_client: Callable[[], AgentClient]
    job_argv: Callable[[JobRequest], list[str]]
    job_stdin: bytes = b""
    job_env: Mapping[str, str] | None = None
    flush_argv: tuple[str, ...] = ()


def _when(ms: int | None) -> str:
    if ms is None:
        return "none"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


class Daemon:
    """The agent's loop (module docstring). ``reload`` gives the configuration anew on SIGHUP
    (raising ``OpenCBSError`` keeps the one in force); ``clock`` and ``rng`` are the machine's
    unless given (tests)."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        reload: Callable[[], DaemonConfig] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._reload_config = reload
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.sets: tuple[PolledSet, ...] = ()
        self.marks: dict[str, ScheduleMark] = {}
        self.generation: str | None = None
        self.pending: dict[str, tuple[int, JobRequest]] = {}  # set ID -> (start at, job)
        self.queued: dict[str, JobRequest] = {}  # run requests waiting for the set's job
        self.running: dict[str, ChildJob] = {}
        self.stopping = False
        self._events: queue.Queue[tuple[str, object]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        os.set_blocking(self._wake_w, False)
        self._stop_signals = 0
        self._reload_asked = False
        self._poller: Poller | None = None
        self._flushing: threading.Thread | None = None
        self._wall = self.clock.now_ms()
        self._mono = self.clock.monotonic()
        self.awake_since = self._wall

    # -- entry points ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGTERM, SIGINT, :meth:`request_stop`); returns exit code 0."""
        with self._signals():
            self._load()
            self._start_poller()
            try:
                while True:
                    self._tick()
                    if self.stopping and not self.running:
                        break
                    self._nap(self._nap_seconds())
            finally:
                if self._poller is not None:
                    self._poller.stop()
                self._save_marks()
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
        log.info("the agent stopped")
        return ExitCode.SUCCESS

    def request_stop(self) -> None:
        """Stop (as SIGTERM does); safe in a signal handler."""
        self._stop_signals += 1
        self._wake()

    def request_reload(self) -> None:
        """Reload the configuration (as SIGHUP does); safe in a signal handler."""
        self._reload_asked = True
        self._wake()

    # -- plumbing -------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._closed:  # a late answer or job end after the loop ended: nobody waits
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _nap(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
        if ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)

    def _post(self, kind: str, item: object) -> None:
        self._events.put((kind, item))
        self._wake()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        def hup(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, hup)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _load(self) -> None:
        cache = load_cache(self.config.state_dir)
        if cache is not None:
            self.sets, self.generation = cache.sets, cache.generation
            log.info(
                "cached schedules of %s: %s",
                _when(cache.fetched_at),
                _describe(self.sets),
            )
        self.marks = reconcile(self.sets, load_marks(self.config.state_dir), self.clock.now_ms())

    def _start_poller(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self._poller = Poller(
            self.config.make_client(),
            wait=self.config.poll_wait,
            generation=self.generation,
            on_answer=lambda a: self._post("answer", a),
            on_taken=lambda r: self._post("taken", r),
            on_reachable=lambda: self._post("reachable", None),
            rng=self.rng,
        )
        self._poller.start()

    def _save_marks(self) -> None:
        try:
            save_marks(self.config.state_dir, self.marks)
        except OSError as exc:
            log.error("cannot remember the slots run in %s: %s", self.config.state_dir, exc)

    # -- the loop -------------------------------------------------------------------------

    def _tick(self) -> None:
        now, mono = self.clock.now_ms(), self.clock.monotonic()
        if clock_jumped(now - self._wall, int((mono - self._mono) * 1000)):
            log.info("the clock jumped by %+d s (the machine slept?)", (now - self._wall) // 1000)
            self.awake_since = now
        self._wall, self._mono = now, mono
        if self._reload_asked:
            self._reload_asked = False
            self._reload()
        self._drain(now)
        if self._stop_signals and not self.stopping:
            self._begin_stop()
        elif self._stop_signals > 1 and self.config.finish_on_stop:
            for child in self.running.values():
                child.stop()
        if self.stopping:
            return
        busy = {*self.pending, *self.running}
        decisions = decide(
            self.sets,
            self.marks,
            now,
            awake_since_ms=self.awake_since,
            busy=busy,
            timing=self.config.timing,
        )
        for d in decisions:
            self._decided(d, now)
        if decisions:
            self._save_marks()
        self._launch(now)

    def _nap_seconds(self) -> float:
        if self.stopping:
            return 1.0
        now = self.clock.now_ms()
        times = [at for at, _ in self.pending.values()]
        wake = next_wake(self.sets, now)
        if wake is not None:
            times.append(wake)
        soonest = min(times, default=now + int(MAX_NAP * 1000))
        return min(MAX_NAP, max(0.05, (soonest - now) / 1000))

    def _drain(self, now: int) -> None:
        while True:
            try:
                kind, item = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "answer" and isinstance(item, PollAnswer):
                self._answered(item, now)
            elif kind == "taken" and isinstance(item, RunRequest):
                self._taken(item, now)
            elif kind == "ended" and isinstance(item, JobEnd):
                self._ended(item)
            elif kind == "reachable":
                self._deliver_spooled()

    def _deliver_spooled(self) -> None:
        """The server answers (again): deliver what the jobs spooled meanwhile, in a process
        of its own, so that the server has those jobs before it judges their slots missed."""
        config = self.config
        flushing = self._flushing
        if not config.flush_argv or (flushing is not None and flushing.is_alive()):
            return
        if not pending_spools(config.state_dir):
            return
        log.info("the server answers: delivering the job reports spooled meanwhile")
        self._flushing = threading.Thread(
            target=deliver_spooled,
            args=(config.flush_argv, config.job_stdin),
            kwargs={"env": config.job_env},
            name="flush",
            daemon=True,
        )
        self._flushing.start()

    def _answered(self, answer: PollAnswer, now: int) -> None:
        if answer.sets is None or answer.raw_sets is None:
            return
        self.sets, self.generation = answer.sets, answer.generation
        log.info("schedules from the server: %s", _describe(self.sets))
        try:
            save_cache(self.config.state_dir, answer.generation, now, answer.raw_sets)
        except OSError as exc:
            log.error("cannot cache the schedules in %s: %s", self.config.state_dir, exc)
        self.marks = reconcile(self.sets, self.marks, now)
        self._save_marks()

    def _set_name(self, set_id: str) -> str:
        return next((s.name for s in self.sets if s.id == set_id), "")

    def _taken(self, request: RunRequest, now: int) -> None:
        job = JobRequest(
            request.set_id, self._set_name(request.set_id), JobMode.SERVER,
            run_request_id=request.id,
        )  # fmt: skip
        if self.stopping:
            log.info("not run (the agent stops): %s", job.label)
        elif request.set_id in self.running:
            log.info("queued until the running job of the set ends: %s", job.label)
            self.queued[request.set_id] = job
        else:
            if request.set_id in self.pending:
                log.info("instead of the job waiting to start: %s", job.label)
            self.pending[request.set_id] = (now, job)

    def _decided(self, d: Decision, now: int) -> None:
        self.marks.update(
            {sid: dataclasses.replace(self.marks[sid], last_slot=slot)
             for sid, slot in d.slots.items() if sid in self.marks}
        )  # fmt: skip
        where = f"backup set {d.set_name!r} ({d.set_id}), slot {_when(d.slot_ms)}"
        if d.action is Action.SKIP_RUNNING:
            log.warning("%s skipped: a job of the set runs or waits to start", where)
            return
        if d.action is Action.PASS_MISSED:
            log.warning("%s missed (the agent was off or asleep) and not caught up", where)
            return
        if d.action is Action.PASS_STOPPED:
            log.warning("%s missed: its stop time %s has passed", where, _when(d.stop_ms))
            return
        job = JobRequest(
            d.set_id,
            d.set_name,
            JobMode.SCHEDULED,
            slot_ms=d.slot_ms,
            stop_ms=d.stop_ms,
            retention_after=d.retention_after,
            catch_up=d.catch_up,
            slots=d.slots,
        )
        at = start_at(d, now, jitter_ms=self.config.timing.jitter_ms, rng=self.rng)
        late = " (missed: caught up)" if d.catch_up else ""
        log.info("%s%s: starts at %s", where, late, _when(at))
        self.pending[d.set_id] = (at, job)

    def _launch(self, now: int) -> None:
        for set_id, (at, job) in list(self.pending.items()):
            if at > now or set_id in self.running:
                continue
            del self.pending[set_id]
            child = ChildJob(
                job,
                self.config.job_argv(job),
                self.config.job_stdin,
                self._child_ended,
                env=self.config.job_env,
            )
            try:
                child.start()
            except OSError as exc:
                log.error("cannot start the job of %s: %s", job.label, exc)
                continue
            self.running[set_id] = child

    def _child_ended(self, end: JobEnd) -> None:
        self._post("ended", end)

    def _ended(self, end: JobEnd) -> None:
        job = end.request
        self.running.pop(job.set_id, None)
        said = ", ".join(end.statuses) or "no job"
        why = f": {end.message}" if end.message else ""
        if end.exit_code == 0 or (self.stopping and end.exit_code == ExitCode.INTERRUPTED):
            log.info("job ended (%s)%s: %s", said, why, job.label)
        elif end.exit_code == ExitCode.CONFLICT:
            log.warning("job skipped, a job of the set runs already%s: %s", why, job.label)
        else:
            log.warning("job ended (exit code %s, %s)%s: %s", end.exit_code, said, why, job.label)
        if self.stopping:
            return
        queued = self.queued.pop(job.set_id, None)
        if queued is not None:
            self.pending[job.set_id] = (self.clock.now_ms(), queued)
            return
        if job.mode is JobMode.SCHEDULED and retryable(end.exit_code):
            self._retry(job)

    def _retry(self, job: JobRequest) -> None:
        now = self.clock.now_ms()
        bset = next((s for s in self.sets if s.id == job.set_id), None)
        nxt = next_slot_of(bset, now) if bset is not None else None
        at = retry_at(
            job.attempt,
            now,
            next_slot_ms=nxt,
            stop_ms=job.stop_ms,
            delays_ms=self.config.timing.retry_delays_ms,
        )
        if at is None:
            log.warning("not tried again (next slot %s): %s", _when(nxt), job.label)
            return
        again = dataclasses.replace(job, attempt=job.attempt + 1)
        log.info("tried again at %s: %s", _when(at), again.label)
        self.pending[job.set_id] = (at, again)

    def _begin_stop(self) -> None:
        self.stopping = True
        dropped = len(self.pending) + len(self.queued)
        self.pending.clear()
        self.queued.clear()
        how = "let finish" if self.config.finish_on_stop else "stopped"
        log.info(
            "stopping: %d job(s) running (%s), %d waiting dropped", len(self.running), how, dropped
        )
        if not self.config.finish_on_stop:
            for child in self.running.values():
                child.stop()

    def _reload(self) -> None:
        if self._reload_config is None:
            return
        try:
            config = self._reload_config()
        except OpenCBSError as exc:
            log.error("configuration not reloaded (the one in force stays): %s", exc.message)
            return
        moved = config.state_dir != self.config.state_dir
        self.config = config
        if moved:  # another server or backup user: its own cache and slots
            self.sets, self.generation = (), None
            self._load()
        self.generation = None  # the sets come whole
        log.info("configuration reloaded; polling the server again")
        self._start_poller()


def _describe(sets: tuple[PolledSet, ...]) -> str:
    schedules = sum(len(s.schedules) for s in sets)
    return f"{len(sets)} backup set(s), {schedules} schedule(s)"
