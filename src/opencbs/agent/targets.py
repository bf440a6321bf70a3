"""Which backup set, destination and folder a job or a restore uses: from the agent's own
arguments, the server's sets, and the sets remembered in the agent's spool (architecture.md,
agent).

- The user's sets: :func:`list_sets` (the first call to the server, its usual failures turned
  into clear errors) and, when the server cannot be reached, the sets as last remembered in the
  user's report spool (:func:`sets_or_remembered` for a command, :func:`backup_set` for a job;
  both through :func:`remembered`, the one definition of that fallback).
- A set by name or ID (:func:`find_set`), its destination (:func:`find_destination`; where it
  is: :func:`destination_address`, a folder or an S3 location); :func:`resolve_target`
  creates the set or adds a destination on first use, after :func:`require_sources` checked
  that every source exists and :func:`usable_destination` checked the place, and
  :func:`locate_destination` finds a set's destination for a restore.
- The repository of a destination, created on first use (:func:`open_repository`), and the
  rule for a destination folder: empty (or missing) or already a repository, never a folder of
  other files (:func:`require_empty_or_repository`, :class:`NotARepository`).
- What the agent's owner accepted is ``agent.trust``'s: :func:`backup_set` refuses sources
  other than those accepted, :func:`locate_destination` a restore folder never accepted.
- A folder that held the set's backups (``agent.trust.held_backups``) and is now missing or
  empty is refused before the job (:class:`RepositoryMissing`): an unmounted disk or a deleted
  folder is not silently made a new repository; ``--new-repository`` consents to one.

Nothing here prints: what a person should be told (a set created, a destination added, the
server unreachable) goes to the ``on_note`` callback, one sentence each.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opencbs.agent.client import (
    AgentApiError,
    AgentClient,
    NewDestination,
    RemoteDestination,
    RemoteSet,
    ServerCertificateRejected,
    ServerUnreachable,
)
from opencbs.agent.spool import adopt_legacy, load_sets, save_sets
from opencbs.agent.storage import S3Access, open_storage
from opencbs.agent.trust import (
    NO_CONSENT,
    Consent,
    check_backup_target,
    check_restore_destination,
    held_backups,
    require_accepted_sources,
)
from opencbs.destinations.base import DestinationError, Storage
from opencbs.destinations.local import LocalStorage
from opencbs.engine.repo_errors import RepositoryExists, RepositoryNotFound
from opencbs.engine.repository import KEYFILE_NAME, Repository
from opencbs.errors import ExitCode, InvalidInput, NotFound, OpenCBSError
from opencbs.model.destinations import DestinationAddress
from opencbs.model.sets import DEFAULT_COMPRESSION_LEVEL

__all__ = [
    "REFUSALS",
    "Consent",
    "DestinationIsAFile",
    "LoginRejected",
    "NotARepository",
    "RepositoryMissing",
    "Target",
    "accept_target",
    "backup_set",
    "destination_address",
    "find_destination",
    "find_set",
    "list_sets",
    "locate_destination",
    "open_repository",
    "remembered",
    "MissingSource",
    "require_empty_or_repository",
    "require_repository_kept",
    "require_sources",
    "resolve_target",
    "sets_or_remembered",
    "usable_destination",
]

log = logging.getLogger(__name__)

#: Seconds to let another agent finish creating the repository it just created in the same
#: place (its config follows its key file at once) before opening it.
CREATED_MEANWHILE_WAIT = 1.0

#: Told one sentence for a person (``resolve_target``, ``sets_or_remembered``).
OnNote = Callable[[str], None]


def _silent(text: str) -> None:
    """The default ``on_note``: tell nobody."""


class LoginRejected(OpenCBSError):
    """The server rejected the backup user's login name or password."""

    code = "agent_credentials"
    exit_code = ExitCode.CREDENTIALS

    def __init__(self, login: str, url: str) -> None:
        super().__init__(
            f"the server at {url} rejected backup user {login!r} (wrong login name or password)",
            "check --login / OPENCBS_LOGIN_NAME and the password "
            "(OPENCBS_PASSWORD, the config file or --password-stdin); after repeated "
            "failures the server locks the login for a while: its administrator sees it "
            "with `opencbs lockout list`",
        )


def list_sets(client: AgentClient, url: str, login: str) -> list[RemoteSet]:
    """The user's sets: the first call to the server, turning its usual failures into clear
    errors. Raises ``ServerUnreachable``, ``LoginRejected`` or ``AgentApiError``."""
    try:
        return client.list_sets()
    except ServerCertificateRejected:
        raise  # says what to do already (the CA file)
    except ServerUnreachable as exc:
        raise ServerUnreachable(
            f"cannot reach the server at {url} "
            f"({exc.message.removeprefix('cannot reach the server: ')})",
            "start it with `opencbs serve`, or set --server / OPENCBS_SERVER_URL",
        ) from exc
    except AgentApiError as exc:
        if exc.status == 401:
            raise LoginRejected(login, url) from exc
        raise


def remembered(
    spool_dir: Path | None,
    fetch: Callable[[], list[RemoteSet]],
    *,
    want: Callable[[RemoteSet], bool] = lambda s: True,
) -> tuple[list[RemoteSet], ServerUnreachable | None]:
    """The sets ``fetch`` gets from the server, remembered in ``spool_dir`` (the user's report
    spool, ``agent.spool.save_sets``), and ``None``; or, when the server cannot be reached, the
    remembered sets that ``want`` selects and the ``ServerUnreachable``. Raises that
    ``ServerUnreachable`` when none is remembered (or there is no ``spool_dir``), and what
    ``fetch`` raises otherwise."""
    try:
        found = fetch()
    except ServerUnreachable as exc:
        known = [s for s in load_sets(spool_dir) if want(s)] if spool_dir is not None else []
        if not known:
            raise
        return known, exc
    if spool_dir is not None:
        save_sets(spool_dir, found)
    return found, None


def sets_or_remembered(
    client: AgentClient,
    url: str,
    login: str,
    spool_dir: Path,
    *,
    on_note: OnNote = _silent,
) -> list[RemoteSet]:
    """The user's sets (:func:`list_sets`, remembered in ``spool_dir``, this user's report
    spool: ``agent.spool.report_spool_dir``); when the server cannot be reached, the sets as last
    remembered, with a note (the job then runs and its report is spooled). Reports spooled in
    the earlier layout (one spool for every user) of these sets move into ``spool_dir``
    (``spool.adopt_legacy``). Raises what :func:`list_sets` raises when nothing is
    remembered."""
    found, unreachable = remembered(spool_dir, lambda: list_sets(client, url, login))
    if unreachable is not None:
        on_note(f"{unreachable.message}; backing up with the backup sets as last seen")
        return found
    adopt_legacy(spool_dir.parent, spool_dir, found)
    return found


def backup_set(client: AgentClient, set_id: str, spool_dir: Path | None) -> RemoteSet:
    """Set ``set_id`` as the server has it (remembered in ``spool_dir``), or, when the server
    cannot be reached, as remembered there; its sources must be those the agent accepted for it
    (``agent.trust.require_accepted_sources``, when ``spool_dir`` is given). Raises
    ``ServerUnreachable``, ``AgentApiError``, ``TargetChanged``."""
    found, unreachable = remembered(
        spool_dir, lambda: [client.get_set(set_id)], want=lambda s: s.id == set_id
    )
    if unreachable is not None:
        log.debug("server unreachable: backing up set %s as last seen", set_id)
    if spool_dir is not None:  # the sources accepted before the job (agent.trust)
        require_accepted_sources(spool_dir, found[0])
    return found[0]


def find_set(found: Sequence[RemoteSet], ref: str | None) -> RemoteSet | None:
    """The set named ``ref`` or of ID ``ref`` (name first); the only set when ``ref`` is None
    and there is exactly one; else ``None``."""
    if ref is None:
        return found[0] if len(found) == 1 else None
    by_name = [s for s in found if s.name == ref]
    if by_name:
        return by_name[0]
    by_id = [s for s in found if s.id == ref]
    return by_id[0] if by_id else None


def find_destination(
    bset: RemoteSet, address: DestinationAddress | None
) -> RemoteDestination | None:
    """The set's destination at ``address`` (a folder or an S3 location, compared by
    ``DestinationAddress.key``), or its first destination when ``address`` is ``None``."""
    if address is None:
        return bset.destinations[0] if bset.destinations else None
    places: list[tuple[RemoteDestination, DestinationAddress]] = []
    for d in bset.destinations:
        try:
            places.append((d, destination_address(d)))
        except InvalidInput:
            continue  # a destination this agent cannot use is not the one asked for
    for d, place in places:
        if place.key == address.key:
            return d
    if address.s3 is not None and not address.s3.endpoint:
        # s3://bucket/prefix without --s3-endpoint: the set's one destination of that bucket
        # and prefix, whatever its endpoint
        same = [d for d, p in places if p.s3 is not None and p.s3.url == address.s3.url]
        if len(same) == 1:
            return same[0]
    return None


def destination_address(d: RemoteDestination) -> DestinationAddress:
    """Where destination ``d`` is (``model.destinations``: a LOCAL folder or an S3 bucket and
    prefix). Raises ``InvalidInput`` for a type this agent cannot use."""
    try:
        return DestinationAddress.from_settings(d.type, d.settings)
    except InvalidInput as exc:
        raise InvalidInput(
            f"destination {d.id} ({d.name}): {exc.message}",
            exc.hint or "only LOCAL and S3 destinations can be used by this agent",
        ) from exc


@dataclass(frozen=True)
class Target:
    """A set and destination to back up: IDs as the server names them and where the
    destination is (``address``: a folder or an S3 location)."""

    bset: RemoteSet
    destination: RemoteDestination
    address: DestinationAddress

    @property
    def where(self) -> str:
        """The destination as a person reads it: the folder or ``s3://bucket/prefix``."""
        return str(self.address)


def resolve_target(
    client: AgentClient,
    found: list[RemoteSet],
    ref: str | None,
    *,
    sources: Sequence[Path] = (),
    destination: DestinationAddress | None = None,
    excludes: Sequence[str] = (),
    includes: Sequence[str] = (),
    add_destination: bool = False,
    check_destination: Callable[[DestinationAddress], None] | None = None,
    on_note: OnNote = _silent,
) -> Target:
    """The set ``ref`` and its destination; created on first use from ``sources``,
    ``destination``, ``excludes`` and ``includes`` (a FILE set with one destination: a LOCAL
    folder or an S3 location).

    On an existing set ``destination`` selects its destination at that place (default: its
    first); a place the set does not have is added only with ``add_destination`` (the
    ``--add-destination`` flag), else an error: a mistyped path must not start a full backup
    somewhere new. Filters are fixed when the set is created: ``excludes``/``includes`` on an
    existing set are an error, never ignored. ``check_destination`` is called with a
    destination's address before it is given to the server (a new set, an added destination),
    so a place that cannot be used fails before the server records anything. A set created or
    a destination added is told to ``on_note``. A new set's sources must exist
    (:func:`require_sources`). Raises ``NotFound``, ``InvalidInput`` (``MissingSource``
    included) and what ``check_destination`` raises."""
    bset = find_set(found, ref)
    created = bset is None
    if bset is None:
        if not (sources and destination is not None and ref):
            raise _no_such_set(found, ref)
        require_sources(sources)
        if check_destination is not None:
            check_destination(destination)
        bset = client.create_set(
            ref,
            settings={
                "sources": [os.path.abspath(s) for s in sources],
                "filters": {"include": list(includes), "exclude": list(excludes)},
            },
            destinations=[_new_destination(destination, 0)],
        )
        on_note(f"backup set {bset.name!r} created (ID {bset.id})")
    else:
        _check_existing(bset, sources, excludes, includes)
    d = find_destination(bset, destination)
    if d is None and destination is not None:
        if not (add_destination or created):
            raise _no_such_destination(bset, destination)
        if check_destination is not None:
            check_destination(destination)
        names = frozenset(x.name for x in bset.destinations)
        d = client.add_destination(
            bset.id, _new_destination(destination, len(bset.destinations), names)
        )
        on_note(f"destination {d.name!r} added to backup set {bset.name!r}")
    elif d is not None and add_destination and not created:
        on_note(f"backup set {bset.name!r} has destination {destination} already; using it")
    if d is None:
        raise InvalidInput(
            f"backup set {bset.name!r} has no destination", "give --add-destination PATH"
        )
    return Target(bset, d, destination_address(d))


def _new_destination(
    address: DestinationAddress, count: int, taken: frozenset[str] = frozenset()
) -> NewDestination:
    """The destination to create at ``address`` for a set with ``count`` destinations named
    ``taken``: ``Local`` / ``S3`` when the set has none of that name, else ``Local 2``,
    ``S3 3``… (its position)."""
    base = "S3" if address.is_s3 else "Local"
    name = base if base not in taken else f"{base} {count + 1}"
    return NewDestination(name, address.type, address.settings())


def accept_target(
    spool_dir: Path,
    target: Target,
    storage: Storage | None = None,
    *,
    consent: Consent = NO_CONSENT,
    on_note: OnNote = _silent,
) -> None:
    """Before a backup of ``target``: the sources and destination folder the server names are
    those the agent's owner accepted (first use, the record, or ``consent``: ``agent.trust``),
    and the folder is empty or a repository (:func:`require_empty_or_repository`); what is
    newly accepted is recorded in ``spool_dir``. A folder that held the set's backups and is
    now missing or empty is refused unless ``consent.new_repository``
    (:func:`require_repository_kept`). Nothing is read or written in the folder. Raises
    ``TargetChanged``, ``RepositoryMissing``, ``NotARepository``, ``TrustFileError``,
    ``DestinationError``. ``storage``: the target's (default: opened from its address with the
    standard credentials, ``agent.storage.open_storage``)."""
    storage = storage if storage is not None else open_storage(target.address)

    def check_place() -> None:  # only once the owner's record allows the place: never
        # contact a destination (an S3 server, with the agent's credentials) not accepted
        if not consent.new_repository:
            require_repository_kept(spool_dir, target, storage)
        require_empty_or_repository(storage)

    check_backup_target(
        spool_dir,
        target.bset,
        target.destination,
        target.address.key,
        consent=consent,
        check_folder=check_place,
        on_note=on_note,
    )


def _no_such_set(found: Sequence[RemoteSet], ref: str | None) -> NotFound:
    """The error for a set ``ref`` the user does not have (or no ``ref`` among several)."""
    names = ", ".join(repr(s.name) for s in found) or "none"
    err = NotFound(
        f"no backup set {ref!r} of this user (sets: {names})"
        if ref
        else f"which backup set? this user has {len(found)} (sets: {names})"
    )
    err.hint = "use --set NAME|ID; to create one give --set NAME --source PATH… --destination PATH"
    return err


def _no_such_destination(bset: RemoteSet, destination: DestinationAddress) -> InvalidInput:
    """The error for a destination the set does not have (``--add-destination`` adds)."""
    have = ", ".join(_shown_destination(x) for x in bset.destinations)
    return InvalidInput(
        f"backup set {bset.name!r} has no destination {destination} (it has: {have or 'none'})",
        "give one of its destinations, leave out --destination for all of them, or add this "
        "place as a new destination (a full backup there) with --add-destination PATH|s3://…",
    )


def _shown_destination(d: RemoteDestination) -> str:
    """A destination as a person reads it: its folder or S3 location, else its name."""
    try:
        return str(destination_address(d))
    except InvalidInput:
        return d.name


def _check_existing(
    bset: RemoteSet, sources: Sequence[Path], excludes: Sequence[str], includes: Sequence[str]
) -> None:
    """Options that only create a set, given for an existing one: an error unless they agree
    with it. Raises ``InvalidInput``."""
    if sources:
        have = list(bset.settings.sources)
        if have != [os.path.abspath(s) for s in sources]:
            raise InvalidInput(
                f"backup set {bset.name!r} exists already, with other sources ({', '.join(have)})",
                "leave out --source to back it up, or choose a new --set name",
            )
    if excludes or includes:
        filters = bset.settings.filters
        has = [
            f"{option} {' '.join(patterns) or '(none)'}"
            for option, patterns in (("exclude", filters.exclude), ("include", filters.include))
        ]
        raise InvalidInput(
            f"backup set {bset.name!r} exists already; --exclude/--include only apply when a "
            f"set is created (its filters: {'; '.join(has)})",
            "leave them out to back it up with its filters, or choose a new --set name",
        )


def locate_destination(
    client: AgentClient,
    url: str,
    login: str,
    *,
    set_ref: str,
    destination: DestinationAddress | None,
    spool_dir: Path | None = None,
    accept_server_changes: bool = False,
    on_note: OnNote = _silent,
) -> tuple[str, DestinationAddress]:
    """The ID of set ``set_ref`` (name or ID) of backup user ``login`` and where its
    destination at ``destination`` is (default its first), asking the server at ``url``.
    A folder the server names (no ``destination``) is used only when the agent accepted it
    for that set, in the record of ``spool_dir`` (``agent.trust.check_restore_destination``;
    ``accept_server_changes`` accepts and records it). Raises ``NotFound``, ``InvalidInput``,
    ``TargetChanged`` and what :func:`list_sets` raises."""
    bset = find_set(list_sets(client, url, login), set_ref)
    if bset is None:
        raise NotFound(
            f"no backup set {set_ref!r} of backup user {login!r}", "see `opencbs set list LOGIN`"
        )
    d = find_destination(bset, destination)
    if d is None:
        raise InvalidInput(
            f"backup set {bset.name!r} has no destination {destination or ''}".rstrip(),
            "give --destination PATH|s3://…",
        )
    address = destination_address(d)
    if destination is None and spool_dir is not None:
        check_restore_destination(
            spool_dir, bset, d, address.key, accept=accept_server_changes, on_note=on_note
        )
    return bset.id, address


class NotARepository(DestinationError):
    """A destination folder that holds files but no opencbs repository: nothing is written
    there (exit code 7). A backup writes only into an empty (or new) folder or into its own
    repository, never over someone else's files (issue 11: a ``config`` in ``~/.aws``)."""

    code = "destination_not_a_repository"

    def __init__(self, where: object) -> None:
        super().__init__(
            f"destination {_kind(where)} {where} is not empty and holds no opencbs "
            "repository; nothing was written there",
            "choose an empty or new folder (or S3 prefix) as the destination; if the server "
            "named it, check the backup set's destinations (`opencbs set list LOGIN`)",
        )


class DestinationIsAFile(NotARepository):
    """A local destination whose path is a file (or a link to one), not a folder: nothing is
    written there (exit code 7). Often a folder of backups moved away and a file put in its
    place."""

    code = "destination_is_a_file"

    def __init__(self, where: object) -> None:
        DestinationError.__init__(
            self,
            f"destination {where} is a file, not a folder; nothing was written there",
            f"if the folder of the backups was moved or renamed, put it back at {where}; "
            "otherwise move the file away, or choose a folder as the destination; if the "
            "server named it, check the backup set's destinations (`opencbs set list LOGIN`)",
        )


def _kind(where: object) -> str:
    """``folder`` for a local destination, ``location`` for an S3 one (in messages)."""
    return "location" if str(where).startswith("s3://") else "folder"


class RepositoryMissing(DestinationError):
    """A destination folder that held this set's backups is missing or empty now (a disk not
    mounted, a folder moved or deleted): nothing is created there (exit code 7), as a new
    repository would start a full backup silently while the old one may come back."""

    code = "destination_repository_missing"

    def __init__(self, where: DestinationAddress, set_name: str) -> None:
        if where.path is not None:
            state = "is missing" if not os.path.lexists(where.path) else "is empty"
            asked = "is the disk mounted?"
        else:
            state, asked = "is empty", "is it the right bucket, prefix and endpoint?"
        super().__init__(
            f"destination {_kind(where)} {where} {state}, but it held the backups of backup "
            f"set {set_name!r}: {asked} nothing was backed up or created",
            "mount the disk or put the folder back (restore it from a copy), then run the "
            "backup again; to start a new repository there on purpose (a full backup), run "
            "again with --new-repository",
        )


#: Destination errors that are the agent's decisions, not a destination failing: a job is
#: not started for them (``cli.backup_run.run_job``).
REFUSALS: tuple[type[DestinationError], ...] = (NotARepository, RepositoryMissing)


def require_repository_kept(spool_dir: Path, target: Target, storage: Storage) -> None:
    """The rule for a folder that held backups: when this agent knows ``target.path`` held
    backups of ``target.bset`` (``agent.trust.held_backups``: a job committed a snapshot
    there), it still holds a repository (its key file) or something else
    (:func:`require_empty_or_repository` says what); missing or empty, it is refused. Issue 12
    (an unmounted disk silently made a new repository). Raises ``RepositoryMissing``,
    ``TrustFileError``, ``DestinationError``."""
    if storage.exists(KEYFILE_NAME) or not _is_empty(storage):
        return
    if held_backups(spool_dir, target.bset.id, target.address.key):
        raise RepositoryMissing(target.address, target.bset.name)


def _is_empty(storage: Storage) -> bool:
    """Whether ``storage`` holds nothing (a backend's own ``is_empty`` when it has one: a
    local folder counts its dot-files). Raises ``DestinationError``."""
    is_empty = getattr(storage, "is_empty", None)
    if is_empty is not None:
        return bool(is_empty())
    return next(iter(storage.list()), None) is None


class MissingSource(InvalidInput):
    """A source of a new backup set does not exist (or cannot be looked at): nothing is
    created. Exit code 2 (invalid input), as restic refuses a backup of a missing path."""

    code = "source_missing"

    def __init__(self, missing: Sequence[tuple[str, str]]) -> None:
        shown = "; ".join(f"{path} ({why})" for path, why in missing)
        word = "source" if len(missing) == 1 else "sources"
        super().__init__(
            f"{word} not found: {shown}; no backup set was created",
            "check the path (sources are folders or files on the machine the agent runs "
            "on), or create it first",
        )


def require_sources(sources: Sequence[str | Path]) -> None:
    """The rule for a new backup set's sources: each exists now (``os.lstat``; a symbolic
    link counts, dangling or not, as the scan backs up the link itself). Checked before
    anything is created (``opencbs set add``, ``opencbs backup --set NEW``); a source that
    goes missing later is the job's warning (``agent.backup``). Raises ``MissingSource``
    naming every missing one with the system's reason."""
    missing: list[tuple[str, str]] = []
    for source in sources:
        path = os.path.abspath(source)
        try:
            os.lstat(path)
        except OSError as exc:
            missing.append((path, exc.strerror or type(exc).__name__))
    if missing:
        raise MissingSource(missing)


def require_empty_or_repository(storage: Storage) -> None:
    """The rule for a destination (folder or S3 prefix), checked before anything is written
    there: it is missing, empty (a folder's dot-files count), or holds a repository (its key
    file; the encryption password is checked when it is opened). Raises ``NotARepository``,
    ``DestinationError``; ``DestinationIsAFile`` (a ``NotARepository``) for a local
    destination whose path is a file."""
    if storage.exists(KEYFILE_NAME):
        return
    if isinstance(storage, LocalStorage) and _is_a_file(storage.root):
        raise DestinationIsAFile(storage)
    if not _is_empty(storage):
        raise NotARepository(storage)


def _is_a_file(path: Path) -> bool:
    """Whether ``path`` is there and is not a folder (a file, a link to one, a device; a
    dangling link is missing: creating the folder says why)."""
    return os.path.exists(path) and not os.path.isdir(path)


def usable_destination(
    address: DestinationAddress, password: str, access: S3Access | None = None
) -> None:
    """Check a destination before it is named to the server: it holds a repository that
    ``password`` opens, or it is empty (or missing) and a repository can be created in it
    (the check writes a probe and leaves nothing behind). ``access``: how S3 is reached.
    Raises ``NotARepository``, ``DestinationError`` (an S3 bucket missing, credentials
    refused, the server unreachable), ``WrongPassword``, ``CorruptData``."""
    storage = open_storage(address, access)
    try:
        Repository.open(storage, password)
    except RepositoryNotFound:
        require_empty_or_repository(storage)
        check_writable = getattr(storage, "check_writable", None)
        if check_writable is not None:
            check_writable()


def open_repository(
    storage: Storage,
    password: str | bytes,
    *,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    on_created: Callable[[], None] | None = None,
) -> Repository:
    """The repository of a destination, created there on first use (zstd at
    ``compression_level``, the set's ``settings.compression.level``; then ``on_created`` is
    called) — only in an empty or missing folder (:func:`require_empty_or_repository`;
    ``Repository.init`` refuses any non-empty storage too). Raises ``WrongPassword``,
    ``CorruptData``, ``NotARepository``, ``RepositoryError``, ``DestinationError``."""
    try:
        return Repository.open(storage, password)
    except RepositoryNotFound:
        require_empty_or_repository(storage)
        try:
            repo = Repository.init(storage, password, compression_level=compression_level)
        except RepositoryExists:  # another agent created it meanwhile: use that one
            time.sleep(CREATED_MEANWHILE_WAIT)
            return Repository.open(storage, password)
        if on_created is not None:
            on_created()
        return repo
