"""The agents' long-polls of one server process (cbs-api.md §14): who waits, one watcher that
wakes them, and the ``last_seen_ms`` writes gathered.

A poll that has nothing to tell waits here (:meth:`PollHub.enter`, an ``asyncio.Event``; no
thread per waiter) for at most its ``wait`` seconds. One watcher task per process
(:meth:`PollHub.run`) looks about once a second (``tick``) at what the waiting agents' users
have: their generation (``store.polls.generations``) and whether a run request waits
(``store.run_requests.pending_user_ids``): two queries for every waiter together, whatever
their number; it wakes each waiter whose user's generation moved or who has a request. So a
``RunBackup.do`` or a schedule change made through *another* server process on the same
database wakes the agent within a tick; one made here wakes it at once (:meth:`PollHub.nudge`).

At most ``limit`` polls wait at once (the setting ``max_long_polls``): past it :meth:`enter`
answers ``None`` and the poll answers at once. :meth:`close` (the server shutting down) wakes
every waiter and lets no new one wait, so a graceful stop is not held by long-polls.

The agents' ``last_seen_ms`` (ListUsers ``Online``) is gathered by :meth:`record_seen` (at most
once per ``store.polls.SEEN_EVERY_MS`` per user in this process) and written by the watcher in
one statement per tick.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from opencbs.store import polls, run_requests
from opencbs.store.db import Database

log = logging.getLogger(__name__)

#: Seconds between the watcher's looks at the database.
DEFAULT_TICK = 1.0
#: Long-polls one process holds at most by default (the setting ``max_long_polls``).
DEFAULT_LIMIT = 500


@dataclass(eq=False)
class Waiter:
    """One waiting poll: its ``user_id``, the ``generation`` it holds, and the ``event`` set
    when it should answer (a change, a run request, the server stopping)."""

    user_id: int
    generation: str
    event: asyncio.Event = field(default_factory=asyncio.Event)


class PollHub:
    """The waiting polls of one process (module docstring). ``limit``: most waiting at once;
    ``tick``: seconds between the watcher's looks."""

    def __init__(self, *, limit: int = DEFAULT_LIMIT, tick: float = DEFAULT_TICK) -> None:
        self.limit = limit
        self.tick = tick
        self._waiters: dict[int, set[Waiter]] = {}
        self._count = 0
        self._closed = False
        self._seen: dict[int, int] = {}  # to write: user ID -> epoch ms
        self._written: dict[int, int] = {}  # last queued per user (epoch ms)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    @property
    def waiting(self) -> int:
        """Polls waiting now."""
        return self._count

    @property
    def closed(self) -> bool:
        """Whether the server is stopping (no poll waits any more)."""
        return self._closed

    def enter(self, user_id: int, generation: str) -> Waiter | None:
        """A new waiter of ``user_id`` holding ``generation``, or ``None`` when ``limit``
        polls wait already or the server is stopping (answer at once). Call :meth:`leave`
        when done. Event-loop thread only."""
        if self._closed or self._count >= self.limit:
            return None
        waiter = Waiter(user_id, generation)
        self._waiters.setdefault(user_id, set()).add(waiter)
        self._count += 1
        return waiter

    def leave(self, waiter: Waiter) -> None:
        """Forget ``waiter`` (its poll answers)."""
        group = self._waiters.get(waiter.user_id)
        if group is not None and waiter in group:
            group.discard(waiter)
            self._count -= 1
            if not group:
                del self._waiters[waiter.user_id]

    def record_seen(self, user_id: int, at_ms: int) -> None:
        """``user_id``'s agent polled at ``at_ms`` (epoch ms): queued for the next tick's
        write unless queued less than ``SEEN_EVERY_MS`` ago."""
        if at_ms - self._written.get(user_id, -polls.SEEN_EVERY_MS) < polls.SEEN_EVERY_MS:
            return
        self._written[user_id] = at_ms
        self._seen[user_id] = at_ms

    def nudge(self) -> None:
        """Look now rather than at the next tick (a run request made in this process). Safe
        from any thread; nothing happens before :meth:`run` started."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def close(self) -> None:
        """The server stops: wake every waiter, let none wait from now on. Idempotent."""
        self._closed = True
        for group in self._waiters.values():
            for waiter in group:
                waiter.event.set()

    async def run(self, db: Database, server_zone: str) -> None:
        """The watcher: every ``tick`` seconds (or at once after :meth:`nudge`) write the
        gathered ``last_seen_ms`` and wake the waiters whose users have news; ``server_zone``
        is the IANA name of a set without its own zone. Runs until cancelled; a failed look is
        logged and tried again at the next tick."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.look(db, server_zone)
            except Exception:  # noqa: BLE001 - keep watching; the error is logged
                log.exception("agent poll watcher: looking at the database failed")

    async def look(self, db: Database, server_zone: str) -> int:
        """One look (what :meth:`run` does each tick): how many waiters were woken."""
        await self.flush_seen(db)
        held = {uid: {w.generation for w in group} for uid, group in self._waiters.items()}
        if not held:
            return 0
        current, pending = await run_in_threadpool(_news, db, list(held), server_zone)
        woken = 0
        for uid in held:
            for waiter in list(self._waiters.get(uid, ())):
                if uid in pending or current.get(uid) != waiter.generation:
                    if not waiter.event.is_set():
                        waiter.event.set()
                        woken += 1
        return woken

    async def flush_seen(self, db: Database) -> None:
        """Write the gathered ``last_seen_ms`` now (each tick, and when the server stops)."""
        if not self._seen:
            return
        seen, self._seen = self._seen, {}
        await run_in_threadpool(_write_seen, db, seen)


def _news(db: Database, user_ids: list[int], server_zone: str) -> tuple[dict[int, str], set[int]]:
    with db.read() as conn:
        return (
            polls.generations(conn, user_ids, server_zone),
            run_requests.pending_user_ids(conn, user_ids),
        )


def _write_seen(db: Database, seen: dict[int, int]) -> None:
    with db.write() as conn:
        polls.record_seen(conn, seen)
