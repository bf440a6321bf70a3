"""Alert rules' values and the one rule of which job status raises which alert (cbs-api.md
§15; issue 16).

A rule belongs to a backup user (its sets) or to a system user (every backup user it sees: an
administrator all, a reseller its own) and names one ``AlertEvent``; the store keeps it, the
server's ``opencbs.notify`` evaluates it. ``events_of_status`` is the mapping a job's final
status goes through; it is pure and defined only here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from opencbs.errors import InvalidInput
from opencbs.reports.vocabulary import JobStatus

__all__ = [
    "AlertEvent",
    "Channel",
    "DeliveryState",
    "MAX_NO_SUCCESS_HOURS",
    "RULE_EVENTS",
    "SUCCESS_STATUSES",
    "RuleSpec",
    "ScopeKind",
    "check_target",
    "events_of_status",
    "is_success",
]

#: Longest silence a NO_SUCCESS rule may wait for (hours): a year.
MAX_NO_SUCCESS_HOURS = 366 * 24


class ScopeKind(StrEnum):
    """Whose rule it is: a backup user's (its own sets) or a system user's (every backup user
    it sees, cbs-api.md §2)."""

    BACKUP_USER = "backup_user"
    SYSTEM_USER = "system_user"


class AlertEvent(StrEnum):
    """What a rule notifies about.

    - ``ERROR``: a job ended with errors, by a system error, not finished (its agent went
      silent), stopped by the quota, incomplete, or with items missed;
    - ``WARNING``: a job ended with warnings, or stopped by its user or its schedule;
    - ``MISSED``: a scheduled backup did not run (``BS_STOP_MISSED_BACKUP``);
    - ``EVERY_JOB``: every job that ends, whatever its status;
    - ``NO_SUCCESS``: no successful job (``BS_STOP_SUCCESS`` or with warnings) of one set for
      ``hours`` hours (a dead man's switch);
    - ``DIGEST``: once a day, the jobs of the day before in the rule's scope.

    ``TEST`` is the kind of a test alert (``SendTestAlert``), never a rule's event.
    """

    ERROR = "ERROR"
    WARNING = "WARNING"
    MISSED = "MISSED"
    EVERY_JOB = "EVERY_JOB"
    NO_SUCCESS = "NO_SUCCESS"
    DIGEST = "DIGEST"
    TEST = "TEST"


#: The events a rule may name (``TEST`` is not one).
RULE_EVENTS: tuple[AlertEvent, ...] = tuple(e for e in AlertEvent if e is not AlertEvent.TEST)


class Channel(StrEnum):
    """How an alert is delivered: an email (SMTP settings) or a signed JSON POST."""

    EMAIL = "EMAIL"
    WEBHOOK = "WEBHOOK"


class DeliveryState(StrEnum):
    """An outbox row's state: waiting (``PENDING``, maybe after failed attempts), being sent by
    one process (``SENDING``, under its claim), delivered (``SENT``), given up (``FAILED``)."""

    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"


_ERRORS = frozenset(
    {
        JobStatus.STOP_SUCCESS_WITH_ERROR,
        JobStatus.STOP_BY_SYSTEM_ERROR,
        JobStatus.STOP_BY_QUOTA_EXCEEDED,
        JobStatus.BACKUP_NOT_FINISHED,
        JobStatus.STOP_INCOMPLETE,
        JobStatus.MISSED_DATABASAE,
        JobStatus.MISSED_PUBLIC_FOLDER,
        JobStatus.MISSED_VIRTUAL_MACHINE,
    }
)
_WARNINGS = frozenset(
    {JobStatus.STOP_SUCCESS_WITH_WARNING, JobStatus.STOP_BY_USER, JobStatus.STOP_BY_SCHEDULER}
)


def events_of_status(status: str, *, warn_entries: int = 0) -> frozenset[AlertEvent]:
    """The rule events a job that ended with ``status`` raises: always ``EVERY_JOB``; then
    ``ERROR``, ``WARNING`` or ``MISSED`` by the table of ``AlertEvent`` (a
    ``BS_STOP_SUCCESS`` with ``warn_entries`` > 0 counts as a warning). A running job
    (``BS_STILL_RUNNING``) raises nothing; an unknown status is an ``ERROR``."""
    if status == JobStatus.STILL_RUNNING.value:
        return frozenset()
    found = {AlertEvent.EVERY_JOB}
    if status == JobStatus.STOP_MISSED_BACKUP.value:
        found.add(AlertEvent.MISSED)
    elif status in _WARNINGS or (status == JobStatus.STOP_SUCCESS.value and warn_entries > 0):
        found.add(AlertEvent.WARNING)
    elif status != JobStatus.STOP_SUCCESS.value:
        found.add(AlertEvent.ERROR)  # the _ERRORS, and any status not known here
    return frozenset(found)


def is_success(status: str) -> bool:
    """Whether a job's status counts as a successful backup for NO_SUCCESS rules:
    ``BS_STOP_SUCCESS`` or ``BS_STOP_SUCCESS_WITH_WARNING``."""
    return status in (JobStatus.STOP_SUCCESS.value, JobStatus.STOP_SUCCESS_WITH_WARNING.value)


#: Statuses that count as a success (``is_success``), for queries.
SUCCESS_STATUSES: tuple[str, ...] = (
    JobStatus.STOP_SUCCESS.value,
    JobStatus.STOP_SUCCESS_WITH_WARNING.value,
)

_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


@dataclass(frozen=True)
class RuleSpec:
    """A new rule as given (API or CLI), checked by ``check``: ``scope`` and ``scope_name``
    (a login name or a system user's name), ``event``, ``set_id`` (``None``: every set in
    scope; required by ``NO_SUCCESS``), ``hours`` (``NO_SUCCESS`` only, 1..8784),
    ``channel`` and ``target`` (an email address, or an ``http(s)://`` URL)."""

    scope: ScopeKind
    scope_name: str
    event: AlertEvent
    channel: Channel
    target: str
    set_id: int | None = None
    hours: int | None = None

    def check(self) -> None:
        """Raise ``InvalidInput`` for a rule that cannot be kept (what is wrong, and how)."""
        if not self.scope_name:
            raise InvalidInput("an alert rule needs a backup user or a system user")
        if self.event is AlertEvent.TEST:
            raise InvalidInput("TEST is not a rule's event", _events_hint())
        if self.event is AlertEvent.NO_SUCCESS:
            if self.set_id is None:
                raise InvalidInput("a NO_SUCCESS rule needs a backup set", "give its set ID")
            if self.hours is None or not 1 <= self.hours <= MAX_NO_SUCCESS_HOURS:
                raise InvalidInput(
                    "a NO_SUCCESS rule needs its hours (1 to 8784)",
                    "e.g. 26: no successful backup for 26 hours",
                )
        elif self.hours is not None:
            raise InvalidInput("only NO_SUCCESS rules take hours")
        if self.event is AlertEvent.DIGEST and self.set_id is not None:
            raise InvalidInput("a DIGEST rule covers every set in its scope: give no set")
        check_target(self.channel, self.target)


def _events_hint() -> str:
    return "events: " + ", ".join(e.value for e in RULE_EVENTS)


def check_target(channel: Channel, target: str) -> None:
    """Raise ``InvalidInput`` unless ``target`` suits ``channel``: one email address for
    ``EMAIL``; an ``http://`` or ``https://`` URL with a host for ``WEBHOOK`` (at most 2000
    characters, no spaces or control characters)."""
    if len(target) > 2000 or any(c.isspace() or not c.isprintable() for c in target):
        raise InvalidInput("an alert target must be one address, without spaces")
    if channel is Channel.EMAIL:
        if not _EMAIL.match(target):
            raise InvalidInput(f"{target!r} is not an email address", "e.g. ops@example.com")
        return
    scheme, _, rest = target.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if scheme.lower() not in ("http", "https") or not host:
        raise InvalidInput(
            f"{target!r} is not an http(s) URL", "e.g. https://hooks.example.com/opencbs"
        )
