"""What the alert tests share: backup users with a set and a destination, finished jobs, a
real local webhook receiver (``http.server`` in a thread) and a real SMTP sink (aiosmtpd)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from opencbs.reports.vocabulary import JobStatus, ReportList, SystemRole
from opencbs.store import jobs, sets, users

UTC = ZoneInfo("UTC")


@dataclass(frozen=True)
class UserSet:
    login: str
    user_id: int
    set_id: int
    dest_id: int


def user_with_set(conn: Connection, login: str, *, owner: str = "", name: str = "docs") -> UserSet:
    """A backup user (owned by reseller ``owner``) with one set and one destination."""
    if owner and users.get_system_user(conn, owner) is None:
        users.add_system_user(conn, owner, f"{owner}-password", SystemRole.RESELLER)
    found = users.find_backup_user(conn, login)
    user = found or users.add_backup_user(conn, login, f"{login}-password", owner=owner)
    bset = sets.add_set(conn, user.id, name, {"sources": ["/srv/docs"]})
    dest = sets.add_destination(
        conn, user.id, bset.id, name="local", dest_type="LOCAL", settings={"path": f"/b/{name}"}
    )
    return UserSet(login, user.id, bset.id, dest.id)


def finished_job(
    conn: Connection,
    us: UserSet,
    status: JobStatus,
    *,
    start_ms: int,
    warnings: int = 0,
) -> int:
    """A job of ``us`` started at ``start_ms`` and finished a minute later with ``status``
    (``warnings`` warn entries); its pk. Nothing else is called (no alert queued)."""
    bset = sets.get_set(conn, us.user_id, us.set_id)
    job = jobs.start_job(conn, bset, us.dest_id, tz=UTC, start_ms=start_ms)
    if warnings:
        entries = [
            jobs.EntryIn(ReportList.LOG, "warn", f"warning {i}", mtime_ms=start_ms)
            for i in range(warnings)
        ]
        jobs.append_batch(conn, job.pk, 0, entries)
    jobs.finish_job(conn, job.pk, status, end_ms=start_ms + 60_000)
    return job.pk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """A request the webhook receiver got: headers, raw body, the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        expected = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["X-OpenCBS-Signature"], f"sha256={expected}")


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: answers each POST with the next status of ``statuses``
    (then 200), and keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""


@contextmanager
def webhook_receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(statuses=list(statuses or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.append(Received(dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Sink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message."""

    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    from aiosmtpd.controller import Controller

    sink = Sink(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            sink.messages.append(message_from_bytes(envelope.content))
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
