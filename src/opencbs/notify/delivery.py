"""Sending the outbox: claim a due alert, send it, record the attempt; retry with exponential
backoff, give up after a bounded number of attempts (cbs-api.md §15).

A process claims one alert at a time (``store.alerts.claim_due``) for ``lease_s`` seconds,
longer than one send may take (``channels.SEND_TIMEOUT`` per step), sends it outside any
transaction, then records the attempt under its claim (``store.alerts.record_attempt``):
``SENT``; or ``PENDING`` again after ``first_delay_s`` · 2^(n−1) seconds (at most
``max_delay_s``); or ``FAILED`` after ``max_attempts``. Two processes never send the same
alert at once; a process that dies between sending and recording leaves a claim that runs out,
and the alert is sent again (at least once, never lost). Every attempt is a row of
``alert_deliveries``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opencbs.model.alerts import Channel, DeliveryState
from opencbs.notify.alerts import queue_test
from opencbs.notify.channels import Attempt, SmtpConfig, send_email, send_webhook
from opencbs.notify.rules import visible_rule
from opencbs.store import alerts
from opencbs.store.alerts import Outgoing
from opencbs.store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How alerts are retried: at most ``max_attempts`` attempts, the n-th failure waits
    ``first_delay_s`` · 2^(n−1) seconds (at most ``max_delay_s``); a claim lasts ``lease_s``
    seconds; one run sends at most ``batch`` alerts."""

    max_attempts: int = 6
    first_delay_s: float = 30.0
    max_delay_s: float = 3600.0
    lease_s: float = 120.0
    batch: int = 50

    def retry_at(self, attempts_made: int, at_ms: int) -> int | None:
        """When to try again after ``attempts_made`` failed attempts, the last at ``at_ms``
        (epoch ms); ``None``: give up (``FAILED``)."""
        if attempts_made >= self.max_attempts:
            return None
        delay = min(self.first_delay_s * 2 ** (attempts_made - 1), self.max_delay_s)
        return at_ms + int(delay * 1000)


DEFAULT_POLICY = DeliveryPolicy()


class Sender(Protocol):
    """Sends one claimed alert and says how it went (``ChannelSender``; tests give their own
    to count or to fail)."""

    def __call__(self, item: Outgoing) -> Attempt: ...


def webhook_body(item: Outgoing) -> bytes:
    """The webhook's JSON body: the payload and ``alert_id`` (the same on every attempt)."""
    document = {**item.payload, "alert_id": str(item.event_id)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ChannelSender:
    """The real sender: email through ``smtp``, webhooks signed with the rule's secret."""

    def __init__(self, smtp: SmtpConfig) -> None:
        self.smtp = smtp

    def __call__(self, item: Outgoing) -> Attempt:
        if item.channel is Channel.EMAIL:
            return send_email(self.smtp, item.target, item.payload)
        return send_webhook(
            item.target,
            item.secret,
            webhook_body(item),
            kind=item.kind,
            delivery_id=str(item.event_id),
        )


_worker: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's name in claims: ``<host>:<pid>:<random>``."""
    global _worker
    if _worker is None or _worker[0] != os.getpid():
        name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        _worker = (os.getpid(), name[:128])
    return _worker[1]


@dataclass(frozen=True)
class Delivered:
    """One attempt made by this process: the alert, its rule, the state it is left in, and
    ``detail`` (the reply or the error)."""

    event_id: int
    rule_id: int
    state: DeliveryState | None
    detail: str

    @property
    def ok(self) -> bool:
        """Whether the target accepted the alert."""
        return self.state is DeliveryState.SENT


def _send(send: Sender, item: Outgoing) -> Attempt:
    try:
        return send(item)
    except Exception as exc:  # noqa: BLE001 - a bug in a sender is one failed attempt
        log.exception("alert %s: sending failed", item.event_id)
        return Attempt(False, f"internal error: {type(exc).__name__}")


def _settle(
    db: Database,
    item: Outgoing,
    attempt: Attempt,
    *,
    at_ms: int,
    retry_at_ms: int | None,
    quiet: bool = False,
) -> Delivered:
    with db.write() as conn:
        state = alerts.record_attempt(
            conn,
            item,
            worker=worker_id(),
            ok=attempt.ok,
            detail=attempt.detail,
            at_ms=at_ms,
            retry_at_ms=None if attempt.ok else retry_at_ms,
        )
    if quiet:  # a test alert: its sender says how it went
        log.debug("test alert %s (rule %s): %s", item.event_id, item.rule_id, attempt.detail)
    elif attempt.ok:
        log.info("alert %s (rule %s, %s) delivered: %s", item.event_id, item.rule_id,
                 item.kind, attempt.detail)  # fmt: skip
    else:
        log.warning("alert %s (rule %s, %s) attempt %d failed: %s; %s", item.event_id,
                    item.rule_id, item.kind, item.attempts + 1, attempt.detail,
                    "given up" if state is DeliveryState.FAILED else "will retry")  # fmt: skip
    return Delivered(item.event_id, item.rule_id, state, attempt.detail)


def deliver_due(
    db: Database,
    send: Sender,
    *,
    now_ms: int,
    policy: DeliveryPolicy = DEFAULT_POLICY,
    clock: Callable[[], int] | None = None,
) -> list[Delivered]:
    """Send the alerts due at ``now_ms`` (epoch ms), one claim at a time, at most
    ``policy.batch``; each attempt recorded at ``clock()`` (default: ``now_ms``). The
    attempts made, in order."""
    done: list[Delivered] = []
    lease_ms = int(policy.lease_s * 1000)
    for _ in range(policy.batch):
        at = clock() if clock is not None else now_ms
        with db.write() as conn:
            claimed = alerts.claim_due(
                conn, worker=worker_id(), now_ms=at, lease_ms=lease_ms, limit=1
            )
        if not claimed:
            break
        item = claimed[0]
        attempt = _send(send, item)
        at = clock() if clock is not None else now_ms
        retry = policy.retry_at(item.attempts + 1, at)
        done.append(_settle(db, item, attempt, at_ms=at, retry_at_ms=retry))
    return done


def send_test(
    db: Database, send: Sender, rule_id: int, *, reseller: str | None, now_ms: int
) -> Delivered:
    """Send a test alert of rule ``rule_id`` (in ``reseller``'s scope, else
    ``AlertRuleNotFound``) to its target now, once (no retry): queued, claimed by this
    process in the same transaction, sent, and logged like any alert."""
    with db.write() as conn:
        rule = visible_rule(conn, rule_id, reseller=reseller)
        event_id = queue_test(conn, rule, at_ms=now_ms)
        alerts.claim(
            conn,
            event_id,
            worker=worker_id(),
            now_ms=now_ms,
            lease_ms=int(DEFAULT_POLICY.lease_s * 1000),
        )
        item = alerts.outgoing(conn, event_id)
    attempt = _send(send, item)
    return _settle(db, item, attempt, at_ms=now_ms, retry_at_ms=None, quiet=True)
