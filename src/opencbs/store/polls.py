"""What the agent's poll reads and writes (cbs-api.md §14): the generation of a user's sets and
schedules, and when its agent was last seen.

The **generation** of a backup user is a short hash over its sets that are not removed: each
set's ID, name and resolved zone (its ``time_zone`` setting, else the server's zone) and its
schedules' IDs and ``updated_at``. Any change an agent must act on (a set added, renamed,
removed or moved to another zone; a schedule added, changed or removed) changes it; the hash is
computed from one query, for one user or for every waiting agent at once
(:func:`generations`). An agent that holds the current generation is told "nothing changed".

``last_seen_ms`` (``backup_users``) is written by :func:`record_seen` at most once per
:data:`SEEN_EVERY_MS` per user, whatever the number of server processes (a conditional
``UPDATE``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import tzinfo

from sqlalchemy import Connection, and_, bindparam, or_, select, update

from opencbs.store.schema import backup_sets, backup_users, schedules

__all__ = ["SEEN_EVERY_MS", "generations", "record_seen", "zone_name"]

#: ``last_seen_ms`` is written at most this often per user (ms; cbs-api.md §14).
SEEN_EVERY_MS = 15_000
#: Users asked about in one query (well below SQLite's bound on parameters).
_CHUNK = 500
#: Hex digits of a generation.
_DIGITS = 16


def zone_name(zone: tzinfo) -> str:
    """The IANA name of ``zone`` (``ZoneInfo.key``); for a zone without one (a fixed offset
    of a machine without a named zone) its own name, e.g. ``UTC``."""
    key = getattr(zone, "key", None)
    return str(key) if key else str(zone.tzname(None) or "UTC")


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def generations(conn: Connection, user_ids: Iterable[int], server_zone: str) -> dict[int, str]:
    """The generation (module docstring; 16 hex digits) of each of ``user_ids``, a user
    without sets included; ``server_zone``: the IANA name of the zone of a set without its
    own. One query per 500 users."""
    ids = sorted(set(user_ids))
    per_user: dict[int, dict[int, list[object]]] = {uid: {} for uid in ids}
    zone = backup_sets.c.settings["time_zone"].as_string()
    for chunk in _chunks(ids):
        rows = conn.execute(
            select(
                backup_sets.c.user_id,
                backup_sets.c.id,
                backup_sets.c.name,
                zone,
                schedules.c.id,
                schedules.c.updated_at,
            )
            .select_from(backup_sets.outerjoin(schedules, schedules.c.set_id == backup_sets.c.id))
            .where(backup_sets.c.user_id.in_(chunk), backup_sets.c.removed.is_(False))
            .order_by(backup_sets.c.user_id, backup_sets.c.id, schedules.c.id)
        )
        for uid, set_id, name, set_zone, schedule_id, updated_at in rows:
            entry = per_user[uid].setdefault(set_id, [set_id, name, set_zone or server_zone])
            if schedule_id is not None:
                entry.append([schedule_id, updated_at])
    return {uid: _digest(list(sets.values())) for uid, sets in per_user.items()}


def _digest(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGITS]


def record_seen(conn: Connection, seen: Mapping[int, int]) -> None:
    """Write ``last_seen_ms`` of each user of ``seen`` (user ID → epoch ms) unless the stored
    one is less than :data:`SEEN_EVERY_MS` older (another process wrote it lately). One
    statement for all."""
    if not seen:
        return
    statement = (
        update(backup_users)
        .where(
            and_(
                backup_users.c.id == bindparam("uid"),
                or_(
                    backup_users.c.last_seen_ms.is_(None),
                    backup_users.c.last_seen_ms <= bindparam("stale"),
                ),
            )
        )
        .values(last_seen_ms=bindparam("at"))
    )
    params = [{"uid": uid, "at": at, "stale": at - SEEN_EVERY_MS} for uid, at in seen.items()]
    conn.execute(statement, params)
