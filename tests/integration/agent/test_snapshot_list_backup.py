"""The snapshot list seen by the agent's backup job (``agent.backup``): a removed snapshot and a
rolled-back list are reported by the next backup (``warn`` entries in the job's report and in
its outcome's ``messages``, which the CLI says on stderr) and the job goes on; the agent
remembers the newest list in its data dir (``JobOptions.state_dir``), and the job after the
reporting one is clean.

SQLite only; the app is reached through the TestClient transport.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencbs.agent import AgentClient
from opencbs.agent.job import JobOutcome, run_backup
from opencbs.destinations.local import LocalStorage
from opencbs.engine.manifest import MANIFEST_NAME, load_anchor
from opencbs.engine.repository import Repository
from opencbs.engine.snapshot_format import snapshot_name
from opencbs.reports.vocabulary import JobStatus, LogType
from tests.agent_support import PASSWORD, T0, job_options, job_report, local_storage, new_set


def _backup(
    agent: AgentClient, ids: tuple[str, str], storage: LocalStorage, state: Path, n: int
) -> JobOutcome:
    options = job_options(agent, *ids, storage, start_time_ms=T0 + n * 60_000, state_dir=state)
    return run_backup(options)


def _warns(client: TestClient, outcome: JobOutcome) -> list[str]:
    data: dict[str, Any] = job_report(client, outcome)
    return [e["Message"] for e in data["Logs"] if e["Type"] == "warn"]


@pytest.fixture
def setup(agent: AgentClient, tmp_path: Path) -> tuple[tuple[str, str], LocalStorage, Path, Path]:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "agent-data"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    return new_set(agent, src, dest), local_storage(dest), state, src


def test_rollback_is_reported_by_the_next_backup_which_goes_on(
    agent: AgentClient,
    client: TestClient,
    setup: tuple[tuple[str, str], LocalStorage, Path, Path],
) -> None:
    ids, storage, state, src = setup
    first = _backup(agent, ids, storage, state, 1)
    assert first.status is JobStatus.STOP_SUCCESS and first.snapshot_id
    saved = {n: storage.get(n) for n in (MANIFEST_NAME, snapshot_name(first.snapshot_id))}
    (src / "b.txt").write_bytes(b"bravo")
    second = _backup(agent, ids, storage, state, 2)
    assert second.status is JobStatus.STOP_SUCCESS and second.snapshot_id
    repo_id = Repository.open(storage, PASSWORD).config.repo_id
    remembered = load_anchor(state, repo_id)
    assert remembered is not None and second.snapshot_id in remembered.snapshots
    # whoever holds the storage puts back the state after job 1
    storage.delete(snapshot_name(second.snapshot_id))
    for name, data in saved.items():
        storage.put(name, data)
    third = _backup(agent, ids, storage, state, 3)
    assert third.status is JobStatus.STOP_SUCCESS_WITH_WARNING and third.snapshot_id
    warns = _warns(client, third)
    assert any(
        "snapshot list: rolled back: generation 2 < 3 remembered by this agent" in w for w in warns
    ), warns
    assert any(f"snapshot {second.snapshot_id}: removed" in w for w in warns), warns
    # what the CLI says on stderr, once (opencbs: warning: …)
    assert any("rolled back" in m.text and m.type is LogType.WARN for m in third.messages)
    # the job's list supersedes the rolled-back one and is remembered: the next job is clean
    after = load_anchor(state, repo_id)
    assert after is not None and after.generation == 4
    fourth = _backup(agent, ids, storage, state, 4)
    assert fourth.status is JobStatus.STOP_SUCCESS, _warns(client, fourth)


def test_a_removed_snapshot_is_reported_without_any_remembered_state(
    agent: AgentClient,
    client: TestClient,
    setup: tuple[tuple[str, str], LocalStorage, Path, Path],
) -> None:
    ids, storage, state, _src = setup
    first = _backup(agent, ids, storage, state, 1)
    second = _backup(agent, ids, storage, state, 2)
    assert first.snapshot_id and second.snapshot_id
    shutil.rmtree(state)  # another machine, or a fresh data dir: the list alone shows it
    storage.delete(snapshot_name(first.snapshot_id))
    third = _backup(agent, ids, storage, state, 3)
    assert third.status is JobStatus.STOP_SUCCESS_WITH_WARNING
    warns = _warns(client, third)
    assert any(
        f"snapshot {first.snapshot_id}: removed: named by the snapshot list" in w for w in warns
    ), warns
