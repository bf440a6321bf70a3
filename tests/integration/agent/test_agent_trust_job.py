"""A job re-reads its set from the server (``run_backup`` → ``agent.targets.backup_set``): a
server that answers with other sources the second time — after the command line checked the
first answer against what the agent accepted — is refused before the job starts, and nothing is
read or written (issue 11, finding 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencbs.agent import AgentClient
from opencbs.agent.job import run_backup
from opencbs.agent.targets import Target, accept_target
from opencbs.agent.trust import TargetChanged, accepted_sets
from opencbs.engine.repository import Repository
from opencbs.model.destinations import DestinationAddress
from tests.agent_support import PASSWORD, job_options, local_storage, new_set


def test_sources_changed_between_the_check_and_the_job(agent: AgentClient, tmp_path: Path) -> None:
    src, secret, spool = tmp_path / "src", tmp_path / "secret", tmp_path / "spool"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    secret.mkdir()
    (secret / "key").write_bytes(b"private")
    storage = local_storage(tmp_path / "dest")
    set_id, dest_id = new_set(agent, src, tmp_path / "dest")
    bset = agent.get_set(set_id)
    accept_target(
        spool, Target(bset, bset.destinations[0], DestinationAddress.local(tmp_path / "dest"))
    )
    assert accepted_sets(spool)[set_id].sources == (str(src),)

    # first answer checked; the server then answers differently
    agent.update_set(set_id, settings={"sources": [str(src), str(secret)]})
    with pytest.raises(TargetChanged, match="sources changed"):
        run_backup(job_options(agent, set_id, dest_id, storage, spool_dir=spool))
    assert Repository.open(storage, PASSWORD).list_snapshots() == []
    assert not [p for p in spool.iterdir() if p.is_dir()]  # no job spooled, none started

    # put back: the job runs
    agent.update_set(set_id, settings={"sources": [str(src)]})
    outcome = run_backup(job_options(agent, set_id, dest_id, storage, spool_dir=spool))
    assert outcome.snapshot_id is not None
