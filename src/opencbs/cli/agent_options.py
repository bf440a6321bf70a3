"""What the agent's commands share: the options naming the server, the backup user and the
encryption password, reading those passwords, and the settings a command runs with
(``with_agent_settings``). Used by ``backup``, ``restore``, ``verify``, ``snapshots`` and
``agent flush``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from opencbs.agent.storage import UPLOAD_JOURNAL, S3Access, open_storage
from opencbs.cli.common import CliState, NonEmptyPath, note, require_text_paths, show_name
from opencbs.destinations.base import DestinationError, Storage
from opencbs.engine.locks import LockTiming, RepositoryLocked
from opencbs.engine.repo_errors import RepositoryNotFound
from opencbs.engine.repository import Repository
from opencbs.errors import InvalidInput
from opencbs.model.destinations import DestinationAddress, is_s3_url, parse_destination
from opencbs.settings import SETTING_NAMES, Settings

__all__ = [
    "CA_FILE",
    "DESTINATION",
    "S3_ENDPOINT",
    "S3_REGION",
    "DestinationText",
    "ENCRYPTION_FILE",
    "LOGIN",
    "PASSWORD_STDIN",
    "SERVER",
    "backup_password",
    "chosen_set",
    "reading_lock",
    "destination_address",
    "encryption_password",
    "quiet_http_log",
    "report_spool_dir",
    "require_login",
    "s3_access",
    "with_agent_settings",
]

SERVER = click.option(
    "--server",
    "server_url",
    default=None,
    metavar="URL",
    help="Server URL [env OPENCBS_SERVER_URL; default http://127.0.0.1:<port>].",
)
LOGIN = click.option(
    "--login",
    "login_name",
    default=None,
    metavar="NAME",
    help="Backup user (LoginName) [env OPENCBS_LOGIN_NAME].",
)
CA_FILE = click.option(
    "--ca-file",
    "ca_file",
    default=None,
    metavar="PATH",
    help="PEM file of the CA(s) that signed an https:// server's certificate [env "
    "OPENCBS_CA_FILE; default: the system's trusted authorities].",
)
PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the backup user's password from the first line of stdin [else env "
    "OPENCBS_PASSWORD, the config file, or a prompt].",
)


ENCRYPTION_FILE = click.option(
    "--encryption-password-file",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="File whose first line is the repository's encryption password [else "
    "env OPENCBS_ENCRYPTION_PASSWORD, the config file, or a prompt].",
)


class DestinationText(click.ParamType):  # type: ignore[type-arg]
    """A destination as typed: a folder or ``s3://bucket/prefix`` (kept as text: a ``Path``
    would fold the ``//``); empty is refused (exit code 2), as for ``NonEmptyPath``."""

    name = "destination"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("must not be empty; give a folder or s3://BUCKET/PREFIX", param, ctx)
        return value


DESTINATION = click.option(
    "--destination",
    type=DestinationText(),
    default=None,
    metavar="PATH|s3://BUCKET/PREFIX",
    help="The destination (the repository): a folder, or an S3 bucket and prefix with "
    "--s3-endpoint.",
)
#: ``--destination`` where it is required: the repository a command works on directly.
REPOSITORY = click.option(
    "--destination",
    required=True,
    type=DestinationText(),
    metavar="PATH|s3://BUCKET/PREFIX",
    help="The destination (the repository): a folder, or an S3 bucket and prefix with "
    "--s3-endpoint.",
)
S3_ENDPOINT = click.option(
    "--s3-endpoint",
    "s3_endpoint",
    default=None,
    metavar="URL",
    help="URL of the S3 server of an s3:// destination [env OPENCBS_S3_ENDPOINT; default: AWS].",
)
S3_REGION = click.option(
    "--s3-region",
    "s3_region",
    default=None,
    metavar="REGION",
    help="Signing region of an s3:// destination [env OPENCBS_S3_REGION; default us-east-1].",
)


def destination_address(
    settings: Settings, text: str | None, *, option: str = "--destination"
) -> DestinationAddress | None:
    """The destination ``text`` names (``None`` for none): a folder, or an S3 location with
    the settings ``s3_endpoint`` and ``s3_region`` (``--s3-endpoint``/``--s3-region``). A
    folder that is not UTF-8 text is refused (``require_text_paths``). Raises
    ``InvalidInput`` naming ``option``."""
    if text is None:
        return None
    if not is_s3_url(text):
        require_text_paths((), text, destination_option=option)
        ctx = click.get_current_context(silent=True)
        flags = ctx.params if ctx is not None else {}
        # the flags (not the settings, which serve every s3:// destination) name S3 options
        return parse_destination(
            text, s3_endpoint=flags.get("s3_endpoint"), s3_region=flags.get("s3_region")
        )
    try:
        return parse_destination(
            text, s3_endpoint=settings.s3_endpoint, s3_region=settings.s3_region
        )
    except InvalidInput as exc:
        raise InvalidInput(f"{option}: {exc.message}", exc.hint) from None


def s3_access(settings: Settings) -> S3Access:
    """How this agent reaches S3 (``agent.storage.S3Access``): the access key of its settings
    (or the standard AWS chain), the profile, and the journal of open uploads in
    ``<data_dir>/s3-uploads``."""
    return S3Access(
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        profile=settings.s3_profile,
        journal_dir=settings.data_dir / UPLOAD_JOURNAL,
        retry_seconds=settings.s3_retry_seconds,
    )


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def with_agent_settings(*options: Decorator) -> Decorator:
    """Give a command ``options``; it receives the resolved ``Settings`` as first argument
    instead of the options named like settings (``server_url``, ``login_name``)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            state = click.get_current_context().find_object(CliState) or CliState()
            flags = {n: kwargs.pop(n) for n in list(kwargs) if n in SETTING_NAMES}
            settings = state.settings(flags)
            quiet_http_log(debug=state.debug)
            return f(settings, **kwargs)

        out: Callable[..., Any] = wrapper
        for opt in reversed(options):
            out = opt(out)
        return out

    return decorate


def quiet_http_log(*, debug: bool) -> None:
    """httpx logs every request at INFO; keep that for ``--debug``."""
    if not debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def backup_password(settings: Settings, *, from_stdin: bool) -> str:
    """The backup user's password: stdin (``--password-stdin``), else the setting
    ``password``, else typed at a terminal. Raises ``InvalidInput``."""
    if from_stdin:
        line = _first_line(sys.stdin.readline())
        if not line:
            raise InvalidInput(
                "no password on standard input",
                "pipe it in: printf '%s\\n' \"$PW\" | opencbs … --password-stdin",
            )
        return line
    if settings.password:
        return settings.password
    if sys.stdin.isatty():
        typed: str = click.prompt(f"Password of {settings.login_name}", hide_input=True)
        return typed
    raise InvalidInput(
        "no password for the backup user",
        "set OPENCBS_PASSWORD or password in the config file, or use --password-stdin",
    )


def encryption_password(settings: Settings, path: Path | None) -> str:
    """The repository's encryption password: the first line of ``path``
    (``--encryption-password-file``), else the setting ``encryption_password``, else typed at a
    terminal. Raises ``InvalidInput``."""
    if path is not None:
        try:
            line = _first_line(path.read_text(encoding="utf-8"))
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            raise InvalidInput(
                f"cannot read the encryption password file {show_name(str(path))}: {why}",
                "give a readable UTF-8 file with the password on its first line",
            ) from exc
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"the encryption password file {show_name(str(path))} is not UTF-8 text",
                "give a readable UTF-8 file with the password on its first line",
            ) from exc
        if not line:
            raise InvalidInput(
                f"the encryption password file {show_name(str(path))} is empty",
                "write the repository's encryption password on its first line "
                "(no blank line before it)",
            )
        return line
    if settings.encryption_password:
        return settings.encryption_password
    if sys.stdin.isatty():
        typed: str = click.prompt("Encryption password", hide_input=True)
        return typed
    raise InvalidInput(
        "no encryption password for the repository",
        "set OPENCBS_ENCRYPTION_PASSWORD or encryption_password in the config "
        "file, or use --encryption-password-file",
    )


def chosen_set(settings: Settings, set_ref: str | None) -> str | None:
    """The backup set a command names: ``--set`` (``set_ref``), else the setting
    ``backup_set`` (``opencbs quickstart`` writes it to its ``agent.toml``), else ``None`` (the
    user's only set)."""
    return set_ref or settings.backup_set or None


#: The agent config file ``opencbs quickstart`` writes in its data directory.
AGENT_FILE = "agent.toml"


def require_login(settings: Settings) -> str:
    """The backup user's login name; raises ``InvalidInput`` when none is set, its hint
    naming the agent config file quickstart wrote (``AGENT_FILE`` in the data directory)
    when there is one."""
    if not settings.login_name:
        hint = "use --login NAME, OPENCBS_LOGIN_NAME or login_name in the config file"
        written = settings.data_dir / AGENT_FILE
        if written.is_file():
            ctx = click.get_current_context(silent=True)
            words = (ctx.command_path if ctx is not None else "opencbs backup").split(" ", 1)
            again = " ".join(
                [words[0], "--config", shlex.quote(show_name(str(written))), *words[1:]]
            )
            hint += f"; quickstart wrote one: `{again}`"
        raise InvalidInput("no backup user given", hint)
    return settings.login_name


def report_spool_dir(settings: Settings, login: str) -> Path:
    """The report spool of backup user ``login`` on the server of ``settings``
    (``agent.spool.report_spool_dir``)."""
    from opencbs.agent import spool  # noqa: PLC0415 - the HTTP client only where needed

    return spool.report_spool_dir(settings.data_dir, settings.effective_server_url, login)


def open_existing_repository(
    settings: Settings, address: DestinationAddress, password: str, *, load_index: bool = True
) -> tuple[Storage, Repository]:
    """The storage and repository at ``address``: a folder, or an S3 location reached as the
    agent's settings say (``cli.agent_options.s3_access``); never created here. Raises
    ``RepositoryNotFound`` naming the destination as typed (escaped), ``WrongPassword``,
    ``DestinationError`` (an S3 server unreachable, credentials refused, a bucket missing)."""
    where = show_name(str(address))
    storage = open_storage(address, s3_access(settings))
    try:
        return storage, Repository.open(storage, password, load_index=load_index)
    except RepositoryNotFound:
        raise RepositoryNotFound(where) from None


def given_destination(settings: Settings, destination: str) -> DestinationAddress:
    """The ``--destination`` given (a folder or an S3 location), a folder checked to exist
    before a password is asked. Raises ``InvalidInput``, ``RepositoryNotFound``."""
    address = destination_address(settings, destination)
    assert address is not None
    if address.path is not None and not address.path.is_dir():
        raise RepositoryNotFound(show_name(str(address)))
    return address


def lock_timing(settings: Settings) -> LockTiming:
    """How long a command waits for another process's lock on a repository (``lock_wait``)."""
    return LockTiming(wait=settings.lock_wait)


@contextlib.contextmanager
def reading_lock(settings: Settings, repo: Repository, purpose: str) -> Iterator[None]:
    """A shared lock on ``repo`` while a restore or verify reads it (``engine.locks``: a
    prune does not delete meanwhile). A destination that cannot be written (a read-only
    mount or credentials) is read without one, said in a note. Raises ``RepositoryLocked``."""
    lock = repo.lock("shared", purpose, timing=lock_timing(settings))
    try:
        lock.acquire()
    except RepositoryLocked:
        raise
    except DestinationError as exc:
        note(f"opencbs: reading without a lock: the destination refuses it ({exc.message})")
        yield
        return
    try:
        yield
    finally:
        lock.release()
