"""A retention policy and its arithmetic: which snapshots of a backup set a policy keeps (issue 14
"Retention policy and space reclaim"). Pure: times in, decisions out; no repository, no clock.

The rules are restic's ``forget --keep-*`` rules (restic's ``snapshot_policy.go``), so that a
person who knows restic reads them right:

- ``last`` N: the N newest snapshots;
- ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly`` N: the newest snapshot of each of
  the last N hours, calendar days, ISO weeks, months or years that have snapshots, in local
  time of the zone given (so a day of 23 or 25 hours at a DST change is one day, and the hour
  a clock repeats when it goes back is one hour);
- ``within`` D (:class:`Duration`, restic's ``--keep-within`` syntax ``1y2m3d4h``): every
  snapshot no older than the newest snapshot's time minus D, counted on the calendar of the
  zone given (a month back from March 31 is February 28 or 29).

Each snapshot is kept when any rule keeps it, and its :class:`Decision` names every rule that
did. Where these differ from restic, on purpose: ``within`` keeps a snapshot exactly at the
limit (restic: strictly newer), a month back clamps to the month's end (restic's Go ``AddDate``
overflows into the next month), and a bucket rule never keeps the oldest snapshot only because
it has counts left (restic 0.16 does).

:func:`apply_policy` refuses a policy that keeps nothing (``InvalidInput``): it never decides
to remove every snapshot.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from opencbs.errors import InvalidInput
from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS

__all__ = [
    "KEEP_RULES_HINT",
    "Decision",
    "Duration",
    "KeepRules",
    "SnapshotTime",
    "apply_policy",
]

#: What a person gives to have a policy keep something (the hint of an empty policy).
KEEP_RULES_HINT = (
    "give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, "
    "--keep-monthly, --keep-yearly, --keep-within"
)
_DURATION_HINT = (
    "write a duration as restic's --keep-within does: 7d, 12h, 1y2m3d4h (units y, m, d, h, "
    "in that order, each at most once, each at most 9 digits)"
)
_DURATION = re.compile(r"(?:([0-9]{1,9})y)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})d)?(?:([0-9]{1,9})h)?")
_DURATION_PARTS = (("years", "y"), ("months", "m"), ("days", "d"), ("hours", "h"))
_MAX_PART = 999_999_999
_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Times the calendar arithmetic works on (epoch ns): the job-time window of ``reports.timefmt``
#: (every instant in it has a local time in every zone). A time outside is counted as its end.
_MIN_NS = MIN_TIME_MS * 1_000_000
_MAX_NS = MAX_TIME_MS * 1_000_000


@dataclass(frozen=True)
class Duration:
    """A length of calendar time: ``years``, ``months``, ``days`` and ``hours``, whole numbers
    0..999,999,999, not all zero (restic's ``--keep-within`` duration). ``str()`` is its
    canonical text (``1y2m3d4h``, zero parts left out), which :meth:`parse` reads back.

    Raises ``InvalidInput`` for a negative or non-integer part, or all parts zero.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __post_init__(self) -> None:
        for name, _unit in _DURATION_PARTS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _MAX_PART:
                raise InvalidInput(
                    f"a duration's {name} must be a whole number 0..{_MAX_PART}, not {value!r}",
                    _DURATION_HINT,
                )
        if not (self.years or self.months or self.days or self.hours):
            raise InvalidInput("a duration must be longer than zero", _DURATION_HINT)

    @classmethod
    def parse(cls, text: str) -> Duration:
        """The duration written as ``text``: ``7d``, ``12h``, ``1y2m3d4h`` (units ``y``, ``m``,
        ``d``, ``h`` in that order, each at most once; no spaces, signs or fractions).

        Raises ``InvalidInput`` (one line, with a hint) for anything else, empty or all zero
        (``0d``) included."""
        match = _DURATION.fullmatch(text) if isinstance(text, str) else None
        if match is None or not any(match.groups()):
            shown = repr(text[:40] + "…" if isinstance(text, str) and len(text) > 40 else text)
            raise InvalidInput(f"invalid duration {shown}", _DURATION_HINT)
        years, months, days, hours = (int(group or 0) for group in match.groups())
        if not (years or months or days or hours):
            raise InvalidInput(f"duration {text!r} is zero: it keeps nothing", _DURATION_HINT)
        return cls(years=years, months=months, days=days, hours=hours)

    def __str__(self) -> str:
        return "".join(
            f"{getattr(self, name)}{unit}" for name, unit in _DURATION_PARTS if getattr(self, name)
        )


@dataclass(frozen=True)
class KeepRules:
    """What a retention policy keeps (module docstring): ``last``, ``hourly``, ``daily``,
    ``weekly``, ``monthly``, ``yearly`` snapshot counts (whole numbers >= 0; 0: the rule is not
    used) and ``within``, a :class:`Duration` or ``None``.

    Raises ``InvalidInput`` for a count that is negative or not an integer."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None

    def __post_init__(self) -> None:
        for name, value in self._counts():
            if type(value) is not int or value < 0:
                raise InvalidInput(
                    f"keep {name} must be a whole number >= 0, not {value!r}", KEEP_RULES_HINT
                )
        if self.within is not None and not isinstance(self.within, Duration):
            raise InvalidInput(f"keep within must be a duration, not {self.within!r}")

    def _counts(self) -> tuple[tuple[str, int], ...]:
        return (
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        )

    def is_empty(self) -> bool:
        """Whether these rules keep nothing (every count 0 and no ``within``)."""
        return self.within is None and not any(value for _name, value in self._counts())

    def describe(self) -> str:
        """The rules in words: ``keep 7 daily, 4 weekly``, ``keep the last snapshot, all within
        7d``, ``keep nothing`` for empty rules."""
        parts = []
        if self.last:
            parts.append(
                "the last snapshot" if self.last == 1 else f"the last {self.last} snapshots"
            )
        parts += [f"{value} {name}" for name, value in self._counts()[1:] if value]
        if self.within is not None:
            parts.append(f"all within {self.within}")
        return "keep " + ", ".join(parts) if parts else "keep nothing"


@dataclass(frozen=True)
class SnapshotTime:
    """A snapshot as the policy sees it: its ``id`` and ``time_ns`` (when its backup started,
    nanoseconds since the epoch, UTC). A time outside the job-time window of
    ``reports.timefmt`` (1601-01-02 to 9999-12-31 UTC) counts as the window's nearer end for
    buckets and ``within``; it is still ordered by its own value."""

    id: str
    time_ns: int


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one snapshot: ``keep``, and the ``reasons`` it is kept
    (``"last snapshot"``, ``"hourly snapshot"``, ``"daily snapshot"``, ``"weekly snapshot"``,
    ``"monthly snapshot"``, ``"yearly snapshot"``, ``"within 7d"``, in that order; ``()`` when
    no rule keeps it)."""

    id: str
    time_ns: int
    keep: bool
    reasons: tuple[str, ...]


#: The bucket rules: the field of ``KeepRules``, the reason, the bucket of a local time.
_BUCKET_RULES: tuple[tuple[str, str, Callable[[datetime], tuple[int, ...]]], ...] = (
    ("hourly", "hourly snapshot", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", "daily snapshot", lambda t: (t.year, t.month, t.day)),
    ("weekly", "weekly snapshot", lambda t: tuple(t.isocalendar())[:2]),
    ("monthly", "monthly snapshot", lambda t: (t.year, t.month)),
    ("yearly", "yearly snapshot", lambda t: (t.year,)),
)


def _newest_first(snapshot: SnapshotTime) -> tuple[int, str]:
    return (snapshot.time_ns, snapshot.id)


def _clamped(time_ns: int) -> int:
    """``time_ns`` moved into the job-time window (``_MIN_NS``, ``_MAX_NS``)."""
    return min(max(time_ns, _MIN_NS), _MAX_NS)


def _local_time(time_ns: int, tz: tzinfo) -> datetime:
    """The local time in ``tz`` of ``time_ns`` (to the second; clamped into the window)."""
    seconds = _clamped(time_ns) // _NS
    return (_EPOCH + timedelta(seconds=seconds)).astimezone(tz)


def _months_back(wall: datetime, months: int) -> datetime | None:
    """The wall time ``months`` calendar months before ``wall``, its day clamped to the month's
    end (March 31 - 1 month: February 28 or 29); ``None`` before year 1."""
    year, month0 = divmod(wall.year * 12 + wall.month - 1 - months, 12)
    if year < 1:
        return None
    day = min(wall.day, calendar.monthrange(year, month0 + 1)[1])
    return wall.replace(year=year, month=month0 + 1, day=day)


def _cutoff_ns(newest_ns: int, within: Duration, tz: tzinfo) -> int:
    """The oldest time (epoch ns) ``within`` keeps: the newest snapshot's local wall time in
    ``tz`` moved back by the years and months (clamped to month ends), then the days (calendar
    days: a DST day counts as one), read in ``tz`` (a wall time the clock skips or repeats as
    the earlier of its two readings, which keeps more), then minus the hours as elapsed time.
    Before any representable time: the window's start (every snapshot is within)."""
    clamped = _clamped(newest_ns)
    rest_ns = clamped % _NS
    wall = _months_back(
        _local_time(clamped, tz).replace(tzinfo=None), within.years * 12 + within.months
    )
    if wall is None:
        return _MIN_NS
    try:
        wall -= timedelta(days=within.days)
        instant = min(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))
    except OverflowError:
        return _MIN_NS
    seconds = (instant - _EPOCH) // timedelta(seconds=1)
    return max(seconds * _NS + rest_ns - within.hours * 3600 * _NS, _MIN_NS)


def apply_policy(
    snapshots: Iterable[SnapshotTime], rules: KeepRules, *, tz: tzinfo
) -> list[Decision]:
    """One :class:`Decision` per snapshot, newest first (equal times: greater ``id`` first), by
    restic's ``forget --keep-*`` rules (module docstring) in local time of ``tz``.

    A bucket rule walks the snapshots newest first and keeps one whenever its bucket differs
    from the bucket of the last snapshot that rule kept, while the rule has counts left.
    An empty list gives ``[]``. Raises ``InvalidInput`` when ``rules`` keep nothing (a policy
    never removes every snapshot)."""
    if rules.is_empty():
        raise InvalidInput("a retention policy must keep something", KEEP_RULES_HINT)
    ordered = sorted(snapshots, key=_newest_first, reverse=True)
    if not ordered:
        return []
    within = rules.within
    cutoff = _cutoff_ns(ordered[0].time_ns, within, tz) if within is not None else None
    left = {name: getattr(rules, name) for name, _reason, _bucket in _BUCKET_RULES}
    last_kept: dict[str, tuple[int, ...]] = {}
    decisions = []
    for index, snapshot in enumerate(ordered):
        local = _local_time(snapshot.time_ns, tz)
        reasons = ["last snapshot"] if index < rules.last else []
        for name, reason, bucket_of in _BUCKET_RULES:
            bucket = bucket_of(local)
            if left[name] > 0 and last_kept.get(name) != bucket:
                left[name] -= 1
                last_kept[name] = bucket
                reasons.append(reason)
        if cutoff is not None and _clamped(snapshot.time_ns) >= cutoff:
            reasons.append(f"within {within}")
        decisions.append(
            Decision(snapshot.id, snapshot.time_ns, keep=bool(reasons), reasons=tuple(reasons))
        )
    return decisions
