"""Server-initiated backups reach a long-polling agent within seconds, over real ``opencbs
serve`` processes (cbs-api.md §14): a ``RunBackup.do`` wakes the agent's poll waiting on the
same server; with two server processes on one PostgreSQL database, a ``RunBackup.do`` sent to
one wakes a poll waiting on the other (the watcher of each process reads the database); a
server stopped with SIGTERM answers its waiting polls at once instead of holding its stop.

Bounds are generous for a loaded 2-core machine: "within 3 s" of the request, where the poll
would otherwise wait 20 s.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    REQUIRE_POSTGRES,
    _drop_postgres_db,
    _new_postgres_db,
    _postgres_available,
)
from tests.e2e.serving import Served, add_sysuser, add_user, isolated_env, serving

ADMIN = ("admin", "admin-secret-1")
ALICE = ("alice", "alice-secret-1")
WAIT = 20  # seconds the poll would wait for news
WOKEN_WITHIN = 3.0  # seconds after the request that the poll must answer


def _make_set(url: str) -> str:
    r = httpx.post(
        f"{url}/api/agent/v1/backup-sets",
        auth=ALICE,
        json={"name": "Docs", "settings": {"sources": ["/srv/docs"]}},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    set_id: str = r.json()["id"]
    return set_id


def _poll(url: str, **query: Any) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/agent/v1/poll", params=query, auth=ALICE, timeout=WAIT + 30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


class LongPoll:
    """A poll with ``wait=WAIT`` on a thread of its own: its answer and when it came."""

    def __init__(self, url: str, generation: str) -> None:
        self.answer: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.answered_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(url, generation))
        self.started_at = time.monotonic()
        self._thread.start()

    def _run(self, url: str, generation: str) -> None:
        try:
            self.answer = _poll(url, generation=generation, wait=WAIT)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc
        self.answered_at = time.monotonic()

    def result(self) -> dict[str, Any]:
        self._thread.join(timeout=WAIT + 40)
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return self.answer


def _run_backup(url: str, set_id: str) -> float:
    """``RunBackup.do`` for alice's set; when it was answered (monotonic seconds)."""
    r = httpx.post(
        f"{url}/obs/api/json/RunBackup.do",
        json={
            "SysUser": ADMIN[0],
            "SysPwd": ADMIN[1],
            "LoginName": ALICE[0],
            "BackupSetID": set_id,
        },
        timeout=30,
    )
    assert r.json() == {"Status": "OK", "Data": []}
    return time.monotonic()


def _woken_by_run_backup(polled: Served, asked: Served) -> None:
    """A long-poll waiting on ``polled`` answers the ``RunBackup.do`` sent to ``asked`` within
    ``WOKEN_WITHIN`` seconds."""
    set_id = _make_set(asked.url)
    first = _poll(polled.url)
    assert [s["id"] for s in first["sets"]] == [set_id]
    waiting = LongPoll(polled.url, first["generation"])
    time.sleep(1.5)  # the poll waits in the server by now
    assert waiting.answer is None and waiting.error is None
    asked_at = _run_backup(asked.url, set_id)
    body = waiting.result()
    assert waiting.answered_at - asked_at < WOKEN_WITHIN, waiting.answered_at - asked_at
    assert body["waited"] is True and body["sets"] is None
    assert [r["set_id"] for r in body["run_requests"]] == [set_id]
    # the agent takes it; a second take (another agent, a retry) is refused
    take = f"{polled.url}/api/agent/v1/run-requests/{body['run_requests'][0]['id']}/take"
    assert httpx.post(take, auth=ALICE, timeout=30).json()["status"] == "TAKEN"
    assert httpx.post(take, auth=ALICE, timeout=30).status_code == 409


def _users(env: dict[str, str]) -> None:
    add_sysuser(env, *ADMIN)
    add_user(env, *ALICE)


def test_run_backup_wakes_a_long_poll(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    _users(env)
    with serving(env) as server:
        _woken_by_run_backup(server, server)


def test_sigterm_answers_a_waiting_poll(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    _users(env)
    with serving(env, stop=signal.SIGTERM) as server:
        _make_set(server.url)
        waiting = LongPoll(server.url, _poll(server.url)["generation"])
        time.sleep(1.5)
        stopped_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        body = waiting.result()
        assert waiting.answered_at - stopped_at < WOKEN_WITHIN
        assert body["waited"] is True and body["run_requests"] == []
        assert server.proc.wait(timeout=30) == 0


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards."""
    reason = _postgres_available()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(reason + " (OPENCBS_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    name, url = _new_postgres_db()
    try:
        yield url
    finally:
        _drop_postgres_db(name)


@pytest.mark.postgres
def test_run_backup_on_one_process_wakes_a_poll_on_another(
    tmp_path: Path, postgres_url: str
) -> None:
    env = isolated_env(tmp_path, OPENCBS_DATABASE_URL=postgres_url)
    _users(env)
    with serving(env) as one, serving(env) as other:
        _woken_by_run_backup(polled=other, asked=one)
