"""The first hour of a new user (issue 12), how the CLI words things: the real CLI as processes
against a real ``opencbs serve`` (on a pseudo-terminal with ``pexpect``, drawn by ``pyte``, where
the width or typing matters).

- Every error and hint is escaped: a newline, ESC or a bidi override from a name never reaches
  the terminal raw, nor does U+202E in a ``--verbose`` line.
- A backup's outcome fits 80 columns; the engine's INFO lines (snapshot committed, repository
  initialised) are gone, a new repository is said in one short note.
- quickstart says what it set up in short lines.
- ``snapshots`` on 80 columns: time to the minute on one row, an 8-character ID; piped tables
  carry no trailing spaces.
- Each thing said once: restore's counts (stderr), a damaged file (the error line alone).
- Hints that work: a wrong job ID, no backup user after quickstart, a rejected login, damaged
  data, a bad setting, the README's example.
- A password refused by the rule is asked again at a terminal; ``user list`` shows quotas in
  units, ``set list`` the destination's folder; ``backup --help`` says what ``--json`` prints.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pyte
import pytest

from tests.e2e.serving import OPENCBS, TIMEOUT, Serve, free_port, ok, run
from tests.e2e.serving import isolated_env as _env

LOGIN, PASSWORD, ENCRYPTION = "carol", "pw12345678", "repo-secret"
README = Path(__file__).resolve().parents[2] / "README.md"
RAW = ("\x1b", "\u202e")  # what must never reach the terminal raw


@dataclass(frozen=True)
class Agent:
    """A running server and the environment of backup user ``carol`` on it."""

    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    root = tmp_path_factory.mktemp("wording")
    env = _env(root)
    ok(env, "user", "add", LOGIN, "--password-stdin", stdin=PASSWORD + "\n")
    serve = Serve(env, free_port())
    serve.start()
    try:
        yield Agent(
            {
                **env,
                "OPENCBS_SERVER_URL": serve.url,
                "OPENCBS_LOGIN_NAME": LOGIN,
                "OPENCBS_PASSWORD": PASSWORD,
                "OPENCBS_ENCRYPTION_PASSWORD": ENCRYPTION,
            },
            root,
        )
    finally:
        serve.kill()


def _tree(src: Path) -> None:
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "sub" / "b.txt").write_text("world\n")


def _error(res: object) -> tuple[str, str]:
    """The error line and the hint line of a failed command (its last two stderr lines)."""
    lines = res.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert lines[-2].startswith("opencbs: error: "), lines
    assert lines[-1].startswith("hint: "), lines
    return lines[-2], lines[-1]


# --- escaping -------------------------------------------------------------------------------


def test_errors_and_hints_are_escaped(agent: Agent, tmp_path: Path) -> None:
    odd = "/tmp/no\nex\x1b[31mist\u202e"
    shown = "/tmp/no\\nex\\x1b[31mist\\u202e"
    res = run(agent.env, "backup", "--set", "NL", "--source", odd, "--destination", str(tmp_path))
    assert res.returncode == 2, res.stderr
    error, _ = _error(res)
    assert error.startswith(f"opencbs: error: source not found: {shown} ("), res.stderr
    assert not any(c in res.stderr for c in RAW), res.stderr

    res = run(agent.env, "set", "add", LOGIN, "odd", "--source", odd, "--destination", "/tmp/d")
    assert res.returncode == 2, res.stderr
    assert f"source not found: {shown}" in _error(res)[0]
    assert not any(c in res.stderr for c in RAW), res.stderr

    res = run(agent.env, "report", "--list", "--user", "a\x1b[31mb")
    assert res.returncode == 4, res.stderr
    assert _error(res)[0].endswith("User \u2018a\\x1b[31mb\u2019 not found."), res.stderr
    assert "\x1b" not in res.stderr


def test_verbose_lines_escape_bidi_overrides(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "invoice\u202etxt.exe").write_text("x")
    out = ok(
        agent.env,
        "backup",
        "--set",
        "bidi",
        "--source",
        str(src),
        "--destination",
        str(tmp_path / "d"),
        "--verbose",
    )
    assert f"{src}/invoice\\u202etxt.exe" in out, out
    assert "\u202e" not in out


# --- 80 columns -----------------------------------------------------------------------------


def test_a_backup_outcome_fits_80_columns_and_says_a_new_repository_once(
    agent: Agent, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "d"
    _tree(src)
    args = ("backup", "--set", "docs", "--source", str(src), "--destination", str(dest))
    res = run(agent.env, *args)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.fullmatch(r"job \d{4}(-\d\d){5}: BS_STOP_SUCCESS", lines[0]), lines
    assert re.fullmatch(r"set docs \(\d+\), destination Local \(\d+\)", lines[1]), lines
    assert lines[2].startswith("new 4  upd 0"), lines
    assert all(len(line) <= 80 for line in lines), lines
    # the engine's INFO lines are gone; a new repository is one short note
    assert "opencbs.engine" not in res.stderr, res.stderr
    assert res.stderr.count("created a new repository") == 1, res.stderr
    assert f"opencbs: created a new repository in {dest}\n" in res.stderr

    res = run(agent.env, *args[:3])  # again: the repository exists
    assert res.returncode == 0, res.stderr
    assert "created a new repository" not in res.stderr
    assert "opencbs.engine" not in res.stderr


def test_quickstart_says_what_it_set_up_in_short_lines(tmp_path: Path) -> None:
    env = _env(tmp_path / "root")
    src = tmp_path / "src"
    _tree(src)
    data = tmp_path / "root" / "data"
    res = run(env, "quickstart", "--no-serve", "--port", str(free_port()), str(src))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.search(rf"^backup set {re.escape(str(src))} \(ID \d+\)$", res.stdout, re.M), lines
    # the program as the shell finds it: `opencbs` when on PATH, else its path (.venv/bin/...)
    on_path = shutil.which("opencbs", path=env.get("PATH")) == OPENCBS
    program = "opencbs" if on_path else OPENCBS
    assert f"back it up again: {program} --config {data / 'agent.toml'} backup" in lines
    setup = lines[: lines.index("")]  # what it set up, before the job
    assert not any("`" in line or "names it" in line for line in setup), setup
    assert f"opencbs: created a new repository in {data / 'destinations'}" in res.stderr
    assert "INFO opencbs.engine" not in res.stderr


def _screen(env: dict[str, str], cols: int, *args: str) -> list[str]:
    """The rows ``opencbs ARGS`` leaves on a pseudo-terminal ``cols`` x 40."""
    screen = pyte.Screen(cols, 40)
    stream = pyte.ByteStream(screen)
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    child = pexpect.spawn(OPENCBS, list(args), env=env, dimensions=(40, cols), timeout=TIMEOUT)
    while True:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=TIMEOUT))
        except pexpect.EOF:
            break
    child.close()
    assert child.exitstatus == 0, "\n".join(screen.display)
    return [row.rstrip() for row in screen.display]


def test_snapshots_fit_80_columns_and_pipes_get_no_trailing_spaces(
    agent: Agent, tmp_path: Path
) -> None:
    src = tmp_path / "a-rather-long-folder-name-for-the-sources" / "of-this-backup-set"
    dest = tmp_path / "d"
    _tree(src)
    ok(agent.env, "backup", "--set", "wide", "--source", str(src), "--destination", str(dest))
    (snap,) = json.loads(ok(agent.env, "snapshots", "--destination", str(dest), "--json"))
    rows = _screen(agent.env, 80, "snapshots", "--destination", str(dest))
    (row,) = [r for r in rows if snap["id"][:8] in r]
    assert snap["id"][:9] not in row  # the short ID: 8 characters, as restic
    # below 100 columns the job ID stands for the time (the job's start, to the second)
    assert snap["job_id"] in row and "wide" in row and "Time" not in "".join(rows)
    assert all(len(r) <= 80 for r in rows)
    # a long set name (quickstart names a set after its folder) is cut; the sources still fold
    # in a readable column, never one character wide
    long_name = "a-set-named-after-a-long-folder-" + "x" * 40
    long_dest = tmp_path / "long"
    ok(agent.env, "backup", "--set", long_name, "--source", str(src), "--destination",
       str(long_dest))  # fmt: skip
    rows = _screen(agent.env, 80, "snapshots", "--destination", str(long_dest))
    assert any("│ a-set-named-after… │" in r for r in rows), rows
    assert all(len(r) <= 80 for r in rows) and any(r.rstrip().endswith("│") for r in rows[3:])
    header = next(r for r in rows if "Sources" in r)
    assert header.count("│") + header.count("┃") == 6, header
    wide = _screen(agent.env, 120, "snapshots", "--destination", str(dest))
    assert any(snap["time"][:16].replace("T", " ") in r for r in wide), wide  # to the minute

    piped = ok(agent.env, "snapshots", "--destination", str(dest))
    assert snap["id"][:8] in piped and str(src) in piped  # piped: never folded
    assert not any(line != line.rstrip() for line in piped.splitlines()), piped


# --- said once ------------------------------------------------------------------------------


def test_restore_says_its_counts_once(agent: Agent, tmp_path: Path) -> None:
    src, dest, target = tmp_path / "src", tmp_path / "d", tmp_path / "t"
    _tree(src)
    job = json.loads(
        ok(agent.env, "backup", "--set", "r", "--source", str(src), "--destination", str(dest),
           "--json")
    )  # fmt: skip
    res = run(agent.env, "restore", "latest", "--destination", str(dest), "--target", str(target))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"restored snapshot {job['snapshot_id']} into {target}\n"
    assert res.stderr.count("2 files") == 1, res.stderr  # the summary on stderr
    assert re.search(r": 2 files, 2 directories, 0 links, 12 bytes restored", res.stderr)


def test_a_damaged_file_is_said_once_with_a_verify_command(agent: Agent, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "d"
    _tree(src)
    (src / "r.bin").write_bytes(bytes(range(256)) * 40)
    ok(agent.env, "backup", "--set", "dmg", "--source", str(src), "--destination", str(dest))
    pack = max(
        (p for p in (dest / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))
    target = tmp_path / "t"
    res = run(agent.env, "restore", "latest", "--destination", str(dest), "--target", str(target))
    assert res.returncode == 8, res.stdout + res.stderr
    assert res.stderr.count(str(src / "r.bin")) == 1, res.stderr  # the error line alone
    assert "ERROR" not in res.stderr and "opencbs.agent.restore" not in res.stderr
    error, hint = _error(res)
    assert error.startswith(f"opencbs: error: Restore incomplete: {src / 'r.bin'} is damaged")
    assert f"`opencbs verify --destination {dest} --read-data`" in hint
    ok(agent.env, "snapshots", "--destination", str(dest))  # the command the hint names runs
    res = run(agent.env, "verify", "--destination", str(dest), "--read-data")
    assert res.returncode == 8 and "damaged:" in res.stdout  # and finds it


# --- hints ----------------------------------------------------------------------------------


def test_a_wrong_job_id_hints_commands_that_work(agent: Agent, tmp_path: Path) -> None:
    for name in ("one", "two"):  # several sets: `latest` alone would not do
        src = tmp_path / name
        _tree(src)
        ok(agent.env, "backup", "--set", name, "--source", str(src), "--destination",
           str(tmp_path / f"d-{name}"))  # fmt: skip
    res = run(agent.env, "report", "yesterday", "--user", LOGIN)
    assert res.returncode == 2, res.stderr
    _, hint = _error(res)
    listed = f"opencbs report --list --user {LOGIN}"
    latest = f"opencbs report latest --user {LOGIN} --set NAME"
    assert f"`{listed}`" in hint and f"`{latest}`" in hint, hint
    assert "two" in ok(agent.env, *listed.split()[1:])
    assert "two" in ok(agent.env, *latest.replace("NAME", "two").split()[1:])


def test_no_backup_user_names_the_agent_file_quickstart_wrote(tmp_path: Path) -> None:
    env = _env(tmp_path / "root")
    res = run(env, "backup")
    assert "--config" not in _error(res)[1]  # no agent file: not named
    written = tmp_path / "root" / "data" / "agent.toml"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text('[agent]\nlogin_name = "quickstart"\n')
    res = run(env, "backup")
    assert res.returncode == 2, res.stderr
    error, hint = _error(res)
    assert error == "opencbs: error: no backup user given"
    assert f"`opencbs --config {written} backup`" in hint, hint


def test_a_rejected_login_hints_the_lockout_without_saying_it(agent: Agent) -> None:
    res = run({**agent.env, "OPENCBS_PASSWORD": "not-the-password"}, "backup", "--set", "x")
    assert res.returncode == 3, res.stderr
    error, hint = _error(res)
    assert "(wrong login name or password)" in error and "locked" not in error
    assert "`opencbs lockout list`" in hint, hint


def test_a_bad_setting_names_where_its_value_came_from(tmp_path: Path) -> None:
    env = {**_env(tmp_path / "root"), "OPENCBS_PASSWORD_MIN_LENGTH": "3"}
    res = run(env, "user", "list")
    assert res.returncode == 2, res.stderr
    _, hint = _error(res)
    assert "OPENCBS_PASSWORD_MIN_LENGTH" in hint and "config.toml" not in hint, hint

    config = tmp_path / "c.toml"
    config.write_text("password_min_length = 3\n")
    res = run(_env(tmp_path / "root"), "--config", str(config), "user", "list")
    assert res.returncode == 2, res.stderr
    assert str(config) in _error(res)[1]


def test_the_readme_error_example_is_the_real_output(tmp_path: Path) -> None:
    text = README.read_text()
    block = re.search(r"e\.g\. for `opencbs (set list nobody)`\n\n```\n(.*?)```", text, re.S)
    assert block is not None
    res = run(_env(tmp_path / "root"), *block.group(1).split())
    assert res.stderr == block.group(2)


# --- smaller --------------------------------------------------------------------------------


def test_a_refused_password_is_asked_again_at_a_terminal(tmp_path: Path) -> None:
    env = _env(tmp_path / "root")
    child = pexpect.spawn(
        OPENCBS, ["user", "add", "dave"], env=env, encoding="utf-8", timeout=TIMEOUT
    )
    for typed in ("short", "short"):
        child.expect("Password: ")
        child.sendline(typed)
        child.expect("Repeat for confirmation: ")
        child.sendline(typed)
        child.expect("password too short: at least 8 characters")
        child.expect("hint: choose a password of 8 to ")
    child.expect("Password: ")
    child.sendline("long enough now")
    child.expect("Repeat for confirmation: ")
    child.sendline("long enough now")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    ok(env, "user", "list")
    # three refusals: the last is the command's error
    child = pexpect.spawn(OPENCBS, ["user", "add", "erin"], env=env, encoding="utf-8")
    for _ in range(3):
        child.expect("Password: ")
        child.sendline("x")
        child.expect("Repeat for confirmation: ")
        child.sendline("x")
    child.expect("opencbs: error: password too short")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "erin" not in ok(env, "user", "list")


def test_user_and_set_lists_speak_units_and_paths(agent: Agent, tmp_path: Path) -> None:
    env = agent.env
    ok(env, "user", "add", "frank", "--quota", "10000000000", "--password-stdin",
       stdin=PASSWORD + "\n")  # fmt: skip
    table = ok(env, "user", "list", "--search", "frank")
    assert "10.0 GB" in table and "10000000000" not in table, table
    (row,) = json.loads(ok(env, "user", "list", "--search", "frank", "--json"))
    assert row["Quota"] == 10_000_000_000  # JSON unchanged

    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    ok(env, "set", "add", "frank", "pics", "--source", str(src), "--destination", str(dest))
    assert f"Local (LOCAL): {dest}" in ok(env, "set", "list", "frank")


def test_backup_help_says_what_json_prints(tmp_path: Path) -> None:
    text = " ".join(ok(_env(tmp_path / "root"), "backup", "--help").split())
    assert "--json Print the job's outcome as one JSON object" in text, text
    assert "instead of a table" not in text


def test_agent_flush_says_a_dropped_report_once(tmp_path: Path) -> None:
    env = _env(tmp_path / "root")
    ok(env, "user", "add", LOGIN, "--password-stdin", stdin=PASSWORD + "\n")
    serve = Serve(env, free_port())
    serve.start()
    try:
        agent = {
            **env,
            "OPENCBS_SERVER_URL": serve.url,
            "OPENCBS_LOGIN_NAME": LOGIN,
            "OPENCBS_PASSWORD": PASSWORD,
            "OPENCBS_ENCRYPTION_PASSWORD": ENCRYPTION,
        }
        src = tmp_path / "src"
        _tree(src)
        args = ("--source", str(src), "--destination", str(tmp_path / "d"))
        ok(agent, "backup", "--set", "s", *args)
        serve.kill()
        ok(agent, "backup", "--set", "s")  # the server away: its report spooled
        spool = tmp_path / "root" / "data" / "agent-spool"
        (job,) = spool.glob("*/*/job.json")
        record = json.loads(job.read_text())
        job.write_text(json.dumps({**record, "destination_id": "1"}))  # a destination gone
        serve.start()
        res = run(agent, "agent", "flush")
    finally:
        serve.kill()
    assert res.returncode == 8, res.stdout + res.stderr
    (line,) = res.stdout.splitlines()
    assert line.startswith("dropped: ") and line.endswith("destination 1"), line
    assert "batch" not in res.stdout + res.stderr
    why = "the server no longer has this backup set or destination"
    assert (res.stdout + res.stderr).count(why) == 1, res.stdout + res.stderr
    job_name = line.removeprefix("dropped: ").split(" of backup set ")[0]
    assert f"opencbs: warning: the report of {job_name} was dropped: {why}" in res.stderr


def test_verbose_lines_stand_above_the_bar_on_a_terminal(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02}.bin").write_bytes(bytes([i]) * 2_000_000)
    screen = pyte.Screen(80, 200)
    stream = pyte.ByteStream(screen)
    env = {k: v for k, v in agent.env.items() if k not in ("COLUMNS", "LINES")}
    args = ["backup", "--set", "vb", "--source", str(src), "--destination", str(tmp_path / "d")]
    child = pexpect.spawn(OPENCBS, [*args, "--verbose"], env=env, dimensions=(200, 80))
    glued = []
    while True:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=TIMEOUT))
        except pexpect.EOF:
            break
        glued += [row for row in screen.display if "backup vb" in row and "new " in row]
    child.close()
    assert child.exitstatus == 0
    rows = [row.rstrip() for row in screen.display]
    # each change starts its own row (a long path wraps, between words): src and its 30 files
    assert len([row for row in rows if row == "new" or row.startswith("new /")]) == 31, rows
    assert glued == []  # none written into the bar's row
