"""The unattended agent's decisions (``agent.scheduler``) with an injected time: on time,
caught up once after a simulated sleep, not again after a restart, no overlap, the random start
delay bounded, retries bounded and never past the next slot or the stop time."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from opencbs.agent.poll import PolledSchedule, PolledSet, sets_from_json
from opencbs.agent.scheduler import (
    JUMP_TOLERANCE_MS,
    Action,
    Decision,
    ScheduleMark,
    Timing,
    clock_jumped,
    decide,
    fingerprint,
    next_slot_of,
    next_wake,
    reconcile,
    retry_at,
    start_at,
)
from opencbs.model.schedules import Schedule

MIN = 60_000
HOUR = 60 * MIN


def ms(text: str) -> int:
    """Epoch ms of ``2026-03-10 HH:MM`` style UTC text."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def a_set(
    *schedules: tuple[str, dict[str, object]], set_id: str = "1", zone: str = "UTC"
) -> PolledSet:
    return PolledSet(
        set_id,
        f"set-{set_id}",
        zone,
        tuple(PolledSchedule(sid, Schedule.parse(body)) for sid, body in schedules),
    )


HOURLY = ("h", {"name": "Hourly", "type": "DAILY", "hour": 0, "minute": 0, "interval_minutes": 60})
NIGHTLY = ("n", {"name": "Nightly", "type": "DAILY", "hour": 22, "minute": 0})


def known_since(sets: list[PolledSet], since: int) -> dict[str, ScheduleMark]:
    return reconcile(sets, {}, since)


def handled(marks: dict[str, ScheduleMark], d: Decision) -> dict[str, ScheduleMark]:
    """The marks after the agent recorded ``d`` (as ``agent.daemon`` does)."""
    out = dict(marks)
    for sid, slot in d.slots.items():
        old = out[sid]
        out[sid] = ScheduleMark(slot, old.since, old.fingerprint)
    return out


def test_a_slot_runs_on_time_and_once() -> None:
    sets = [a_set(NIGHTLY)]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    awake = ms("2026-03-10 08:00")
    assert decide(sets, marks, ms("2026-03-10 21:59:59"), awake_since_ms=awake) == []
    [d] = decide(sets, marks, ms("2026-03-10 22:00:00"), awake_since_ms=awake)
    assert (d.action, d.slot_ms, d.catch_up) == (Action.RUN, ms("2026-03-10 22:00"), False)
    assert d.slots == {"n": ms("2026-03-10 22:00")}
    marks = handled(marks, d)
    assert decide(sets, marks, ms("2026-03-10 22:00:30"), awake_since_ms=awake) == []


def test_a_slot_is_not_run_again_after_a_restart() -> None:
    sets = [a_set(NIGHTLY)]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    [d] = decide(sets, marks, ms("2026-03-10 22:00:01"), awake_since_ms=ms("2026-03-10 08:00"))
    marks = handled(marks, d)
    # the agent restarts at 22:03 (its marks read back from its state file): the slot is done
    restarted = reconcile(sets, dict(marks), ms("2026-03-10 22:03"))
    assert restarted == marks
    assert (
        decide(sets, restarted, ms("2026-03-10 22:03"), awake_since_ms=ms("2026-03-10 22:03")) == []
    )


def test_catch_up_after_a_simulated_sleep_runs_once() -> None:
    sets = [a_set(HOURLY)]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    awake = ms("2026-03-10 08:00")
    [d] = decide(sets, marks, ms("2026-03-10 09:00:02"), awake_since_ms=awake)
    marks = handled(marks, d)
    # asleep from 09:30 to 14:10: the wall clock moved 4 h 40 min, the monotonic one 1 s
    before, after = ms("2026-03-10 09:30"), ms("2026-03-10 14:10")
    assert clock_jumped(after - before, 1000)
    awake = after
    # five slots passed (10:00 … 14:00): one job, for the newest, caught up
    [d] = decide(sets, marks, after, awake_since_ms=awake)
    assert (d.action, d.slot_ms, d.catch_up) == (Action.RUN, ms("2026-03-10 14:00"), True)
    marks = handled(marks, d)
    assert decide(sets, marks, after + 30_000, awake_since_ms=awake) == []
    # the next slot is on time again
    [d] = decide(sets, marks, ms("2026-03-10 15:00"), awake_since_ms=awake)
    assert (d.action, d.catch_up) == (Action.RUN, False)


def test_a_missed_slot_is_passed_without_catch_up_or_when_too_old() -> None:
    sets = [a_set(NIGHTLY)]
    marks = known_since(sets, ms("2026-03-09 08:00"))
    woke = ms("2026-03-11 07:00")  # the agent was off from before 22:00 on the 10th
    off = Timing(catch_up=False)
    [d] = decide(sets, marks, woke, awake_since_ms=woke, timing=off)
    assert (d.action, d.slot_ms) == (Action.PASS_MISSED, ms("2026-03-10 22:00"))
    short = Timing(catch_up_window_ms=8 * HOUR)
    [d] = decide(sets, marks, woke, awake_since_ms=woke, timing=short)
    assert d.action is Action.PASS_MISSED  # 9 h old
    [d] = decide(sets, marks, woke, awake_since_ms=woke, timing=Timing())
    assert (d.action, d.catch_up) == (Action.RUN, True)  # within the default 24 h


def test_a_window_whose_stop_time_passed_is_not_run() -> None:
    body = {"name": "Win", "type": "DAILY", "hour": 22, "minute": 0, "stop_after_hours": 4}
    sets = [a_set(("w", body))]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    woke = ms("2026-03-11 03:00")
    [d] = decide(sets, marks, woke, awake_since_ms=woke)
    assert (d.action, d.stop_ms) == (Action.PASS_STOPPED, ms("2026-03-11 02:00"))
    [d] = decide(sets, marks, ms("2026-03-11 01:00"), awake_since_ms=woke - 4 * HOUR)
    assert (d.action, d.stop_ms) == (Action.RUN, ms("2026-03-11 02:00"))


def test_no_overlap_a_slot_of_a_busy_set_is_skipped_and_recorded() -> None:
    sets = [a_set(HOURLY), a_set(NIGHTLY, set_id="2")]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    now = ms("2026-03-10 22:00:01")
    decisions = decide(sets, marks, now, awake_since_ms=ms("2026-03-10 08:00"), busy={"1"})
    by_set = {d.set_id: d for d in decisions}
    assert by_set["1"].action is Action.SKIP_RUNNING
    assert by_set["1"].slots == {"h": ms("2026-03-10 22:00")}  # recorded: not run later
    assert by_set["2"].action is Action.RUN
    marks = handled(handled(marks, by_set["1"]), by_set["2"])
    assert decide(sets, marks, now + MIN, awake_since_ms=ms("2026-03-10 08:00")) == []


def test_two_schedules_of_one_set_due_together_make_one_job() -> None:
    keep = {"name": "Kept", "type": "DAILY", "hour": 22, "minute": 0, "retention_after": False}
    stop = {**NIGHTLY[1], "name": "Stop", "stop_after_hours": 2, "retention_after": True}
    sets = [a_set(("a", keep), ("b", stop))]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    [d] = decide(sets, marks, ms("2026-03-10 22:00"), awake_since_ms=ms("2026-03-10 08:00"))
    assert d.action is Action.RUN
    assert set(d.slots) == {"a", "b"}
    assert d.stop_ms is None  # one of them runs until done
    assert d.retention_after is True  # one of them asks for it


def test_a_slot_before_the_schedule_was_known_or_changed_does_not_run() -> None:
    sets = [a_set(NIGHTLY)]
    marks = known_since(sets, ms("2026-03-10 22:30"))  # added after tonight's slot
    assert decide(sets, marks, ms("2026-03-10 22:31"), awake_since_ms=0) == []
    [d] = decide(sets, marks, ms("2026-03-11 22:00"), awake_since_ms=0)
    marks = handled(marks, d)
    # the time changes to 10:00 on the 12th at 15:00: its 10:00 slot that day is not run
    moved = [a_set(("n", {**NIGHTLY[1], "hour": 10}))]
    marks = reconcile(moved, marks, ms("2026-03-12 15:00"))
    assert marks["n"].last_slot is None and marks["n"].since == ms("2026-03-12 15:00")
    assert decide(moved, marks, ms("2026-03-12 15:00"), awake_since_ms=0) == []
    # so does a change of the set's zone; an unchanged schedule keeps its mark
    assert fingerprint(moved[0].schedules[0], "UTC") != fingerprint(
        moved[0].schedules[0], "Europe/Berlin"
    )
    assert reconcile(moved, marks, ms("2026-03-13 00:00")) == marks
    assert reconcile([], marks, ms("2026-03-13 00:00")) == {}  # removed: forgotten


def test_schedules_run_in_their_sets_zone() -> None:
    sets = [a_set(NIGHTLY, zone="Europe/Berlin")]
    marks = known_since(sets, ms("2026-03-10 08:00"))
    [d] = decide(sets, marks, ms("2026-03-10 21:00"), awake_since_ms=ms("2026-03-10 08:00"))
    assert d.slot_ms == ms("2026-03-10 21:00")  # 22:00 CET
    assert next_wake(sets, ms("2026-03-10 21:00")) == ms("2026-03-11 21:00")


@pytest.mark.parametrize("seed", range(50))
def test_the_start_delay_is_bounded(seed: int) -> None:
    rng = random.Random(seed)
    slot = ms("2026-03-10 22:00")
    d = Decision("1", "one", Action.RUN, slot, {"n": slot})
    at = start_at(d, slot + 500, jitter_ms=60_000, rng=rng)
    assert slot + 500 <= at <= slot + 500 + 60_000
    late = start_at(d, slot + 3 * HOUR, jitter_ms=60_000, rng=rng)  # a caught-up slot
    assert slot + 3 * HOUR <= late <= slot + 3 * HOUR + 60_000
    tight = Decision("1", "one", Action.RUN, slot, {"n": slot}, stop_ms=slot + 30_000)
    assert slot <= start_at(tight, slot, jitter_ms=60_000, rng=rng) <= slot + 15_000
    assert start_at(d, slot, jitter_ms=0, rng=rng) == slot


def test_retries_are_bounded_and_never_past_the_next_slot_or_the_stop_time() -> None:
    delays = (MIN, 5 * MIN, 15 * MIN)
    failed = ms("2026-03-10 22:00")
    far = failed + 24 * HOUR
    got = [retry_at(n, failed, next_slot_ms=far, stop_ms=None, delays_ms=delays) for n in range(5)]
    assert got == [failed + MIN, failed + 5 * MIN, failed + 15 * MIN, None, None]
    # an hourly schedule: the 15-minute retry of a job that failed at 22:50 would pass 23:00
    late = ms("2026-03-10 22:50")
    nxt = next_slot_of(a_set(HOURLY), late)
    assert nxt == ms("2026-03-10 23:00")
    assert retry_at(1, late, next_slot_ms=nxt, stop_ms=None, delays_ms=delays) == late + 5 * MIN
    assert retry_at(2, late, next_slot_ms=nxt, stop_ms=None, delays_ms=delays) is None
    # nor past the job's stop time
    stop = failed + 4 * MIN
    assert retry_at(0, failed, next_slot_ms=far, stop_ms=stop, delays_ms=delays) == failed + MIN
    assert retry_at(1, failed, next_slot_ms=far, stop_ms=stop, delays_ms=delays) is None
    assert retry_at(0, failed, next_slot_ms=far, stop_ms=None, delays_ms=()) is None


def test_clock_jumps_are_told_from_ordinary_drift() -> None:
    assert not clock_jumped(10_000, 10_000)
    assert not clock_jumped(10_000 + JUMP_TOLERANCE_MS, 10_000)
    assert clock_jumped(10_000 + JUMP_TOLERANCE_MS + 1, 10_000)  # slept
    assert clock_jumped(-HOUR, 10_000)  # the clock set back


def test_the_poll_sets_parse_and_a_bad_schedule_is_left_out() -> None:
    raw = [
        {
            "id": "7",
            "name": "docs",
            "time_zone": "Nowhere/Unknown",
            "schedules": [
                {"id": "1", **NIGHTLY[1]},
                {"id": "2", "name": "Bad", "type": "WEEKLY"},  # no weekdays
            ],
        }
    ]
    [s] = sets_from_json(raw)
    assert [x.id for x in s.schedules] == ["1"]
    assert s.zone is UTC
