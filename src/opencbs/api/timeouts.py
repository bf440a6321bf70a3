"""Read timeouts of the HTTP server: how long a client may take to send its request.

uvicorn bounds only the idle time of a keep-alive connection (``timeout_keep_alive``); a client
that sends a request line and headers one byte at a time, or a body that stalls, would hold its
connection (and, for a body, the request handling it) for ever: the "slowloris" attack. The
protocol class here, given to uvicorn as ``http=``, adds the two missing bounds:

- **header timeout**: from the moment a connection is made, and from the first byte after an
  idle keep-alive pause, the client has ``header_timeout`` seconds to complete a request's line
  and headers; when the time is up and no request has begun, the connection is closed.
- **body idle timeout**: while the application reads a request's body (``receive()`` with more
  body to come), each next piece must arrive within ``body_timeout`` seconds; otherwise the
  server answers ``408 Request Timeout`` (when no answer has started) and closes the
  connection, and the application sees ``http.disconnect``. The clock runs only while the
  application waits for the body: a slow handler is not the client's fault, and an answer
  being written is not bounded here.

- **write timeout**: while the connection's send buffer is full (the transport paused writing:
  the client takes nothing of its answer), the client has ``write_timeout`` seconds to take
  some; otherwise the connection is aborted (not closed: a close would wait, socket open, for a
  client that never reads), and the application, waiting to send, sees ``http.disconnect``.
  This bounds every answer, the streamed GetBackupJobReport above all (``api.streaming``).

All are per connection, in seconds, and cost one timer each. None bounds how long the
application takes to answer: an agent's long-poll (``api.agent_poll``) waits with its request
whole and nothing to send, so none of them runs meanwhile.

- **shutdown hooks**: when the server begins a graceful stop, uvicorn tells every connection
  (``shutdown``); the first call also runs the hooks given (``on_shutdown``: the long-polls
  answer at once instead of holding the stop for ``timeout_graceful_shutdown``).

- **connections per address**: one client address may hold at most ``max_per_address`` open
  connections (the addresses of trusted reverse proxies excepted); a connection over it is
  reset at once, so one client holding idle connections cannot use up ``max_connections`` for
  everyone else.

The request line and headers are also bounded in size, ``MAX_HEADER_BYTES`` in all (the parser
keeps them in memory while they come): a request over it is answered ``431 Request Header
Fields Too Large`` and its connection closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from uvicorn._types import ASGIReceiveEvent
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

log = logging.getLogger(__name__)

#: Bytes of a request's target and headers (names and values) together, at most (nginx and
#: Apache allow 8 KiB a line; the CBS calls' query strings stay far below).
MAX_HEADER_BYTES = 64 * 1024


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request over ``MAX_HEADER_BYTES``."""


def _answer(status: bytes, text: bytes) -> bytes:
    """A whole plain-text answer that closes the connection (``status``: ``b"408 Request
    Timeout"``)."""
    head = (
        b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, len(text))
    )
    return head + text


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a body idle timeout (module
    docstring). Built by ``timed_protocol(header_timeout=..., body_timeout=...)``, which fixes
    the two values (seconds) on a subclass, since uvicorn builds one instance per connection
    with its own arguments."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    max_per_address: int = 100
    #: networks whose connections are not limited per address (trusted reverse proxies)
    unlimited: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: open connections per client address, of every connection of this protocol class
    open_per_address: Counter[str]
    #: addresses told about (logged) since they reached the limit
    warned: set[str]
    #: run once when the server begins a graceful stop (a tuple: no method binding)
    shutdown_hooks: tuple[Callable[[], None], ...] = ()
    #: whether the hooks ran (a list shared by the connections of one protocol class)
    hooks_ran: list[bool]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._counted: str | None = None  # the address counted in open_per_address
        self._headers_seen = 0  # requests whose headers are complete on this connection
        self._header_bytes = 0  # of the request being parsed: its target and headers
        self._refused = False  # answered 431: the rest of the connection is ignored

    # -- header timeout -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if address is not None and not self._unlimited(address):
            if self.open_per_address[address] >= self.max_per_address:
                if address not in self.warned:  # once, until its connections fall below
                    self.warned.add(address)
                    log.warning(
                        "client %s holds %d connections: further ones are refused",
                        address,
                        self.max_per_address,
                    )
                _reset(transport)
                return
            self.open_per_address[address] += 1
            self._counted = address
        self._arm_header_timer()

    def _unlimited(self, address: str) -> bool:
        if not self.unlimited:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.unlimited)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_write_timer()
        if self._counted is not None:
            self.open_per_address[self._counted] -= 1
            if self.open_per_address[self._counted] <= 0:
                del self.open_per_address[self._counted]
            self.warned.discard(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.shutdown_hooks and not self.hooks_ran:
            self.hooks_ran.append(True)
            for hook in self.shutdown_hooks:
                try:
                    hook()
                except Exception:  # noqa: BLE001 - the stop goes on; the error is logged
                    log.exception("a shutdown hook failed")
        super().shutdown()

    # -- write timeout ------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._write_timer_expired)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timer_expired(self) -> None:
        self._write_timer = None
        log.warning(
            "dropped a connection from %s: it took nothing of its answer for %.0f s",
            _peer(self.client),
            self.write_timeout,
        )
        _reset(self.transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.timeout_keep_alive_task is not None:
            # the first byte after an idle keep-alive pause: a new request begins
            self._arm_header_timer()
        super().data_received(data)

    # -- header size --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes <= MAX_HEADER_BYTES:
            return
        log.info(
            "refused a request from %s: its headers exceed %d bytes",
            _peer(self.client),
            MAX_HEADER_BYTES,
        )
        self._refused = True
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self.transport.write(
                _answer(b"431 Request Header Fields Too Large", b"request headers too large\n")
            )
            self.transport.close()
        raise _HeadersTooLarge  # stops the parser; uvicorn's 400 is suppressed below

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._headers_seen += 1
        self._cancel_header_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            _bound_body_reads(cycle, self.body_timeout, self.transport)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        seen = self._headers_seen
        self._header_timer = self.loop.call_later(
            self.header_timeout, self._header_timer_expired, seen
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timer_expired(self, seen: int) -> None:
        self._header_timer = None
        if self._headers_seen != seen or self.transport.is_closing():
            return  # a request's headers came in time
        log.info(
            "closed a connection from %s: no complete request headers within %.0f s",
            _peer(self.client),
            self.header_timeout,
        )
        self.transport.close()


def _reset(transport: asyncio.Transport) -> None:
    """Abort ``transport`` with a TCP reset: linger 0, so the kernel drops what is still queued
    for a client that reads nothing (a plain abort leaves it in FIN-WAIT-1 holding the data)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def _bound_body_reads(
    cycle: RequestResponseCycle, timeout: float, transport: asyncio.Transport
) -> None:
    """Replace ``cycle.receive`` (read by uvicorn when the request's task first runs, after
    this) by one that waits at most ``timeout`` seconds for each piece of the body."""
    inner = cycle.receive

    async def receive() -> ASGIReceiveEvent:
        if not cycle.more_body or cycle.disconnected:
            return await inner()  # body complete: waiting for a disconnect is not bounded
        try:
            return await asyncio.wait_for(inner(), timeout)
        except TimeoutError:
            log.info(
                "dropped a request from %s: its body stalled for %.0f s",
                _peer(cycle.scope.get("client")),
                timeout,
            )
            if not cycle.response_started and not transport.is_closing():
                transport.write(_answer(b"408 Request Timeout", b"request body sent too slowly\n"))
            cycle.disconnected = True  # the application's answer, if any, goes nowhere
            transport.close()
            return {"type": "http.disconnect"}

    cycle.receive = receive  # type: ignore[method-assign]


def timed_protocol(
    *,
    header_timeout: float,
    body_timeout: float,
    write_timeout: float,
    max_per_address: int = 100,
    unlimited: tuple[str, ...] = (),
    on_shutdown: tuple[Callable[[], None], ...] = (),
) -> type[TimedHttpProtocol]:
    """A ``TimedHttpProtocol`` class for uvicorn's ``Config(http=...)`` with these bounds
    (seconds, each > 0; ``max_per_address`` connections per client address, except from the
    addresses or networks ``unlimited``; ``on_shutdown`` run once when a graceful stop
    begins). Raises ``ValueError`` for an entry of ``unlimited`` that is not an address or
    network."""
    return type(
        "TimedHttpProtocol",
        (TimedHttpProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "write_timeout": write_timeout,
            "max_per_address": max_per_address,
            "unlimited": tuple(ipaddress.ip_network(x, strict=False) for x in unlimited),
            "open_per_address": Counter(),
            "warned": set(),
            "shutdown_hooks": on_shutdown,
            "hooks_ran": [],
        },
    )
