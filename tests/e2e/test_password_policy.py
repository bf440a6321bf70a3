"""The password rule (``model.passwords``) through the real command line: ``sysuser add``,
``sysuser passwd`` and ``user add`` refuse a short password, a password that is the user's name
and a stricter setting's short one with exit code 2 and one error line naming the rule; a
generated password meets the rule; a password stored before a stricter setting still logs in
to a real ``opencbs serve`` (the rule applies when a password is set, not at login)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from tests.e2e.serving import add_sysuser, add_user, isolated_env, ok, run, serving

SHORT = "password too short: at least 8 characters (setting password_min_length"


def _refused(res: subprocess.CompletedProcess[str], text: str) -> None:
    """Exit code 2, one ``opencbs: error:`` line holding ``text``, then one hint line."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("opencbs: error: ") and text in lines[0], res.stderr
    assert lines[1].startswith("hint: "), res.stderr


def test_short_passwords_and_the_name_are_refused_for_every_kind_of_user(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    pw = "--password-stdin"
    _refused(run(env, "sysuser", "add", "eve", "--role", "ADMIN", pw, stdin="x\n"), SHORT)
    _refused(run(env, "sysuser", "add", "eve", pw, stdin="1234567\n"), SHORT)
    _refused(run(env, "user", "add", "bob", pw, stdin="x\n"), SHORT)
    _refused(run(env, "sysuser", "add", "Administrator", pw, stdin="aDMINISTRATOR\n"), "name")
    _refused(run(env, "user", "add", "bob-the-user", pw, stdin="BOB-THE-USER\n"), "name")
    assert "eve" not in ok(env, "sysuser", "list")  # nothing was stored
    assert "bob" not in ok(env, "user", "list")
    # eight characters is enough, and a passphrase may hold the name
    ok(env, "sysuser", "add", "eve", pw, stdin="12345678\n")
    ok(env, "user", "add", "bob", pw, stdin="bob likes long walks\n")
    _refused(run(env, "sysuser", "passwd", "eve", pw, stdin="short\n"), SHORT)
    _refused(run(env, "sysuser", "passwd", "eve", pw, stdin="EVE\n"), SHORT)
    _refused(run(env, "sysuser", "passwd", "eve", pw, stdin="x" * 1025 + "\n"), "too long")
    ok(env, "sysuser", "passwd", "eve", pw, stdin="x" * 1024 + "\n")


def test_a_stricter_setting_names_itself_and_is_bounded(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, OPENCBS_PASSWORD_MIN_LENGTH="12")
    pw = "--password-stdin"
    _refused(
        run(env, "user", "add", "bob", pw, stdin="eleven-char\n"),
        "password too short: at least 12 characters (setting password_min_length, "
        "env OPENCBS_PASSWORD_MIN_LENGTH); it has 11",
    )
    ok(env, "user", "add", "bob", pw, stdin="twelve-chars\n")
    # a generated password (stdin not a terminal, nothing piped) meets the setting
    strict = {**env, "OPENCBS_PASSWORD_MIN_LENGTH": "40"}
    generated = ok(strict, "sysuser", "add", "robot").strip()
    assert len(generated) == 40
    # the setting cannot make the rule weaker than the default
    res = run({**env, "OPENCBS_PASSWORD_MIN_LENGTH": "4"}, "user", "add", "carol", pw, stdin="x\n")
    _refused(res, "invalid setting password_min_length")


def test_passwd_of_an_unknown_system_user_is_not_found(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    # asked before any password is read: no stdin, no prompt
    res = run(env, "sysuser", "passwd", "ghost")
    assert res.returncode == 4, res.stderr
    assert res.stderr.splitlines()[0] == "opencbs: error: no system user 'ghost'"
    assert res.stderr.splitlines()[1] == "hint: see `opencbs sysuser list`"


def test_a_password_set_before_a_stricter_setting_still_logs_in(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    add_sysuser(env, "ops", "eight-ch")
    add_user(env, "alice", "alice-pw")
    strict = {**env, "OPENCBS_PASSWORD_MIN_LENGTH": "20"}
    with serving(strict, stop=signal.SIGTERM) as srv:
        body = {"SysUser": "ops", "SysPwd": "eight-ch", "LoginName": "alice"}
        r = httpx.post(f"{srv.url}/obs/api/json/AuthUser.do", json={**body, "Password": "alice-pw"})
        assert r.json() == {"Status": "OK"}
    assert srv.proc.returncode == 0  # SIGTERM: the normal end of a server
    # and a new one under the stricter setting is refused
    _refused(
        run(strict, "sysuser", "passwd", "ops", "--password-stdin", stdin="eight-ch\n"),
        "at least 20 characters",
    )
