"""The store on SQLite and PostgreSQL: migrations build exactly the schema, counters are derived
from entries, batches are idempotent, and readers see a finished report whole."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import JobStatus, ReportList
from opencbs.store import job_queries, jobs, sets, users
from opencbs.store.db import Database
from opencbs.store.migrate import alembic_config, current_revision, head_revision, upgrade
from opencbs.store.schema import metadata


def test_migrations_build_the_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert current_revision(db) == head_revision(db)


def test_downgrade_then_upgrade(db: Database) -> None:
    command.downgrade(alembic_config(db), "base")
    assert current_revision(db) is None
    assert upgrade(db) == head_revision(db)


def _job(state: ServerState) -> int:
    with state.db.write() as conn:
        user = users.add_backup_user(conn, "alice", "alice-secret")
        bset = sets.add_set(conn, user.id, "docs", {"sources": ["/srv/docs"]})
        dest = sets.add_destination(
            conn, user.id, bset.id, name="local", dest_type="LOCAL", settings={"path": "/b"}
        )
        bset = sets.get_set(conn, user.id, bset.id)
        return jobs.start_job(conn, bset, dest.id, tz=state.tz).pk


def test_counters_follow_entries_and_batches_are_idempotent(state: ServerState) -> None:
    pk = _job(state)
    batch = [
        jobs.EntryIn(ReportList.LOG, "start", "Start [opencbs 0.1.0]", mtime_ms=1),
        jobs.EntryIn(ReportList.NEW, "F", "/srv/docs/a", mtime_ms=2, size=5, unzip_size=10),
        jobs.EntryIn(ReportList.NEW, "D", "/srv/docs/d", mtime_ms=2),
        jobs.EntryIn(ReportList.NEW, "L", "/srv/docs/l", mtime_ms=2, link_dir=True),
        jobs.EntryIn(ReportList.DEL, "L", "/srv/docs/old", mtime_ms=2),
        jobs.EntryIn(ReportList.LOG, "warn", "could not read /srv/docs/x", mtime_ms=3),
    ]
    with state.db.write() as conn:
        assert jobs.append_batch(conn, pk, 0, batch) is True
    with state.db.write() as conn:
        assert jobs.append_batch(conn, pk, 0, batch) is False  # a retry stores nothing
    with state.db.read() as conn:
        job = jobs.get_job_by_pk(conn, pk)
        news = list(job_queries.iter_entries(conn, pk, ReportList.NEW))
    c = job.counters
    assert (c.new_files, c.new_dirs, c.new_link_dirs, c.new_link_files) == (1, 1, 1, 0)
    assert (c.new_size, c.new_unzip, c.del_links, c.warn_entries) == (5, 10, 1, 1)
    assert [r.path for r in news] == ["/srv/docs/a", "/srv/docs/d", "/srv/docs/l"]
    assert job.status == JobStatus.STILL_RUNNING.value


def test_a_reader_sees_the_job_as_it_was_when_it_began(state: ServerState) -> None:
    pk = _job(state)
    with state.db.read() as reader:
        before = jobs.get_job_by_pk(reader, pk)
        with state.db.write() as conn:
            jobs.append_batch(conn, pk, 0, [jobs.EntryIn(ReportList.NEW, "F", "/srv/docs/a")])
            jobs.finish_job(conn, pk, JobStatus.STOP_SUCCESS)
        # same snapshot: neither the entry nor the finish is visible yet
        assert list(job_queries.iter_entries(reader, pk, ReportList.NEW)) == []
        assert jobs.get_job_by_pk(reader, pk).status == before.status
    with state.db.read() as conn:
        after = jobs.get_job_by_pk(conn, pk)
    assert after.status == JobStatus.STOP_SUCCESS.value and after.counters.new_files == 1


def test_stale_jobs_close_as_not_finished(state: ServerState) -> None:
    pk = _job(state)
    with state.db.write() as conn:
        job = jobs.get_job_by_pk(conn, pk)
        closed = jobs.close_stale_jobs(conn, 1000, at_ms=job.last_activity + 5000)
    assert closed == [job.job_id]
    with state.db.read() as conn:
        assert jobs.get_job_by_pk(conn, pk).status == JobStatus.BACKUP_NOT_FINISHED.value


def test_a_removed_sets_name_can_be_used_again(state: ServerState) -> None:
    from sqlalchemy import update

    from opencbs.store.schema import backup_sets

    with state.db.write() as conn:
        user = users.add_backup_user(conn, "bob", "bob-secret")
        first = sets.add_set(conn, user.id, "docs")
        conn.execute(update(backup_sets).where(backup_sets.c.id == first.id).values(removed=True))
        second = sets.add_set(conn, user.id, "docs")
    assert second.id != first.id


def test_a_completed_job_reads_complete_in_its_progress(state: ServerState) -> None:
    pk = _job(state)
    with state.db.write() as conn:  # an incremental job: 9 of 14 files needed reading
        jobs.update_progress(
            conn,
            pk,
            current_file_count=9,
            total_file_count=14,
            uploaded_file_size=62,
            total_file_size=48970,
        )
        job = jobs.finish_job(conn, pk, JobStatus.STOP_SUCCESS)
    assert (job.current_file_count, job.uploaded_file_size) == (14, 48970)
    pk2 = _job2(state)
    with state.db.write() as conn:  # a stopped job keeps what it had done
        jobs.update_progress(conn, pk2, current_file_count=3, total_file_count=14)
        stopped = jobs.finish_job(conn, pk2, JobStatus.STOP_BY_USER)
    assert stopped.current_file_count == 3


def _job2(state: ServerState) -> int:
    with state.db.write() as conn:
        user = users.find_backup_user(conn, "alice")
        assert user is not None
        bset = sets.find_set_by_name(conn, user.id, "docs")
        assert bset is not None
        return jobs.start_job(
            conn, bset, bset.destinations[0].id, tz=state.tz, start_ms=1_719_408_275_000
        ).pk


def test_a_setting_stored_by_a_looser_version_is_read_as_its_default(
    state: ServerState, caplog: pytest.LogCaptureFixture
) -> None:
    from opencbs.store.schema import backup_sets

    with state.db.write() as conn:
        user = users.add_backup_user(conn, "carol", "carol-secret")
        conn.execute(  # an empty pattern and an unknown compression key: refused today
            backup_sets.insert().values(
                id=5,
                user_id=user.id,
                name="old",
                type="FILE",
                settings={
                    "sources": ["/srv"],
                    "filters": {"include": [], "exclude": [""]},
                    "compression": {"type": "ZSTD", "level": 7, "extra": 1},
                    "deduplication": False,
                },
                removed=False,
                created_at=5,
            )
        )
    with caplog.at_level("WARNING", logger="opencbs.store.sets"), state.db.read() as conn:
        bset = sets.get_set(conn, user.id, 5)
        listed = sets.list_sets(conn, user.id)
    assert bset.settings.as_json() == {
        "sources": ["/srv"],
        "filters": {"include": [], "exclude": []},
        "compression": {"type": "ZSTD", "level": 3},
        "deduplication": False,
        "retention": {  # stored before the key existed: its default, 7 days
            "mode": "SIMPLE",
            "days": 7,
            "jobs": None,
            "keep_last": 0,
            "keep_hourly": 0,
            "keep_daily": 0,
            "keep_weekly": 0,
            "keep_monthly": 0,
            "keep_yearly": 0,
            "keep_within": None,
            "after_backup": True,
        },
        "time_zone": None,  # stored before the key existed: the server's zone
    }
    assert listed[0].settings == bset.settings
    assert "backup set 5: its setting 'filters' is not valid" in caplog.text
    assert "its setting 'compression' is not valid" in caplog.text
    with state.db.write() as conn:  # a valid change repairs it
        fixed = sets.update_set(conn, user.id, 5, settings={"compression": {"level": 7}})
    assert fixed.settings.compression.level == 7


def test_job_times_outside_the_window_are_refused(state: ServerState) -> None:
    from opencbs.errors import InvalidInput
    from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS

    _job(state)
    with state.db.write() as conn:
        user = users.find_backup_user(conn, "alice")
        assert user is not None
        bset = sets.find_set_by_name(conn, user.id, "docs")
        assert bset is not None
        dest_id = bset.destinations[0].id
        for bad in (MIN_TIME_MS - 1, MAX_TIME_MS + 1):
            with pytest.raises(InvalidInput, match="between the years 1601 and 9999"):
                jobs.start_job(conn, bset, dest_id, tz=state.tz, start_ms=bad)
        first = jobs.start_job(conn, bset, dest_id, tz=state.tz, start_ms=MIN_TIME_MS)
        with pytest.raises(InvalidInput, match="between the years 1601 and 9999"):
            jobs.finish_job(conn, first.pk, JobStatus.STOP_SUCCESS, end_ms=MAX_TIME_MS + 1)
        done = jobs.finish_job(conn, first.pk, JobStatus.STOP_SUCCESS, end_ms=MAX_TIME_MS)
    assert (done.start_time, done.end_time) == (MIN_TIME_MS, MAX_TIME_MS)
