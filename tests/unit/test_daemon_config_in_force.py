"""The unattended agent's jobs read the configuration in force (agent.daemon_state
.config_in_force), not the config file as edited since: a copy taken when the agent started or
a SIGHUP read the file without error."""

from __future__ import annotations

import stat
from pathlib import Path

from opencbs.agent.daemon_state import CONFIG_IN_FORCE, config_in_force


def test_the_copy_is_the_file_as_read_and_private(tmp_path: Path) -> None:
    source = tmp_path / "agent.toml"
    source.write_text('password = "secret"\n')
    copy = config_in_force(tmp_path / "spool", source)
    assert copy == tmp_path / "spool" / CONFIG_IN_FORCE
    assert copy.read_text() == 'password = "secret"\n'
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    source.write_text("bogus_key = 1\n")  # an edit without SIGHUP: the jobs keep the copy
    assert copy.read_text() == 'password = "secret"\n'
    assert config_in_force(tmp_path / "spool", source).read_text() == "bogus_key = 1\n"


def test_no_file_is_an_empty_configuration(tmp_path: Path) -> None:
    copy = config_in_force(tmp_path / "spool", tmp_path / "missing.toml")
    assert copy.read_bytes() == b""
