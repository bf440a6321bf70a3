"""The ``--keep-*`` options of ``opencbs forget`` and ``opencbs snapshots`` (restic's names)
and the ``KeepRules`` they give (``model.retention``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from opencbs.model.retention import Duration, KeepRules

__all__ = ["keep_options", "rules_of_flags"]

_KEEPS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _keep_help(name: str) -> str:
    if name == "last":
        return "Keep the N newest snapshots."
    return f"Keep the newest snapshot of each of the last N {_UNIT[name]} that have one."


def keep_options(f: Any) -> Any:
    """The ``--keep-*`` options (restic's names)."""
    for name in reversed(_KEEPS):
        f = click.option(
            f"--keep-{name}",
            f"keep_{name}",
            type=click.IntRange(0, 100_000),
            default=0,
            metavar="N",
            help=_keep_help(name),
        )(f)
    return click.option(
        "--keep-within",
        "keep_within",
        default=None,
        metavar="DURATION",
        help="Keep every snapshot within DURATION of the newest (e.g. 7d, 1y2m, 12h).",
    )(f)


_UNIT = {
    "hourly": "hours",
    "daily": "days",
    "weekly": "weeks",
    "monthly": "months",
    "yearly": "years",
}


def rules_of_flags(keeps: Mapping[str, int], within: str | None) -> KeepRules | None:
    """The rules the ``--keep-*`` flags give, ``None`` when none is given. Raises
    ``InvalidInput`` for a bad ``--keep-within``."""
    duration = Duration.parse(within) if within is not None else None
    rules = KeepRules(**{name: keeps[f"keep_{name}"] for name in _KEEPS}, within=duration)
    return None if rules.is_empty() else rules
