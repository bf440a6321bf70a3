"""Keeping secrets out of the server's logs: the CBS API takes ``SysPwd`` (and AuthUser's
``Password``) in the query string of GET requests (cbs-api.md §1), and uvicorn's access log
writes request targets as they came.

A query parameter is secret when its name, however it is written, reads as one of
``SECRET_PARAMETERS``: percent-encoded (``Sys%50wd``, ``%53ysPwd``, even twice), ``+`` or other
separators inside it (``Sys+Pwd``), any case (``SYSPWD``). Its value is written ``***``. Nothing
else we log holds a request's body or its ``Authorization`` header.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

#: Query parameters whose values never reach a log (compared as ``_normalised`` names).
SECRET_PARAMETERS = ("SysPwd", "Password", "password")

_SECRETS = frozenset(n.lower() for n in SECRET_PARAMETERS)
#: Percent-decoding rounds applied to a name (``%2550`` → ``%50`` → ``P``).
_DECODE_ROUNDS = 3


def _normalised(name: str) -> str:
    """``name`` percent-decoded (up to ``_DECODE_ROUNDS`` times, ``+`` as a space), lower case,
    letters and digits only: ``Sys%2BPwd`` and ``SYS_PWD`` both read ``syspwd``."""
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return "".join(c for c in name.lower() if c.isalnum())


def is_secret(name: str) -> bool:
    """Whether a query parameter named ``name`` (as written in a URL) carries a secret."""
    return _normalised(name) in _SECRETS


def _redact_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}=***" if sep and is_secret(name) else pair


def redact_target(target: str) -> str:
    """``target`` (a request target: path and query) with the values of secret query
    parameters replaced by ``***``."""
    if "=" not in target:
        return target
    path, sep, query = target.partition("?")
    if not sep:
        return target
    # ``;`` separates pairs too for some parsers (and for a reader of the log)
    return (
        path
        + "?"
        + "&".join(";".join(_redact_pair(p) for p in part.split(";")) for part in query.split("&"))
    )


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
