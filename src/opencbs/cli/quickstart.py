"""``opencbs quickstart [PATH]``: a real backup of a folder, reported through a real server.

On the embedded SQLite default it creates (or reuses):

- the data directory and database;
- the system user ``admin`` (its password is printed once, when created);
- the backup user ``quickstart`` with a generated password, and a generated encryption password
  for the repository, both kept in ``<data_dir>/agent.toml`` (mode 0600) with the server URL
  and the set of PATH (``backup_set``, its ID): ``opencbs --config <data_dir>/agent.toml
  backup`` runs the same set by hand. A run for another folder makes that folder's set the
  one ``agent.toml`` names;
- a backup set named after PATH (default: the current directory) with a local destination
  ``<data_dir>/destinations/<set id>``, leaving out the data directory itself when it lies
  inside PATH and ``PATH/.venv`` (the virtual environment of the README's command: it is
  reinstalled, not restored); like every backup, the contents of folders tagged as caches
  (``CACHEDIR.TAG``, ``engine.scan``) are left out too.

``agent.toml`` always names the configured ``port`` (the persistent URL). When that port is
taken by an opencbs server that knows the quickstart user and set (the same database), the job
reports to it and quickstart does not serve. Otherwise it starts the server in a background
thread (on ``port``, or, when that one is taken by another program, on a temporary free port for
this run only — said so on stderr, never saved), runs one backup job through the same code as
``opencbs backup`` (``backup_run.run_job``: an incremental job on every rerun), prints a
ready-to-paste ``curl`` for GetBackupJobReport of that job (it works while that server
serves), and, after a job that succeeded, serves until Ctrl-C or SIGTERM (``--no-serve``:
stops the server after printing). After a job that failed it exits with the job's code without
serving. Exit codes as ``opencbs backup`` (``backup_cmd``); serving stopped by Ctrl-C exits 130,
by SIGTERM 0 (``cli.serve.stop_code``, as ``opencbs serve``).
"""

from __future__ import annotations

import errno
import glob
import json
import shlex
import shutil
import signal
import socket
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import click

from opencbs.agent.client import AgentClient
from opencbs.agent.spool import report_spool_dir
from opencbs.agent.targets import Target, find_set, list_sets
from opencbs.agent.trust import AcceptedSet, record
from opencbs.cli.agent_options import AGENT_FILE, quiet_http_log
from opencbs.cli.backup_run import exit_code_of, print_outcome, run_job
from opencbs.cli.common import (
    TIMEZONE,
    CliState,
    echo,
    generate_password,
    note,
    open_database,
    show_name,
    with_settings,
)
from opencbs.cli.serve import HOST, IDLE, PORT, stop_code
from opencbs.destinations.local import LocalStorage
from opencbs.errors import ConfigError, ExitCode, OpenCBSError
from opencbs.fileio import write_atomic
from opencbs.model.destinations import DestinationAddress
from opencbs.model.passwords import PasswordRule
from opencbs.reports.vocabulary import JobMode, SystemRole
from opencbs.settings import Settings
from opencbs.store import sets, users
from opencbs.store.db import Database

SYSUSER = "admin"
LOGIN = "quickstart"


@dataclass
class Setup:
    """What quickstart uses: credentials (``sysuser_password`` only when just created), the
    set and destination IDs and folder, and what was created this run."""

    sysuser_password: str | None
    login: str
    password: str
    encryption_password: str
    set_id: str
    set_name: str
    destination_id: str
    destination: Path
    created: list[str] = field(default_factory=list)


def agent_file(data_dir: Path) -> Path:
    """The quickstart's agent config file (``<data_dir>/agent.toml``)."""
    return data_dir / AGENT_FILE


def read_agent_file(path: Path) -> dict[str, str]:
    """The ``[agent]`` table of ``path`` (empty when the file is missing). Raises
    ``ConfigError`` when it cannot be read."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", "fix or remove it (a removed file means new passwords)"
        ) from exc
    table = doc.get("agent")
    return {k: str(v) for k, v in table.items()} if isinstance(table, dict) else {}


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def write_agent_file(
    path: Path,
    *,
    data_dir: Path,
    server_url: str,
    login: str,
    password: str,
    encryption_password: str,
    backup_set: str,
) -> None:
    """Write the agent's settings to ``path`` atomically, mode 0600 (it holds passwords);
    ``backup_set`` is the set (ID) that ``opencbs backup`` without ``--set`` runs."""
    text = (
        "# Written by `opencbs quickstart`: the agent's settings of the quickstart backup set.\n"
        f"# Use: opencbs --config {shlex.quote(str(path))} backup\n"
        "# Keep it: without encryption_password the backups cannot be read.\n"
        f"data_dir = {_toml_str(str(data_dir))}\n\n[agent]\n"
        f"server_url = {_toml_str(server_url)}\n"
        f"login_name = {_toml_str(login)}\n"
        f"password = {_toml_str(password)}\n"
        f"encryption_password = {_toml_str(encryption_password)}\n"
        "# the set `backup` runs without --set: the folder quickstart backed up last\n"
        f"backup_set = {_toml_str(backup_set)}\n"
    )
    write_atomic(path, text.encode("utf-8"), mode=0o600)


def set_up(db: Database, data_dir: Path, source: Path, rule: PasswordRule) -> Setup:
    """Create (or reuse) the system user, the backup user and the set of ``source``, in one
    transaction; generated passwords meet ``rule``. Raises ``ConfigError`` when the agent file
    with the encryption password of an existing repository is gone."""
    saved = read_agent_file(agent_file(data_dir))
    created: list[str] = []
    with db.write() as conn:
        sys_password = None
        if users.get_system_user(conn, SYSUSER) is None:
            sys_password = rule.generate()
            users.add_system_user(conn, SYSUSER, sys_password, SystemRole.ADMIN, rule=rule)
            created.append(f"system user {SYSUSER}")
        password = saved.get("password") or rule.generate()
        owner = users.find_backup_user(conn, LOGIN)
        if owner is None:
            owner = users.add_backup_user(
                conn, LOGIN, password, alias="opencbs quickstart", rule=rule
            )
            created.append(f"backup user {LOGIN}")
        elif not saved.get("password"):
            users.set_backup_password(conn, LOGIN, password, rule=rule)
        enc = saved.get("encryption_password") or generate_password()
        name = str(source)
        bset = sets.find_set_by_name(conn, owner.id, name)
        if bset is None:
            exclude = [glob.escape(str(source / ".venv"))]
            if data_dir.is_relative_to(source):
                exclude.insert(0, glob.escape(str(data_dir)))
            bset = sets.add_set(
                conn,
                owner.id,
                name,
                {"sources": [str(source)], "filters": {"include": [], "exclude": exclude}},
            )
            created.append(f"backup set {name}")
        if not bset.destinations:
            folder = data_dir / "destinations" / str(bset.id)
            sets.add_destination(
                conn,
                owner.id,
                bset.id,
                name="Local",
                dest_type="LOCAL",
                settings={"path": str(folder)},
            )
            bset = sets.get_set(conn, owner.id, bset.id)
        dest = bset.destinations[0]
        folder = Path(str(dest.settings["path"]))
    if not saved.get("encryption_password") and (folder / "keys").exists():
        raise ConfigError(
            f"{agent_file(data_dir)} with the encryption password of {folder} is gone",
            "put it back, or remove that destination folder to start its backups afresh",
        )
    return Setup(
        sys_password, LOGIN, password, enc, str(bset.id), name, str(dest.id), folder, created
    )


# --- the server in a background thread --------------------------------------------------


def bind_socket(host: str, port: int) -> tuple[socket.socket, bool]:
    """A listening-ready socket bound to ``host:port``, or to a free port when that one is in
    use; returns it and whether it is the port asked for. Raises ``CannotListen``."""
    from opencbs.api.serve import CannotListen, listen_socket

    try:
        return listen_socket(host, port), True
    except CannotListen as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    return listen_socket(host, 0), False


class BackgroundServer:
    """The app served by uvicorn in a daemon thread on a bound socket; ``stop()`` ends it."""

    def __init__(self, settings: Settings, db: Database, sock: socket.socket) -> None:
        import uvicorn

        from opencbs.api.serve import build_app, uvicorn_config
        from opencbs.api.state import ServerState

        state = ServerState.from_settings(db, settings)
        # the same timeouts and limits as `opencbs serve`; plain HTTP on 127.0.0.1
        config = uvicorn_config(build_app(state), settings, tls=None, log_level="warning")
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self._run, name="opencbs-server", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc

    def start(self, timeout: float = 30.0) -> None:
        """Start serving; returns once the server accepts connections. Raises ``ConfigError``
        when it could not start."""
        self.thread.start()
        waited = 0.0
        while not self.server.started and self.thread.is_alive() and waited < timeout:
            self.thread.join(0.05)
            waited += 0.05
        if not self.server.started:
            raise ConfigError(
                f"the server did not start: {self.error or 'timeout'}", "run again with --debug"
            )

    def wait(self) -> int | None:
        """Serve until SIGINT or SIGTERM (main thread) or until the server stops; returns the
        signal that stopped it (``None``: the server stopped on its own)."""
        stop = threading.Event()
        stopped: list[int] = []

        def handler(signum: int, frame: FrameType | None) -> None:
            stopped.append(signum)
            stop.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.is_set() and self.thread.is_alive():
                stop.wait(0.2)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return stopped[0] if stopped else None

    def stop(self) -> None:
        """Stop serving and wait for the thread (at most 15 s)."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(15)
        self.sock.close()


# --- output -----------------------------------------------------------------------------


def curl_command(setup: Setup, url: str, job_id: str) -> str:
    """A ready-to-paste ``curl`` for GetBackupJobReport of job ``job_id``."""
    body = {
        "SysUser": SYSUSER,
        "SysPwd": setup.sysuser_password or f"<password of {SYSUSER}>",
        "LoginName": setup.login,
        "BackupSetID": setup.set_id,
        "DestinationID": setup.destination_id,
        "BackupJobID": job_id,
    }
    return (
        f"curl -s -X POST {url}/obs/api/json/GetBackupJobReport.do "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )


def _print_setup(setup: Setup, data_dir: Path) -> None:
    echo(f"data directory: {show_name(str(data_dir))}")
    if setup.sysuser_password is not None:
        echo(
            f"system user {SYSUSER!r} created; its password (shown only now): "
            f"{setup.sysuser_password}"
        )
    else:
        echo(
            f"system user {SYSUSER!r} exists; its password is unchanged "
            f"(set a new one: opencbs sysuser passwd {SYSUSER})"
        )
    echo(f"backup user {setup.login!r}")
    echo(f"its settings and encryption password: {show_name(str(agent_file(data_dir)))} (0600)")
    echo(f"backup set {show_name(setup.set_name)} (ID {setup.set_id})")
    echo(f"its destination: {show_name(str(setup.destination))} (ID {setup.destination_id})")
    again = shlex.quote(show_name(str(agent_file(data_dir))))
    echo(f"back it up again: {program_name()} --config {again} backup")


@click.command()
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--no-serve", is_flag=True, help="Stop after the backup and printing.")
@click.option("-v", "--verbose", is_flag=True, help="Print each change with its reason.")
@with_settings(HOST, PORT, TIMEZONE, IDLE)
def quickstart(settings: Settings, *, path: Path | None, no_serve: bool, verbose: bool) -> int:
    """Back up PATH (default: the current directory) through a local server and print a curl
    for the job's report; then serve. Run it again for an incremental job."""
    source = (path or Path.cwd()).resolve()
    state = click.get_current_context().find_object(CliState)
    quiet_http_log(debug=bool(state and state.debug))
    data_dir = settings.ensure_data_dir().resolve()
    database = open_database(settings)
    try:
        setup = set_up(database, data_dir, source, settings.password_rule())
        _print_setup(setup, data_dir)
        sock, asked = bind_socket(settings.host, settings.port)
        # the persistent URL: the configured port (port 0: the one bound now), whatever this
        # run serves on
        persistent = _local_url(settings, settings.port or sock.getsockname()[1])
        try:
            _save_agent_file(setup, data_dir, source, persistent)
        except BaseException:
            sock.close()
            raise
        if not asked:
            sock_port = sock.getsockname()[1]
            if serves_setup(persistent, setup):
                sock.close()
                note(
                    f"an opencbs server of this data directory already answers on {persistent}; "
                    "the backup reports to it (quickstart does not serve)"
                )
                return _backup(
                    setup,
                    persistent,
                    verbose=verbose,
                    state_dir=data_dir,
                    progress_interval=settings.progress_interval,
                )
            note(
                f"port {settings.port} is in use by another program; this run serves on "
                f"temporary port {sock_port} only ({agent_file(data_dir)} keeps {persistent})"
            )
        return _serve_and_back_up(
            settings, database, sock, setup, verbose=verbose, no_serve=no_serve, temporary=not asked
        )
    finally:
        database.dispose()


def _save_agent_file(setup: Setup, data_dir: Path, source: Path, server_url: str) -> None:
    """Write ``agent.toml`` (naming this run's set as ``backup_set``) and record the set of
    ``source`` as accepted by its owner (``agent.trust``: the owner named PATH here)."""
    write_agent_file(
        agent_file(data_dir),
        data_dir=data_dir,
        server_url=server_url,
        login=setup.login,
        password=setup.password,
        encryption_password=setup.encryption_password,
        backup_set=setup.set_id,
    )
    record(
        report_spool_dir(data_dir, server_url, setup.login),
        AcceptedSet(
            setup.set_id,
            setup.set_name,
            (str(source),),
            {setup.destination_id: str(setup.destination)},
        ),
    )


def _local_url(settings: Settings, port: int) -> str:
    """``http://<host>:<port>`` of the local server (``server_url`` ignored)."""
    return Settings.model_construct(
        **{**settings.model_dump(), "port": port, "server_url": ""}
    ).effective_server_url


def serves_setup(url: str, setup: Setup, timeout: float = 3.0) -> bool:
    """Whether an opencbs server at ``url`` knows the quickstart backup user with this password
    and its set (so it uses the same database): then quickstart backs up through it."""
    try:
        with AgentClient(url, setup.login, setup.password, timeout=timeout) as client:
            return any(s.id == setup.set_id for s in client.list_sets())
    except (OpenCBSError, OSError):
        return False


def _serve_and_back_up(
    settings: Settings,
    database: Database,
    sock: socket.socket,
    setup: Setup,
    *,
    verbose: bool,
    no_serve: bool,
    temporary: bool,
) -> int:
    """Start the server on ``sock``, run the job through it; after a successful job (and
    without ``no_serve``) serve until SIGINT/SIGTERM. Returns the exit code (a stop by SIGINT:
    130, by SIGTERM: 0, ``stop_code``)."""
    url = _local_url(settings, sock.getsockname()[1])
    server = BackgroundServer(settings, database, sock)
    server.start()
    try:
        code = _backup(
            setup,
            url,
            verbose=verbose,
            state_dir=settings.ensure_data_dir().resolve(),
            progress_interval=settings.progress_interval,
        )
        if code:
            return code  # a failed job: its exit code, nothing served
        if no_serve:
            if temporary:
                note(
                    f"the curl above used temporary port {sock.getsockname()[1]}, which is "
                    "closed now; run `opencbs serve` and send it to its port"
                )
            return ExitCode.SUCCESS
        echo("")
        echo(f"serving on {url} (Ctrl-C stops); the curl above works while it serves")
        return stop_code(server.wait())
    finally:
        server.stop()


def _backup(
    setup: Setup, url: str, *, verbose: bool, state_dir: Path, progress_interval: float
) -> int:
    """Run the job and print its outcome and curl; returns the exit code of the job
    (``backup_run.exit_code_of``: 0 when it succeeded). ``state_dir``: the data directory,
    where the agent remembers the repository's snapshot list; ``progress_interval``: seconds
    between progress lines off a terminal."""
    with AgentClient(url, setup.login, setup.password) as client:
        found = list_sets(client, url, setup.login)
        bset = find_set(found, setup.set_id)
        if bset is None:
            raise ConfigError(f"backup set {setup.set_id} is not visible to {setup.login!r}")
        target = Target(bset, bset.destinations[0], DestinationAddress.local(setup.destination))
        outcome = run_job(
            client,
            target,
            setup.encryption_password,
            storage=LocalStorage(setup.destination),
            mode=JobMode.MANUAL,
            as_json=False,
            verbose=verbose,
            state_dir=state_dir,
            progress_interval=progress_interval,
        )
    echo("")
    print_outcome(outcome, target)
    code = exit_code_of(outcome.status)
    echo("")
    echo("The job's report (GetBackupJobReport):")
    echo(curl_command(setup, url, outcome.ref.job_id))
    if setup.sysuser_password is None:
        echo(
            f"(replace <password of {SYSUSER}>; set a new one with: "
            f"opencbs sysuser passwd {SYSUSER})"
        )
    return code


def program_name() -> str:
    """How to run this opencbs again from the shell: ``opencbs`` when that is what the shell
    finds (the virtual environment is active, or it is installed on PATH), else the path of
    this program (``.venv/bin/opencbs`` run from the clone, as the README's first command)."""
    this = Path(sys.argv[0]).resolve()
    found = shutil.which("opencbs")
    if found is not None and Path(found).resolve() == this:
        return "opencbs"
    return shlex.quote(show_name(str(this))) if this.name == "opencbs" else "opencbs"


__all__ = ["Setup", "quickstart", "set_up", "curl_command", "program_name", "write_agent_file"]
