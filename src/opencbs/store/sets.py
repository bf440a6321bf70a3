"""Backup sets and their destinations (cbs-api.md §7 ListBackupSets, GetBackupSet; the agent API).

A backup set's ``settings`` are a :class:`~opencbs.model.sets.BackupSetSettings` (``sources``,
``filters``, ``compression``, ``deduplication``), stored as its JSON form (``as_json``). A
destination's ``settings`` hold its location (``opencbs.model.destinations``: ``{"path": ...}``
for a ``LOCAL`` folder; ``bucket``, ``prefix``, ``endpoint``, ``region`` for ``S3``, checked and
stored in their normal form). No destination's settings hold a credential: a key that looks like
one (``secret_access_key``, ``password``, ``token`` …, at any depth) is refused with
``InvalidInput`` where settings are written (``destination_settings``); the agent keeps its
credentials itself.

Names, sources, patterns and destination settings are stored and served as JSON text, so each
must be valid Unicode without NUL (``opencbs.model.text``): a path that is not UTF-8 (a lone
surrogate once decoded with ``surrogateescape``) cannot be a source or a destination and is
refused with ``InvalidInput`` where it would be written. Names *inside* a source may be any
bytes: they travel in job reports, not here. A string of that kind stored by an earlier version
is read back in its display form (``\\xNN``, ``shown_text``) with a warning in the log, so that
the user's other sets, and the answers that list them, keep working; so is a stored setting
that no longer validates (read as its default, with a warning).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Row, func, select, update

from opencbs.errors import BackupSetNotFound, Conflict, DestinationNotFound, InvalidInput
from opencbs.model.destinations import S3, S3Location, require_no_secrets
from opencbs.model.sets import BackupSetSettings
from opencbs.model.text import require_text, shown_text
from opencbs.store.schema import backup_sets, destinations
from opencbs.store.users import new_id
from opencbs.store.util import now_ms

log = logging.getLogger(__name__)

#: What to do about a destination path that is not UTF-8 text.
DESTINATION_HINT = (
    "a destination's path is stored as UTF-8 text: choose a folder whose path is "
    "UTF-8, or rename it"
)


@dataclass(frozen=True)
class Destination:
    """A destination of a backup set. ``type`` e.g. ``LOCAL``; ``settings`` its location."""

    id: int
    set_id: int
    position: int
    name: str
    type: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class BackupSet:
    """A backup set of one backup user, with its destinations in order. ``created_at`` epoch
    ms."""

    id: int
    user_id: int
    name: str
    type: str
    settings: BackupSetSettings
    removed: bool
    created_at: int
    destinations: tuple[Destination, ...] = field(default=())


#: Deepest nesting of a destination's settings: the settings object is level 1, an object or
#: array inside it level 2 (issue 11: a deeper value made every answer listing it fail).
MAX_SETTINGS_DEPTH = 8


def json_depth(value: Any, stop: int = MAX_SETTINGS_DEPTH + 1) -> int:
    """How deep objects and arrays nest in a JSON-like ``value`` (a scalar 0, ``{}`` 1), counted
    without recursion and no further than ``stop`` (a deeper value answers ``stop``)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest >= stop:
            return stop
        pending.extend((child, level + 1) for child in children)
    return deepest


#: Largest integer a destination's settings may hold: JSON's safe integers (2**53 - 1), what
#: every client and both databases read exactly.
MAX_SETTINGS_INT = 2**53 - 1


def settings_problem(settings: Mapping[str, Any]) -> str | None:
    """What makes a destination's ``settings`` unstorable, in words, or ``None``: nesting
    deeper than ``MAX_SETTINGS_DEPTH`` levels, a number that is not finite (``NaN``, ``1e400``:
    PostgreSQL's JSON refuses them), an integer beyond ±``MAX_SETTINGS_INT`` (no JSON reader
    keeps it exact; the CLI's ``--json`` could not print it)."""
    if json_depth(settings) > MAX_SETTINGS_DEPTH:
        return f"nest deeper than {MAX_SETTINGS_DEPTH} levels"
    pending: list[Any] = [settings]
    while pending:  # at most MAX_SETTINGS_DEPTH deep now
        item = pending.pop()
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return "hold a number that is not finite (NaN or infinity)"
        elif isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > MAX_SETTINGS_INT:
                return f"hold an integer beyond ±{MAX_SETTINGS_INT}"
    return None


def check_destination_settings(settings: Mapping[str, Any]) -> None:
    """Raises ``InvalidInput`` when a destination's ``settings`` cannot be stored as given
    (``settings_problem``)."""
    problem = settings_problem(settings)
    if problem is not None:
        raise InvalidInput(
            f"a destination's settings {problem}",
            'give its location as a flat object of text and numbers, e.g. {"path": "/srv/backup"}',
        )


#: The settings keys of an ``S3`` destination (``S3Location.settings``).
S3_SETTINGS_KEYS = ("bucket", "prefix", "endpoint", "region")
_S3_SETTINGS_HINT = (
    'an S3 destination\'s settings are {"bucket": "b", "prefix": "p/q", "endpoint": '
    '"http://host:port" or "", "region": "us-east-1"}, each text'
)


def destination_settings(dest_type: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``settings`` of a destination of type ``dest_type`` as they are stored: for ``S3``
    the normal form of its location (``S3Location.from_settings(settings).settings()``, the
    four keys of ``S3_SETTINGS_KEYS``, no other); for any other type as given. Raises
    ``InvalidInput`` for a key that looks like a credential at any depth
    (``require_no_secrets``), for an ``S3`` location that is not one (bucket, prefix, endpoint
    or region invalid) or an ``S3`` key not in ``S3_SETTINGS_KEYS``."""
    require_no_secrets(settings)
    if dest_type != S3:
        return dict(settings)
    unknown = sorted(str(k) for k in settings if k not in S3_SETTINGS_KEYS)
    if unknown:
        raise InvalidInput(
            f"S3 destination settings: unknown key {', '.join(map(repr, unknown))}",
            _S3_SETTINGS_HINT,
        )
    try:
        return S3Location.from_settings(settings).settings()
    except InvalidInput as exc:
        exc.hint = exc.hint or _S3_SETTINGS_HINT
        raise


def _shallow_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A destination's stored settings without the keys nested deeper than the limit (stored
    before the limit was checked), with a warning naming ``where``: the other keys, and every
    answer listing the destination, keep working."""
    kept = {k: v for k, v in raw.items() if json_depth(v) < MAX_SETTINGS_DEPTH}
    if len(kept) != len(raw):
        log.warning(
            "%s: settings %s nest deeper than %d levels; left out: fix them",
            where,
            sorted(set(raw) - set(kept)),
            MAX_SETTINGS_DEPTH,
        )
    return kept


def _destination(row: Row) -> Destination:  # type: ignore[type-arg]
    where = f"destination {row.id}"
    return Destination(
        id=row.id,
        set_id=row.set_id,
        position=row.position,
        name=_served(row.name, where),
        type=row.type,
        settings=_served(_shallow_settings(dict(row.settings or {}), where), where),
    )


def _served(value: Any, where: str) -> Any:
    """``value`` read from the database with every string made valid text (``shown_text``):
    a string that is not (stored before such strings were refused) would make every answer
    that holds it fail to encode. Logs a warning naming ``where`` when one is found."""
    out = _as_text(value)
    if out != value:
        log.warning(
            "%s holds a name or path that is not UTF-8 text; served in its display "
            "form (\\xNN): fix it (a new source or destination)",
            where,
        )
    return out


def _as_text(value: Any) -> Any:
    if isinstance(value, str):
        return shown_text(value)
    if isinstance(value, dict):
        return {_as_text(k): _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return value


def _require_text_values(value: Any, what: str, hint: str) -> None:
    """``require_text`` for every string (key or value) in a JSON-like ``value``."""
    if isinstance(value, str):
        require_text(value, what, hint)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            require_text(str(k), what, hint)
            _require_text_values(v, f"{what} {k}", hint)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _require_text_values(v, what, hint)


def _stored_settings(raw: Any, where: str) -> BackupSetSettings:
    """A set's settings as read from the database (``raw``, their JSON form). A string that is
    not valid text is read in display form (``_served``); a key that no longer validates (stored
    by an earlier version, whose checks were looser) is read as its default, with a warning
    naming ``where``, so the set and the answers that list it keep working."""
    value = _served(dict(raw or {}), where)
    try:
        return BackupSetSettings.model_validate(value)
    except (ValidationError, InvalidInput):
        pass
    kept: dict[str, Any] = {}
    for key in BackupSetSettings.model_fields:
        if key not in value:
            continue
        try:
            BackupSetSettings.model_validate({key: value[key]})
        except (ValidationError, InvalidInput):
            log.warning("%s: its setting %r is not valid; read as its default: fix it", where, key)
            continue
        kept[key] = value[key]
    return BackupSetSettings.model_validate(kept)


def add_set(
    conn: Connection,
    user_id: int,
    name: str,
    settings: Mapping[str, Any] | None = None,
    *,
    set_type: str = "FILE",
) -> BackupSet:
    """Create a backup set for backup user ``user_id``. Its ID is the creation time in epoch ms
    (cbs-api.md §4). ``settings``: the keys given (JSON form, ``BackupSetSettings``), the others
    take their defaults. Raises ``Conflict`` when the user has a set of that name already,
    ``InvalidInput`` for a name or settings that cannot be used."""
    if not name:
        raise InvalidInput("a backup set needs a name")
    require_text(name, "backup set name", "give the name in UTF-8")
    taken = conn.execute(
        select(backup_sets.c.id).where(
            backup_sets.c.user_id == user_id,
            backup_sets.c.name == name,
            backup_sets.c.removed.is_(False),
        )
    ).first()
    if taken:
        raise Conflict(f"backup set {name!r} exists already", "choose another name")
    sid = new_id(conn, backup_sets)
    conn.execute(
        backup_sets.insert().values(
            id=sid,
            user_id=user_id,
            name=name,
            type=set_type,
            settings=BackupSetSettings.parse(settings or {}).as_json(),
            removed=False,
            created_at=now_ms(),
        )
    )
    return get_set(conn, user_id, sid)


def update_set(
    conn: Connection,
    user_id: int,
    set_id: int,
    *,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> BackupSet:
    """Change a set's name and/or settings: the keys of ``settings`` (JSON form) replace the
    current ones (``BackupSetSettings.merged``). Raises ``BackupSetNotFound``, or
    ``InvalidInput`` for a name or settings that cannot be used."""
    current = get_set(conn, user_id, set_id)
    values: dict[str, Any] = {}
    if name is not None:
        if not name:
            raise InvalidInput("a backup set needs a name")
        require_text(name, "backup set name", "give the name in UTF-8")
        values["name"] = name
    if settings is not None:
        values["settings"] = current.settings.merged(settings).as_json()
    if values:
        conn.execute(update(backup_sets).where(backup_sets.c.id == set_id).values(**values))
    return get_set(conn, user_id, set_id)


def get_set(conn: Connection, user_id: int, set_id: int | str) -> BackupSet:
    """Backup set ``set_id`` of backup user ``user_id``, with its destinations.

    ``set_id`` may be the decimal string a client sent. Raises ``BackupSetNotFound``.
    """
    sid = parse_id(set_id)
    row = None
    if sid is not None:
        row = conn.execute(
            select(backup_sets).where(backup_sets.c.id == sid, backup_sets.c.user_id == user_id)
        ).first()
    if row is None:
        raise BackupSetNotFound(str(set_id))
    dests = conn.execute(
        select(destinations)
        .where(destinations.c.set_id == row.id)
        .order_by(destinations.c.position, destinations.c.id)
    )
    where = f"backup set {row.id}"
    return BackupSet(
        id=row.id,
        user_id=row.user_id,
        name=_served(row.name, where),
        type=row.type,
        settings=_stored_settings(row.settings, where),
        removed=row.removed,
        created_at=row.created_at,
        destinations=tuple(_destination(d) for d in dests),
    )


def find_set_by_name(conn: Connection, user_id: int, name: str) -> BackupSet | None:
    """The user's (not removed) set named ``name``, or ``None``."""
    row = conn.execute(
        select(backup_sets.c.id).where(
            backup_sets.c.user_id == user_id,
            backup_sets.c.name == name,
            backup_sets.c.removed.is_(False),
        )
    ).first()
    return get_set(conn, user_id, row.id) if row else None


def list_sets(conn: Connection, user_id: int, *, include_removed: bool = False) -> list[BackupSet]:
    """The backup sets of a user, by ID (creation order), without their destinations."""
    q = select(backup_sets).where(backup_sets.c.user_id == user_id).order_by(backup_sets.c.id)
    if not include_removed:
        q = q.where(backup_sets.c.removed.is_(False))
    return [
        BackupSet(
            id=r.id,
            user_id=r.user_id,
            name=_served(r.name, f"backup set {r.id}"),
            type=r.type,
            settings=_stored_settings(r.settings, f"backup set {r.id}"),
            removed=r.removed,
            created_at=r.created_at,
        )
        for r in conn.execute(q)
    ]


def add_destination(
    conn: Connection,
    user_id: int,
    set_id: int,
    *,
    name: str,
    dest_type: str,
    settings: Mapping[str, Any] | None = None,
    destination_id: int | None = None,
) -> Destination:
    """Add a destination to a set, after the existing ones. Its ID is the creation time in epoch
    ms unless given (cbs-api.md §4); its settings are stored as ``destination_settings`` gives
    them. Raises ``Conflict`` for a duplicate name in the set, ``InvalidInput`` for settings
    nested deeper than ``MAX_SETTINGS_DEPTH``, not text, holding a credential or not an S3
    location of an ``S3`` destination (``destination_settings``)."""
    bset = get_set(conn, user_id, set_id)
    if not name or not dest_type:
        raise InvalidInput("a destination needs a name and a type")
    require_text(name, "destination name", "give the name in UTF-8")
    check_destination_settings(settings or {})
    _require_text_values(dict(settings or {}), "destination", DESTINATION_HINT)
    settings = destination_settings(dest_type, settings or {})
    if any(d.name == name for d in bset.destinations):
        raise Conflict(f"destination {name!r} exists already in this backup set")
    # created in the same millisecond as its set: a later one, so the two IDs never look alike
    did = destination_id
    if did is None:
        did = new_id(conn, destinations, max(now_ms(), bset.id + 1))
    pos = conn.execute(
        select(func.coalesce(func.max(destinations.c.position) + 1, 0)).where(
            destinations.c.set_id == bset.id
        )
    ).scalar_one()
    conn.execute(
        destinations.insert().values(
            id=did,
            set_id=bset.id,
            position=pos,
            name=name,
            type=dest_type,
            settings=dict(settings or {}),
        )
    )
    return get_destination(conn, bset, did)


def update_destination(
    conn: Connection,
    user_id: int,
    set_id: int,
    destination_id: int,
    *,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Destination:
    """Rename a destination and/or replace keys of its settings; the merged settings are
    checked and stored as ``destination_settings`` gives them (an ``S3`` destination's must
    still be a location). Raises ``InvalidInput`` for settings nested deeper than
    ``MAX_SETTINGS_DEPTH``, not text, holding a credential, or merged into an ``S3`` location
    that is not one."""
    bset = get_set(conn, user_id, set_id)
    dest = get_destination(conn, bset, destination_id)
    values: dict[str, Any] = {}
    if name:
        require_text(name, "destination name", "give the name in UTF-8")
        values["name"] = name
    if settings is not None:
        check_destination_settings(settings)
        _require_text_values(dict(settings), "destination", DESTINATION_HINT)
        require_no_secrets(settings)  # the given keys: one stored earlier stays readable
        merged = {**dest.settings, **settings}
        values["settings"] = destination_settings(dest.type, merged) if dest.type == S3 else merged
    if values:
        conn.execute(update(destinations).where(destinations.c.id == dest.id).values(**values))
    return get_destination(conn, bset, destination_id)


def get_destination(conn: Connection, bset: BackupSet, destination_id: int | str) -> Destination:
    """Destination ``destination_id`` of ``bset``. Raises ``DestinationNotFound``."""
    did = parse_id(destination_id)
    row = None
    if did is not None:
        row = conn.execute(
            select(destinations).where(destinations.c.id == did, destinations.c.set_id == bset.id)
        ).first()
    if row is None:
        raise DestinationNotFound(str(destination_id))
    return _destination(row)


def parse_id(value: int | str) -> int | None:
    """A 64-bit ID from an int or a decimal string (sign allowed, §4); ``None`` if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    text = value.strip()
    body = text[1:] if text[:1] in "+-" else text
    if not body.isascii() or not body.isdigit() or len(body) > 19:
        return None
    n = int(text)
    return n if -(2**63) <= n < 2**63 else None
