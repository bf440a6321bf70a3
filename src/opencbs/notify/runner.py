"""One round of the server's alerts, as its background loop runs it every few seconds
(``api.app``): the dead man's switch, the daily digests, then the due alerts sent
(cbs-api.md §15). Tests call it with an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opencbs.notify.alerts import check_no_success, queue_digests
from opencbs.notify.channels import SmtpConfig
from opencbs.notify.delivery import (
    DEFAULT_POLICY,
    ChannelSender,
    Delivered,
    DeliveryPolicy,
    Sender,
    deliver_due,
)
from opencbs.settings import Settings
from opencbs.store.db import Database


@dataclass(frozen=True)
class RoundResult:
    """What one round did: the alerts it queued (IDs) and the attempts it made."""

    no_success: list[int] = field(default_factory=list)
    digests: list[int] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)


def run_once(
    db: Database,
    settings: Settings,
    *,
    now_ms: int,
    send: Sender | None = None,
    policy: DeliveryPolicy = DEFAULT_POLICY,
    clock: Callable[[], int] | None = None,
) -> RoundResult:
    """Queue the NO_SUCCESS alerts and the digests due at ``now_ms`` (epoch ms; the server's
    zone from ``settings``) in one write transaction, then send the due alerts (``send``:
    default the real channels with ``settings``' SMTP settings; ``clock``: when each attempt
    is recorded, default ``now_ms``)."""
    tz = settings.tz()
    with db.write() as conn:
        no_success = check_no_success(conn, now_ms=now_ms, tz=tz)
        digests = queue_digests(conn, now_ms=now_ms, tz=tz)
    sender = send if send is not None else ChannelSender(SmtpConfig.from_settings(settings))
    delivered = deliver_due(db, sender, now_ms=now_ms, policy=policy, clock=clock)
    return RoundResult(no_success, digests, delivered)
