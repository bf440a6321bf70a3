"""Alerts' pure parts (cbs-api.md §15): which status raises which alert, a rule's checks, the
webhook's signature (known answers of RFC 4231) and the retry schedule."""

from __future__ import annotations

import pytest

from opencbs.errors import InvalidInput
from opencbs.model.alerts import AlertEvent, Channel, RuleSpec, ScopeKind, events_of_status
from opencbs.notify.channels import SmtpConfig, email_message, signature
from opencbs.notify.delivery import DeliveryPolicy
from opencbs.reports.vocabulary import JobStatus

E = AlertEvent


@pytest.mark.parametrize(
    ("status", "warn", "expected"),
    [
        (JobStatus.STOP_SUCCESS, 0, {E.EVERY_JOB}),
        (JobStatus.STOP_SUCCESS, 2, {E.EVERY_JOB, E.WARNING}),
        (JobStatus.STOP_SUCCESS_WITH_WARNING, 0, {E.EVERY_JOB, E.WARNING}),
        (JobStatus.STOP_BY_USER, 0, {E.EVERY_JOB, E.WARNING}),
        (JobStatus.STOP_BY_SCHEDULER, 0, {E.EVERY_JOB, E.WARNING}),
        (JobStatus.STOP_SUCCESS_WITH_ERROR, 0, {E.EVERY_JOB, E.ERROR}),
        (JobStatus.STOP_BY_SYSTEM_ERROR, 0, {E.EVERY_JOB, E.ERROR}),
        (JobStatus.BACKUP_NOT_FINISHED, 0, {E.EVERY_JOB, E.ERROR}),
        (JobStatus.STOP_BY_QUOTA_EXCEEDED, 0, {E.EVERY_JOB, E.ERROR}),
        (JobStatus.STOP_INCOMPLETE, 0, {E.EVERY_JOB, E.ERROR}),
        (JobStatus.STOP_MISSED_BACKUP, 0, {E.EVERY_JOB, E.MISSED}),
        (JobStatus.STILL_RUNNING, 0, set()),
    ],
)
def test_events_of_status(status: JobStatus, warn: int, expected: set[AlertEvent]) -> None:
    assert events_of_status(status.value, warn_entries=warn) == expected


def test_every_final_status_raises_every_job() -> None:
    for status in JobStatus:
        if status is not JobStatus.STILL_RUNNING:
            assert E.EVERY_JOB in events_of_status(status.value)


def _spec(**kw: object) -> RuleSpec:
    values: dict[str, object] = dict(
        scope=ScopeKind.BACKUP_USER,
        scope_name="alice",
        event=E.ERROR,
        channel=Channel.EMAIL,
        target="ops@example.com",
    )
    values.update(kw)
    return RuleSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"event": E.NO_SUCCESS}, "needs a backup set"),
        ({"event": E.NO_SUCCESS, "set_id": 1}, "needs its hours"),
        ({"event": E.NO_SUCCESS, "set_id": 1, "hours": 0}, "needs its hours"),
        ({"hours": 3}, "only NO_SUCCESS"),
        ({"event": E.DIGEST, "set_id": 1}, "every set"),
        ({"event": E.TEST}, "not a rule's event"),
        ({"target": "not-an-address"}, "not an email address"),
        ({"channel": Channel.WEBHOOK, "target": "ftp://x/y"}, "not an http\\(s\\) URL"),
        ({"channel": Channel.WEBHOOK, "target": "http:///path"}, "not an http\\(s\\) URL"),
        ({"channel": Channel.WEBHOOK, "target": "http://a b/"}, "without spaces"),
        ({"scope_name": ""}, "needs a backup user"),
    ],
)
def test_rule_checks(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _spec(**kw).check()


def test_good_rules_pass() -> None:
    _spec().check()
    _spec(event=E.NO_SUCCESS, set_id=5, hours=26).check()
    _spec(channel=Channel.WEBHOOK, target="https://hooks.example.com/x?y=1").check()
    _spec(scope=ScopeKind.SYSTEM_USER, scope_name="system", event=E.DIGEST).check()


def test_signature_known_answers() -> None:
    # RFC 4231, test cases 1 and 2 (HMAC-SHA-256)
    assert signature("\x0b" * 20, b"Hi There") == (
        "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )
    assert signature("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_backoff_doubles_and_gives_up() -> None:
    policy = DeliveryPolicy(max_attempts=6, first_delay_s=30, max_delay_s=300)
    delays = [policy.retry_at(n, 1_000_000) for n in range(1, 7)]
    assert delays[:5] == [1_030_000, 1_060_000, 1_120_000, 1_240_000, 1_300_000]
    assert delays[5] is None  # the sixth failure is the last


def test_smtp_password_never_shown() -> None:
    config = SmtpConfig("smtp.example.com", 587, "starttls", "mailer", "hunter2-secret", "")
    assert "hunter2" not in repr(config)
    message = email_message(config, "ops@example.com", {"summary": "ERROR: x", "job_id": "j"})
    assert "hunter2" not in message.as_string()
    assert message["Subject"] == "[opencbs] ERROR: x"
    assert "job_id: j" in message.get_content()
