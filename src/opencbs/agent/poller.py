"""The unattended agent's line to the server: a thread that polls (``AgentClient.poll``, a long
poll of ``wait`` seconds holding the last ``generation``) and takes the run requests it is
given (``AgentClient.take_run_request``), handing both to the daemon through callbacks.

When to poll again: at once after a long poll the server held (``waited``) or an answer that
brought something (changed sets, run requests; at most one a second); after
``poll_interval`` + a random 0..10 % (at most 10 s) when the server answered at once with
nothing (it holds too many polls, or ``wait`` is 0) or refused the poll (``AgentApiError``: a
server without the poll, a refused login; logged at each failure); after 5, 10, 20 … seconds
(at most ``poll_interval``) while it cannot be reached (logged once per outage, and when it
answers again). A run request that cannot be taken because it is no longer pending (409) or
not the user's (404) is logged and not tried again.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from opencbs.agent.client import AgentApiError, AgentClient, ServerUnreachable
from opencbs.agent.poll import PollAnswer, RunRequest

__all__ = ["Poller"]

log = logging.getLogger(__name__)

#: Seconds between two polls while the server answers at once (a run request pending).
MIN_GAP = 1.0
#: The first wait after the server could not be reached (seconds); doubled each time.
FIRST_BACKOFF = 5.0


class Poller:
    """Polls the server on a thread of its own (module docstring): ``client`` (closed when
        the thread ends), ``wait`` seconds of long poll, ``generation`` the one the agent holds
        (from its cache; ``None``: none). Each answer goes to ``on_answer`` and each run request
        taken to ``on_taken``, on the poller's thread; ``on_reachable`` is called at the first
    answer and at the first answer after the server could not be reached (the daemon then
    delivers the reports its jobs spooled meanwhile). :meth:`stop` ends it after the request in
        flight (whose answer is then dropped)."""

    def __init__(
        self,
        client: AgentClient,
        *,
        wait: float,
        generation: str | None,
        on_answer: Callable[[PollAnswer], None],
        on_taken: Callable[[RunRequest], None],
        on_reachable: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.wait = wait
        self.generation = generation
        self.on_answer = on_answer
        self.on_taken = on_taken
        self.on_reachable = on_reachable
        self.rng = rng or random.Random()
        self.interval = 60.0  # the server's poll_interval, once it said it
        self._stopped = threading.Event()
        self._refused: set[int] = set()  # run requests not to take again
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End polling (the thread ends after its request in flight)."""
        self._stopped.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _jitter(self) -> float:
        return self.rng.uniform(0, min(self.interval * 0.1, 10.0))

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug: said, and the daemon's cached schedules keep running
            log.exception("the poll of the server stopped")
        finally:
            self.client.close()

    def _loop(self) -> None:
        failures = 0
        reached = False
        while not self._stopped.is_set():
            try:
                answer = self.client.poll(self.wait, self.generation)
            except ServerUnreachable as exc:
                failures += 1
                if failures == 1:
                    log.warning("cannot reach the server (running the schedules known): %s", exc)
                delay = min(self.interval, FIRST_BACKOFF * 2 ** min(failures - 1, 10))
                self._stopped.wait(delay + self._jitter())
                continue
            except AgentApiError as exc:
                log.warning("the server refused the poll: %s", exc)
                self._stopped.wait(self.interval + self._jitter())
                continue
            if self._stopped.is_set():
                return
            if failures:
                log.info("the server answers again")
                failures = 0
                reached = False
            if not reached and self.on_reachable is not None:
                reached = True
                self.on_reachable()  # the reports spooled meanwhile are delivered
            self.interval = max(1.0, answer.poll_interval)
            self.generation = answer.generation
            self.on_answer(answer)
            took = self._take(answer)
            news = answer.sets is not None or took
            if answer.waited:
                continue
            self._stopped.wait(MIN_GAP if news else self.interval + self._jitter())

    def _take(self, answer: PollAnswer) -> bool:
        """Take the answer's run requests; whether any was taken or is to be tried again."""
        again = False
        took = False
        for request in answer.run_requests:
            if request.id in self._refused or self._stopped.is_set():
                continue
            try:
                self.client.take_run_request(request.id)
            except ServerUnreachable as exc:
                log.warning("run request %s not taken yet: %s", request.id, exc)
                again = True
                continue
            except AgentApiError as exc:
                if exc.status in (404, 409):
                    log.info("run request %s is no longer pending: %s", request.id, exc)
                    self._refused.add(request.id)
                else:
                    log.warning("run request %s not taken yet: %s", request.id, exc)
                    again = True
                continue
            log.info(
                "run request %s taken: backup set %s, requested by %s",
                request.id,
                request.set_id,
                request.requested_by or "?",
            )
            self.on_taken(request)
            took = True
        if again:  # not at once: the server keeps answering at once while it is pending
            self._stopped.wait(FIRST_BACKOFF)
        return took or again
