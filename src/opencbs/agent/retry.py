"""The agent's retry policy for idempotent agent API calls (batches, the finish, a job's status).

The agent API's batches and finish are idempotent (``opencbs.api.agent``), so a
``ServerUnreachable`` or a retryable ``AgentApiError`` (5xx, 408, 429) is retried after each
delay of ``delays`` (seconds; default :data:`DEFAULT_RETRY_DELAYS`, 0.5, 2 and 5: four attempts
in about 8 s). A job's report stream (``agent.report``), its finish (``agent.channel``) and the
delivery of spooled reports (``agent.delivery``) all retry through :func:`call_with_retries`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from opencbs.agent.client import AgentApiError, ServerUnreachable

__all__ = ["DEFAULT_RETRY_DELAYS", "call_with_retries", "is_transient"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds to wait before each retry of an idempotent call (so 1 + len attempts in all).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 5.0)


def is_transient(exc: Exception) -> bool:
    """Whether the same agent API call may succeed later: ``ServerUnreachable`` or a retryable
    ``AgentApiError``."""
    return isinstance(exc, ServerUnreachable) or (isinstance(exc, AgentApiError) and exc.retryable)


def call_with_retries(
    call: Callable[[], T],
    what: str,
    delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    wait: Callable[[float], object] = time.sleep,
) -> T:
    """``call()``, repeated after each of ``delays`` (seconds, passed to ``wait``) while it
    fails transiently (:func:`is_transient`). Only for idempotent calls. Raises the last
    ``ServerUnreachable``/``AgentApiError`` (a non-retryable ``AgentApiError`` at once)."""
    attempt = 0
    while True:
        try:
            return call()
        except (ServerUnreachable, AgentApiError) as exc:
            if attempt >= len(delays) or not is_transient(exc):
                raise
            log.debug(  # the final failure is said by the caller, once
                "%s failed (%s); retrying in %.1f s", what, exc.message, delays[attempt]
            )
            wait(delays[attempt])
            attempt += 1
