"""The settings of opencbs: one table, four layers.

Precedence, lowest first: the defaults below < the config file (TOML) < the environment
(``OPENCBS_<NAME>``, e.g. ``OPENCBS_DATABASE_URL``) < command-line flags.

The config file is ``--config PATH``, else ``$OPENCBS_CONFIG``, else
``$XDG_CONFIG_HOME/opencbs/config.toml`` (``~/.config/opencbs/config.toml``). A file named
explicitly must exist; the default one is optional. Its keys are the setting names below, at the
top level (``port = 8530``) or under a ``[server]`` or ``[agent]`` table.

Settings (name: default — meaning):

- ``data_dir``: ``$XDG_DATA_HOME/opencbs`` (``~/.local/share/opencbs``) — the server's data.
- ``database_url``: ``""`` = ``sqlite:///<data_dir>/opencbs.db`` — SQLite or PostgreSQL URL.
- ``host``: ``127.0.0.1`` — address the server binds.
- ``port``: ``8530`` — TCP port the server binds.
- ``timezone``: ``""`` = the machine's zone — IANA zone of rendered times (cbs-api.md §4).
- ``job_idle_timeout``: ``3600`` — seconds without a sign of life after which a running job is
  closed as ``BS_BACKUP_NOT_FINISHED`` (cbs-api.md §4).
- ``job_heartbeat_timeout``: ``120`` — seconds without a heartbeat (or any other sign of life)
  after which a running job is closed as ``BS_BACKUP_NOT_FINISHED``: its agent was killed or lost
  (agents send one every quarter of it while a job runs; cbs-api.md §9, "The agent's
  heartbeat"). ``0`` turns it off, leaving ``job_idle_timeout`` (for agents older than the
  heartbeat); the smaller of the two applies.
- ``missed_backup_grace``: ``3600`` — seconds after a schedule's slot within which a backup job
  of its set must start; a slot without one is recorded as a ``BS_STOP_MISSED_BACKUP`` job
  (``store.missed``; cbs-api.md §13).
- ``write_timeout``: ``30`` — seconds a client may take nothing of its answer (its
  connection's send buffer full) before the connection is dropped; a streamed report's every
  chunk (64 KiB) likewise.
- ``agent_poll_interval``: ``60`` — seconds between an unattended agent's polls for its
  schedules and run requests (the poll tells agents; ``Online`` in ListUsers lasts
  2 × this + 30 s after a poll; cbs-api.md §14).
- ``max_long_polls``: ``500`` — agents' polls one server process holds waiting at once
  (long-poll, ``wait``); past it a poll answers at once. ``0``: no poll waits.
- ``log_level``: ``INFO`` — DEBUG, INFO, WARNING, ERROR or CRITICAL.
- ``lockout_failures``: ``5`` — wrong passwords for one account (system user or backup user,
  known or not) within ``lockout_window`` that lock it for ``lockout_seconds``.
- ``address_failures``: ``50`` — wrong passwords from one client address within
  ``lockout_window`` after which its new password checks are refused for ``lockout_seconds``.
- ``lockout_window``: ``900`` — seconds over which failures are counted.
- ``lockout_seconds``: ``900`` — seconds a lock lasts.
- ``max_concurrent_hashes``: ``0`` = sized to the machine — password verifications (argon2,
  19 MiB each) run at once; a login waiting longer than ``hash_wait_seconds`` for one is
  answered "try again later" (HTTP 429).
- ``hash_wait_seconds``: ``2`` — how long a login waits for a hashing slot.
- ``password_min_length``: ``8`` — characters a new password of a system user or backup user
  needs at least (8..128; ``model.passwords``: NIST SP 800-63B's minimum is the default and the
  floor). Applies when a password is set, not at login.

Settings of the server facing the network (``opencbs serve``; README "Running the server on the
internet"):

- ``header_timeout``: ``10`` — seconds a client has to send a request's line and headers (from
  its first byte, or from the connection); a slower client is disconnected (slowloris).
- ``body_timeout``: ``30`` — seconds the server waits for the next piece of a request's body
  while reading it; a body that stalls longer is dropped.
- ``keepalive_timeout``: ``5`` — seconds an idle keep-alive connection stays open.
- ``max_connections``: ``1000`` — open connections and running requests above which a new
  request is answered 503 at once (uvicorn ``limit_concurrency``).
- ``max_connections_per_address``: ``100`` — open connections one client address may hold
  (``trusted_proxies`` excepted); more are reset at once.
- ``tls_certificate`` / ``tls_key``: ``""`` — PEM files of the server's certificate (chain) and
  private key; both set: the server speaks HTTPS itself.
- ``trusted_proxies``: ``""`` — comma-separated addresses (or networks) of reverse proxies whose
  ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed (the client address, ``FromIp``);
  empty: none, the peer address is the client's.
- ``db_pool_size``: ``8``, ``db_max_overflow``: ``8`` — PostgreSQL connections one server
  process keeps open, and may open beyond that at peak (at most their sum per process).
- ``db_pool_timeout``: ``10`` — seconds a request waits for a free database connection before
  it is answered "database busy" (503-class ``StoreError``).

Settings of the agent (``opencbs backup``, ``restore``, ``verify``, ``snapshots``):

- ``server_url``: ``""`` = ``http://127.0.0.1:<port>`` — the server the agent reports to
  (``http://`` or ``https://``, a host, a port 1..65535 if any: checked when read).
- ``login_name``: ``""`` — the backup user (LoginName) the agent runs as.
- ``password``: ``""`` — that backup user's password (``OPENCBS_PASSWORD`` or the config file;
  never a command-line argument: ``--password-stdin`` or a prompt instead).
- ``encryption_password``: ``""`` — the password of the backup set's repository
  (``OPENCBS_ENCRYPTION_PASSWORD``, the config file, or ``--encryption-password-file``).
- ``ca_file``: ``""`` — PEM file of the certificate authorities the agent trusts for an
  ``https://`` server (a private CA); empty: the system's trusted authorities.
- ``progress_interval``: ``5`` — seconds between the progress lines of a backup or restore
  when standard error is not a terminal (``cli.progress``).
- ``backup_set``: ``""`` — the backup set (name or ID) an agent command uses when ``--set`` is
  not given (``opencbs quickstart`` writes the set of the folder it last backed up); empty: the
  user's only set.
- ``prune_grace``: ``86400`` — seconds a pack a prune condemned waits before it is deleted
  (``engine.prune``: longer than any backup may take; ``opencbs prune --grace`` overrides it).
- ``lock_wait``: ``600`` — seconds a backup, restore, verify, forget or prune waits for another
  process's lock on the repository (``engine.locks``) before it gives up.

Settings of the agent's S3 destinations (``s3://bucket/prefix``; issue 13). Credentials are the
agent's alone: never sent to or kept by the server. Without ``s3_access_key_id`` the standard
AWS chain is used: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``),
then the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE``, ``~/.aws/credentials``) with
the profile ``s3_profile`` (or ``AWS_PROFILE``).

- ``s3_endpoint``: ``""`` = AWS — the S3 server's URL when ``--s3-endpoint`` is not given
  (``http://127.0.0.1:8333``, ``https://s3.eu-central-1.wasabisys.com``).
- ``s3_region``: ``""`` = ``us-east-1`` — the signing region when ``--s3-region`` is not given.
- ``s3_access_key_id`` / ``s3_secret_access_key``: ``""`` — the S3 access key (the config
  file, mode 0600, or ``OPENCBS_S3_ACCESS_KEY_ID`` / ``OPENCBS_S3_SECRET_ACCESS_KEY``).
- ``s3_profile``: ``""`` — the profile of the shared credentials file to use.
- ``s3_retry_seconds``: ``60`` — how long one S3 operation is tried again when it fails
  transiently (the server unreachable or restarting, 5xx, throttling) before the job fails.

Settings of the server's alerts (cbs-api.md §15; README "Alerts"):

- ``smtp_host``: ``""`` — the SMTP server that sends alert emails; empty: email alerts fail
  ("email is not configured"), webhooks still work.
- ``smtp_port``: ``587`` — its port (465 for ``tls``, 25 for a local relay).
- ``smtp_security``: ``starttls`` — ``starttls`` (plain connection upgraded, certificate
  checked), ``tls`` (SMTPS from the first byte) or ``none`` (a trusted local relay only).
- ``smtp_user`` / ``smtp_password``: ``""`` — the login at the SMTP server, none when empty; the
  password is never logged or shown (``OPENCBS_SMTP_PASSWORD`` or the config file).
- ``alert_from``: ``""`` = ``opencbs@<host name>`` — the ``From`` address of alert emails.

Settings of the unattended agent (``opencbs agent run``; issue 16, README "Running the agent
unattended"):

- ``agent_poll_wait``: ``25`` — seconds the server may hold the agent's poll (long poll, 0..55).
- ``catch_up``: ``true`` — run a slot missed while the agent was off or the machine asleep once
  after start or wake (the newest missed slot only), when within ``catch_up_window``.
- ``catch_up_window``: ``86400`` — seconds after a missed slot within which it is caught up.
- ``schedule_jitter``: ``60`` — at most this many seconds of random delay before a slot's job.
- ``job_retry_delays``: ``60,300,900`` — seconds before each retry of a failed scheduled job
  (comma-separated; empty: no retry); never past the schedule's next slot or stop time.
- ``on_stop``: ``stop`` — what SIGTERM does to a running job: ``stop`` it (``BS_STOP_BY_USER``)
  or let it ``finish``.
- ``agent_log_file``: ``""`` = ``<data_dir>/agent.log`` (``-``: none) — the agent's log file,
  rotated at ``agent_log_max_bytes`` (``10485760``; 0: never) keeping ``agent_log_backups``
  (``5``) old files.

A config file holding passwords should be readable by its owner only (mode 0600).

Every invalid setting raises ``opencbs.errors.ConfigError`` naming the setting, with a hint.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from opencbs.errors import ConfigError
from opencbs.model.passwords import (
    DEFAULT_MIN_LENGTH,
    MIN_LENGTH_CEILING,
    MIN_LENGTH_FLOOR,
    PasswordRule,
)
from opencbs.reports.timefmt import local_zone

ENV_PREFIX = "OPENCBS_"
CONFIG_ENV = "OPENCBS_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The embedded SQLite database in ``data_dir`` when ``database_url`` is empty.
DEFAULT_DATABASE_FILE = "opencbs.db"
#: The login lockout's defaults (the settings ``lockout_failures``, ``address_failures``,
#: ``lockout_window`` and ``lockout_seconds``; seconds).
#: Longest a setting given in seconds may be (a year): far beyond any useful timeout or lock,
#: and within what epoch-ms arithmetic and the databases' integers hold.
MAX_SECONDS = 366 * 24 * 3600.0
#: Largest count a count setting (failures, connections, slots) may be.
MAX_COUNT = 1_000_000

DEFAULT_LOCKOUT_FAILURES = 5
DEFAULT_ADDRESS_FAILURES = 50
DEFAULT_LOCKOUT_WINDOW = 900.0
DEFAULT_LOCKOUT_SECONDS = 900.0
#: Seconds between progress lines off a terminal (the setting ``progress_interval``).
DEFAULT_PROGRESS_INTERVAL = 5.0


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path`` (``sqlite:///<path>``): the one rule,
    used for the default database and by ``opencbs.store.db``."""
    return f"sqlite:///{path}"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/opencbs``, or ``~/.local/share/opencbs`` when it is unset or empty."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opencbs"


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/opencbs/config.toml``, or ``~/.config/opencbs/config.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opencbs" / "config.toml"


class Settings(BaseSettings):
    """The settings table (see the module docstring). Build it with ``load_settings``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory of the server's data (the SQLite file).",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the database; empty: "
        "the SQLite file opencbs.db in data_dir.",
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(default=8530, ge=0, le=65535, description="TCP port to bind.")
    timezone: str = Field(
        default="",
        description="IANA time zone of rendered times; empty: the machine's (cbs-api.md §4).",
    )
    job_idle_timeout: float = Field(
        default=3600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds without a sign of life after which a running job is closed.",
    )
    job_heartbeat_timeout: float = Field(
        default=120.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds without a heartbeat after which a running job is closed; 0: off.",
    )
    missed_backup_grace: float = Field(
        default=3600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds after a scheduled slot within which a job must start, else missed.",
    )
    write_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds a client may take nothing of its answer before it is dropped.",
    )
    agent_poll_interval: float = Field(
        default=60.0,
        ge=1,
        le=86_400,
        description="Seconds between an unattended agent's polls for schedules and run requests.",
    )
    max_long_polls: int = Field(
        default=500,
        ge=0,
        le=MAX_COUNT,
        description="Agents' polls one server process holds waiting at once; 0: none waits.",
    )
    log_level: str = Field(default="INFO", description="Logging level.")
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds a client has to send a request's headers.",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds the server waits for the next piece of a body.",
    )
    keepalive_timeout: float = Field(
        default=5.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds an idle keep-alive connection stays open.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=MAX_COUNT,
        description="Connections and requests above which requests get 503.",
    )
    max_connections_per_address: int = Field(
        default=100,
        ge=1,
        le=MAX_COUNT,
        description="Open connections one client address may hold (trusted proxies excepted).",
    )
    tls_certificate: str = Field(
        default="", description="PEM certificate (chain) file; with tls_key: serve HTTPS."
    )
    tls_key: str = Field(default="", description="PEM private key file of tls_certificate.")
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated reverse-proxy addresses whose X-Forwarded-For is believed.",
    )
    db_pool_size: int = Field(
        default=8,
        ge=1,
        le=MAX_COUNT,
        description="PostgreSQL connections kept open per server process.",
    )
    db_max_overflow: int = Field(
        default=8,
        ge=0,
        le=MAX_COUNT,
        description="PostgreSQL connections opened beyond db_pool_size at peak.",
    )
    db_pool_timeout: float = Field(
        default=10.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds to wait for a free database connection.",
    )
    lockout_failures: int = Field(
        default=DEFAULT_LOCKOUT_FAILURES,
        ge=1,
        le=MAX_COUNT,
        description="Wrong passwords for one account within lockout_window that lock it.",
    )
    address_failures: int = Field(
        default=DEFAULT_ADDRESS_FAILURES,
        ge=1,
        le=MAX_COUNT,
        description="Wrong passwords from one client address within lockout_window after "
        "which its password checks are refused.",
    )
    lockout_window: float = Field(
        default=DEFAULT_LOCKOUT_WINDOW,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds over which failures count.",
    )
    lockout_seconds: float = Field(
        default=DEFAULT_LOCKOUT_SECONDS, gt=0, le=MAX_SECONDS, description="Seconds a lock lasts."
    )
    max_concurrent_hashes: int = Field(
        default=0,
        ge=0,
        le=MAX_COUNT,
        description="Password verifications at once (19 MiB each); 0: sized to the machine.",
    )
    hash_wait_seconds: float = Field(
        default=2.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds a login waits for a hashing slot before 'try again later'.",
    )
    password_min_length: int = Field(
        default=DEFAULT_MIN_LENGTH,
        ge=MIN_LENGTH_FLOOR,
        le=MIN_LENGTH_CEILING,
        description="Characters a new password of a system or backup user needs at least.",
    )
    server_url: str = Field(
        default="",
        description="URL of the server the agent reports to; empty: http://127.0.0.1:<port>.",
    )
    login_name: str = Field(default="", description="Backup user (LoginName) of the agent.")
    password: str = Field(default="", repr=False, description="Password of the backup user.")
    encryption_password: str = Field(
        default="", repr=False, description="Password of the backup set's repository (encryption)."
    )
    ca_file: str = Field(
        default="", description="PEM file of the authorities the agent trusts (https servers)."
    )
    progress_interval: float = Field(
        default=DEFAULT_PROGRESS_INTERVAL,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds between progress lines when stderr is not a terminal.",
    )

    backup_set: str = Field(
        default="", description="Backup set (name or ID) of agent commands without --set."
    )
    prune_grace: float = Field(
        default=86400.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds a pack a prune condemned waits before it is deleted.",
    )
    lock_wait: float = Field(
        default=600.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds to wait for another process's lock on a repository.",
    )
    s3_endpoint: str = Field(
        default="", description="URL of the S3 server of s3:// destinations; empty: AWS."
    )
    s3_region: str = Field(default="", description="Signing region of S3; empty: us-east-1.")
    s3_access_key_id: str = Field(default="", description="S3 access key ID of the agent.")
    s3_secret_access_key: str = Field(
        default="", repr=False, description="S3 secret access key of the agent."
    )
    s3_profile: str = Field(
        default="", description="Profile of the AWS shared credentials file to use for S3."
    )
    s3_retry_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="Seconds an S3 operation is tried again when it fails transiently.",
    )

    smtp_host: str = Field(
        default="", description="SMTP server of alert emails; empty: no email alerts."
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="Port of the SMTP server.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="SMTP connection security: starttls, tls or none."
    )
    smtp_user: str = Field(default="", description="Login at the SMTP server; empty: none.")
    smtp_password: str = Field(
        default="", repr=False, description="Password of smtp_user (never logged or shown)."
    )
    alert_from: str = Field(
        default="", description="From address of alert emails; empty: opencbs@<host name>."
    )
    agent_poll_wait: float = Field(
        default=25.0, ge=0, le=55, description="Seconds the server may hold the agent's poll."
    )
    catch_up: bool = Field(default=True, description="Run a slot missed while off or asleep.")
    catch_up_window: float = Field(
        default=86400.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds after a missed slot within which it is caught up.",
    )
    schedule_jitter: float = Field(
        default=60.0, ge=0, le=3600, description="Most seconds of random delay before a job."
    )
    job_retry_delays: str = Field(
        default="60,300,900", description="Seconds before each retry of a failed scheduled job."
    )
    on_stop: Literal["stop", "finish"] = Field(
        default="stop", description="What SIGTERM does to the agent's running job."
    )
    agent_log_file: str = Field(
        default="", description="The agent's log file; empty: data_dir/agent.log; -: none."
    )
    agent_log_max_bytes: int = Field(
        default=10_485_760, ge=0, le=2**40, description="Bytes at which the log is rotated."
    )
    agent_log_backups: int = Field(default=5, ge=0, le=1000, description="Rotated log files kept.")

    @field_validator("job_retry_delays")
    @classmethod
    def _delays(cls, value: str) -> str:
        retry_delays(value)  # ValueError when not a list of seconds
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        """An empty ``data_dir`` would be the current folder: refused (``ConfigError``)."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty; give a folder")
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        local_zone(value)  # ValueError for an unknown zone
        return value

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            check_server_url(value)
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(
                        f"{part!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                    ) from None
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the SQLite file ``opencbs.db`` in ``data_dir`` when empty."""
        if self.database_url:
            return self.database_url
        return sqlite_url(self.data_dir / DEFAULT_DATABASE_FILE)

    @property
    def effective_server_url(self) -> str:
        """``server_url``, or ``http://127.0.0.1:<port>`` (the local server) when empty."""
        if self.server_url:
            return self.server_url
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def uses_default_database(self) -> bool:
        """Whether the database is the embedded SQLite file in ``data_dir``."""
        return not self.database_url

    def password_rule(self) -> PasswordRule:
        """The rule a new password must meet (``model.passwords``, ``password_min_length``)."""
        return PasswordRule(self.password_min_length)

    def tz(self) -> tzinfo:
        """The time zone of rendered times (cbs-api.md §4)."""
        return local_zone(self.timezone)

    def ensure_data_dir(self) -> Path:
        """Create ``data_dir`` (mode 0700) if missing and return it. Raises ``ConfigError``."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the data directory {self.data_dir}: {exc.strerror}",
                "set data_dir to a writable directory",
            ) from exc
        return self.data_dir


SETTING_NAMES: tuple[str, ...] = tuple(Settings.model_fields)


def retry_delays(text: str) -> tuple[float, ...]:
    """The seconds of ``job_retry_delays`` (``"60,300,900"``; empty: none): at most 10, each
    1..86400. Raises ``ValueError``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > 10:
        raise ValueError("at most 10 retries")
    try:
        delays = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r}: give seconds separated by commas, e.g. 60,300,900") from None
    if any(not 1 <= d <= 86400 for d in delays):
        raise ValueError("each delay is 1..86400 seconds")
    return delays


def check_server_url(value: str) -> None:
    """Raise ``ValueError`` (its message says what is wrong) unless ``value`` is an ``http://``
    or ``https://`` URL with a host and, if any, a port 1..65535 (e.g. ``http://[::1]:8530``).
    Checked where the setting is read, so a malformed address is a setting error, never a
    failure of the first request (or, with nothing to send, no error at all)."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{value!r} holds spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", …
        raise ValueError(
            f"{value!r} is not a valid URL ({exc}); give http://HOST:PORT, e.g. http://[::1]:8530"
        ) from None
    if not parts.hostname:
        raise ValueError(f"{value!r} names no host (e.g. http://backup.example:8530)")
    if port == 0:
        raise ValueError(f"{value!r}: port 0 cannot be connected to (ports are 1..65535)")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: give the server's address only, without ? or #")


def config_path(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The config file to read and whether it was named explicitly (flag or environment)."""
    if explicit:
        return Path(explicit).expanduser(), True
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env).expanduser(), True
    return default_config_path(), False


def read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    """The settings of a TOML config file (top level, ``[server]`` or ``[agent]``).

    Raises ``ConfigError`` when a required file is missing, the file is not valid TOML, or it
    holds an unknown key."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        if not required:
            return {}
        raise ConfigError(
            f"config file {path} does not exist", f"create it, or unset --config / {CONFIG_ENV}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: {exc}", "see https://toml.io; e.g. port = 8530"
        ) from exc
    values: dict[str, Any] = {}
    for table in ("server", "agent"):
        if isinstance(doc.get(table), dict):
            values.update(doc.pop(table))
    values.update(doc)
    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} in config file {path}",
            f"known settings: {', '.join(SETTING_NAMES)}",
        )
    return values


def load_settings(
    flags: Mapping[str, Any] | None = None, *, config: str | os.PathLike[str] | None = None
) -> Settings:
    """The settings in force: defaults < config file < ``OPENCBS_*`` environment < ``flags``.

    ``flags`` maps setting names to values given on the command line; ``None`` values are
    ignored (flag not given). Raises ``ConfigError`` for an invalid setting or config file.
    """
    path, required = config_path(config)
    file_values = read_config_file(path, required=required)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(given) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))

    try:
        layered = _Layered(**given)
    except ValidationError as exc:
        raise _config_error(exc, path, given=given, file_values=file_values) from exc
    return Settings.model_construct(**layered.model_dump())


#: The command-line flag of each setting that has one (``opencbs.cli``); the others are set
#: by environment or config file only (``log_level``; the flag ``--debug`` logs at DEBUG).
FLAGS: dict[str, str] = {
    "data_dir": "--data-dir",
    "database_url": "--database-url",
    "host": "--host",
    "port": "--port",
    "timezone": "--timezone",
    "job_idle_timeout": "--job-idle-timeout",
    "server_url": "--server",
    "login_name": "--login",
    "password": "--password-stdin",
    "encryption_password": "--encryption-password-file",
    "header_timeout": "--header-timeout",
    "body_timeout": "--body-timeout",
    "keepalive_timeout": "--keepalive-timeout",
    "max_connections": "--max-connections",
    "max_connections_per_address": "--max-connections-per-address",
    "tls_certificate": "--tls-certificate",
    "tls_key": "--tls-key",
    "trusted_proxies": "--trusted-proxies",
    "ca_file": "--ca-file",
}


def setting_hint(name: str, path: Path | str, *, source: str = "") -> str:
    """Where setting ``name`` can come from, for a hint: its flag (``FLAGS``; none invented),
    ``OPENCBS_<NAME>`` and the config file ``path``; or, when ``source`` names where the bad
    value came from (``_value_source``), that place first, then the flag that overrides it."""
    flag = FLAGS.get(name)
    if source:
        overrides = [p for p in (flag, ENV_PREFIX + name.upper()) if p and p not in source]
        if name == "log_level":
            return (
                f"the value comes from {source}: correct it there (DEBUG, INFO, WARNING, "
                "ERROR or CRITICAL; the flag --debug logs at DEBUG)"
            )
        if not overrides or source.startswith("the flag"):
            return f"the value comes from {source}: correct it"
        return f"the value comes from {source}: correct it there, or give {overrides[0]}"
    if name == "log_level":
        return (
            f"check {ENV_PREFIX}LOG_LEVEL and log_level in the config file {path} (DEBUG, "
            "INFO, WARNING, ERROR or CRITICAL; the flag --debug logs at DEBUG)"
        )
    places = [flag] if flag else []
    return f"check {', '.join([*places, ENV_PREFIX + name.upper()])} and the config file {path}"


def _value_source(
    name: str, path: Path, given: Mapping[str, Any], file_values: Mapping[str, Any]
) -> str:
    """Where the value of setting ``name`` in force came from, by the layers' order (flags >
    environment > config file): ``the flag --x``, ``OPENCBS_X`` or ``NAME in the config file
    PATH``; ``""`` when none gave it."""
    if name in given:
        flag = FLAGS.get(name)
        return f"the flag {flag}" if flag else ""
    env = ENV_PREFIX + name.upper()
    if env in os.environ:
        return f"{env} (the environment)"
    if name in file_values:
        return f"{name} in the config file {path}"
    return ""


def _config_error(
    exc: ValidationError,
    path: Path,
    *,
    given: Mapping[str, Any],
    file_values: Mapping[str, Any],
) -> ConfigError:
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err.get("loc") else "?"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    source = _value_source(name, path, given, file_values)
    return ConfigError(f"invalid setting {name}: {msg}", setting_hint(name, path, source=source))
