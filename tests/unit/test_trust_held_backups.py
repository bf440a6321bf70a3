"""Which destination folders held a backup set's backups, as the agent's record of accepted
targets knows (``agent.trust.record_stored``, ``held_backups``; issue 12: an unmounted disk is
not silently made a new repository)."""

from __future__ import annotations

from pathlib import Path

from opencbs.agent.trust import (
    AcceptedSet,
    accepted_sets,
    held_backups,
    record,
    record_stored,
    trust_file,
)
from tests.unit.test_agent_trust import backup_check, remote_set

# -- folders that held backups (issue 12) -----------------------------------------------------


def test_held_backups_knows_the_folders_a_snapshot_was_stored_in(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/src"], {"7": "/dest"}))
    assert not held_backups(tmp_path, "100", Path("/dest"))  # accepted, nothing stored yet
    record_stored(tmp_path, "100", Path("/dest/../dest"))
    assert held_backups(tmp_path, "100", Path("/dest"))
    assert not held_backups(tmp_path, "100", Path("/other"))
    assert not held_backups(tmp_path, "999", Path("/dest"))
    record_stored(tmp_path, "999", Path("/dest"))  # a set not in the record: left out
    assert "999" not in accepted_sets(tmp_path)


def test_a_record_of_an_older_agent_counts_every_accepted_folder(tmp_path: Path) -> None:
    record(tmp_path, AcceptedSet("100", "docs", ("/src",), {"7": "/d7", "8": "/d8"}))
    assert "stored" not in trust_file(tmp_path).read_text()
    assert held_backups(tmp_path, "100", Path("/d8"))
    record_stored(tmp_path, "100", Path("/d9"))
    assert accepted_sets(tmp_path)["100"].stored == ("/d7", "/d8", "/d9")
