"""A running job's heartbeat: the agent tells the server it is alive, from a thread of its own,
for as long as the job runs (issue 15, point 5; cbs-api.md §9, "The agent's heartbeat").

The job's other calls (batches, progress) come only when the job produces something; a long read
of one file, a slow upload, a lock wait or a retention run produce nothing for minutes. The
heartbeat does not depend on them: :class:`Heartbeat` sends ``POST …/jobs/{id}/heartbeat``
every ``interval`` seconds (the job start's answer says how often: a quarter of the server's
``job_heartbeat_timeout``; :data:`DEFAULT_INTERVAL` from a server that does not say), so the
server closes a job as ``BS_BACKUP_NOT_FINISHED`` after a few missed heartbeats only when its
agent is gone (killed, the machine down, the network lost).

Each heartbeat is one attempt (the next one is the retry): an unreachable server is logged at
debug level and the heartbeat goes on. A 409 (the server closed the job) ends it, and
:attr:`Heartbeat.refused` says why; a server without heartbeats (404, 405) ends it quietly.
"""

from __future__ import annotations

import logging
import threading

from opencbs.agent.client import AgentApiError, AgentClient, ServerUnreachable
from opencbs.model.jobs import JobRef

__all__ = ["DEFAULT_INTERVAL", "MAX_INTERVAL", "MIN_INTERVAL", "Heartbeat"]

log = logging.getLogger(__name__)

#: Seconds between heartbeats when the server does not say (it is older than heartbeats).
DEFAULT_INTERVAL = 30.0
#: Bounds of the interval a server may ask for (seconds).
MIN_INTERVAL = 0.2
MAX_INTERVAL = 60.0


def _bounded(interval: float | None) -> float:
    if interval is None:
        return DEFAULT_INTERVAL
    return min(max(interval, MIN_INTERVAL), MAX_INTERVAL)


class Heartbeat:
    """The heartbeat of job ``ref`` through ``client`` every ``interval`` seconds (``None``:
    :data:`DEFAULT_INTERVAL`), between :meth:`start` and :meth:`stop` (module docstring).
    ``sent`` counts the heartbeats the server took; ``refused`` holds why it refused one
    (``None`` while it takes them)."""

    def __init__(self, client: AgentClient, ref: JobRef, interval: float | None) -> None:
        self.client = client
        self.ref = ref
        self.interval = _bounded(interval)
        self.sent = 0
        self.refused: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"opencbs-heartbeat-{ref.job_id}", daemon=True
        )

    def start(self) -> Heartbeat:
        """Start sending (the first heartbeat one interval from now); returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending (no heartbeat after this returns, but one under way may end)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.interval = _bounded(self.client.heartbeat(self.ref))
            except ServerUnreachable as exc:
                log.debug("heartbeat of job %s not delivered: %s", self.ref.job_id, exc.message)
                continue
            except AgentApiError as exc:
                if exc.status == 409:
                    self.refused = exc.message
                    log.debug("heartbeat of job %s refused: %s", self.ref.job_id, exc.message)
                    return
                if exc.status in (404, 405):
                    log.debug("the server takes no heartbeat (%s): none sent", exc.message)
                    return
                log.debug("heartbeat of job %s failed: %s", self.ref.job_id, exc.message)
                continue
            self.sent += 1
