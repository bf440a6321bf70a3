"""The unattended agent's decisions (issue 16; ``agent.daemon`` acts on them): which slot of
which schedule is due now, when its job starts, whether a failed job is tried again, and
whether the machine slept. Pure: the sets and schedules, what the agent remembers and the
time (epoch ms) come in; decisions go out. No clock, no file, no process (style.md §2).

The rules, each tested with an injected time in ``tests/unit/test_scheduler.py``:

- **One slot, once.** For each schedule the agent remembers the newest slot it handled
  (:class:`ScheduleMark` ``last_slot``: run, skipped or given up) in its state file, so a
  restart does not run a slot again. A slot before the agent first knew the schedule in its
  current shape (``since``: a new schedule, or one whose definition or zone changed) is never
  run: the server does not count it missed either (``store.schedules``: ``next_check_ms``).
- **On time or missed.** A slot at or after ``awake_since`` (the agent has run, awake, since
  then) is on time: it runs. A slot before it came while the agent was not running or the
  machine slept (:func:`clock_jumped`): with ``catch_up`` on, the newest such slot runs once
  when it is at most ``catch_up_window_ms`` old (never once per missed slot: only
  :func:`~opencbs.model.schedules.previous_slot` is looked at); else it is passed (logged).
- **Never two jobs of one set.** A slot of a set whose job runs, or waits to start, is
  skipped (logged; not queued). Two schedules of one set due together make one job: the
  latest stop time (none wins), retention after it when either says so.
- **Stopped windows.** A slot whose stop time (``model.schedules.stop_time``) has passed is
  not run.
- **Jitter.** A slot's job starts a random delay of 0..``jitter_ms`` after the slot (or after
  now, for a missed one), never later than halfway to its stop time (:func:`start_at`).
- **Retries.** A failed job is tried again after ``retry_delays_ms[n]`` (the n-th retry),
  never when that is at or past the set's next slot or the job's stop time
  (:func:`retry_at`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opencbs.agent.poll import PolledSchedule, PolledSet
from opencbs.model.schedules import next_slot, previous_slot, stop_time

__all__ = [
    "Action",
    "Decision",
    "ScheduleMark",
    "Timing",
    "clock_jumped",
    "decide",
    "fingerprint",
    "next_slot_of",
    "next_wake",
    "reconcile",
    "retry_at",
    "start_at",
]

#: How far the wall clock may drift from the monotonic clock between two looks (ms) before
#: the agent counts it as a sleep or a clock change (:func:`clock_jumped`).
JUMP_TOLERANCE_MS = 30_000


@dataclass(frozen=True)
class Timing:
    """The scheduling settings (settings ``catch_up``, ``catch_up_window``,
    ``schedule_jitter``, ``job_retry_delays``), in ms."""

    catch_up: bool = True
    catch_up_window_ms: int = 86_400_000
    jitter_ms: int = 60_000
    retry_delays_ms: tuple[int, ...] = (60_000, 300_000, 900_000)


@dataclass(frozen=True)
class ScheduleMark:
    """What the agent remembers of one schedule: the newest slot it handled (``last_slot``,
    epoch ms, ``None``: none yet), since when it knows the schedule in its current shape
    (``since``, epoch ms) and that shape (``fingerprint``)."""

    last_slot: int | None
    since: int
    fingerprint: str

    def as_json(self) -> dict[str, object]:
        return {"last_slot": self.last_slot, "since": self.since, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> ScheduleMark:
        last = d.get("last_slot")
        return cls(
            last_slot=None if last is None else int(str(last)),
            since=int(str(d["since"])),
            fingerprint=str(d["fingerprint"]),
        )


class Action(enum.StrEnum):
    """What becomes of a due slot."""

    RUN = "run"
    SKIP_RUNNING = "skip-running"  # a job of the set runs or waits to start
    PASS_MISSED = "pass-missed"  # missed, and not caught up (catch_up off, or too old)
    PASS_STOPPED = "pass-stopped"  # its stop time has passed


@dataclass(frozen=True)
class Decision:
    """What to do about the slots of one set due now: ``action``; the ``slots`` handled
    (schedule ID → slot, epoch ms: the agent records them whatever the action); for
    :attr:`Action.RUN` the job's ``stop_ms`` (``None``: none), whether retention runs after
    it (``retention_after``), whether the slot was missed (``catch_up``) and the newest
    ``slot_ms``."""

    set_id: str
    set_name: str
    action: Action
    slot_ms: int
    slots: Mapping[str, int] = field(default_factory=dict)
    stop_ms: int | None = None
    retention_after: bool = True
    catch_up: bool = False


def fingerprint(s: PolledSchedule, zone_name: str) -> str:
    """A short digest of a schedule's definition and its set's zone: when it changes, the
    schedule counts as new (module docstring)."""
    body = json.dumps([s.schedule.model_dump(mode="json"), zone_name], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def reconcile(
    sets: Iterable[PolledSet], marks: Mapping[str, ScheduleMark], now_ms: int
) -> dict[str, ScheduleMark]:
    """The marks for the schedules of ``sets``: a schedule's own when its shape is the same,
    a new one from ``now_ms`` otherwise; those of schedules no longer there dropped."""
    out: dict[str, ScheduleMark] = {}
    for bset in sets:
        for s in bset.schedules:
            fp = fingerprint(s, bset.time_zone)
            old = marks.get(s.id)
            out[s.id] = (
                old if old is not None and old.fingerprint == fp else ScheduleMark(None, now_ms, fp)
            )
    return out


def _due_slot(
    s: PolledSchedule, bset: PolledSet, mark: ScheduleMark | None, now_ms: int
) -> int | None:
    """The newest slot of ``s`` at or before ``now_ms`` not handled yet, or ``None``."""
    if mark is None:
        return None
    slot = previous_slot(s.schedule, bset.zone, now_ms)
    if slot is None or slot < mark.since:
        return None
    if mark.last_slot is not None and slot <= mark.last_slot:
        return None
    return slot


def decide(
    sets: Iterable[PolledSet],
    marks: Mapping[str, ScheduleMark],
    now_ms: int,
    *,
    awake_since_ms: int,
    busy: Iterable[str] = (),
    timing: Timing = Timing(),
) -> list[Decision]:
    """A :class:`Decision` for each set with a slot due at ``now_ms`` (module docstring);
    ``marks`` from :func:`reconcile`; ``busy``: the IDs of sets whose job runs or waits to
    start; ``awake_since_ms``: since when the agent has run awake."""
    busy_sets = set(busy)
    out: list[Decision] = []
    for bset in sets:
        due = {
            s.id: (s, slot)
            for s in bset.schedules
            if (slot := _due_slot(s, bset, marks.get(s.id), now_ms)) is not None
        }
        if not due:
            continue
        handled = {sid: slot for sid, (_, slot) in due.items()}
        newest = max(handled.values())
        base = Decision(bset.id, bset.name, Action.RUN, newest, handled)
        if bset.id in busy_sets:
            out.append(_replace(base, action=Action.SKIP_RUNNING))
            continue
        missed = newest < awake_since_ms
        if missed and (not timing.catch_up or now_ms - newest > timing.catch_up_window_ms):
            out.append(_replace(base, action=Action.PASS_MISSED))
            continue
        stops = [stop_time(s.schedule, bset.zone, slot) for s, slot in due.values()]
        stop = None if any(x is None for x in stops) else max(x for x in stops if x is not None)
        if stop is not None and stop <= now_ms:
            out.append(_replace(base, action=Action.PASS_STOPPED, stop_ms=stop))
            continue
        out.append(
            _replace(
                base,
                stop_ms=stop,
                retention_after=any(s.schedule.retention_after for s, _ in due.values()),
                catch_up=missed,
            )
        )
    return out


def _replace(d: Decision, **changes: object) -> Decision:
    return dataclasses.replace(d, **changes)  # type: ignore[arg-type]


def start_at(d: Decision, now_ms: int, *, jitter_ms: int, rng: random.Random) -> int:
    """When the job of ``d`` starts (epoch ms): a random 0..``jitter_ms`` after its slot, or
    after ``now_ms`` when that is later (a missed slot, a late look); never later than
    halfway from then to its stop time."""
    base = max(now_ms, d.slot_ms)
    at = base + (rng.randint(0, jitter_ms) if jitter_ms > 0 else 0)
    if d.stop_ms is not None:
        at = min(at, base + max(0, d.stop_ms - base) // 2)
    return at


def retry_at(
    attempt: int,
    failed_at_ms: int,
    *,
    next_slot_ms: int | None,
    stop_ms: int | None,
    delays_ms: Sequence[int],
) -> int | None:
    """When retry number ``attempt`` (0: the first) of a job that failed at ``failed_at_ms``
    starts (epoch ms), or ``None``: no retry left, or it would be at or past the set's next
    slot (``next_slot_ms``) or the job's stop time (``stop_ms``)."""
    if attempt < 0 or attempt >= len(delays_ms):
        return None
    at = failed_at_ms + delays_ms[attempt]
    if next_slot_ms is not None and at >= next_slot_ms:
        return None
    if stop_ms is not None and at >= stop_ms:
        return None
    return at


def next_slot_of(bset: PolledSet, after_ms: int) -> int | None:
    """The first slot of any schedule of ``bset`` after ``after_ms`` (epoch ms), or ``None``."""
    found = [next_slot(s.schedule, bset.zone, after_ms) for s in bset.schedules]
    return min((x for x in found if x is not None), default=None)


def next_wake(sets: Iterable[PolledSet], now_ms: int) -> int | None:
    """The next slot of any schedule after ``now_ms`` (epoch ms): when the agent must look
    again at the latest; ``None``: no slot to come."""
    found = [next_slot_of(bset, now_ms) for bset in sets]
    return min((x for x in found if x is not None), default=None)


def clock_jumped(wall_elapsed_ms: int, monotonic_elapsed_ms: int) -> bool:
    """Whether the wall clock moved unlike the monotonic clock between two looks: the machine
    slept (the monotonic clock stops meanwhile) or the clock was set. Then the agent has not
    been awake since the earlier look (its ``awake_since`` starts again)."""
    return abs(wall_elapsed_ms - monotonic_elapsed_ms) > JUMP_TOLERANCE_MS
