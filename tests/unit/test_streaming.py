"""``TimedStreamingResponse`` without a server: a send that never completes ends the answer
after the write timeout and closes the body's source; a reader that keeps up gets it whole."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import pytest
from starlette.types import Message

from opencbs.api.streaming import TimedStreamingResponse

_SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}, "client": ("127.0.0.1", 4242)}


class _Source:
    """Chunks of a body, remembering whether it was closed and how far it got."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.produced = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for i in range(self.chunks):
                self.produced += 1
                yield b"chunk %d;" % i
        finally:
            self.closed = True


async def _receive() -> Message:
    await anyio.sleep_forever()
    return {"type": "http.disconnect"}  # pragma: no cover


def test_a_stalled_send_ends_the_answer_and_closes_the_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _Source(1000)
    body = iter(source)
    response = TimedStreamingResponse(body, write_timeout=0.2, media_type="application/json")
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) >= 3:  # the client's buffers are full: this send never completes
            await anyio.sleep_forever()

    t0 = time.monotonic()
    anyio.run(response, _SCOPE, _receive, send)
    assert time.monotonic() - t0 < 10
    assert response.stalled
    assert source.closed and source.produced < 10
    assert not any(m.get("more_body") is False for m in sent)  # never marked complete
    assert "127.0.0.1:4242 took nothing for 0.2 s" in caplog.text


def test_a_reader_that_keeps_up_gets_the_whole_answer() -> None:
    source = _Source(50)
    response = TimedStreamingResponse(
        iter(source), write_timeout=0.2, media_type="application/json"
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        await anyio.sleep(0.001)

    anyio.run(response, _SCOPE, _receive, send)
    assert not response.stalled and source.closed
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body == b"".join(b"chunk %d;" % i for i in range(50))
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
