"""A report read in pages (``job_queries.report_bounds``, ``iter_entries_paged``) on SQLite and
PostgreSQL: the same rows in the same order as one transaction would give, exactly the entries
the header counted even while the job runs on, no connection held between pages, and an error
rather than a short answer when entries vanish."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from opencbs.api.state import ServerState
from opencbs.errors import StoreError
from opencbs.reports.render import render_report
from opencbs.reports.vocabulary import JobStatus, ReportList
from opencbs.store import job_queries, jobs, sets, users
from opencbs.store.schema import job_entries
from tests.conftest import ADMIN


def _job(state: ServerState) -> tuple[int, dict[str, str]]:
    with state.db.write() as conn:
        user = users.add_backup_user(conn, "pager", "pager-secret")
        bset = sets.add_set(conn, user.id, "docs", {"sources": ["/srv"]})
        dest = sets.add_destination(conn, user.id, bset.id, name="d", dest_type="LOCAL")
        bset = sets.get_set(conn, user.id, bset.id)
        job = jobs.start_job(conn, bset, dest.id, tz=state.tz)
    request = {
        "SysUser": ADMIN[0],
        "SysPwd": ADMIN[1],
        "LoginName": "pager",
        "BackupSetID": str(bset.id),
        "BackupJobID": job.job_id,
    }
    return job.pk, request


def _batch(start: int, count: int) -> list[jobs.EntryIn]:
    """``count`` entries spread over every list, numbered from ``start``."""
    out = []
    for i in range(start, start + count):
        lst = ReportList(i % len(ReportList))
        if lst is ReportList.LOG:
            out.append(jobs.EntryIn(lst, "info", f"line {i}", mtime_ms=1_000 + i))
        else:
            frm = f"/srv/old/{i}" if lst in (ReportList.MOV, ReportList.CPY) else None
            out.append(
                jobs.EntryIn(
                    lst, "F", f"/srv/f/{i}", from_path=frm, mtime_ms=i, size=i, unzip_size=2 * i
                )
            )
    return out


def _append(state: ServerState, pk: int, batch_no: int, entries: list[jobs.EntryIn]) -> None:
    with state.db.write() as conn:
        jobs.append_batch(conn, pk, batch_no, entries)


def _whole(state: ServerState, pk: int, lst: ReportList) -> list[tuple[object, ...]]:
    with state.db.read() as conn:
        return [tuple(r) for r in job_queries.iter_entries(conn, pk, lst)]


@pytest.mark.parametrize("page_size", [1, 7, 5000])
def test_pages_give_the_rows_of_one_transaction(state: ServerState, page_size: int) -> None:
    pk, _ = _job(state)
    _append(state, pk, 0, _batch(0, 200))
    _append(state, pk, 1, _batch(200, 150))
    with state.db.read() as conn:
        bounds = job_queries.report_bounds(conn, pk)
    for lst in ReportList:
        paged = job_queries.iter_entries_paged(state.db, pk, lst, bounds[lst], page_size=page_size)
        assert [tuple(r)[:6] for r in paged] == _whole(state, pk, lst), lst


def test_empty_lists_have_bound_minus_one(state: ServerState) -> None:
    pk, _ = _job(state)
    _append(state, pk, 0, [jobs.EntryIn(ReportList.NEW, "F", "/srv/a")])
    with state.db.read() as conn:
        bounds = job_queries.report_bounds(conn, pk)
    assert bounds[ReportList.NEW] == 0
    assert all(bounds[lst] == -1 for lst in ReportList if lst is not ReportList.NEW)
    assert list(job_queries.iter_entries_paged(state.db, pk, ReportList.DEL, -1, page_size=5)) == []


def test_entries_stored_after_the_header_are_left_out(state: ServerState) -> None:
    """A running job's report read while batches keep coming: the lists hold exactly what the
    header counts, byte for byte the report of that moment."""
    pk, _ = _job(state)
    _append(state, pk, 0, _batch(0, 100))
    with state.db.read() as conn:
        header = jobs.get_job_by_pk(conn, pk).header(state.tz)
        bounds = job_queries.report_bounds(conn, pk)
        then = b"".join(
            render_report(
                header, lambda lst: list(job_queries.iter_entries(conn, pk, lst)), state.log_time
            )
        )
    batches = iter(range(1, 100))

    def entries(lst: ReportList) -> list[object]:
        # the first page of each list is read, then a batch lands before the rest is read
        it = job_queries.iter_entries_paged(state.db, pk, lst, bounds[lst], page_size=3)
        rows: list[object] = [next(it, None)]
        no = next(batches)
        _append(state, pk, no, _batch(1000 * no, 50))
        rows += list(it)
        return [r for r in rows if r is not None]

    now = b"".join(render_report(header, entries, state.log_time))
    assert now == then
    with state.db.read() as conn:
        assert jobs.get_job_by_pk(conn, pk).counters != header.counters  # the job did move on


def test_no_connection_is_held_between_pages(state: ServerState) -> None:
    pk, _ = _job(state)
    _append(state, pk, 0, _batch(0, 70))
    with state.db.read() as conn:
        bounds = job_queries.report_bounds(conn, pk)
    pool = state.db.engine.pool
    seen = 0
    for _row in job_queries.iter_entries_paged(
        state.db, pk, ReportList.NEW, bounds[ReportList.NEW], page_size=4
    ):
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        seen += 1
    assert seen == 10


def test_vanished_entries_fail_the_answer(state: ServerState) -> None:
    pk, _ = _job(state)
    _append(state, pk, 0, [jobs.EntryIn(ReportList.NEW, "F", f"/srv/{i}") for i in range(10)])
    with state.db.read() as conn:
        bounds = job_queries.report_bounds(conn, pk)
    it = job_queries.iter_entries_paged(
        state.db, pk, ReportList.NEW, bounds[ReportList.NEW], page_size=4
    )
    assert [r[1] for r in (next(it), next(it), next(it), next(it))] == [
        f"/srv/{i}" for i in range(4)
    ]
    with state.db.write() as conn:
        conn.execute(delete(job_entries).where(job_entries.c.job_pk == pk, job_entries.c.seq >= 6))
    rest = []
    with pytest.raises(StoreError, match="changed while its report was read"):
        for r in it:
            rest.append(r[1])
    assert rest == ["/srv/4", "/srv/5"]


def test_report_over_http_while_the_job_runs(state: ServerState, client: TestClient) -> None:
    """GetBackupJobReport of a running job, several pages long: counts and lists agree."""
    pk, request = _job(state)
    _append(state, pk, 0, _batch(0, 12_000))
    r = client.post("/obs/api/json/GetBackupJobReport.do", json=request)
    assert r.status_code == 200
    data = r.json()["Data"]
    assert data["BackupJobStatus"] == JobStatus.STILL_RUNNING.value
    # entry i goes to list i % 7: 1,715 log lines and new files, 1,714 of each other list
    assert len(data["new"]) == data["NumOfNewFiles"] == 1715
    assert [e["Name"] for e in data["new"]][:2] == ["/srv/f/1", "/srv/f/8"]
    assert len(data["Logs"]) == len(data["info"]) == 1715
    assert len(data["cpy"]) == data["NumOfCopiedFiles"] == 1714
