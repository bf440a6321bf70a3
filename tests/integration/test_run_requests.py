"""Backups started from the server, in the store (cbs-api.md §14), on SQLite and PostgreSQL:
one pending request per set, cancelling, taking by compare-and-set (two concurrent takes on
PostgreSQL: exactly one wins), the generation of a user's sets and schedules, and the agent's
``last_seen_ms`` written at most once per 15 s."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from opencbs import security
from opencbs.errors import Conflict
from opencbs.model.schedules import Schedule, ScheduleType
from opencbs.store import polls, run_requests, schedules, sets, users
from opencbs.store.db import Database
from opencbs.store.run_requests import RequestStatus, RunRequestNotFound
from opencbs.store.schema import backup_sets, backup_users
from opencbs.store.schema import run_requests as run_table
from opencbs.store.sets import BackupSet

UTC = ZoneInfo("UTC")
T0 = 1_800_000_000_000


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@dataclass(frozen=True)
class Two:
    alice: int
    bob: int
    docs: BackupSet
    mail: BackupSet
    main: BackupSet


@pytest.fixture
def two(db: Database) -> Two:
    """alice with sets Docs and Mail, bob with set Main."""
    with db.write() as conn:
        alice = users.add_backup_user(conn, "alice", "alice-password")
        bob = users.add_backup_user(conn, "bob", "bob-password")
        docs = sets.add_set(conn, alice.id, "Docs")
        mail = sets.add_set(conn, alice.id, "Mail")
        main = sets.add_set(conn, bob.id, "Main")
    return Two(alice.id, bob.id, docs, mail, main)


def _remove(conn: Any, bset: BackupSet) -> None:
    conn.execute(update(backup_sets).where(backup_sets.c.id == bset.id).values(removed=True))


def _statuses(db: Database, set_id: int) -> list[str]:
    with db.read() as conn:
        rows = conn.execute(
            select(run_table.c.status).where(run_table.c.set_id == set_id).order_by(run_table.c.id)
        )
        return [r[0] for r in rows]


def test_one_pending_request_per_set(db: Database, two: Two) -> None:
    with db.write() as conn:
        first, made = run_requests.request(conn, two.docs, by="system", at_ms=T0)
        again, made_again = run_requests.request(conn, two.docs, by="other", at_ms=T0 + 5)
        other, made_other = run_requests.request(conn, two.mail, by="system", at_ms=T0)
    assert made and not made_again and made_other
    assert again == first and first.status is RequestStatus.PENDING
    assert (first.requested_by, first.requested_at, first.set_id) == ("system", T0, two.docs.id)
    assert other.id != first.id
    assert _statuses(db, two.docs.id) == ["PENDING"]
    with db.read() as conn:
        pending = run_requests.pending_for_user(conn, two.alice)
        assert [r.id for r in pending] == [first.id, other.id]
        assert run_requests.pending_for_user(conn, two.bob) == []
        assert run_requests.pending_user_ids(conn, [two.alice, two.bob]) == {two.alice}


def test_cancel(db: Database, two: Two) -> None:
    with db.write() as conn:
        assert run_requests.cancel(conn, two.docs) is None  # nothing pending: nothing to do
        made, _ = run_requests.request(conn, two.docs, by="system", at_ms=T0)
        cancelled = run_requests.cancel(conn, two.docs)
        assert cancelled is not None and cancelled.id == made.id
        assert cancelled.status is RequestStatus.CANCELLED
        assert run_requests.cancel(conn, two.docs) is None
        # a new request after a cancel is a new one
        again, fresh = run_requests.request(conn, two.docs, by="system", at_ms=T0 + 1)
        assert fresh and again.id != made.id
        with pytest.raises(Conflict, match="CANCELLED"):
            run_requests.take(conn, two.alice, made.id, at_ms=T0 + 2)
    assert _statuses(db, two.docs.id) == ["CANCELLED", "PENDING"]


def test_a_taken_request_cannot_be_cancelled(db: Database, two: Two) -> None:
    with db.write() as conn:
        made, _ = run_requests.request(conn, two.docs, by="system", at_ms=T0)
        taken = run_requests.take(conn, two.alice, str(made.id), at_ms=T0 + 3)
        assert (taken.status, taken.taken_at) == (RequestStatus.TAKEN, T0 + 3)
        assert run_requests.cancel(conn, two.docs) is None
        assert run_requests.get(conn, two.alice, made.id).status is RequestStatus.TAKEN
        with pytest.raises(Conflict, match="TAKEN"):
            run_requests.take(conn, two.alice, made.id, at_ms=T0 + 4)
        # taken: a new RunBackup makes a new pending request
        _, fresh = run_requests.request(conn, two.docs, by="system", at_ms=T0 + 5)
        assert fresh


def test_take_of_another_user_or_unknown_is_not_found(db: Database, two: Two) -> None:
    with db.write() as conn:
        made, _ = run_requests.request(conn, two.docs, by="system", at_ms=T0)
        for uid, rid in ((two.bob, made.id), (two.alice, made.id + 100), (two.alice, "x")):
            with pytest.raises(RunRequestNotFound):
                run_requests.take(conn, uid, rid, at_ms=T0)
    assert _statuses(db, two.docs.id) == ["PENDING"]


def test_removed_sets_requests_are_not_pending_for_the_agent(db: Database, two: Two) -> None:
    with db.write() as conn:
        run_requests.request(conn, two.docs, by="system", at_ms=T0)
        _remove(conn, two.docs)
        assert run_requests.pending_for_user(conn, two.alice) == []
        assert run_requests.pending_user_ids(conn, [two.alice]) == set()


def _race(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run the callables on threads at once; each one's result or exception."""
    out: list[Any] = [None] * len(workers)

    def run(i: int) -> None:
        try:
            out[i] = workers[i]()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_concurrent_takes_one_wins(db: Database, two: Two) -> None:
    with db.write() as conn:
        made, _ = run_requests.request(conn, two.docs, by="system", at_ms=T0)

    def take() -> Any:
        with db.write() as conn:
            return run_requests.take(conn, two.alice, made.id, at_ms=T0 + 1)

    results = _race([take] * 4)
    won = [r for r in results if isinstance(r, run_requests.RunRequest)]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(won) == 1 and len(lost) == 3, results
    assert _statuses(db, two.docs.id) == ["TAKEN"]


@pytest.mark.postgres
def test_concurrent_takes_after_both_read_pending(
    db: Database, two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two transactions on two connections both read the request as PENDING before either
    updates it: the compare-and-set still lets exactly one take it (PostgreSQL: the second
    UPDATE waits for the first's commit, then finds it TAKEN)."""
    if db.is_sqlite:
        pytest.skip("SQLite serialises write transactions: they cannot interleave")
    with db.write() as conn:
        made, _ = run_requests.request(conn, two.docs, by="system", at_ms=T0)
    both_read = threading.Barrier(2, timeout=20)
    first_get: set[int] = set()
    real_get = run_requests.get

    def get_then_wait(conn: Any, user_id: int, request_id: Any) -> Any:
        found = real_get(conn, user_id, request_id)
        me = threading.get_ident()
        if me not in first_get:
            first_get.add(me)
            assert found.status is RequestStatus.PENDING
            both_read.wait()
        return found

    monkeypatch.setattr(run_requests, "get", get_then_wait)

    def take() -> Any:
        with db.write() as conn:
            return run_requests.take(conn, two.alice, made.id, at_ms=T0 + 1)

    results = _race([take, take])
    won = [r for r in results if isinstance(r, run_requests.RunRequest)]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(won) == 1 and len(lost) == 1, results
    assert _statuses(db, two.docs.id) == ["TAKEN"]


def test_concurrent_requests_make_one(db: Database, two: Two) -> None:
    def ask() -> Any:
        with db.write() as conn:
            return run_requests.request(conn, two.docs, by="system", at_ms=T0)

    results = _race([ask] * 6)
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(1 for _, made in results if made) == 1
    assert len({r.id for r, _ in results}) == 1
    assert _statuses(db, two.docs.id) == ["PENDING"]


# --- the generation -------------------------------------------------------------------------


def _gens(db: Database, *user_ids: int, zone: str = "UTC") -> dict[int, str]:
    with db.read() as conn:
        return polls.generations(conn, user_ids, zone)


def test_generation_follows_sets_and_schedules(db: Database, two: Two) -> None:
    nightly = Schedule(name="Nightly", type=ScheduleType.DAILY, hour=22)
    with db.write() as conn:
        nobody = users.add_backup_user(conn, "carol", "carol-password")
    g0 = _gens(db, two.alice, two.bob, nobody.id)
    assert set(g0) == {two.alice, two.bob, nobody.id}
    assert len({g0[two.alice], g0[two.bob], g0[nobody.id]}) == 3
    assert all(len(g) == 16 for g in g0.values())
    assert _gens(db, two.alice) == {two.alice: g0[two.alice]}  # stable

    seen = [g0[two.alice]]

    def changed() -> str:
        now = _gens(db, two.alice)[two.alice]
        assert now not in seen
        seen.append(now)
        return now

    with db.write() as conn:
        row = schedules.add_schedule(conn, two.docs, nightly, zone=UTC, at_ms=T0)
    changed()
    with db.write() as conn:
        schedules.update_schedule(
            conn, two.docs, row.id, nightly.model_copy(update={"hour": 23}), zone=UTC, at_ms=T0 + 1
        )
    changed()
    with db.write() as conn:
        sets.update_set(conn, two.alice, two.mail.id, name="Mail archive")
    changed()
    with db.write() as conn:
        sets.update_set(conn, two.alice, two.mail.id, settings={"time_zone": "Europe/Berlin"})
    changed()
    # the server's zone counts for Docs, a set without a zone of its own
    assert _gens(db, two.alice, zone="Asia/Tokyo")[two.alice] not in seen
    with db.write() as conn:
        schedules.remove_schedule(conn, two.docs, row.id)
    changed()
    with db.write() as conn:
        _remove(conn, two.mail)
    changed()
    with db.write() as conn:
        sets.update_set(conn, two.alice, two.docs.id, settings={"sources": ["/srv"]})
    assert _gens(db, two.alice)[two.alice] == seen[-1]  # sources are the agent's own business
    assert _gens(db, two.bob)[two.bob] == g0[two.bob]


def test_last_seen_written_at_most_every_15_s(db: Database, two: Two) -> None:
    def stored() -> dict[int, int | None]:
        with db.read() as conn:
            rows = conn.execute(select(backup_users.c.id, backup_users.c.last_seen_ms))
            return {r[0]: r[1] for r in rows}

    assert stored()[two.alice] is None
    with db.write() as conn:
        polls.record_seen(conn, {two.alice: T0, two.bob: T0 + 1})
    assert stored() == {two.alice: T0, two.bob: T0 + 1}
    with db.write() as conn:
        polls.record_seen(conn, {two.alice: T0 + 14_999})
    assert stored()[two.alice] == T0
    with db.write() as conn:
        polls.record_seen(conn, {two.alice: T0 + 15_000, two.bob: T0 + 2})
    assert stored() == {two.alice: T0 + 15_000, two.bob: T0 + 1}
