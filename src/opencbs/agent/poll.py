"""What the server's poll answers an unattended agent (``GET /api/agent/v1/poll``; cbs-api.md,
"Agent API for unattended agents"), parsed once, here, into frozen values.

- :class:`PollAnswer`: the ``generation`` of what the agent was given (opaque; the agent sends
  it back so the server answers ``sets: null`` while nothing changed), the server's
  ``poll_interval`` (seconds) and ``server_time`` (epoch ms), ``sets`` (``None``: unchanged
  since the generation sent; else every set of the user, each with its schedules and its
  resolved IANA ``time_zone``), the pending ``run_requests`` (RunBackup.do) and ``waited``
  (``False``: the server did not hold the poll, too many are waiting: poll again after
  ``poll_interval``).
- :class:`RunRequest` and :class:`TakenRequest` (``POST /run-requests/{id}/take``).

A schedule the agent cannot read (a newer server's shape) is left out of its set and logged
(:func:`sets_from_json`), so the other schedules still run; a set whose zone is unknown here
runs its schedules in UTC, logged likewise. Raises ``ValueError``/``KeyError`` for an answer
that is not the poll's shape at all (the client turns it into ``AgentApiError``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opencbs.errors import InvalidInput
from opencbs.model.schedules import Schedule

__all__ = [
    "PollAnswer",
    "PolledSchedule",
    "PolledSet",
    "RunRequest",
    "TakenRequest",
    "sets_from_json",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolledSchedule:
    """One schedule of a set: the server's ``id`` and the :class:`Schedule`."""

    id: str
    schedule: Schedule


@dataclass(frozen=True)
class PolledSet:
    """A backup set as the poll gives it: ``id``, ``name``, ``time_zone`` (an IANA name, the
    set's or the server's) and its ``schedules`` in their order."""

    id: str
    name: str
    time_zone: str
    schedules: tuple[PolledSchedule, ...]

    @property
    def zone(self) -> dt.tzinfo:
        """The set's zone; UTC when this machine does not know the name (logged once per
        parse, by :func:`sets_from_json`)."""
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            return dt.UTC


@dataclass(frozen=True)
class RunRequest:
    """A pending run request (RunBackup.do): ``id``, the ``set_id`` to back up, when it was
    made (``requested_at``, epoch ms) and by which system user (``requested_by``)."""

    id: int
    set_id: str
    requested_at: int
    requested_by: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunRequest:
        return cls(
            id=int(d["id"]),
            set_id=str(d["set_id"]),
            requested_at=int(d.get("requested_at", 0)),
            requested_by=str(d.get("requested_by", "")),
        )


@dataclass(frozen=True)
class TakenRequest:
    """The answer to taking a run request: its ``id``, ``set_id`` and ``status``
    (``TAKEN``)."""

    id: int
    set_id: str
    status: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TakenRequest:
        return cls(id=int(d["id"]), set_id=str(d["set_id"]), status=str(d["status"]))


@dataclass(frozen=True)
class PollAnswer:
    """One poll's answer (module docstring); ``poll_interval`` in seconds, ``server_time``
    epoch ms. ``raw_sets`` keeps the sets as sent, for the agent's cache on disk."""

    generation: str
    poll_interval: float
    server_time: int
    sets: tuple[PolledSet, ...] | None
    run_requests: tuple[RunRequest, ...]
    waited: bool
    raw_sets: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PollAnswer:
        raw = d.get("sets")
        raw_sets = None if raw is None else tuple(dict(x) for x in raw)
        return cls(
            generation=str(d["generation"]),
            poll_interval=float(d.get("poll_interval") or 60),
            server_time=int(d.get("server_time") or 0),
            sets=None if raw_sets is None else sets_from_json(raw_sets),
            run_requests=tuple(RunRequest.from_json(x) for x in d.get("run_requests") or ()),
            waited=bool(d.get("waited", False)),
            raw_sets=raw_sets,
        )


def sets_from_json(raw: Sequence[Mapping[str, Any]]) -> tuple[PolledSet, ...]:
    """The sets of a poll answer (or of the agent's cache of one); a schedule that is not a
    :class:`Schedule` is left out and logged, an unknown zone logged (module docstring)."""
    out: list[PolledSet] = []
    for s in raw:
        schedules: list[PolledSchedule] = []
        for item in s.get("schedules") or ():
            fields = {k: v for k, v in item.items() if k != "id"}
            try:
                schedules.append(PolledSchedule(str(item["id"]), Schedule.parse(fields)))
            except (InvalidInput, KeyError) as exc:
                log.warning(
                    "backup set %s: schedule %s left out: %s", s.get("id"), item.get("id"), exc
                )
        polled = PolledSet(
            id=str(s["id"]),
            name=str(s.get("name", "")),
            time_zone=str(s.get("time_zone") or "UTC"),
            schedules=tuple(schedules),
        )
        if polled.zone is dt.UTC and polled.time_zone not in ("UTC", "Etc/UTC"):
            log.warning(
                "backup set %s: time zone %r unknown here; its schedules run in UTC",
                polled.id,
                polled.time_zone,
            )
        out.append(polled)
    return tuple(out)
