"""The agent's retry policy for idempotent agent API calls (batches, the finish, a job's status).

The agent API's batches and finish are idempotent (``opencbs.api.agent``), so a
``ServerUnreachable`` or a retryable ``AgentApiError`` (5xx, 408, 429) is retried after each
delay of ``delays`` (seconds; default :data:`DEFAULT_RETRY_DELAYS`, 0.5, 2 and 5: four attempts
in about 8 s). A job's report stream (``agent.report``), its finish (``agent.channel``) and the
delivery of spooled reports (``agent.delivery``) all retry through :func:`call_with_retries`.

A server that cannot be reached at all (:func:`cannot_connect`: connection refused, its name
not resolved, the connection timed out) is not retried when the caller says so
(``connect_once``): the delivery of spooled reports before a backup does, so that a backup with
the server away starts at once instead of after 8 s of retries (issue 12).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx

from opencbs.agent.client import AgentApiError, ServerUnreachable

__all__ = ["DEFAULT_RETRY_DELAYS", "call_with_retries", "cannot_connect", "is_transient"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds to wait before each retry of an idempotent call (so 1 + len attempts in all).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 5.0)


def is_transient(exc: Exception) -> bool:
    """Whether the same agent API call may succeed later: ``ServerUnreachable`` or a retryable
    ``AgentApiError``."""
    return isinstance(exc, ServerUnreachable) or (isinstance(exc, AgentApiError) and exc.retryable)


def cannot_connect(exc: Exception) -> bool:
    """Whether ``exc`` says no connection to the server could be made at all: a
    ``ServerUnreachable`` caused by ``httpx.ConnectError`` (refused, name not resolved, no
    route) or ``httpx.ConnectTimeout`` — not a connection lost or a read timing out
    mid-call, which may be transient."""
    return isinstance(exc, ServerUnreachable) and isinstance(
        exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout)
    )


def call_with_retries(
    call: Callable[[], T],
    what: str,
    delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    wait: Callable[[float], object] = time.sleep,
    *,
    connect_once: bool = False,
) -> T:
    """``call()``, repeated after each of ``delays`` (seconds, passed to ``wait``) while it
    fails transiently (:func:`is_transient`). Only for idempotent calls. With
    ``connect_once`` a first attempt that cannot connect at all (:func:`cannot_connect`) is
    not retried. Raises the last ``ServerUnreachable``/``AgentApiError`` (a non-retryable
    ``AgentApiError`` at once)."""
    attempt = 0
    while True:
        try:
            return call()
        except (ServerUnreachable, AgentApiError) as exc:
            if attempt >= len(delays) or not is_transient(exc):
                raise
            if connect_once and attempt == 0 and cannot_connect(exc):
                raise
            log.debug(  # the final failure is said by the caller, once
                "%s failed (%s); retrying in %.1f s", what, exc.message, delays[attempt]
            )
            wait(delays[attempt])
            attempt += 1
