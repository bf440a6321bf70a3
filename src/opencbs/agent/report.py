"""A job's report streamed to the server in batches (cbs-api.md §5; the entries themselves are
built by ``agent.report_entries``).

:class:`ReportStream` buffers entries and sends them as numbered batches of at most
``batch_size`` entries, so memory is bounded by one batch whatever the size of the job.

Delivery: each batch is retried (``agent.retry``: a ``ServerUnreachable`` or a retryable
``AgentApiError``). With a spool (``opencbs.agent.spool.JobSpool``), each batch is written to the
agent's disk before it is sent; when a batch still cannot be delivered the stream stops sending
(:attr:`ReportStream.failure` says why) but goes on spooling, and the spool is delivered later,
complete (``opencbs.agent.delivery.deliver_pending``). Without a spool, entries after a failed
batch are dropped (a report missing a batch cannot be completed later). The job itself goes on
either way.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from opencbs.agent.client import AgentApiError, AgentClient, ServerUnreachable
from opencbs.agent.client import Entry as ReportEntry
from opencbs.agent.report_entries import log_entry
from opencbs.agent.retry import DEFAULT_RETRY_DELAYS, call_with_retries
from opencbs.agent.spool import JobSpool, SpoolError
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import LogType, ReportList

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_BYTES",
    "MAX_MESSAGES",
    "MAX_QUEUED_BATCHES",
    "JobMessage",
    "ReportStream",
]

log = logging.getLogger(__name__)

#: Entries per batch by default (the API takes at most 10,000).
DEFAULT_BATCH_SIZE = 1000
#: Most bytes of a batch's JSON body, by ``entry_bytes``: under the server's limit of 4 MiB
#: (``opencbs.api.limits.BATCH_BODY``, issue 11; a unit test keeps the two in order).
MAX_BATCH_BYTES = 3 << 20
#: ``entry_bytes``: bytes of an entry's keys, numbers and separators at most.
_ENTRY_OVERHEAD = 256
#: ``entry_bytes``: bytes of one character in JSON at most (the escape ``\u001f``).
_CHAR_BYTES = 6


def entry_bytes(entry: ReportEntry) -> int:
    """An upper bound of the bytes ``entry`` takes in a batch's JSON body: 6 a character of its
    text (UTF-8 takes 4 at most, a JSON escape 6) and 256 for its keys and numbers."""
    chars = len(entry.type) + len(entry.path) + len(entry.message) + len(entry.from_path or "")
    return _ENTRY_OVERHEAD + _CHAR_BYTES * chars


#: The ``warn`` and ``error`` log entries of a job kept as :class:`JobMessage` at most (the
#: first ones; the counts go on): what ``opencbs backup`` prints and ``--json`` lists.
MAX_MESSAGES = 1000


@dataclass(frozen=True, slots=True)
class JobMessage:
    """One ``warn`` or ``error`` log entry of a job, for a person: its ``type`` (``LogType``)
    and ``text`` (the entry's message, as the server's report shows it)."""

    type: LogType
    text: str


#: Batches waiting for the background sender (``ReportStream(background=True)``) at most.
MAX_QUEUED_BATCHES = 4


class ReportStream:
    """Buffers a job's report entries and sends them to the server as numbered batches (from
    0) of at most ``batch_size`` entries and ``MAX_BATCH_BYTES`` bytes (``entry_bytes``: long
    paths make smaller batches). Counts the ``warn`` and ``error`` log entries.

    Never raises for the server: each batch is retried (``retry_delays``, ``wait``; see
    :func:`call_with_retries`); when one still fails, :attr:`failure` holds why and no later
    batch is sent. With ``spool``, every batch is spooled before it is sent (also after a
    failure: the spool then holds the whole report); without, later entries are dropped.
    ``online=False`` starts without sending (the job could not be started on the server).
    Raises ``SpoolError`` when the spool cannot be written.

    ``background=True``: batches are spooled and sent by one thread, in order, while the caller
    goes on (at most ``MAX_QUEUED_BATCHES`` wait; ``flush`` blocks beyond that); :meth:`join`
    or :meth:`drain` waits for them, and must be called before :attr:`delivered`,
    :attr:`failure` or the counters are final. Only the caller's thread may call
    ``add``/``log``/``flush``/``join``/``drain``.
    """

    def __init__(
        self,
        client: AgentClient,
        ref: JobRef,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        wait: Callable[[float], object] = time.sleep,
        spool: JobSpool | None = None,
        online: bool = True,
        offline_reason: str = "",
        background: bool = False,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be 1..10000")
        self.client = client
        self.ref = ref
        self.batch_size = batch_size
        self.batches_sent = 0
        self.entries_sent = 0
        self.warnings = 0
        self.errors = 0
        #: The first ``MAX_MESSAGES`` ``warn`` and ``error`` log entries, in order.
        self.messages: list[JobMessage] = []
        #: Called with every ``warn`` and ``error`` log entry as it is queued (all of them,
        #: beyond ``MAX_MESSAGES`` too): how the CLI says each one while the job runs.
        self.on_message: Callable[[JobMessage], None] | None = None
        self.retry_delays = tuple(retry_delays)
        self.wait = wait
        #: Why the report could not be delivered (``None`` while it is being delivered).
        self.failure: str | None = None if online else (offline_reason or "offline")
        self.spool = spool
        #: Batches written to the spool (all of them, sent or not).
        self.batches_spooled = 0
        #: Why the spool could not be written (``None`` while it can).
        self.spool_failure: str | None = None
        self._buffer: list[ReportEntry] = []
        self._buffer_bytes = 0
        self._sender = (
            ThreadPoolExecutor(1, thread_name_prefix="opencbs-report") if background else None
        )
        self._sending: deque[Future[None]] = deque()

    @property
    def delivered(self) -> bool:
        """Whether every batch flushed so far reached the server."""
        return self.failure is None

    def fail(self, reason: str) -> None:
        """Stop delivering (the first reason is kept); queued entries are dropped."""
        if self.failure is None:
            log.debug("the job report cannot be delivered: %s", reason)
            self.failure = reason
        if self.spool is None:
            self._buffer = []  # with a spool, queued entries are spooled by the next flush
            self._buffer_bytes = 0

    def add(self, entry: ReportEntry) -> None:
        """Queue one entry; sends a batch when ``batch_size`` are queued, and the queued ones
        first when this entry would take the batch over ``MAX_BATCH_BYTES``."""
        size = entry_bytes(entry)
        if self._buffer and self._buffer_bytes + size > MAX_BATCH_BYTES:
            self.flush()
        self._buffer.append(entry)
        self._buffer_bytes += size
        if entry.lst is ReportList.LOG:
            if entry.type == LogType.WARN.value:
                self.warnings += 1
                self._keep(LogType.WARN, entry.message)
            elif entry.type == LogType.ERROR.value:
                self.errors += 1
                self._keep(LogType.ERROR, entry.message)
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def _keep(self, log_type: LogType, text: str) -> None:
        message = JobMessage(log_type, text)
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)
        if self.on_message is not None:
            self.on_message(message)

    def log(self, log_type: LogType, message: str) -> None:
        """Queue a log entry stamped now."""
        self.add(log_entry(log_type, message))

    def flush(self) -> None:
        """Send the queued entries as the next batch (no-op when none are queued, and after a
        failure: see the class docstring)."""
        if not self._buffer:
            return
        entries, self._buffer = self._buffer, []
        self._buffer_bytes = 0
        if self.spool is None and self.failure is not None:
            return  # dropped: nothing to spool, nothing to send
        if self._sender is None:
            self._deliver(entries)
            return
        while len(self._sending) >= MAX_QUEUED_BATCHES:
            self._sending.popleft().result()
        self._sending.append(self._sender.submit(self._deliver, entries))

    def join(self) -> None:
        """Wait until every flushed batch is spooled and sent (or failed)."""
        while self._sending:
            self._sending.popleft().result()

    def drain(self) -> None:
        """:meth:`join`, then end the background thread, if any (a later ``flush`` delivers
        in the caller's thread)."""
        self.join()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def _deliver(self, entries: list[ReportEntry]) -> None:
        """Spool then send one batch (the caller's thread, or the background one)."""
        if self.spool is not None:
            try:
                self.spool.write_batch(self.batches_spooled, entries)
                self.batches_spooled += 1
            except SpoolError as exc:  # the agent's disk: sending goes on without a spool
                log.debug("the job report can no longer be spooled: %s", exc)  # in the fate
                self.spool_failure = str(exc)
                self.spool = None
        if self.failure is not None:
            return
        batch_no = self.batches_sent
        try:
            call_with_retries(
                lambda: self.client.send_batch(self.ref, batch_no, entries),
                f"batch {batch_no}",
                self.retry_delays,
                self.wait,
            )
        except (ServerUnreachable, AgentApiError) as exc:
            if self.failure is None:
                log.debug(
                    "the job report cannot be delivered: %s", f"batch {batch_no}: {exc.message}"
                )
                self.failure = f"batch {batch_no}: {exc.message}"
            return
        self.batches_sent += 1
        self.entries_sent += len(entries)
