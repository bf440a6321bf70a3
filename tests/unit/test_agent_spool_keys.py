"""Per-user spool roots, spool errors as CLI errors, and job IDs that name several snapshots
(``agent.spool``, ``agent.restore.find_snapshot``, ``cli.backup_run``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from opencbs.agent.delivery import Delivery, DeliveryState
from opencbs.agent.job import JobOutcome
from opencbs.agent.restore import find_snapshot
from opencbs.agent.snapshot_lookup import AmbiguousJobId
from opencbs.agent.spool import (
    JobSpool,
    JobStart,
    SpoolError,
    normalise_server_url,
    spool_key,
    user_spool_root,
)
from opencbs.cli.backup_run import print_delivery_notes
from opencbs.engine.repo_errors import SnapshotNotFound
from opencbs.engine.repository import Repository
from opencbs.errors import OpenCBSError
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import JobStatus


@pytest.mark.parametrize(
    "spelling",
    ["http://Host.example:8530", "HTTP://host.example:8530/", " http://host.example:8530// "],
)
def test_one_server_url_one_key(spelling: str) -> None:
    assert normalise_server_url(spelling) == "http://host.example:8530"
    assert spool_key(spelling, "alice") == spool_key("http://host.example:8530", "alice")


def test_default_ports_are_left_out() -> None:
    assert normalise_server_url("https://h:443/cbs/") == "https://h/cbs"
    assert normalise_server_url("http://h:80") == "http://h"
    assert normalise_server_url("http://h:8080") == "http://h:8080"


def test_keys_differ_by_login_and_server_and_read_as_the_login() -> None:
    url = "http://127.0.0.1:8530"
    keys = {spool_key(url, "alice"), spool_key(url, "bob"), spool_key("http://other:8530", "alice")}
    assert len(keys) == 3
    assert spool_key(url, "alice").startswith("alice-")
    assert spool_key(url, "../evil/x").startswith("evil_x-")  # nothing outside the base
    assert user_spool_root(Path("/d/agent-spool"), url, "../evil/x").parent == Path(
        "/d/agent-spool"
    )
    assert len(spool_key(url, "a" * 200)) == 32 + 1 + 16


def test_a_spool_that_cannot_be_created_is_an_error_naming_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolError) as caught:
        JobSpool.create(blocker / "agent-spool" / "alice-0", JobStart("1", "2", 0))
    err = caught.value
    assert isinstance(err, OpenCBSError) and err.exit_code == 7
    assert "cannot create the report spool" in err.message
    assert "data_dir" in err.hint and "OPENCBS_DATA_DIR" in err.hint


def test_a_job_never_started_on_the_server_is_named_by_its_start() -> None:
    started = Delivery("f", "1", "2", "2024-06-26-13-24-35", DeliveryState.DROPPED)
    assert started.job_name == "job 2024-06-26-13-24-35"
    offline = Delivery("f", "1", "2", None, DeliveryState.DROPPED, start_ms=1_719_408_275_123)
    assert "None" not in offline.job_name and offline.job_name.startswith("the offline job of ")


def _snapshot(snapshot_id: str, job_id: str, set_id: str = "1") -> SimpleNamespace:
    meta = SimpleNamespace(job_id=job_id, set_id=set_id, destination_id="2")
    return SimpleNamespace(id=snapshot_id, meta=meta)


class _Repo:
    def __init__(self, infos: list[SimpleNamespace]) -> None:
        self.infos = infos

    def list_snapshots(self) -> list[SimpleNamespace]:
        return self.infos

    def snapshot_info(self, snapshot_id: str) -> SimpleNamespace:
        for i in self.infos:
            if i.id == snapshot_id:
                return i
        raise SnapshotNotFound(snapshot_id)


A, B, C = "a" * 64, "b" * 64, "c" * 64
JOB = "2026-11-29-21-54-26"


def test_a_job_id_of_two_snapshots_is_refused_naming_both() -> None:
    repo = cast(
        Repository,
        _Repo([_snapshot(A, JOB), _snapshot(B, JOB), _snapshot(C, "2026-11-29-21-54-27")]),
    )
    with pytest.raises(AmbiguousJobId) as caught:
        find_snapshot(repo, JOB)
    err = caught.value
    assert err.exit_code == 2
    assert A[:16] in err.message and B[:16] in err.message and C[:16] not in err.message
    assert "snapshot ID" in err.hint
    # a snapshot ID still names one; so does the job ID of one snapshot
    assert find_snapshot(repo, A).id == A
    assert find_snapshot(repo, "2026-11-29-21-54-27").id == C


def test_a_set_filter_can_make_a_job_id_unique() -> None:
    repo = cast(Repository, _Repo([_snapshot(A, JOB, "1"), _snapshot(B, JOB, "9")]))
    assert find_snapshot(repo, JOB, set_id="9").id == B


def test_a_lost_report_is_an_error_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = JobOutcome(
        JobRef("1", "2", JOB),
        JobStatus.STOP_SUCCESS,
        A,
        report_delivered=False,
        report_spool="/d/agent-spool/x/f",
        report_error="the job report could not be spooled on the agent (…); "
        "the report from batch 2 on is lost",
        report_lost=True,
    )
    print_delivery_notes(outcome)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("opencbs: error: the job report could not be spooled")
    assert err[1].startswith("hint: free space in the agent's data_dir (OPENCBS_DATA_DIR)")
    assert not any("report spooled, not delivered" in line for line in err)
