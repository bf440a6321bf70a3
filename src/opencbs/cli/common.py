"""What the commands share: settings options, opening the database, passwords and output."""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from opencbs.errors import InvalidInput
from opencbs.settings import SETTING_NAMES, Settings, load_settings

if TYPE_CHECKING:  # imported when used: the agent's commands never load SQLAlchemy or Alembic
    from opencbs.store.db import Database

log = logging.getLogger("opencbs.cli")


@dataclass
class CliState:
    """Options of the ``opencbs`` group: the config file and ``--debug``."""

    config: str | None = None
    debug: bool = False

    def settings(self, flags: dict[str, Any]) -> Settings:
        """The settings in force with ``flags`` (defaults < file < environment < flags)."""
        settings = load_settings(flags, config=self.config)
        configure_logging("DEBUG" if self.debug else settings.log_level)
        return settings


class SafeFormatter(logging.Formatter):
    """A formatter whose messages have their control characters escaped (``show_name``):
    log lines name files, and a name must not reach the terminal raw."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = show_name(record.message)
        return super().formatMessage(record)


class CliFormatter(SafeFormatter):
    """A library's log record as the commands say their own warnings: ``opencbs: warning:
    TEXT`` (``opencbs: error: TEXT``, ``opencbs: info: TEXT``), one line, without the time,
    the logger's name or a traceback; those are for ``--debug`` (``RECORD_FORMAT``)."""

    def __init__(self) -> None:
        super().__init__("opencbs: %(levelname)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = show_name(record.message)
        return f"opencbs: {record.levelname.lower()}: {record.message}"

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return ""  # a traceback only with --debug

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return ""


#: The format of a log record with ``--debug`` (or a log level of DEBUG).
RECORD_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` on whatever ``sys.stderr`` is when a record is written, not the one
    it was made with: while a progress bar is shown (``cli.progress``), rich's live display
    stands in for ``sys.stderr`` and prints each log line above the bar, which it then redraws
    below (a handler bound to the real stream would write through the bar)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(level: str) -> None:
    """Log records of ``level`` and above to stderr, one line each (above a progress bar when
    one is shown: ``_StderrHandler``): as ``opencbs: warning: TEXT`` (``CliFormatter``), or
    with time, level and logger (``RECORD_FORMAT``, tracebacks included) at level DEBUG and
    once :func:`log_full_records` was called."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_opencbs", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler._opencbs = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    full = getattr(handler, "_full", False) or str(level).upper() == "DEBUG"
    handler.setFormatter(SafeFormatter(RECORD_FORMAT) if full else CliFormatter())
    root.setLevel(level)
    # Alembic says "Context impl SQLiteImpl." at INFO on every run; only useful when debugging.
    logging.getLogger("alembic").setLevel(level if level == "DEBUG" else "WARNING")


def log_full_records() -> None:
    """From now on, log records with time, level and logger (``RECORD_FORMAT``): a server's
    log (``cli.serve.serve_database``), read later, not a command's lines."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_opencbs", False):
            handler._full = True  # type: ignore[attr-defined]
            handler.setFormatter(SafeFormatter(RECORD_FORMAT))


class NonEmptyPath(click.Path):
    """``click.Path`` that refuses an empty value: ``Path("")`` is the current folder, and a
    ``--source ''`` or ``--destination ''`` must not back up, or write into, whatever folder the
    command happens to run in (exit code 2, naming the option)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            what = "the path of a file" if not self.dir_okay else "a path"
            self.fail(f"must not be empty; give {what}", param, ctx)
        return super().convert(value, param, ctx)


DATA_DIR = click.option(
    "--data-dir",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=None,
    help="Data directory [env OPENCBS_DATA_DIR; default ~/.local/share/opencbs].",
)
DATABASE_URL = click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="sqlite:///PATH or postgresql://USER@HOST/DB [env OPENCBS_DATABASE_URL; default: "
    "opencbs.db in the data directory].",
)
TIMEZONE = click.option(
    "--timezone",
    default=None,
    metavar="ZONE",
    help="IANA time zone of rendered times [env OPENCBS_TIMEZONE; default: the machine's].",
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def with_settings(*options: Decorator) -> Decorator:
    """Give a command ``--data-dir``, ``--database-url`` and ``options``; the command receives
    the resolved ``Settings`` as its first argument instead of those flags."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            state = click.get_current_context().find_object(CliState) or CliState()
            flags = {n: kwargs.pop(n) for n in list(kwargs) if n in SETTING_NAMES}
            return f(state.settings(flags), **kwargs)

        out: Callable[..., Any] = wrapper
        for opt in reversed((DATA_DIR, DATABASE_URL, *options)):
            out = opt(out)  # type: ignore[arg-type,assignment]
        return out

    return decorate


def open_database(settings: Settings) -> Database:
    """The database of ``settings``, its schema upgraded to this version's (the embedded SQLite
    default: its data directory created first)."""
    if settings.uses_default_database:
        settings.ensure_data_dir()
    from opencbs.store.db import Database  # noqa: PLC0415
    from opencbs.store.migrate import upgrade  # noqa: PLC0415

    db = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )
    upgrade(db)
    return db


# --- passwords ---------------------------------------------------------------------------


PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input.",
)


#: How many times a password refused by its rule is asked for again at a terminal.
PASSWORD_TRIES = 3


def read_password(
    *,
    from_stdin: bool,
    prompt: str = "Password",
    generate: bool = False,
    check: Callable[[str], None] | None = None,
) -> tuple[str, bool]:
    """A password: the first line of stdin, or typed twice at a terminal, or (``generate``,
    when stdin is not a terminal) a new random one. Returns ``(password, generated)``.

    At a terminal, a password that ``check`` refuses (it raises ``InvalidInput``: the password
    rule, ``model.passwords.PasswordRule.check``) is said with the rule's message and asked
    for again, ``PASSWORD_TRIES`` times in all; the last refusal is raised. Raises
    ``InvalidInput`` when none can be had. Never from the command line (it would show in the
    process list and the shell history)."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise InvalidInput(
                "no password on standard input",
                "pipe it in: printf '%s\\n' \"$PW\" | opencbs … --password-stdin",
            )
        return line, False
    if sys.stdin.isatty():
        return _typed_password(prompt, check), False
    if generate:
        return generate_password(), True
    raise InvalidInput(
        "no password given and standard input is not a terminal",
        "use --password-stdin and pipe the password in",
    )


def _typed_password(prompt: str, check: Callable[[str], None] | None) -> str:
    """A password typed twice at a terminal, asked again while ``check`` refuses it
    (``read_password``)."""
    for tries_left in range(PASSWORD_TRIES - 1, -1, -1):
        typed: str = click.prompt(prompt, hide_input=True, confirmation_prompt=True)
        if not typed:
            raise InvalidInput("the password must not be empty")
        if check is None:
            return typed
        try:
            check(typed)
        except InvalidInput as exc:
            if not tries_left:
                raise
            note(f"opencbs: {show_name(exc.message)}")
            if exc.hint:
                note(f"hint: {show_name(exc.hint)}")
            continue
        return typed
    raise AssertionError("unreachable")  # the loop returns or raises


def generate_password() -> str:
    """A random password of 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)


# --- output -----------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout."""
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def console() -> Console:
    """A rich console on stdout (plain text when stdout is not a terminal, and then wide enough
    that tables do not wrap their cells, for grep and awk)."""
    if sys.stdout.isatty():
        return Console(soft_wrap=False, highlight=False)
    return Console(soft_wrap=False, highlight=False, width=1000)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    no_wrap: Sequence[str] = (),
    shortened: Mapping[str, int] | None = None,
    least: Mapping[str, int] | None = None,
) -> None:
    """Print rows as a table on stdout; the columns named in ``no_wrap`` (IDs to copy) are
    never folded; a column in ``shortened`` is at most that many characters wide, cut with
    "…"; a column in ``least`` keeps at least that width (it folds, the others give way). A
    cell is a value, or a list/tuple of values shown one per line; each value goes through
    :func:`show_name` (control characters escaped). Off a terminal (piped) its lines carry no
    trailing spaces."""
    shortened, least = shortened or {}, least or {}
    table = Table(title=title, title_justify="left")
    for col in columns:
        if col in shortened:
            table.add_column(col, overflow="ellipsis", no_wrap=True, max_width=shortened[col])
        else:
            table.add_column(col, overflow="fold", no_wrap=col in no_wrap, min_width=least.get(col))
    for row in rows:
        table.add_row(*(Text(_cell(v)) for v in row))
    out = console()
    if out.is_terminal:
        out.print(table)
        return
    with out.capture() as captured:  # piped: no trailing spaces for grep and awk
        out.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def show_name(name: str | bytes) -> str:
    """A file name (or any text from outside) safe to print on a terminal: control characters
    (C0, DEL, C1) as ``\\n``, ``\\r``, ``\\t`` or ``\\xNN``, so a name cannot move the
    cursor, set the window title or fake a line, and format characters (Unicode category Cf:
    the bidi overrides such as U+202E, zero-width characters) as ``\\uXXXX``, so a name
    cannot show its text reordered or hidden; bytes go through ``display_path`` first (not
    UTF-8: ``\\xNN``), as do lone surrogates of a command line. Use it wherever the CLI prints
    a name."""
    if isinstance(name, bytes):
        from opencbs.engine.entries import display_path  # noqa: PLC0415

        name = display_path(name)
    shown = _UNSAFE.sub(_escape, name)
    if shown.isascii():
        return shown
    return "".join(_format_escaped(c) if unicodedata.category(c) == "Cf" else c for c in shown)


def _format_escaped(c: str) -> str:
    code = ord(c)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# --- paths the server stores ---------------------------------------------------------------

SOURCE_TEXT_HINT = (
    "a backup set's sources are stored as UTF-8 text: rename that folder or file "
    "to a UTF-8 name, or give its parent folder as {option} (names inside a "
    "source may be any bytes)"
)
DESTINATION_TEXT_HINT = (
    "a destination's path is stored as UTF-8 text: choose a folder whose "
    "path is UTF-8 (or rename it)"
)


def require_text_paths(
    sources: Iterable[str | os.PathLike[str]],
    destination: str | os.PathLike[str] | None,
    *,
    source_option: str = "--source",
    destination_option: str = "--destination",
) -> None:
    """Refuse, before anything is created, a source or destination whose absolute path (what
    the server is given) is not valid UTF-8 text: a name from a command line that is not UTF-8
    (its bytes as lone surrogates) cannot travel in the API's JSON nor be stored. Raises
    ``InvalidInput`` naming the option, the path shown with ``\\xNN`` for such bytes."""
    for source in sources:
        _require_text_path(source, source_option, SOURCE_TEXT_HINT.format(option=source_option))
    if destination is not None:
        _require_text_path(destination, destination_option, DESTINATION_TEXT_HINT)


def _require_text_path(path: str | os.PathLike[str], option: str, hint: str) -> None:
    full = os.path.abspath(path)
    try:
        full.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{option} {show_name(full)} is not a valid UTF-8 path", hint) from None


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(_cell(v) for v in value)
    return show_name(value if isinstance(value, (str, bytes)) else str(value))


def echo(text: str) -> None:
    """Print one line of data to stdout (``sys.stdout`` as it is now: ``note``)."""
    click.echo(text, file=sys.stdout)


def note(text: str) -> None:
    """Print one line of information for a person to stderr (not data), through whatever
    ``sys.stderr`` is now: while a progress bar is shown it is rich's proxy, which prints the
    line above the bar. (``click.echo(err=True)`` would not: it finds the proxy's encoding
    unset and writes to the real stream's buffer, into the bar's row.)"""
    click.echo(text, file=sys.stderr)


@contextmanager
def activity(title: str, *, quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner with ``title`` on a terminal, one line when not, nothing when ``quiet``: for
    work that reports no progress of its own (verify)."""
    if quiet:
        yield
        return
    console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=False)
    if console.is_terminal:
        with console.status(title):
            yield
        return
    console.print(f"{title}…", markup=False, highlight=False, soft_wrap=True)
    yield
