"""The backup agent: runs backup jobs and reports them to the server over the agent API.

Services (the CLI, quickstart, flush and a scheduler call these): ``agent.targets`` (which set,
destination and folder), ``agent.trust`` (what the agent's owner accepted: sources and
destination folders kept on the agent, server changes refused), ``agent.job`` (``run_backup``:
one backup job), ``agent.delivery`` (spooled reports to the server), ``agent.restore``,
``agent.retention``. The HTTP client is ``agent.client``.

The names below are loaded on first use (``__getattr__``): a command that never speaks to the
server (``opencbs prune``) does not load the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AgentApiError",
    "AgentClient",
    "Entry",
    "JobRef",
    "NewDestination",
    "RemoteDestination",
    "RemoteSet",
    "ServerUnreachable",
]

_WHERE = {name: "opencbs.agent.client" for name in __all__} | {"JobRef": "opencbs.model.jobs"}


def __getattr__(name: str) -> Any:
    """The client's names, imported when first asked for."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where), name)
