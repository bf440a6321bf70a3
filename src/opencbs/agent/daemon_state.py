"""What the unattended agent keeps on disk between runs, in the report spool of its server and
backup user (``agent.spool.report_spool_dir``), each file written whole or not at all
(``fileio.write_atomic``):

- ``schedules.json``: the sets and schedules of the last poll that gave them, as the server
  sent them, with their ``generation`` and when they came (``fetched_at``, epoch ms): the
  agent runs them while the server cannot be reached, and after a restart without it.
- ``scheduler-state.json``: per schedule ID its ``agent.scheduler.ScheduleMark`` (the newest
  slot handled), so a restart does not run a slot again.

A file that cannot be read or parsed is logged and taken as missing (a new cache comes with
the next poll; a lost state means slots before the restart are not caught up). Writing raises
``OSError`` (the caller logs it and goes on).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opencbs.agent.poll import PolledSet, sets_from_json
from opencbs.agent.scheduler import ScheduleMark
from opencbs.fileio import write_atomic

__all__ = [
    "CACHE_FILE",
    "STATE_FILE",
    "CachedSets",
    "load_cache",
    "load_marks",
    "save_cache",
    "save_marks",
]

log = logging.getLogger(__name__)

CACHE_FILE = "schedules.json"
STATE_FILE = "scheduler-state.json"


@dataclass(frozen=True)
class CachedSets:
    """The sets of the last poll that gave them: ``generation``, ``fetched_at`` (epoch ms),
    the ``sets`` and their ``raw`` JSON form."""

    generation: str
    fetched_at: int
    sets: tuple[PolledSet, ...]
    raw: tuple[Mapping[str, Any], ...]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (taken as missing): %s", path, exc)
        return None


def load_cache(root: Path) -> CachedSets | None:
    """The cached sets in spool root ``root``, or ``None``."""
    doc = _read(root / CACHE_FILE)
    if not isinstance(doc, dict):
        return None
    try:
        raw = tuple(dict(x) for x in doc["sets"])
        return CachedSets(str(doc["generation"]), int(doc["fetched_at"]), sets_from_json(raw), raw)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("cannot use %s (taken as missing): %s", root / CACHE_FILE, exc)
        return None


def save_cache(
    root: Path, generation: str, fetched_at: int, raw: Sequence[Mapping[str, Any]]
) -> None:
    """Keep a poll's sets (``raw``, as sent) in ``root``. Raises ``OSError``."""
    doc = {"generation": generation, "fetched_at": fetched_at, "sets": list(raw)}
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(root / CACHE_FILE, json.dumps(doc, indent=1).encode())


def load_marks(root: Path) -> dict[str, ScheduleMark]:
    """The remembered marks per schedule ID in ``root`` (empty when none)."""
    doc = _read(root / STATE_FILE)
    if not isinstance(doc, dict) or not isinstance(doc.get("schedules"), dict):
        return {}
    out: dict[str, ScheduleMark] = {}
    for sid, mark in doc["schedules"].items():
        try:
            out[str(sid)] = ScheduleMark.from_json(mark)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("schedule %s: its remembered state is unusable: %s", sid, exc)
    return out


def save_marks(root: Path, marks: Mapping[str, ScheduleMark]) -> None:
    """Remember ``marks`` in ``root``. Raises ``OSError``."""
    doc = {"schedules": {sid: m.as_json() for sid, m in sorted(marks.items())}}
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(root / STATE_FILE, json.dumps(doc, indent=1).encode())


#: The copy of the config file the agent runs with, beside its cache (its jobs read this one).
CONFIG_IN_FORCE = "config-in-force.toml"


def config_in_force(root: Path, source: Path) -> Path:
    """Copy the config file ``source`` (as read when the configuration was taken into force;
    missing: an empty file) to ``root/config-in-force.toml`` (mode 0600: it may hold
    passwords) and return that path: the agent's jobs are run with it, so that an edit of the
    file reaches them only when a SIGHUP has taken it into force. Raises ``OSError``."""
    try:
        content = source.read_bytes()
    except FileNotFoundError:
        content = b""
    root.mkdir(parents=True, exist_ok=True)
    target = root / CONFIG_IN_FORCE
    write_atomic(target, content, mode=0o600)
    return target
