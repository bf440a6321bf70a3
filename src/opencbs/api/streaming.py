"""Streaming an answer to a client that may stop reading: every send has a write timeout.

A streamed answer whose client stops reading waits in ``send`` once the connection's buffers are
full. ``TimedStreamingResponse`` gives each send ``write_timeout`` seconds: a send that does not
complete in time ends the answer unfinished (the connection is dropped without the body's end, so
the client can never take a truncated answer for a whole one) and closes the body's source,
releasing whatever it holds. A client must therefore take each chunk (64 KiB) within that time:
about 2 KiB/s at the default 30 s.

Dropping the connection means aborting its transport: a plain close would wait, with the socket
open, until the client reads what is already buffered, which a stalled client never does. The
server's protocol does that (``opencbs.api.timeouts``: its write timeout aborts a connection whose
send buffer stays full), so here the answer only ends; served otherwise (Starlette's TestClient,
another server), the server's own close applies.

The body's source should hold nothing while it waits to be sent: the report reads the database in
pages, each in its own short transaction (``opencbs.store.job_queries.iter_entries_paged``), so
a stalled reader holds no database connection even before its write timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)


#: Worker threads that produce streamed answers, all answers together: apart from the
#: threadpool the other requests use, so that many reports starting at once (50 clients that
#: ask for a large report and never read it, ``bench/hostile.py`` case 4) cannot take every
#: worker thread from the calls a monitoring tool makes meanwhile.
STREAM_THREADS = max(2, min(8, os.cpu_count() or 2))

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _stream_limiter() -> anyio.CapacityLimiter:
    """The limiter of ``STREAM_THREADS`` of the running event loop (one per loop: a limiter
    belongs to the loop it waits in; tests run several)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(STREAM_THREADS)
    return limiter


class _Done(Exception):
    """``StopIteration`` carried out of a worker thread (which cannot raise it into a
    coroutine)."""


def _next_chunk(source: Iterator[bytes]) -> bytes:
    try:
        return next(source)
    except StopIteration:
        raise _Done from None


async def _produced(source: Iterator[bytes]) -> AsyncIterator[bytes]:
    """``source``'s chunks, each made on one of the ``STREAM_THREADS``."""
    while True:
        try:
            yield await anyio.to_thread.run_sync(_next_chunk, source, limiter=_stream_limiter())
        except _Done:
            return


class TimedStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` of ``content`` (chunks of bytes, produced on ``STREAM_THREADS``)
    whose every send must complete within ``write_timeout`` seconds.

    ``stalled`` is true once a send timed out: the answer was abandoned, the connection
    dropped (module docstring), ``content`` closed (``GeneratorExit`` at its current ``yield``)
    and a warning logged with the client's address."""

    def __init__(self, content: Iterator[bytes], *, write_timeout: float, media_type: str) -> None:
        super().__init__(_produced(content), media_type=media_type)
        self.write_timeout = write_timeout
        self.stalled = False
        self._source = content
        self._client = "?"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if client:
            self._client = f"{client[0]}:{client[1]}"
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close_source()

    async def stream_response(self, send: Send) -> None:
        try:
            await self._send(
                send,
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                },
            )
            async for chunk in self.body_iterator:
                body = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode()
                await self._send(
                    send, {"type": "http.response.body", "body": body, "more_body": True}
                )
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            self.stalled = True
            log.warning(
                "client %s took nothing for %g s: its streamed answer is dropped",
                self._client,
                self.write_timeout,
            )

    async def _send(self, send: Send, message: Message) -> None:
        with anyio.fail_after(self.write_timeout):
            await send(message)

    def _close_source(self) -> None:
        close: Any = getattr(self._source, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # still running on a worker thread: it ends with that thread
                log.debug("streamed answer's source busy at close")
