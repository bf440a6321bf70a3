"""An empty path on the command line is refused (exit code 2, naming the option), never taken
for the current folder: ``--source ''`` must not back up, nor ``--destination ''`` write into,
whatever folder the command runs in."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencbs.cli.main import main
from opencbs.errors import ExitCode


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["backup", "--set", "X", "--source", "", "--destination", "/nonexistent/d"], "--source"),
        (
            ["backup", "--set", "X", "--source", "/nonexistent/s", "--destination", ""],
            "--destination",
        ),
        (["backup", "--set", "X", "--add-destination", " "], "--add-destination"),
        (["set", "add", "alice", "S", "--source", "", "--destination", "/x"], "--source"),
        (["set", "add", "alice", "S", "--source", "/x", "--destination", ""], "--destination"),
        (["user", "list", "--data-dir", ""], "--data-dir"),
        (["verify", "--destination", ""], "--destination"),
        (["snapshots", "--destination", ""], "--destination"),
        (["restore", "J", "--destination", "", "--target", "/nonexistent/t"], "--destination"),
    ],
)
def test_an_empty_path_is_refused(
    argv: list[str],
    option: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("OPENCBS_DATA_DIR", str(tmp_path / "data"))
    assert main(argv) == ExitCode.INVALID
    err = capsys.readouterr().err
    assert f"'{option}': must not be empty" in err
    assert list(here.iterdir()) == []  # nothing created where the command ran


def test_an_empty_data_dir_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("OPENCBS_DATA_DIR", "")
    assert main(["user", "list"]) == ExitCode.INVALID
    assert "invalid setting data_dir: must not be empty" in capsys.readouterr().err
    assert list(here.iterdir()) == []
