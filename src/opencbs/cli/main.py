"""The ``opencbs`` entry point: the command group, and the one place where errors become
messages and exit codes.

Exit codes: the table ``opencbs.errors.ExitCode`` (each code with its meaning; the README's
table is checked against it).
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

import click

import opencbs
from opencbs import errors
from opencbs.errors import ExitCode, OpenCBSError

log = logging.getLogger("opencbs.cli")

#: Command name -> (module under ``opencbs.cli``, attribute). Imported only when the command
#: runs or help lists it: ``opencbs backup`` does not load the server's modules (startup time
#: and memory of every agent run).
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "serve"),
    "db": ("admin", "db"),
    "sysuser": ("admin", "sysuser"),
    "user": ("admin", "user"),
    "lockout": ("lockout_cmds", "lockout"),
    "set": ("admin", "backup_set"),
    "schedule": ("schedule_cmds", "schedule"),
    "report": ("report", "report"),
    "demo": ("demo", "demo"),
    "quickstart": ("quickstart", "quickstart"),
    "backup": ("backup_cmd", "backup"),
    "restore": ("repo_cmds", "restore"),
    "verify": ("repo_cmds", "verify"),
    "snapshots": ("repo_cmds", "snapshots"),
    "ls": ("browse_cmds", "ls"),
    "find": ("browse_cmds", "find"),
    "diff": ("browse_cmds", "diff"),
    "mount": ("browse_cmds", "mount"),
    "forget": ("retention_cmds", "forget"),
    "prune": ("retention_cmds", "prune_command"),
    "agent": ("agent_flush", "agent"),
    "alert": ("alert_cmds", "alert"),
}


class LazyGroup(click.Group):
    """A group whose subcommands (``COMMANDS``) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module = importlib.import_module(f"opencbs.cli.{where[0]}")
        command = getattr(module, where[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(opencbs.__version__, "--version", prog_name="opencbs")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Config file (TOML) [env OPENCBS_CONFIG; default ~/.config/opencbs/config.toml].",
)
@click.option("--debug", is_flag=True, help="Log at DEBUG and show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, *, config: str | None, debug: bool) -> None:
    """opencbs: a backup server speaking the AhsayCBS JSON API.

    Data goes to stdout, logs and errors to stderr. Settings: defaults < config file <
    OPENCBS_* environment < flags.
    """
    from opencbs.cli.common import CliState  # noqa: PLC0415 - lazy: see COMMANDS

    ctx.obj = CliState(config=config, debug=debug)


def exit_code(exc: BaseException) -> int:
    """The exit code of an error (documented in this module's docstring)."""
    if isinstance(exc, OpenCBSError):
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        return ExitCode.INTERRUPTED
    return ExitCode.INTERNAL


def default_hint(exc: OpenCBSError) -> str:
    """What to do about an error that carries no hint of its own."""
    if isinstance(exc, errors.NotFound):
        return (
            "check the name or ID: `opencbs user list`, `opencbs set list LOGIN`, "
            "`opencbs report JOBID --user LOGIN`"
        )
    if isinstance(exc, errors.Conflict):
        return "it exists already; list what is there with the command's `list`"
    if isinstance(exc, errors.StoreError):
        return "check --database-url / OPENCBS_DATABASE_URL and that the database is up"
    return "see `opencbs --help`; run again with --debug for details"


def _fail(message: str, hint: str) -> None:
    """The error line and its hint on stderr, each escaped (``show_name``): a message may quote
    a name or a value from outside (a path, a login name), which must not reach the terminal
    raw (a newline faking a line, an escape sequence recolouring it)."""
    from opencbs.cli.common import show_name  # noqa: PLC0415 - lazy: see COMMANDS

    click.echo(f"opencbs: error: {show_name(message)}", err=True)
    if hint:
        click.echo(f"hint: {show_name(hint)}", err=True)


def _usage_hint(exc: click.UsageError) -> str:
    ctx = exc.ctx
    path = ctx.command_path if ctx is not None else "opencbs"
    return f"see `{path} --help`"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns (and, as a script, exits with) the exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="opencbs",
            standalone_mode=False,
        )
        code = result if isinstance(result, int) else 0
    except OpenCBSError as exc:
        if debug:
            traceback.print_exc()
        _fail(exc.message, exc.hint or default_hint(exc))
        code = exit_code(exc)
    except click.UsageError as exc:
        _fail(exc.format_message().splitlines()[0], _usage_hint(exc))
        code = exit_code(exc)
    except click.ClickException as exc:
        _fail(exc.format_message(), "")
        code = exit_code(exc)
    except (KeyboardInterrupt, click.Abort) as exc:
        _fail("interrupted", "")
        code = exit_code(exc)
    except BrokenPipeError:
        code = 0  # `opencbs … | head`: the reader had enough
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into a message
        if debug:
            traceback.print_exc()
        log.debug("internal error", exc_info=True)
        _fail(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug; run again with --debug for the traceback and report it",
        )
        code = exit_code(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
