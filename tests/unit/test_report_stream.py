"""``ReportStream`` delivering in the background: order, failure, spool (agent.report)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from opencbs.agent.client import Entry, ServerUnreachable
from opencbs.agent.report import ReportStream
from opencbs.agent.spool import JobSpool, JobStart
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import LogType

REF = JobRef("1", "2", "2026-01-01-00-00-00")


class FakeClient:
    """Records batches; batch ``fail_at`` (and later ones) raise ``ServerUnreachable``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.batches: list[tuple[int, list[str]]] = []
        self.threads: set[str] = set()

    def send_batch(self, ref: JobRef, batch_no: int, entries: list[Entry]) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and batch_no >= self.fail_at:
            raise ServerUnreachable("down (test)")
        self.batches.append((batch_no, [e.path for e in entries]))


def _stream(client: FakeClient, spool: JobSpool | None) -> ReportStream:
    fake: Any = client
    return ReportStream(fake, REF, 2, retry_delays=(), spool=spool, background=True)


def test_background_batches_arrive_in_order_from_another_thread() -> None:
    client = FakeClient()
    report = _stream(client, None)
    for i in range(7):
        report.log(LogType.INFO, f"m{i}")
    report.flush()
    report.drain()
    assert [n for n, _ in client.batches] == [0, 1, 2, 3]
    assert [len(e) for _, e in client.batches] == [2, 2, 2, 1]
    assert report.delivered and report.batches_sent == 4 and report.entries_sent == 7
    assert threading.current_thread().name not in client.threads


def test_background_failure_stops_sending_but_the_spool_gets_every_batch(
    tmp_path: Path,
) -> None:
    client = FakeClient(fail_at=1)
    spool = JobSpool.create(tmp_path, JobStart("1", "2", 0))
    report = _stream(client, spool)
    for i in range(6):
        report.log(LogType.WARN, f"w{i}")
    report.drain()
    assert not report.delivered and report.failure is not None
    assert "batch 1" in report.failure
    assert [n for n, _ in client.batches] == [0]  # nothing after the failed batch
    assert spool.batch_count() == 3 and report.batches_spooled == 3
    assert report.warnings == 6
