"""Sending one alert: an email over SMTP (the standard library's ``smtplib`` and
``email.message``) or a signed JSON POST (httpx). Each send is one attempt and answers an
``Attempt`` (delivered or not, and the reply or the error in one line, without secrets);
nothing here retries or touches the database (``opencbs.notify.delivery`` does).

The webhook's signature (cbs-api.md §15): ``X-OpenCBS-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw request body with the rule's secret; ``X-OpenCBS-Event`` the alert's
kind, ``X-OpenCBS-Delivery`` its ID (the same on every attempt, for deduplication).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx

import opencbs
from opencbs.settings import Settings

# httpx logs each request's URL at INFO; a webhook's URL may carry its secret (Slack's, Teams'
# hooks): only httpx's warnings reach the log
logging.getLogger("httpx").setLevel(logging.WARNING)

#: Seconds one attempt may take: the connection, the request, the answer.
SEND_TIMEOUT = 10.0
SIGNATURE_HEADER = "X-OpenCBS-Signature"
EVENT_HEADER = "X-OpenCBS-Event"
DELIVERY_HEADER = "X-OpenCBS-Delivery"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt: ``ok`` (the target accepted it: an HTTP 2xx, an SMTP
    250) and ``detail`` (``HTTP 200``, ``SMTP 250 …``, or the error), no secret in it."""

    ok: bool
    detail: str


def signature(secret: str, body: bytes) -> str:
    """The value of ``X-OpenCBS-Signature`` for ``body``: ``sha256=`` and the hex HMAC-SHA256
    of the raw body keyed with the rule's ``secret`` (UTF-8)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send_webhook(
    url: str,
    secret: str,
    body: bytes,
    *,
    kind: str,
    delivery_id: str,
    timeout: float = SEND_TIMEOUT,
) -> Attempt:
    """POST ``body`` (JSON) to ``url``, signed with ``secret``; redirects are not followed.
    Delivered when the answer is a 2xx; any other answer, a timeout or a connection error is
    a failed attempt (its ``detail``)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"opencbs/{opencbs.__version__}",
        SIGNATURE_HEADER: signature(secret, body),
        EVENT_HEADER: kind,
        DELIVERY_HEADER: delivery_id,
    }
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            answer = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return Attempt(False, _one_line(f"{type(exc).__name__}: {exc}"))
    detail = f"HTTP {answer.status_code}"
    return Attempt(200 <= answer.status_code < 300, detail)


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP settings (``smtp_host`` … ``alert_from``; README "Alerts"). ``password`` is
    never shown (``repr`` leaves it out). ``host`` empty: email is not configured."""

    host: str
    port: int = 587
    security: str = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        """The SMTP settings of ``settings``."""
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            user=settings.smtp_user,
            password=settings.smtp_password,
            sender=settings.alert_from,
        )

    @property
    def from_address(self) -> str:
        """``alert_from``, or ``opencbs@<this host's name>``."""
        return self.sender or f"opencbs@{socket.gethostname()}"


def email_message(config: SmtpConfig, to: str, payload: Mapping[str, Any]) -> EmailMessage:
    """The email of an alert: subject ``[opencbs] <summary>``, a plain-text body with the
    summary line, then each field of the payload on a line of its own."""
    msg = EmailMessage()
    msg["From"] = config.from_address
    msg["To"] = to
    summary = _one_line(str(payload.get("summary", "opencbs alert")))
    msg["Subject"] = f"[opencbs] {summary}"[:250]
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=config.from_address.rsplit("@", 1)[-1])
    msg.set_content(_body_text(payload))
    return msg


def _body_text(payload: Mapping[str, Any]) -> str:
    lines = [str(payload.get("summary", "")), ""]
    for key, value in payload.items():
        if key == "summary":
            continue
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {_item(v)}" for v in value)
        elif isinstance(value, dict):
            lines.append(f"{key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def _item(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def send_email(config: SmtpConfig, to: str, payload: Mapping[str, Any]) -> Attempt:
    """Send the email of ``payload`` to ``to`` through ``config``'s server: ``tls`` (SMTPS),
    ``starttls`` (upgraded, certificates checked) or ``none``; a login when ``user`` is set.
    Delivered when the server accepts it for every recipient."""
    if not config.host:
        return Attempt(False, "email is not configured: the setting smtp_host is empty")
    message = email_message(config, to, payload)
    where = f"{config.host}:{config.port}"
    try:
        with _connect(config) as client:
            if config.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if config.user:
                client.login(config.user, config.password)
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(f"{k}: {v[0]} {_text(v[1])}" for k, v in exc.recipients.items())
        return Attempt(False, _one_line(f"SMTP refused the recipient ({refused})"))
    except smtplib.SMTPResponseException as exc:
        return Attempt(False, _one_line(f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"))
    except (smtplib.SMTPException, OSError) as exc:
        return Attempt(False, _one_line(f"SMTP {where}: {type(exc).__name__}: {exc}"))
    return Attempt(True, f"SMTP 250: accepted by {where}")


def _connect(config: SmtpConfig) -> smtplib.SMTP:
    if config.security == "tls":
        return smtplib.SMTP_SSL(
            config.host,
            config.port,
            timeout=SEND_TIMEOUT,
            context=ssl.create_default_context(),
        )
    return smtplib.SMTP(config.host, config.port, timeout=SEND_TIMEOUT)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
