"""Keeping secrets out of the server's logs: the CBS API takes ``SysPwd`` (and AuthUser's
``Password``) in the query string of GET requests (cbs-api.md §1), and uvicorn's access log
writes request targets as they came."""

from __future__ import annotations

import logging
import re

#: Query parameters whose values never reach a log.
SECRET_PARAMETERS = ("SysPwd", "Password", "password")

_SECRET = re.compile(r"(?P<key>(?:^|[?&])(?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&#\s]*")


def redact_target(target: str) -> str:
    """``target`` with the values of secret query parameters replaced by ``***``."""
    if "=" not in target:
        return target
    return _SECRET.sub(r"\g<key>***", target)


class RedactSecrets(logging.Filter):
    """Rewrites the request target of uvicorn's access log records (their 3rd argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
