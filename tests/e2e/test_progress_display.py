"""The progress of ``opencbs backup`` and ``opencbs restore`` as a person sees it, the CLI run as
a real process against a real ``opencbs serve``.

On a pseudo-terminal (``pexpect``) of 80 and of 60 columns, its output fed to a ``pyte`` screen
of that size: no progress line ever reaches the last column (so none wraps), each shows human
sizes and file counts, a log line written while the bar is shown stands whole above it, no
trace of the bar is left, and the summary line gives sizes and a rate. Without a terminal
(pipes): a line every ``progress_interval`` seconds (``OPENCBS_PROGRESS_INTERVAL``, short
here), then the summary; ``--json`` keeps stdout the one JSON document and shows no progress.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pyte
import pytest

from tests.e2e.serving import (
    OPENCBS,
    TIMEOUT,
    add_user,
    agent_env,
    isolated_env,
    ok,
    run,
    serving,
)

LOGIN, PASSWORD, ENCRYPTION = "bob", "pw12345678", "repo-secret"
FILES, FILE_SIZE = 40, 4_000_000  # 160 MB: the job takes long enough to be seen
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SIZE = r"\d+(\.\d)? (bytes|byte|kB|MB|GB)"
RATE = r"\d+(\.\d)? (bytes|kB|MB|GB)/s"


@dataclass(frozen=True)
class Agent:
    env: dict[str, str]  # server URL, login and passwords
    source: Path  # FILES files of FILE_SIZE random bytes


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    root = tmp_path_factory.mktemp("progress")
    env = {k: v for k, v in isolated_env(root).items() if k not in ("COLUMNS", "LINES")}
    add_user(env, LOGIN, PASSWORD)
    source = root / "src"
    source.mkdir()
    for i in range(FILES):
        (source / f"f{i:02}.bin").write_bytes(os.urandom(FILE_SIZE))
    with serving(env) as srv:
        yield Agent(
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
            source,
        )


@dataclass(frozen=True)
class Screens:
    states: list[list[str]]  # the screen's rows after each piece of output
    final: list[str]
    status: int


def _on_terminal(env: dict[str, str], cols: int, *args: str) -> Screens:
    """Run ``opencbs ARGS`` on a pseudo-terminal of ``cols`` x 24; the screens it drew."""
    screen = pyte.Screen(cols, 24)
    stream = pyte.ByteStream(screen)
    env = {"COLUMNS": str(cols), **env}  # the terminal's, unless the test gives another
    child = pexpect.spawn(OPENCBS, list(args), env=env, dimensions=(24, cols), timeout=TIMEOUT)
    states = []
    while True:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=TIMEOUT))
        except pexpect.EOF:
            break
        states.append(list(screen.display))
    child.close()
    assert child.exitstatus is not None
    return Screens(states, list(screen.display), child.exitstatus)


def _live_rows(screens: Screens) -> list[str]:
    """Every progress row drawn (a row that starts with the spinner), as drawn."""
    return [row for state in screens.states for row in state if row[:1] in SPINNER and row[:1]]


def _check_terminal_run(screens: Screens, cols: int, title: str) -> list[str]:
    """What every run on a terminal must show; returns the progress rows seen."""
    assert screens.status == 0, "\n".join(screens.final)
    rows = _live_rows(screens)
    assert rows, "no progress line was drawn"
    for row in rows:
        # the last column stays free: a line that reached it would wrap on some terminals
        assert row[cols - 1] == " ", row
        assert row.startswith(f"{row[0]} {title}"), row
        assert "0/1 bytes" not in row and "?" not in row
    assert any(re.search(SIZE + r" / " + SIZE, row) for row in rows), rows
    final = "\n".join(screens.final)
    assert "━" not in final and not any(r[:1] in SPINNER and r[:1] for r in screens.final), final
    return rows


def test_backup_on_an_80_column_terminal(agent: Agent, tmp_path: Path) -> None:
    # a repository whose snapshot list is damaged: the job replaces it once it has committed
    # its snapshot, logging a WARNING while the bar is shown
    dest, small = tmp_path / "dest", tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("a")
    ok(agent.env, "backup", "--set", "small", "--source", str(small), "--destination", str(dest))
    (dest / "manifest").write_bytes(b"damaged")
    screens = _on_terminal(
        agent.env,
        80,
        "backup",
        "--set",
        "wide",
        "--source",
        str(agent.source),
        "--destination",
        str(dest),
    )
    rows = _check_terminal_run(screens, 80, "backup wide")
    # at 80 columns the bar and the file counts fit beside the sizes
    assert any("━" in row and re.search(r"\d+/\d+\+? files", row) for row in rows), rows
    final = "\n".join(row.rstrip() for row in screens.final)
    # a log line written while the bar was shown stands whole, above the summary
    logged = re.search(
        r"^opencbs: warning: replacing the damaged",
        final,
        re.MULTILINE,
    )
    assert logged is not None, final
    summary = re.search(
        rf"backup wide: done in \d+:\d\d: {FILES} files \(160\.0 MB\) read, {RATE}", final
    )
    assert summary is not None, final
    assert logged.start() < summary.start()
    # and so does the job's warning said at its start (not drawn into the bar's row)
    warned = re.search(r"^opencbs: warning: The destination's snapshot list", final, re.MULTILINE)
    assert warned is not None and warned.start() < summary.start(), final
    assert re.search(r"^job \S+: BS_STOP_SUCCESS", final, re.MULTILINE), final


def test_backup_and_restore_on_a_60_column_terminal(agent: Agent, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    args = ("--set", "narrow", "--source", str(agent.source), "--destination", str(dest))
    # an exported COLUMNS that is not the terminal's width (as after a resize) changes nothing
    env = {**agent.env, "COLUMNS": "100"}
    screens = _on_terminal(env, 60, "backup", *args)
    rows = _check_terminal_run(screens, 60, "backup narrow")
    assert any(re.search(r"\d+/\d+\+? files", row) for row in rows), rows
    summary = "".join(row.rstrip() + " " for row in screens.final)  # wrapped between words
    assert re.search(rf"backup narrow: done in \d+:\d\d: {FILES} files \(160\.0 MB\)", summary)

    target = tmp_path / "target"
    snapshots = json.loads(ok(agent.env, "snapshots", "--destination", str(dest), "--json"))
    job = snapshots[0]["job_id"]
    screens = _on_terminal(
        env, 60, "restore", job, "--destination", str(dest), "--target", str(target)
    )
    _check_terminal_run(screens, 60, "restore")
    summary = " ".join(row.strip() for row in screens.final if row.strip())
    assert re.search(
        rf"done in \d+:\d\d: {FILES} files, 1 directory, 0 links, 160\.0 MB restored, {RATE}",
        summary,
    ), summary


def test_backup_and_restore_without_a_terminal(agent: Agent, tmp_path: Path) -> None:
    env = {**agent.env, "OPENCBS_PROGRESS_INTERVAL": "0.05"}
    dest = tmp_path / "dest"
    res = run(
        env, "backup", "--set", "plain", "--source", str(agent.source), "--destination", str(dest)
    )
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stderr and "━" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("backup plain: ")]
    assert lines[0] == "backup plain: started"
    periodic = [x for x in lines[1:-1] if x.endswith(" elapsed") or ", ETA " in x]
    assert len(periodic) >= 2, res.stderr  # a line every 0.05 s of a job of 160 MB
    figures = re.compile(
        rf"backup plain: ({SIZE} of {SIZE}(\+ \(still counting\))?, \d+ of \d+\+? files?"
        rf"(, {RATE})?|counting), \d+:\d\d elapsed(, ETA \d+:\d\d)?$"
    )
    for line in periodic:
        assert figures.match(line), line
    assert any(" of " in line and "files" in line for line in periodic), periodic
    # the totals are counted ahead (engine.scan_count): the ETA shows before the job is done
    early = [x for x in periodic if ", ETA " in x and "still counting" not in x]
    assert any(not x.startswith("backup plain: 160.0 MB of") for x in early), periodic
    assert re.fullmatch(
        rf"backup plain: done in \d+:\d\d: {FILES} files \(160\.0 MB\) read, {RATE}", lines[-1]
    ), lines[-1]

    # an incremental job reads nothing: its files are counted unchanged, with their size
    again = run(env, "backup", "--set", "plain")
    assert again.returncode == 0, again.stderr
    assert re.search(
        rf"^backup plain: done in \d+:\d\d: 0 files \(0 bytes\) read; {FILES} files "
        r"\(160\.0 MB\) unchanged$",
        again.stderr,
        re.MULTILINE,
    ), again.stderr

    # --json: stdout is the one JSON document, and no progress is shown
    as_json = run(env, "backup", "--set", "plain", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["status"] == "BS_STOP_SUCCESS"
    assert "backup plain:" not in as_json.stderr

    target = tmp_path / "target"
    snapshots = json.loads(ok(env, "snapshots", "--destination", str(dest), "--json"))
    restored = run(
        env,
        "restore",
        snapshots[0]["job_id"],
        "--destination",
        str(dest),
        "--target",
        str(target),
    )
    assert restored.returncode == 0, restored.stderr
    title = f"restore {snapshots[0]['job_id']} into {target}"
    lines = restored.stderr.splitlines()
    assert lines[0] == f"{title}: started"
    assert re.fullmatch(
        rf"{re.escape(title)}: done in \d+:\d\d: {FILES} files, 1 directory, 0 links, "
        rf"160\.0 MB restored, {RATE}",
        lines[-1],
    ), lines[-1]
    for line in lines[1:-1]:
        assert re.fullmatch(
            rf"{re.escape(title)}: ({SIZE} of 160\.0 MB, \d+ of {FILES} files(, {RATE})?"
            rf"|counting), \d+:\d\d elapsed(, ETA \d+:\d\d)?",
            line,
        ), line
