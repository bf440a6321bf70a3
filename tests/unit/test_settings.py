"""Settings: defaults < config file < environment < flags; bad settings are ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencbs.errors import ConfigError
from opencbs.settings import load_settings


def _write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home() -> Path:
    return Path.home()  # the autouse fixture of conftest made it a temp directory


def test_defaults(home: Path) -> None:
    s = load_settings()
    assert s.data_dir == home / ".local" / "share" / "opencbs"
    assert s.effective_database_url == f"sqlite:///{s.data_dir / 'opencbs.db'}"
    assert s.uses_default_database
    assert (s.host, s.port, s.timezone, s.job_idle_timeout, s.log_level) == (
        "127.0.0.1",
        8530,
        "",
        3600.0,
        "INFO",
    )


def test_xdg_data_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings().data_dir == tmp_path / "xdg" / "opencbs"


def test_default_config_file_under_xdg_config_home(home: Path) -> None:
    _write_config(home / ".config" / "opencbs" / "config.toml", "port = 9001\n")
    assert load_settings().port == 9001


def test_config_file_beats_defaults_and_env_beats_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write_config(tmp_path / "c.toml", 'port = 9001\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    monkeypatch.setenv("OPENCBS_PORT", "9002")
    s = load_settings(config=cfg)
    assert s.port == 9002  # environment over file
    assert s.host == "0.0.0.0"  # file over default
    assert s.log_level == "DEBUG"


def test_flags_beat_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write_config(tmp_path / "c.toml", "port = 9001\njob_idle_timeout = 10\n")
    monkeypatch.setenv("OPENCBS_PORT", "9002")
    monkeypatch.setenv("OPENCBS_JOB_IDLE_TIMEOUT", "20")
    s = load_settings({"port": 9003, "job_idle_timeout": None}, config=cfg)
    assert s.port == 9003
    assert s.job_idle_timeout == 20.0  # a flag not given (None) does not count


def test_config_from_environment_and_server_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write_config(tmp_path / "c.toml", '[server]\ntimezone = "Europe/Berlin"\n')
    monkeypatch.setenv("OPENCBS_CONFIG", str(cfg))
    assert load_settings().timezone == "Europe/Berlin"


def test_database_url_follows_data_dir_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCBS_DATA_DIR", str(tmp_path / "d"))
    assert load_settings().effective_database_url == f"sqlite:///{tmp_path / 'd' / 'opencbs.db'}"
    monkeypatch.setenv("OPENCBS_DATABASE_URL", "postgresql://u@db/opencbs")
    s = load_settings()
    assert s.effective_database_url == "postgresql://u@db/opencbs"
    assert not s.uses_default_database


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OPENCBS_PORT": "eighty"}, "invalid setting port"),
        ({"OPENCBS_PORT": "70000"}, "invalid setting port"),
        ({"OPENCBS_TIMEZONE": "Mars/Olympus"}, "invalid setting timezone"),
        ({"OPENCBS_LOG_LEVEL": "loud"}, "invalid setting log_level"),
        ({"OPENCBS_JOB_IDLE_TIMEOUT": "0"}, "invalid setting job_idle_timeout"),
    ],
)
def test_bad_settings_are_config_errors_with_a_hint(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in info.value.message
    assert info.value.hint


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=tmp_path / "nope.toml")


def test_bad_toml_and_unknown_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config=_write_config(tmp_path / "a.toml", "port = \n"))
    with pytest.raises(ConfigError, match="unknown setting 'prot'") as info:
        load_settings(config=_write_config(tmp_path / "b.toml", "prot = 1\n"))
    assert "port" in info.value.hint


def test_agent_settings_from_the_agent_table_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write_config(
        tmp_path / "c.toml",
        'port = 9100\n[agent]\nlogin_name = "alice"\n'
        'password = "file-pw"\nencryption_password = "file-key"\n',
    )
    s = load_settings(config=cfg)
    assert (s.login_name, s.password, s.encryption_password) == ("alice", "file-pw", "file-key")
    assert s.effective_server_url == "http://127.0.0.1:9100"  # default follows the port
    assert "file-pw" not in repr(s) and "file-key" not in repr(s)
    monkeypatch.setenv("OPENCBS_PASSWORD", "env-pw")
    monkeypatch.setenv("OPENCBS_SERVER_URL", "http://backup.example:8080/")
    s = load_settings({"login_name": "bob"}, config=cfg)
    assert (s.login_name, s.password) == ("bob", "env-pw")
    assert s.effective_server_url == "http://backup.example:8080"


def test_server_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCBS_SERVER_URL", "backup.example:8080")
    with pytest.raises(ConfigError, match="invalid setting server_url"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://[::1]:99999", "Port out of range"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://backup:port", "not a valid URL"),
        ("http://backup:0", "port 0"),
        ("http://", "names no host"),
        ("https://:8530", "names no host"),
        ("http://back up:8530", "spaces or control characters"),
        ("http://backup\udcff:8530", "spaces or control characters"),
        ("http://backup:8530/?x=1", "without ? or #"),
    ],
)
def test_a_malformed_server_url_is_a_setting_error(
    url: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found where settings are read: never an httpx error at the first request (exit 70),
    # nor nothing at all when there is nothing to send (agent flush).
    with pytest.raises(ConfigError, match="invalid setting server_url") as info:
        load_settings({"server_url": url})
    assert why in info.value.message
    assert "--server" in info.value.hint
    monkeypatch.setenv("OPENCBS_SERVER_URL", url)  # the environment: the same check
    with pytest.raises(ConfigError, match="invalid setting server_url"):
        load_settings()


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8530",
        "https://backup.example",
        "http://h:1/cbs",
        "http://user@backup.example:65535/",
    ],
)
def test_well_formed_server_urls_pass(url: str) -> None:
    assert load_settings({"server_url": url}).server_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        ({"OPENCBS_LOG_LEVEL": "LOUD"}, ["OPENCBS_LOG_LEVEL", "--debug"], ["--log-level"]),
        ({"OPENCBS_SERVER_URL": "ftp://x"}, ["--server", "OPENCBS_SERVER_URL"], ["--server-url"]),
        ({"OPENCBS_PORT": "99999"}, ["--port", "OPENCBS_PORT"], []),
    ],
)
def test_hints_name_only_flags_that_exist(
    env: dict[str, str], named: list[str], not_named: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    for text in named:
        assert text in info.value.hint, info.value.hint
    for text in not_named:
        assert text not in info.value.hint, info.value.hint
