"""What the agent has accepted to read and write, kept on its own disk: the server names a
backup set's sources and destination folders, but a compromised or impersonated server must not
make the agent back up files its owner never named, or write where its owner never agreed
(issue 11, finding 6).

The record: ``<spool root>/accepted-targets.json`` (:func:`trust_file`), one per server and
backup user (the spool root is ``<data_dir>/agent-spool/<login>-<hash>``: ``agent.spool``),
written whole or not at all (``fileio.write_atomic``) under a lock. For each backup set ID: its
name (for a reader), the sources accepted (absolute paths; ``null`` when only a restore used the
set), the destinations accepted (destination ID → absolute folder path) and the folders that
hold a backup of the set (``stored``: a job committed a snapshot there, :func:`record_stored`;
absent in a record of an older agent)::

    {"format": 1, "sets": {"1719400000000": {"name": "docs", "sources": ["/home/a/docs"],
                                             "destinations": {"1719400000001": "/srv/b"},
                                             "stored": ["/srv/b"]}}}

The rule (:func:`check_backup_target`, :func:`check_restore_destination`,
:func:`require_accepted_sources`):

- A set this agent has never used is accepted on first use (trust on first use), with a note
  naming what was accepted: a set made by ``opencbs set add`` on the server and then backed up
  with ``opencbs backup --set NAME`` keeps working. A set created by the agent's own command
  line (``--set NAME --source … --destination …``) is accepted the same way.
- Except when a new set takes the place of an accepted one (:func:`takeovers`): its name is the
  name of a set accepted under another ID (the server renamed a set and gave its name to a new
  one, so ``--set NAME`` would read other sources), or its destination folder is a folder
  accepted for another set. That is a change like the ones below, refused without consent.
- Once accepted, a change made on the server — other sources, another folder for a destination,
  or a destination this agent has not accepted — is refused before anything is read or written
  (:class:`TargetChanged`, exit code 7), unless the agent's owner consents: ``--source`` or
  ``--destination``/``--add-destination`` given on the command line (for what they name: what
  the server names now, ``agent.targets.resolve_target``), or ``--accept-server-changes`` (for
  everything the server names now). What is consented to is recorded. Editing or deleting the
  file is the owner's consent too; to keep what was accepted, the set is changed back on the
  server.
- A restore that takes its destination folder from the server (no ``--destination``) reads
  only from a folder accepted for that set; a set never used here is refused there (no trust on
  first use for a restore) unless the owner consents the same way.

Filters (include/exclude) are not recorded: they only narrow what is read under the accepted
sources. Paths are compared after ``os.path.abspath`` (``..`` and doubled slashes removed);
sources as a set (their order does not matter). An S3 destination's place is its key,
``s3://bucket/prefix@endpoint`` (:func:`place_key`), in place of a folder.

A folder that held the set's backups and is now missing or empty (a disk not mounted, a folder
deleted or moved) is not silently made a new repository: :func:`held_backups` tells
``agent.targets`` so (issue 12). Without a ``stored`` list (a record of an older agent, or of
``opencbs quickstart``) every folder accepted for the set counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opencbs.agent.client import RemoteDestination, RemoteSet
from opencbs.agent.spool import SpoolError
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.fileio import write_atomic
from opencbs.model.destinations import is_s3_url

__all__ = [
    "TRUST_FILE",
    "AcceptedSet",
    "Change",
    "NO_CONSENT",
    "Consent",
    "TargetChanged",
    "TrustFileError",
    "accepted_sets",
    "changes",
    "check_backup_target",
    "check_restore_destination",
    "held_backups",
    "place_key",
    "record",
    "record_stored",
    "require_accepted_sources",
    "takeovers",
    "trust_file",
]

#: The record's file name in a spool root (``agent.spool.report_spool_dir``).
TRUST_FILE = "accepted-targets.json"
_LOCK = "accepted-targets.lock"
_FORMAT = 1

#: The command-line option that names each kind of change (the owner's consent).
_OPTION_OF = (("sources", "--source PATH…"), ("destination", "--destination PATH"))

#: Told one sentence for a person.
OnNote = Callable[[str], None]


def _silent(text: str) -> None:
    """The default ``on_note``: tell nobody."""


def trust_file(spool_dir: Path) -> Path:
    """The record of what the agent accepted for the server and backup user of ``spool_dir``."""
    return spool_dir / TRUST_FILE


class TrustFileError(OpenCBSError):
    """The record of accepted targets cannot be read or written (exit code 7)."""

    code = "agent_trust_file"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"cannot use the record of accepted backup targets {path}: {why}",
            "fix or delete that file (deleted: each backup set's sources and destinations "
            "as the server names them are accepted again on their next use), or make the "
            "agent's data_dir (env OPENCBS_DATA_DIR) writable",
        )


class TargetChanged(OpenCBSError):
    """The server names sources or a destination folder the agent's owner has not accepted
    (exit code 7: the destination or the set cannot be used as named)."""

    code = "agent_target_changed"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message, hint)


@dataclass(frozen=True, slots=True)
class AcceptedSet:
    """What the agent accepted for one backup set: ``sources`` (absolute paths, ``None`` when
    none were accepted yet), ``destinations`` (destination ID → absolute folder path) and
    ``stored``, the folders where a job of the set committed a snapshot (absolute paths;
    ``None``: not known, a record of an older agent)."""

    set_id: str
    name: str
    sources: tuple[str, ...] | None = None
    destinations: Mapping[str, str] = field(default_factory=dict)
    stored: tuple[str, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        """The set's entry in the file (without its ID, the key)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "sources": None if self.sources is None else list(self.sources),
            "destinations": dict(self.destinations),
        }
        if self.stored is not None:
            doc["stored"] = list(self.stored)
        return doc

    @classmethod
    def from_json(cls, set_id: str, doc: Any) -> AcceptedSet:
        """Inverse of :meth:`as_json`; raises ``TypeError``/``KeyError`` for a damaged one (a
        value of the wrong type too: ``"sources": "/tmp/src"`` is not a list of paths)."""
        if not isinstance(doc, dict):
            raise TypeError(f"set {set_id}: not an object")
        name = doc.get("name", "")
        sources = doc["sources"]
        dests = doc["destinations"]
        if not isinstance(name, str):
            raise TypeError(f"set {set_id}: name must be text")
        if sources is not None and not (
            isinstance(sources, list) and all(isinstance(s, str) for s in sources)
        ):
            raise TypeError(f"set {set_id}: sources must be a list of paths")
        if not isinstance(dests, dict) or not all(isinstance(p, str) for p in dests.values()):
            raise TypeError(f"set {set_id}: destinations must map IDs to paths")
        stored = doc.get("stored")
        if stored is not None and not (
            isinstance(stored, list) and all(isinstance(s, str) for s in stored)
        ):
            raise TypeError(f"set {set_id}: stored must be a list of paths")
        return cls(
            set_id,
            name,
            None if sources is None else tuple(sources),
            {str(k): v for k, v in dests.items()},
            None if stored is None else tuple(stored),
        )


@dataclass(frozen=True, slots=True)
class Consent:
    """What the agent's owner agreed to on this command line: ``sources`` (``--source`` given
    and matching the set), ``destination`` (``--destination``/``--add-destination`` named the
    folder used), ``server_changes`` (``--accept-server-changes``: whatever the server names),
    ``new_repository`` (``--new-repository``: a new repository in a folder that held the set's
    backups and is now missing or empty, ``agent.targets``)."""

    sources: bool = False
    destination: bool = False
    server_changes: bool = False
    new_repository: bool = False


#: No consent given: only what was accepted before (or a first use) passes.
NO_CONSENT = Consent()


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between what was accepted and what the server names now: ``what`` is
    ``"sources"`` or ``"destination"``; ``old`` is ``None`` when nothing was accepted; ``said``
    the whole sentence when it is not "TEXT changed from OLD to NEW" (:func:`takeovers`)."""

    what: str
    text: str
    old: str | None
    new: str
    said: str = ""

    def __str__(self) -> str:
        if self.said:
            return self.said
        if self.old is None:
            return f"{self.text} {self.new} (never accepted here)"
        return f"{self.text} changed from {self.old} to {self.new}"


def _paths(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(os.path.abspath(p) for p in paths)


def place_key(folder: str | os.PathLike[str]) -> str:
    """How a destination's place is recorded and compared: a folder made absolute, an S3
    location's key (``s3://bucket/prefix@endpoint``, ``model.destinations``) as it is."""
    text = os.fspath(folder)
    return text if is_s3_url(text) else os.path.abspath(text)


def _shown(paths: Iterable[str]) -> str:
    return "[" + ", ".join(paths) + "]"


# -- the file -----------------------------------------------------------------------------------


def accepted_sets(spool_dir: Path) -> dict[str, AcceptedSet]:
    """The sets accepted for the server and user of ``spool_dir``, by set ID (none when there is
    no file yet). Raises ``TrustFileError`` for a file that cannot be read or is damaged: a
    damaged record is never taken for an empty one."""
    path = trust_file(spool_dir)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no spool root (yet): nothing accepted
        return {}
    except OSError as exc:
        raise TrustFileError(path, exc.strerror or str(exc)) from exc
    try:
        doc = json.loads(raw)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        return {str(k): AcceptedSet.from_json(str(k), v) for k, v in doc["sets"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrustFileError(path, f"damaged ({exc})") from exc


@contextlib.contextmanager
def _locked(spool_dir: Path) -> Iterator[None]:
    """Hold the record's lock (two agents of one user recording at once keep both)."""
    try:
        spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # the spool root itself: the data_dir's error, as the spool says it
        raise SpoolError(
            f"cannot create the report spool {spool_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        fd = os.open(spool_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise TrustFileError(trust_file(spool_dir), exc.strerror or str(exc)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record(spool_dir: Path, entry: AcceptedSet) -> None:
    """Record ``entry`` (replacing what was accepted for its set). Raises ``TrustFileError``,
    or ``SpoolError`` when the spool root cannot be created (the agent's data_dir)."""
    with _locked(spool_dir):
        known = accepted_sets(spool_dir)
        known[entry.set_id] = entry
        _write(spool_dir, known)


def _write(spool_dir: Path, known: Mapping[str, AcceptedSet]) -> None:
    """Write the record whole (the caller holds the lock). Raises ``TrustFileError``."""
    path = trust_file(spool_dir)
    doc = {"format": _FORMAT, "sets": {k: v.as_json() for k, v in sorted(known.items())}}
    data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    try:
        write_atomic(path, data, mode=0o600)
    except OSError as exc:
        raise TrustFileError(path, exc.strerror or str(exc)) from exc


def record_stored(spool_dir: Path, set_id: str, folder: str | os.PathLike[str]) -> None:
    """Record that a job of set ``set_id`` committed a snapshot in ``folder`` (``agent.job``):
    :func:`held_backups` says so from now on. A set not in the record is left out (a job run
    without the record: ``opencbs quickstart``'s own). A record of an older agent (no
    ``stored``) starts with every folder accepted for the set. Raises ``TrustFileError``,
    ``SpoolError``."""
    path = place_key(folder)
    with _locked(spool_dir):
        known = accepted_sets(spool_dir)
        entry = known.get(set_id)
        if entry is None or (entry.stored is not None and path in entry.stored):
            return
        before = entry.stored if entry.stored is not None else entry.destinations.values()
        known[set_id] = replace(entry, stored=tuple(sorted({*before, path})))
        _write(spool_dir, known)


def held_backups(spool_dir: Path, set_id: str, folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` held backups of set ``set_id`` as this agent knows (a job committed
    a snapshot there; without ``stored`` in the record, an older agent's: a folder accepted for
    the set). Raises ``TrustFileError``."""
    entry = accepted_sets(spool_dir).get(set_id)
    if entry is None:
        return False
    path = place_key(folder)
    if entry.stored is not None:
        return path in entry.stored
    return path in entry.destinations.values()


# -- deciding -----------------------------------------------------------------------------------


def changes(
    accepted: AcceptedSet | None, sources: Iterable[str], destination_id: str, path: str
) -> list[Change]:
    """What differs between ``accepted`` and the ``sources`` and destination
    (``destination_id`` at folder ``path``) the server names now (all paths absolute); a pure
    function. Nothing accepted (``None``, or no sources yet) differs from nothing."""
    if accepted is None:
        return []
    found: list[Change] = []
    now = _paths(sources)
    if accepted.sources is not None and sorted(accepted.sources) != sorted(now):
        found.append(Change("sources", "sources", _shown(accepted.sources), _shown(now)))
    old = accepted.destinations.get(destination_id)
    if old != path:
        found.append(Change("destination", f"destination {destination_id}", old, path))
    return found


def takeovers(
    known: Mapping[str, AcceptedSet], bset: RemoteSet, destination_id: str, path: str
) -> list[Change]:
    """For a set ``bset`` never used here: how it takes the place of sets accepted under other
    IDs in ``known`` (a pure function). Its name is an accepted set's name (a ``"sources"``
    change: ``--set NAME`` would now read what the new set names), or its destination folder
    ``path`` is a folder accepted for another set (a ``"destination"`` change). Issue 11,
    finding 6 (a set swapped behind its name)."""
    found: list[Change] = []
    now = _shown(_paths(bset.settings.sources))
    for other in known.values():
        if other.set_id == bset.id:
            continue
        if other.name == bset.name:
            was = "none" if other.sources is None else _shown(other.sources)
            said = (
                f"the name {bset.name!r} belongs to set ID {other.set_id} here (sources "
                f"{was}) and now names set ID {bset.id} (sources {now}), never used here"
            )
            found.append(Change("sources", "name", other.set_id, bset.id, said))
        if path in other.destinations.values():
            said = (
                f"destination {destination_id} at {path}: that "
                f"{'location' if is_s3_url(path) else 'folder'} belongs to set "
                f"{other.name!r} (ID {other.set_id}) here"
            )
            found.append(Change("destination", "folder", other.set_id, path, said))
    return found


def _consented(change: Change, consent: Consent) -> bool:
    if consent.server_changes:
        return True
    return consent.sources if change.what == "sources" else consent.destination


def _updated(
    accepted: AcceptedSet | None, bset: RemoteSet, destination_id: str, path: str
) -> AcceptedSet:
    """``accepted`` with the set's sources and this destination's folder accepted."""
    dests = dict(accepted.destinations) if accepted is not None else {}
    dests[destination_id] = path
    stored = accepted.stored if accepted is not None else ()
    return AcceptedSet(bset.id, bset.name, _paths(bset.settings.sources), dests, stored)


def check_backup_target(
    spool_dir: Path,
    bset: RemoteSet,
    destination: RemoteDestination,
    folder: str | os.PathLike[str],
    *,
    consent: Consent = NO_CONSENT,
    check_folder: Callable[[], None] | None = None,
    on_note: OnNote = _silent,
) -> None:
    """Before a backup of ``bset`` to ``destination`` (at ``folder``): accept and record its
    sources and folder on first use, or when they are what the agent accepted, or with the
    owner's ``consent`` (rules in the module docstring); refuse a change the owner did not
    consent to. ``check_folder`` (the destination folder rule, ``agent.targets``) is called
    once the change is allowed and before anything is recorded. Raises
    ``TargetChanged`` (nothing was read or written, nothing recorded), ``TrustFileError`` and
    what ``check_folder`` raises."""
    path = place_key(folder)
    known = accepted_sets(spool_dir)
    accepted = known.get(bset.id)
    found = changes(accepted, bset.settings.sources, destination.id, path)
    if accepted is None:
        found = takeovers(known, bset, destination.id, path)
    refused = [c for c in found if not _consented(c, consent)]
    if refused:
        raise _changed(spool_dir, bset, refused)
    if check_folder is not None:
        check_folder()
    first = accepted is None or accepted.sources is None
    # nothing new (a set renamed on the server is recorded under its new name: takeovers)
    if not found and not first and accepted is not None and accepted.name == bset.name:
        return
    record(spool_dir, _updated(accepted, bset, destination.id, path))
    if first and not (consent.sources and consent.destination):
        on_note(
            f"backup set {bset.name!r} (ID {bset.id}) is used for the first time on this "
            f"agent: accepted sources {_shown(_paths(bset.settings.sources))} and destination "
            f"{path} (kept in {trust_file(spool_dir)}; a change made on the server will need "
            "--accept-server-changes)"
        )
    if found:
        told = (f"{c} (now accepted)" if c.said else f"accepted {c}" for c in found)
        on_note(f"backup set {bset.name!r}: {'; '.join(told)}")


def _changed(spool_dir: Path, bset: RemoteSet, refused: list[Change]) -> TargetChanged:
    """The error of a backup refused for ``refused`` changes of set ``bset``. The options
    named in the hint consent to what the server names now (``--source`` must match the set's
    sources, ``--destination`` picks the set's folder: ``agent.targets.resolve_target``); what
    was accepted is kept only by changing the set back on the server."""
    kinds = {c.what for c in refused}
    options = " and ".join(o for k, o in _OPTION_OF if k in kinds)
    return TargetChanged(
        f"backup set {bset.name!r} (ID {bset.id}) was changed on the server: "
        f"{'; '.join(str(c) for c in refused)}; not backed up (nothing read or written)",
        "to back up what the server names now, run again with --accept-server-changes or "
        f"name it on the command line ({options}); to keep what this agent accepted, change "
        f"the set back on the server; what this agent accepted is kept in {trust_file(spool_dir)}",
    )


def require_accepted_sources(spool_dir: Path, bset: RemoteSet) -> None:
    """At the start of a job: the set's sources as the server (or the remembered copy) names
    them now are the ones accepted (recorded by :func:`check_backup_target` before the job),
    so a server that answers differently the second time is refused too. A set with nothing
    recorded passes. Raises ``TargetChanged``, ``TrustFileError``."""
    accepted = accepted_sets(spool_dir).get(bset.id)
    if accepted is None or accepted.sources is None:
        return
    now = _paths(bset.settings.sources)
    if sorted(now) != sorted(accepted.sources):
        change = Change("sources", "sources", _shown(accepted.sources), _shown(now))
        raise _changed(spool_dir, bset, [change])


def check_restore_destination(
    spool_dir: Path,
    bset: RemoteSet,
    destination: RemoteDestination,
    folder: str | os.PathLike[str],
    *,
    accept: bool = False,
    on_note: OnNote = _silent,
) -> None:
    """Before a restore reads from ``folder``, the server's folder of ``destination`` of
    ``bset``: it is a folder accepted for that set (any of its destinations), or ``accept``
    (``--accept-server-changes``) records it. Unlike a backup, a set never used here is not
    accepted on first use. Raises ``TargetChanged`` (nothing read) or ``TrustFileError``."""
    path = place_key(folder)
    accepted = accepted_sets(spool_dir).get(bset.id)
    if accepted is not None and path in accepted.destinations.values():
        return
    if accept:
        dests = dict(accepted.destinations) if accepted is not None else {}
        dests[destination.id] = path
        sources = accepted.sources if accepted is not None else None
        stored = accepted.stored if accepted is not None else None
        record(spool_dir, AcceptedSet(bset.id, bset.name, sources, dests, stored))
        on_note(f"backup set {bset.name!r}: accepted destination {path} for restores")
        return
    have = _shown(accepted.destinations.values()) if accepted is not None else "none"
    raise TargetChanged(
        f"backup set {bset.name!r} (ID {bset.id}): the server names destination "
        f"{destination.id} at {path}, which this agent has not accepted (accepted: {have}); "
        "nothing restored",
        "give the folder yourself with --destination PATH, or run again with "
        f"--accept-server-changes; what this agent accepted is kept in {trust_file(spool_dir)}",
    )
