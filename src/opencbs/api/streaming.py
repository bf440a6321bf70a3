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

import logging
from collections.abc import Iterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class TimedStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` of ``content`` (chunks of bytes, produced on worker threads)
    whose every send must complete within ``write_timeout`` seconds.

    ``stalled`` is true once a send timed out: the answer was abandoned, the connection
    dropped (module docstring), ``content`` closed (``GeneratorExit`` at its current ``yield``)
    and a warning logged with the client's address."""

    def __init__(self, content: Iterator[bytes], *, write_timeout: float, media_type: str) -> None:
        super().__init__(content, media_type=media_type)
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
