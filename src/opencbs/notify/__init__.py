"""The server's alerts (cbs-api.md §15): rules of backup users and system users
(``notify.rules``), which alerts a job's end, a silence or a day raise (``notify.alerts``),
sending them by email and signed webhook (``notify.channels``) with retries
(``notify.delivery``), and one round of it all for the server's background loop
(``run_once``, from ``notify.runner``)."""

from opencbs.notify.runner import run_once

__all__ = ["run_once"]
